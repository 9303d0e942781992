"""Pod routes across nodes: host-gw, VXLAN, or ``auto`` (host-gw on the same subnet, VXLAN elsewhere).

The VXLAN design is flannel's ``vxlan`` backend with ``DirectRouting``
(flannel-io/flannel pkg/backend/vxlan/vxlan_network.go): one VXLAN device per
node and underlay family (``podnet.vxlan`` for an IPv4 underlay,
``podnet.vxlan6`` for IPv6), no multicast group and no learning; each node
publishes its VTEP MAC and underlay address on its own Node object, and every
other node programs, per remote pod CIDR:

* a route ``<pod CIDR> via <CIDR network address> dev podnet.vxlan onlink``,
* a permanent neighbour entry ``<CIDR network address> -> <peer VTEP MAC>``,
* an FDB entry ``<peer VTEP MAC> -> <peer underlay IP>``.

The VXLAN device itself carries the network address of this node's own pod CIDR as a /32
(/128) address, as flannel gives ``flannel.1`` (pkg/backend/vxlan/vxlan.go, ``RegisterNetwork``:
``dev.Configure(ip.IP4Net{IP: lease.Subnet.IP, PrefixLen: 32}, ...)``): traffic the node itself sends to a remote pod over VXLAN then leaves with
that address as its source (the kernel picks the outgoing device's address), so the peer's
reply comes back over the overlay to a pod-CIDR address instead of depending on the underlay
routing the node's own address from the pod's side.

Everything here except :class:`KernelOverlayOps` and :class:`Overlay` is pure:
frozen Node objects, the node's config and a :class:`Host` snapshot of its
interfaces in, devices / routes / neighbours / FDB entries as data out.
:func:`sync_devices` and :func:`sync_entries` apply that data through an
:class:`OverlayOps` (the kernel one, or ``podnet.cni.testing.FakeOverlayOps``):
they diff against what the kernel holds, so they are idempotent and, run
periodically, repair a deleted entry. Routes (host-gw and VXLAN alike) are
applied by :func:`podnet.cni.routes.sync` under protocol 150.

Bad input never breaks other peers: a Node whose VTEP annotation is garbage,
of the wrong family, or collides with another node's VTEP gets no VXLAN
entries (it still gets host-gw where the backend allows it; of two nodes claiming one VTEP MAC
or address, the one this daemon already programs keeps it, and only without such a current owner,
after a restart, the older Node by creationTimestamp, then by name); it is listed in
:attr:`Plan.ignored` and counted in the ``podnet_cni_overlay_ignored_peers`` gauge.

Pod MTU: the underlay interface's MTU minus 50 bytes of encapsulation for an
IPv4 underlay, 70 for IPv6 (outer IP + UDP + VXLAN + inner Ethernet), unless
configured; with ``auto`` the overlay MTU applies to every pod, since any peer
may be reached over VXLAN.

Path MTU (:mod:`podnet.cni.pmtu`): an underlay hop smaller than the node's interface is found by
path-MTU discovery of the outer packets. The IPv4 device is created with outer ``df inherit``
(``--vxlan-df``; ``IFLA_VXLAN_DF`` 2: an inner packet with DF, which every IPv6 packet counts as,
goes out with DF, so a smaller hop answers "fragmentation needed" instead of fragmenting it; an
inner packet without DF still goes without, and a router may fragment it); outer IPv6 packets
are never fragmented on the way. The node learns the peer's path MTU from that ICMP, and
:func:`plan_path_mtus` gives every pod-CIDR route over that peer's VTEP the ``mtu`` metric
``path MTU - encapsulation``, which forwarding honours: the node answers the pod's next oversized
packet with the smaller MTU. ``--vxlan-df unset`` keeps flannel's way for IPv4 underlays (routers
fragment the outer packets; nothing is learned, as before). The DF mode is stated explicitly and
read back, so a device whose mode was changed by hand is recreated.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from prometheus_client import Gauge

from podnet.cni import pmtu, routes, rtnl
from podnet.cni.netops import HOST_PREFIX, node_netlink, node_rtnl
from podnet.kube import goip, names
from podnet.kube.objects import Node, parse_node as _parse_node
from podnet.kube.resources import Resource

log = logging.getLogger("podnet.cni.overlay")

BACKENDS = ("host-gw", "vxlan", "auto")
DEFAULT_VNI = 1
DEFAULT_PORT = 8472
"""flannel's port (the Linux kernel's historical VXLAN port), so firewalls written for flannel keep working."""
IANA_PORT = 4789

ANN_PREFIX = names.PODNET_PREFIX
ANN_BACKEND = names.BACKEND_ANNOTATION
ANN_VTEP_MAC = names.VTEP_MAC_ANNOTATION
ANN_PUBLIC_IP = names.PUBLIC_IP_ANNOTATION
DEVICE = {4: "podnet.vxlan", 6: "podnet.vxlan6"}
OVERHEAD = {4: 50, 6: 70}
DEFAULT_UNDERLAY_MTU = 1500
DF_UNSET, DF_SET, DF_INHERIT = 0, 1, 2
"""``IFLA_VXLAN_DF`` values (the outer header's DF bit: never, always, or the inner IPv4 DF bit, set for IPv6)."""
DF_NAMES = {DF_UNSET: "unset", DF_SET: "set", DF_INHERIT: "inherit"}
DF_MODES = {"inherit": DF_INHERIT, "unset": DF_UNSET}
"""The outer DF modes ``--vxlan-df`` offers for the IPv4 device."""

IGNORED = Gauge("podnet_cni_overlay_ignored_peers",
                "Peer VTEPs ignored at the last sync because their annotations are invalid or collide.", ["reason"])
BACKEND = Gauge("podnet_cni_overlay_backend", "The configured backend (1 for the one in use).", ["backend"])
PEERS = Gauge("podnet_cni_overlay_peer_cidrs", "Remote pod CIDRs by the backend used to reach them.", ["backend"])
IGNORE_REASONS = ("bad-vtep-mac", "bad-public-ip", "wrong-family", "no-underlay-address",
                  "duplicate-vtep-mac", "duplicate-public-ip")

_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_MAX_ANNOTATION = 256
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


# --------------------------------------------------------------------------- Node objects with annotations


@dataclass(frozen=True, slots=True)
class AnnotatedNode(Node):
    """A :class:`Node` plus its ``podnet.io/`` annotations (sorted ``(key, value)`` pairs, strings only)."""

    annotations: tuple[tuple[str, str], ...] = ()
    created: str = ""
    """metadata.creationTimestamp (RFC 3339, UTC, so text order is time order); '' if absent or malformed."""

    def annotation(self, key: str) -> str | None:
        return next((v for k, v in self.annotations if k == key), None)


def parse_node(raw: Mapping[str, Any]) -> AnnotatedNode:
    """:func:`podnet.kube.objects.parse_node`, keeping the ``podnet.io/`` annotations (values are
    validated where they are used, so a bad one costs only that node's VTEP, never the whole Node)."""
    node = _parse_node(raw)
    meta = raw.get("metadata") or {}
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    kept = ()
    if isinstance(ann, dict):
        kept = tuple(sorted((k, v[:_MAX_ANNOTATION]) for k, v in ann.items()
                            if isinstance(k, str) and k.startswith(ANN_PREFIX) and isinstance(v, str)))
    created = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    created = created if isinstance(created, str) and _RFC3339_UTC.fullmatch(created) else ""
    return AnnotatedNode(**{f: getattr(node, f) for f in Node.__dataclass_fields__}, annotations=kept,
                         created=created)


NODES = Resource("/api/v1", "nodes", "Node", False, parse_node)
"""The Node resource as the CNI daemon watches it (with the VTEP annotations)."""


def annotations_of(node: Node) -> dict[str, str]:
    return dict(node.annotations) if isinstance(node, AnnotatedNode) else {}


# --------------------------------------------------------------------------- config and host snapshot


@dataclass(frozen=True, slots=True)
class Config:
    backend: str = "auto"
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    mtu: int = 0
    """Pod MTU; 0 = detect from the underlay interface."""
    df: int = DF_INHERIT
    """The IPv4 device's outer DF mode (one of :data:`DF_MODES`); the IPv6 device has none to set."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: not one of {', '.join(BACKENDS)}")
        if not 1 <= self.vni <= 0xFFFFFF:
            raise ValueError(f"VNI {self.vni}: not in 1..16777215")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"VXLAN port {self.port}: not in 1..65535")
        if self.mtu and not 576 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu}: not in 576..65535")
        if self.df not in DF_MODES.values():
            raise ValueError(f"outer DF {self.df}: not one of {', '.join(DF_MODES)}")


def int_arg(lo: int, hi: int, what: str):
    """An argparse ``type`` for an integer flag in ``lo..hi`` (a clear usage error instead of a traceback)."""
    import argparse

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: not a decimal integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} {v}: not in {lo}..{hi}")
        return v

    return parse


@dataclass(frozen=True, slots=True)
class Iface:
    name: str
    mtu: int
    addrs: tuple[str, ...]
    """Global-scope addresses with prefix, e.g. ``192.168.1.2/24``."""


@dataclass(frozen=True, slots=True)
class Host:
    """The node's underlay interfaces (loopback, pod veths and podnet's own devices excluded)."""

    ifaces: tuple[Iface, ...] = ()

    def networks(self, version: int) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [i.network for f in self.ifaces for i in map(ipaddress.ip_interface, f.addrs) if i.version == version]

    def iface_of(self, ip: str) -> Iface | None:
        return next((f for f in self.ifaces for a in f.addrs if a.split("/")[0] == ip), None)

    def first_address(self, version: int) -> tuple[str, Iface] | None:
        for f in self.ifaces:
            for a in f.addrs:
                ip = ipaddress.ip_interface(a).ip
                if ip.version == version and not ip.is_link_local:
                    return str(ip), f
        return None


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    family: int
    vni: int
    port: int
    local: str
    mtu: int
    df: int = DF_UNSET
    """The outer header's DF mode (``IFLA_VXLAN_DF``)."""


@dataclass(frozen=True, slots=True)
class Vtep:
    mac: str
    ip: str


def local_underlay(own: Node | None, host: Host, version: int) -> tuple[str, Iface] | None:
    """This node's underlay address of ``version`` and its interface: the Node's own InternalIP (then
    ExternalIP) when it is on a local interface, else the first global address of that family."""
    for ip in (own.ips("InternalIP", "ExternalIP") if own else ()):
        if ipaddress.ip_address(ip).version == version and (iface := host.iface_of(ip)):
            return ip, iface
    return host.first_address(version)


def desired_devices(cfg: Config, own: Node | None, host: Host) -> tuple[Device, ...]:
    """One VXLAN device per underlay family this node has an address in; none with host-gw."""
    if cfg.backend == "host-gw":
        return ()
    out = []
    for fam in (4, 6):
        u = local_underlay(own, host, fam)
        if u:
            out.append(Device(DEVICE[fam], fam, cfg.vni, cfg.port, u[0], u[1].mtu - OVERHEAD[fam],
                              cfg.df if fam == 4 else DF_UNSET))
    return tuple(out)


def pod_mtu(cfg: Config, own: Node | None, host: Host) -> int:
    """The configured MTU, else the smallest the backend allows over the node's underlay interfaces."""
    if cfg.mtu:
        return cfg.mtu
    if cfg.backend == "host-gw":
        mtus = [u[1].mtu for fam in (4, 6) if (u := local_underlay(own, host, fam))]
        return min(mtus, default=DEFAULT_UNDERLAY_MTU)
    devs = desired_devices(cfg, own, host)
    return min((d.mtu for d in devs), default=DEFAULT_UNDERLAY_MTU - OVERHEAD[4])


def own_annotations(cfg: Config, vteps: Mapping[int, Vtep]) -> dict[str, str | None]:
    """What this node publishes on its Node (None = remove: a JSON merge-patch deletes null keys)."""
    out: dict[str, str | None] = {ANN_BACKEND: cfg.backend}
    for fam in (4, 6):
        v = vteps.get(fam)
        out[ANN_VTEP_MAC[fam]] = v.mac if v else None
        out[ANN_PUBLIC_IP[fam]] = v.ip if v else None
    return out


def annotation_patch(cfg: Config, vteps: Mapping[int, Vtep], own: Node | None) -> dict | None:
    """The merge patch that brings the own Node's annotations up to date, or None when they are."""
    want = own_annotations(cfg, vteps)
    have = annotations_of(own) if own else {}
    if own is None or all(have.get(k) == v for k, v in want.items()):
        return None
    return {"metadata": {"annotations": want}}


# --------------------------------------------------------------------------- peers


def go_ip(value: str) -> str | None:
    """Canonical text of an IP as Go's net.ParseIP accepts it (no zone, no leading zeros), else None."""
    try:
        return str(goip.parse_ip(value))
    except goip.IPError:
        return None


def valid_mac(value: str | None) -> str | None:
    """A unicast, non-zero Ethernet address in lower case, else None."""
    if value is None or not _MAC.fullmatch(value):
        return None
    mac = value.lower()
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        return None
    return mac


def peer_vtep(node: Node, fam: int) -> tuple[Vtep | None, str]:
    """The node's published VTEP for underlay family ``fam``; ``(None, "")`` when it publishes none,
    ``(None, reason)`` when what it publishes is unusable."""
    ann = annotations_of(node)
    raw_mac = ann.get(ANN_VTEP_MAC[fam])
    if raw_mac is None:
        return None, ""
    mac = valid_mac(raw_mac)
    if mac is None:
        return None, "bad-vtep-mac"
    raw_ip = ann.get(ANN_PUBLIC_IP[fam])
    if raw_ip is not None:
        ip = go_ip(raw_ip)
        if ip is None:
            return None, "bad-public-ip"
        if ipaddress.ip_address(ip).version != fam:
            return None, "wrong-family"
    else:
        ip = next((a for a in node.ips("InternalIP", "ExternalIP") if ipaddress.ip_address(a).version == fam), None)
        if ip is None:
            return None, "no-underlay-address"
    return Vtep(mac, ip), ""


@dataclass(frozen=True, slots=True)
class Neigh:
    dev: str
    ip: str
    mac: str


@dataclass(frozen=True, slots=True)
class Fdb:
    dev: str
    mac: str
    dst: str


@dataclass(frozen=True, slots=True)
class Addr:
    dev: str
    cidr: str
    """``10.244.1.0/32`` or ``fd00:10:244:1::/128``."""


def device_addrs(own_cidrs: Iterable[str], vteps: Mapping[int, Vtep]) -> frozenset[Addr]:
    """Pure. Each own pod CIDR's network address as a host address on the VXLAN device of the pod
    family (else the other family's device: dual-stack pods over a single-stack underlay); none
    without a device that is up."""
    out = set()
    for raw in own_cidrs:
        net = ipaddress.ip_network(raw, strict=False)
        fam = next((f for f in (net.version, 10 - net.version) if f in vteps), None)
        if fam is not None:
            out.add(Addr(DEVICE[fam], f"{net.network_address}/{net.max_prefixlen}"))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Plan:
    routes: routes.Desired
    neighs: frozenset[Neigh] = frozenset()
    fdbs: frozenset[Fdb] = frozenset()
    backends: tuple[tuple[str, str, str], ...] = ()
    """``(node, pod CIDR, "host-gw" | "vxlan")`` for every remote pod CIDR that gets a route."""
    ignored: tuple[tuple[str, str, str], ...] = ()
    """``(node, underlay family, reason)`` for every peer VTEP that was ignored."""
    addrs: frozenset["Addr"] = frozenset()
    """This node's addresses on its VXLAN devices: each own pod CIDR's network address."""
    holders: tuple[tuple["Claim", str], ...] = ()
    """``(claim, node)`` for every peer VTEP MAC and underlay address this plan accepts (whether the
    peer is reached over VXLAN or host-gw): the current owners :func:`plan` keeps on the next sync
    when another Node claims the same."""
    vxlan_peers: tuple[tuple[str, int, str], ...] = ()
    """``(pod CIDR, underlay family, peer underlay IP)`` for every route over a VXLAN device: whose
    path MTU :func:`plan_path_mtus` reads."""


Claim = tuple[int, str, str]
"""``(underlay family, "mac" | "ip", value)``: one VTEP MAC or underlay address a Node publishes."""


def _seniority(node: Node) -> tuple[bool, str, str]:
    """Age order among claimants with no current owner: a creationTimestamp first (one-second
    resolution, as metav1.Time serialises), then the older, then the name."""
    created = node.created if isinstance(node, AnnotatedNode) else ""
    return created == "", created, node.name


def _on_link(ip: str, host: Host) -> bool:
    a = ipaddress.ip_address(ip)
    return any(a in net for net in host.networks(a.version))


def plan(cfg: Config, nodes: Iterable[Node], self_name: str, own_cidrs: Iterable[str], host: Host,
         vteps: Mapping[int, Vtep], holders: Mapping[Claim, str] | None = None) -> Plan:
    """Pure. ``vteps``: this node's VXLAN devices that are up, by underlay family (a family whose
    device could not be brought up gets no VXLAN entries; host-gw peers are unaffected).
    ``holders``: the previous plan's :attr:`Plan.holders` (empty on a fresh start).

    A VTEP MAC or underlay address claimed by several Nodes goes to this node when it is its own,
    else to the Node that holds it in ``holders`` and still claims it, else to the oldest claimant
    (:func:`_seniority`); every other claimant's VTEP of that family is ignored.

    Per remote pod CIDR of family F: ``host-gw`` backend -> a route via the peer's address of
    family F; ``vxlan`` -> over the VTEP pair of underlay family F if both nodes have one, else
    the other family (dual-stack pods over a single-stack underlay); ``auto`` -> host-gw when the
    peer's address of family F is on one of this node's connected subnets, VXLAN otherwise.
    """
    nodes = sorted(nodes, key=lambda n: n.name)
    table: dict[str, str] = {str(ipaddress.ip_network(c, strict=False)): routes.BLACKHOLE for c in own_cidrs}
    unroutable: list[str] = []
    neighs: set[Neigh] = set()
    fdbs: set[Fdb] = set()
    backends: list[tuple[str, str, str]] = []
    ignored: list[tuple[str, str, str]] = []
    vxlan_peers: list[tuple[str, int, str]] = []

    peers: dict[str, dict[int, Vtep]] = {}
    if cfg.backend != "host-gw":
        for node in nodes:
            if node.name == self_name:
                continue
            peers[node.name] = {}
            for fam in (4, 6):
                v, why = peer_vtep(node, fam)
                if why:
                    ignored.append((node.name, f"ipv{fam}", why))
                elif v:
                    peers[node.name][fam] = v
        # A copied annotation never takes a working peer down: the current holder of a claim comes
        # first, then age, and a claim already taken is ignored.
        held = holders or {}
        senior = sorted((n for n in nodes if n.name in peers), key=_seniority)
        for fam in (4, 6):
            for attr, reason in (("mac", "duplicate-vtep-mac"), ("ip", "duplicate-public-ip")):
                owner: set[str] = {getattr(vteps[fam], attr)} if fam in vteps else set()
                holding = {name for name, pv in peers.items()
                           if fam in pv and held.get((fam, attr, getattr(pv[fam], attr))) == name}
                for node in sorted(senior, key=lambda n: n.name not in holding):  # stable: age order within
                    p = peers[node.name]
                    if fam not in p:
                        continue
                    if getattr(p[fam], attr) in owner:
                        ignored.append((node.name, f"ipv{fam}", reason))
                        p.pop(fam)
                    else:
                        owner.add(getattr(p[fam], attr))

    for node in nodes:
        if node.name == self_name:
            continue
        for raw in node.pod_cidrs:
            net = ipaddress.ip_network(raw, strict=False)
            cidr = str(net)
            if cidr in table:
                continue
            direct = next((a for a in node.ips("InternalIP", "ExternalIP")
                           if ipaddress.ip_address(a).version == net.version), None)
            use_gw = cfg.backend == "host-gw" or (cfg.backend == "auto" and direct and _on_link(direct, host))
            if use_gw and direct:
                table[cidr] = direct
                backends.append((node.name, cidr, "host-gw"))
                continue
            pv = peers.get(node.name, {})
            fam = next((f for f in (net.version, 10 - net.version) if f in pv and f in vteps), None)
            if fam is None:
                unroutable.append(f"{node.name}: {cidr}")
                continue
            dev, gw, peer = DEVICE[fam], str(net.network_address), pv[fam]
            table[cidr] = routes.onlink(gw, dev)
            neighs.add(Neigh(dev, gw, peer.mac))
            fdbs.add(Fdb(dev, peer.mac, peer.ip))
            backends.append((node.name, cidr, "vxlan"))
            vxlan_peers.append((cidr, fam, peer.ip))
    kept = tuple(sorted(((fam, attr, getattr(v, attr)), name) for name, pv in peers.items()
                        for fam, v in pv.items() for attr in ("mac", "ip")))
    return Plan(routes.Desired(table, tuple(unroutable)), frozenset(neighs), frozenset(fdbs), tuple(backends),
                tuple(sorted(set(ignored))),
                device_addrs(own_cidrs, vteps) if cfg.backend != "host-gw" else frozenset(), kept,
                tuple(vxlan_peers))


def plan_path_mtus(p: Plan, path_mtus: Mapping[str, int], device_mtus: Mapping[int, int]) -> Plan:
    """Pure. ``p`` with an ``mtu`` metric on every VXLAN route whose peer's underlay path MTU
    (``path_mtus``: peer underlay IP -> the path MTU the node learned, absent or 0 = none) leaves less
    than the device's MTU (``device_mtus``: by underlay family) for the pod packet
    (:func:`podnet.cni.pmtu.route_mtu`)."""
    mtus = {}
    for cidr, fam, peer in p.vxlan_peers:
        m = pmtu.route_mtu(path_mtus.get(peer, 0), OVERHEAD[fam], ipaddress.ip_network(cidr).version,
                           device_mtus.get(fam, 0))
        if m:
            mtus[cidr] = m
    return dataclasses.replace(p, routes=dataclasses.replace(p.routes, mtus=mtus))


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True, slots=True)
class LinkState:
    vni: int
    port: int
    local: str
    learning: bool
    mtu: int
    up: bool
    mac: str
    df: int = DF_UNSET


class OverlayOps(Protocol):
    """The netlink operations the overlay needs, in the node's network namespace. Failures raise
    OSError with the kernel's errno."""

    def host(self) -> Host: ...
    def vxlan_links(self) -> dict[str, LinkState]: ...
    def create_vxlan(self, dev: Device) -> None: ...
    def set_mtu(self, name: str, mtu: int) -> None: ...
    def set_up(self, name: str) -> None: ...
    def delete_link(self, name: str) -> None: ...
    def neighs(self, dev: str) -> set[Neigh]: ...
    def neigh_replace(self, n: Neigh) -> None: ...
    def neigh_del(self, n: Neigh) -> None: ...
    def fdbs(self, dev: str) -> set[Fdb]: ...
    def fdb_replace(self, f: Fdb) -> None: ...
    def fdb_del(self, f: Fdb) -> None: ...
    def addrs(self, dev: str) -> set[Addr]: ...
    def addr_add(self, a: Addr) -> None: ...
    def addr_del(self, a: Addr) -> None: ...
    def path_mtus(self, ips: list[str]) -> dict[str, int]:
        """The path MTU the node learned toward each of ``ips`` (or its route's own ``mtu`` metric); 0 if none."""
        ...


@dataclass
class DeviceResult:
    vteps: dict[int, Vtep] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def port_busy_message(dev: Device) -> str:
    return (f"VXLAN port {dev.port}/udp is already in use on this node: {dev.name} stays down and is retried; "
            f"peers over VXLAN (IPv{dev.family} underlay) are unreachable until the port is free, host-gw peers "
            f"are unaffected")


def sync_devices(devices: Iterable[Device], ops: OverlayOps) -> DeviceResult:
    """Create, fix or recreate the VXLAN devices and remove podnet's devices no longer wanted; VNI,
    port and local address cannot change on a live device, so a mismatch recreates it (as does a
    DF mode or learning flag other than the wanted one)."""
    res = DeviceResult()
    have = ops.vxlan_links()
    want = {d.name: d for d in devices}
    for name in sorted(set(have) - set(want)):
        try:
            ops.delete_link(name)
            res.changes.append(f"{name} removed")
        except OSError as e:
            res.errors.append(f"removing {name}: {e.strerror or e}")
    for dev in want.values():
        try:
            st = have.get(dev.name)
            want_st = (dev.vni, dev.port, dev.local, False, dev.df)
            if st is None or (st.vni, st.port, st.local, st.learning, st.df) != want_st:
                if st is not None:
                    ops.delete_link(dev.name)
                ops.create_vxlan(dev)
                res.changes.append(f"{dev.name} created (vni {dev.vni}, port {dev.port}, local {dev.local}, "
                                   f"df {DF_NAMES[dev.df]})")
                st = ops.vxlan_links()[dev.name]
            if st.mtu != dev.mtu:
                ops.set_mtu(dev.name, dev.mtu)
                res.changes.append(f"{dev.name} mtu {dev.mtu}")
            if not st.up:
                try:
                    ops.set_up(dev.name)
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        res.errors.append(port_busy_message(dev))
                        continue
                    raise
            res.vteps[dev.family] = Vtep(st.mac, dev.local)
        except OSError as e:
            res.errors.append(f"{dev.name}: {e.strerror or e}")
    return res


def _converge(want: set, have: set, remove: Callable[[Any], None], add: Callable[[Any], None],
              text: Callable[[Any], str], changes: list[str]) -> None:
    """Remove what is there and not wanted, then add what is wanted and missing (sorted, so the
    kernel sees the same order every time); each step noted in ``changes``."""
    for x in sorted(have - want, key=str):
        remove(x)
        changes.append(f"{text(x)} removed")
    for x in sorted(want - have, key=str):
        add(x)
        changes.append(text(x))


def sync_entries(p: Plan, devices: Iterable[str], ops: OverlayOps) -> tuple[list[str], list[str]]:
    """Make the device addresses, permanent neighbours and FDB entries on ``devices`` equal ``p``'s;
    (changes, errors)."""
    changes, errors = [], []
    for dev in devices:
        try:
            _converge({a for a in p.addrs if a.dev == dev}, ops.addrs(dev), ops.addr_del, ops.addr_add,
                      lambda a: f"addr {a.cidr} dev {dev}", changes)
            _converge({n for n in p.neighs if n.dev == dev}, ops.neighs(dev), ops.neigh_del, ops.neigh_replace,
                      lambda n: f"neigh {n.ip} {n.mac} dev {dev}", changes)
            _converge({f for f in p.fdbs if f.dev == dev}, ops.fdbs(dev), ops.fdb_del, ops.fdb_replace,
                      lambda f: f"fdb {f.mac} dst {f.dst} dev {dev}", changes)
        except OSError as e:
            errors.append(f"{dev} entries: {e.strerror or e}")
    return changes, errors


class KernelOverlayOps:
    """:class:`OverlayOps` on the node's network namespace, on the calling worker thread's long-lived
    node sockets: listings of every link and address from raw dumps (:func:`podnet.cni.netops.node_rtnl`),
    whose cost stays small with a veth per pod; changes and VXLAN details through pyroute2
    (:func:`podnet.cni.netops.node_netlink`)."""

    NUD_PERMANENT, NUD_NOARP, NTF_SELF, IFF_UP, IFA_F_NODAD = 0x80, 0x40, 0x02, 0x1, 0x02

    @staticmethod
    def _oserror(e: Exception) -> OSError:
        code = getattr(e, "code", 0) or errno.EIO
        return OSError(code, f"{e} ({errno.errorcode.get(code, code)})")

    def _call(self, fn):
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            return fn(node_netlink())
        except NetlinkError as e:
            raise self._oserror(e) from None

    @staticmethod
    def _links() -> list[rtnl.Link]:
        """Every link of the node netns, from a raw dump: a node with 1000 pods lists 1000 veths, which
        pyroute2 would decode into full message objects (seconds per listing on a busy node)."""
        return [rtnl.parse_link(b) for b in node_rtnl().dump(rtnl.all_links())]

    def host(self) -> Host:
        addrs: dict[int, list[str]] = {}
        for a in map(rtnl.parse_addr, node_rtnl().dump(rtnl.all_addrs())):
            if a.scope == 0 and a.address:
                addrs.setdefault(a.index, []).append(f"{a.address}/{a.prefixlen}")
        out = []
        for link in self._links():
            if link.flags & 0x8 or link.name.startswith(("podnet.", HOST_PREFIX)):  # IFF_LOOPBACK
                continue
            out.append(Iface(link.name, link.mtu or DEFAULT_UNDERLAY_MTU, tuple(addrs.get(link.index, ()))))
        return Host(tuple(out))

    def vxlan_links(self) -> dict[str, LinkState]:
        indexes = [link.index for link in self._links() if link.name in DEVICE.values()]
        if not indexes:
            return {}

        def get(ipr) -> dict[str, LinkState]:  # full decoding (IFLA_LINKINFO) for podnet's devices only
            out = {}
            for link in ipr.get_links(*indexes):
                name = link.get("ifname") or ""
                if name not in DEVICE.values():
                    continue
                info = link.get("IFLA_LINKINFO")
                data = info.get("IFLA_INFO_DATA") if info else None
                if not info or info.get("IFLA_INFO_KIND") != "vxlan" or data is None:
                    out[name] = LinkState(0, 0, "", True, link.get("mtu") or 0, False, "")
                    continue
                out[name] = LinkState(data.get("IFLA_VXLAN_ID") or 0, data.get("IFLA_VXLAN_PORT") or 0,
                                      data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6") or "",
                                      bool(data.get("IFLA_VXLAN_LEARNING")), link.get("mtu") or 0,
                                      bool(link["flags"] & self.IFF_UP), link.get("address") or "",
                                      data.get("IFLA_VXLAN_DF") or DF_UNSET)
            return out
        return self._call(get)

    def create_vxlan(self, dev: Device) -> None:
        local = {"vxlan_local": dev.local} if dev.family == 4 else {"vxlan_local6": dev.local}
        self._call(lambda ipr: ipr.link("add", ifname=dev.name, kind="vxlan", vxlan_id=dev.vni, vxlan_port=dev.port,
                                        vxlan_learning=0, vxlan_df=dev.df, mtu=dev.mtu, **local))

    def _index(self, ipr, name: str) -> int:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise OSError(errno.ENODEV, f"{name}: no such device")
        return idx[0]

    def set_mtu(self, name: str, mtu: int) -> None:
        self._call(lambda ipr: ipr.link("set", index=self._index(ipr, name), mtu=mtu))

    def set_up(self, name: str) -> None:
        self._call(lambda ipr: ipr.link("set", index=self._index(ipr, name), state="up"))

    def delete_link(self, name: str) -> None:
        self._call(lambda ipr: ipr.link("del", index=self._index(ipr, name)))

    def neighs(self, dev: str) -> set[Neigh]:
        def get(ipr) -> set[Neigh]:
            idx = self._index(ipr, dev)
            return {Neigh(dev, n.get("dst"), n.get("lladdr") or "")
                    for fam in (socket.AF_INET, socket.AF_INET6) for n in ipr.get_neighbours(family=fam, ifindex=idx)
                    if n["state"] & self.NUD_PERMANENT and n.get("dst")}
        return self._call(get)

    def neigh_replace(self, n: Neigh) -> None:
        self._call(lambda ipr: ipr.neigh("replace", dst=n.ip, lladdr=n.mac, ifindex=self._index(ipr, n.dev),
                                         state=self.NUD_PERMANENT, family=_af(n.ip)))

    def neigh_del(self, n: Neigh) -> None:
        self._call(lambda ipr: ipr.neigh("del", dst=n.ip, ifindex=self._index(ipr, n.dev), family=_af(n.ip)))

    def fdbs(self, dev: str) -> set[Fdb]:
        def get(ipr) -> set[Fdb]:
            idx = self._index(ipr, dev)
            return {Fdb(dev, f.get("lladdr"), f.get("dst")) for f in ipr.fdb("dump", ifindex=idx)
                    if f["ifindex"] == idx and f.get("dst") and f.get("lladdr")}
        return self._call(get)

    def fdb_replace(self, f: Fdb) -> None:
        self._call(lambda ipr: ipr.fdb("replace", ifindex=self._index(ipr, f.dev), lladdr=f.mac, dst=f.dst,
                                       state=self.NUD_PERMANENT | self.NUD_NOARP, flags=self.NTF_SELF))

    def fdb_del(self, f: Fdb) -> None:
        self._call(lambda ipr: ipr.fdb("del", ifindex=self._index(ipr, f.dev), lladdr=f.mac, dst=f.dst))

    def addrs(self, dev: str) -> set[Addr]:
        """Global-scope addresses on ``dev`` (the kernel's IPv6 link-local one is not podnet's)."""
        def get(ipr) -> set[Addr]:
            return {Addr(dev, f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
                    for m in ipr.get_addr(index=self._index(ipr, dev)) if m["scope"] == 0 and m.get_attr("IFA_ADDRESS")}
        return self._call(get)

    def addr_add(self, a: Addr) -> None:
        ip, plen = a.cidr.split("/")
        nodad = {"flags": self.IFA_F_NODAD} if ":" in ip else {}  # usable as a source at once
        self._call(lambda ipr: ipr.addr("add", index=self._index(ipr, a.dev), address=ip, prefixlen=int(plen), **nodad))

    def addr_del(self, a: Addr) -> None:
        ip, plen = a.cidr.split("/")
        self._call(lambda ipr: ipr.addr("del", index=self._index(ipr, a.dev), address=ip, prefixlen=int(plen)))

    def path_mtus(self, ips: list[str]) -> dict[str, int]:
        """``ip route get <ip>`` for each, in one batch: the RTAX_MTU metric of each answer, a learned path MTU
        (route exception) while it lasts; 0 where there is none or no route at all."""
        got = node_rtnl().batch([rtnl.get_route(ip) for ip in ips]) if ips else []
        return {ip: rtnl.parse_route(g).mtu if isinstance(g, bytes) else 0 for ip, g in zip(ips, got)}


def _af(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


# --------------------------------------------------------------------------- the daemon's side-effect layer


class Overlay:
    """Holds the config and the last applied state; every method is blocking (run it in a worker thread)."""

    def __init__(self, cfg: Config, ops: OverlayOps) -> None:
        self.cfg = cfg
        self.ops = ops
        for b in BACKENDS:
            BACKEND.labels(b).set(1 if b == cfg.backend else 0)
        self.vteps: dict[int, Vtep] = {}
        self.mtu = cfg.mtu or DEFAULT_UNDERLAY_MTU
        self._errors: tuple[str, ...] = ()
        self._ignored: tuple = ()
        self._summary = ""
        self._holders: dict[Claim, str] = {}
        self._path_mtus: dict[str, int] = {}

    def prepare(self, nodes: list[Node], self_name: str, own_cidrs: Iterable[str]) -> Plan:
        """Bring the VXLAN devices in line, then compute the plan for the devices that are up; a
        VTEP the previous plan gave to a Node stays with it while that Node still claims it."""
        own = next((n for n in nodes if n.name == self_name), None)
        host = self.ops.host()
        self.mtu = pod_mtu(self.cfg, own, host)
        res = sync_devices(desired_devices(self.cfg, own, host), self.ops)
        for c in res.changes:
            log.info("overlay %s", c)
        if tuple(res.errors) != self._errors:  # one line when it starts, one when it clears
            for e in res.errors:
                log.error("%s", e)
            if not res.errors and self._errors:
                log.info("overlay devices are up again")
            self._errors = tuple(res.errors)
        self.vteps = res.vteps
        p = plan(self.cfg, nodes, self_name, own_cidrs, host, self.vteps, self._holders)
        self._holders = dict(p.holders)  # the owners this daemon programs; kept on the next plan
        p = self._with_path_mtus(p, {d.family: d.mtu for d in desired_devices(self.cfg, own, host)})
        if p.ignored != self._ignored:
            self._ignored = p.ignored
            for name, fam, why in p.ignored:
                log.warning("node %s: ignoring its %s VTEP (%s)", name, fam, why)
        for reason in IGNORE_REASONS:
            IGNORED.labels(reason).set(sum(1 for i in p.ignored if i[2] == reason))
        for b in ("host-gw", "vxlan"):
            PEERS.labels(b).set(sum(1 for x in p.backends if x[2] == b))
        summary = ", ".join(f"{n} {c} {b}" for n, c, b in p.backends)
        if summary != self._summary:
            self._summary = summary
            log.info("backend %s: %s", self.cfg.backend, summary or "(no peers)")
        return p

    def _with_path_mtus(self, p: Plan, device_mtus: Mapping[int, int]) -> Plan:
        """``p`` with route MTUs from the path MTUs the node learned toward each peer VTEP; a change is
        one log line."""
        try:
            learned = {ip: m for ip, m in self.ops.path_mtus(sorted({ip for _, _, ip in p.vxlan_peers})).items() if m}
        except OSError as e:  # the routes keep their MTUs until the next re-check reads them
            log.warning("reading the underlay path MTUs: %s", e)
            learned = dict(self._path_mtus)
        if learned != self._path_mtus:
            gone = sorted(set(self._path_mtus) - set(learned))
            log.info("underlay path MTU: %s", ", ".join([f"{ip} {m}" for ip, m in sorted(learned.items())] +
                                                         [f"{ip} back to the interface's" for ip in gone]))
            self._path_mtus = learned
        return plan_path_mtus(p, learned, device_mtus)

    @property
    def errors(self) -> tuple[str, ...]:
        return self._errors

    def apply(self, p: Plan) -> list[str]:
        """Neighbours and FDB entries first (a route via the device must find its neighbour), then routes."""
        changes, errors = sync_entries(p, [DEVICE[f] for f in self.vteps], self.ops)
        try:
            changes += [f"route {c}" for c in routes.sync(p.routes)]
        except RuntimeError as e:
            errors.append(str(e))
        if errors:
            raise RuntimeError("; ".join(errors) + (f" (done: {', '.join(changes)})" if changes else ""))
        return changes
