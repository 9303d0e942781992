"""Lab topology: what the user asked for (:class:`LabSpec`), checked, then planned.

Pure module: no side effects. :func:`validate` returns every problem with the
flag or file key to change, so ``podnet lab up`` refuses a topology that cannot
work before it creates anything. :func:`plan` turns a valid spec into every
name and address the lab will use (:class:`LabPlan`), deterministically, so
``up``, ``check``, ``down`` and ``demo`` all agree on them.

Underlay layouts (``--underlay flat|routed|mixed``, or ``underlay`` in the file):

- ``flat``: one L2 segment (bridge ``pnl-br``) holds every node and the API server, upstream
  and outside hosts; the API server's host routes every pod CIDR via its node.
- ``routed``: the underlay CIDR is split into equal blocks, one segment per node plus a
  services segment (API server, upstream DNS, outside client), joined by a router namespace
  (``pnl-<lab>-rt``) that knows no pod CIDR. host-gw cannot cross it; VXLAN can.
- ``mixed``: as ``routed`` with two segments of nodes: the first two nodes share one, the
  others share another, so ``auto`` uses host-gw between n1 and n2 and VXLAN to the rest.

In ``routed`` and ``mixed`` the CNI daemons masquerade pod traffic that leaves the cluster CIDR
(flannel's ``ipMasq``), since nothing beyond the nodes routes pod CIDRs.

Naming: everything carries the ``pnl-`` prefix. Kubernetes node names are
``<lab>-n<i>``; the node's netns is ``pnl-<node>``; pod netns are
``pnl-<node>-p<k>``. Interface names live inside lab namespaces only, so they
are short fixed names (``pnl-br``, ``pnl-n1``, ``eth0``) of at most 15 bytes.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "LabSpec", "LabPlan", "NodePlan", "TopologyError", "validate", "plan", "load_topology_file",
    "PREFIX", "RUN_ROOT", "DATA_ROOT", "IFNAMSIZ", "EXTERNAL_POOL", "LAYOUTS", "BACKENDS", "SegmentPlan",
    "layout_of",
]

PREFIX = "pnl-"
RUN_ROOT = Path("/run/podnet")
DATA_ROOT = Path("/var/lib/podnet")
IFNAMSIZ = 15
MAX_NODES = 64
# Addresses a node's pod CIDR loses: network, broadcast, the CNI gateway.
RESERVED_PER_NODE_CIDR = 3
# Headroom per node for pods the check and demo create beside the user's pods
# (check pods, the DNS pod, the sample app).
HEADROOM_PODS = 8
# Underlay host numbers: .1 API server (underlay netns), .2 upstream DNS, .3 outside
# client; nodes from .11 on.
UNDERLAY_FIRST_NODE = 11

# Addresses for Service externalIPs and LoadBalancer ingress. The outside host routes this
# range to the first node, as a router (or a cloud load balancer) in front of the cluster would.
EXTERNAL_POOL = "198.51.100.0/24"

LAYOUTS = ("flat", "routed", "mixed")
# The CNI daemon's backends (podnet-cni daemon --backend).
BACKENDS = ("auto", "host-gw", "vxlan")
# In routed layouts each block's host numbers: .1 the router; in the services block
# .2 API server, .3 upstream DNS, .4 outside client; nodes from .11 on.

_LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class TopologyError(ValueError):
    """A topology that cannot work; ``problems`` lists each with what to change."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LabSpec:
    """What the user asked for (flags or a topology file)."""

    name: str = "lab"
    nodes: int = 2
    pods_per_node: int = 3
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    underlay: str = "192.168.77.0/24"
    node_cidr_mask: int = 24
    layout: str = "flat"
    backend: str = "auto"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], base: "LabSpec | None" = None) -> "LabSpec":
        """Overlay ``raw`` (file keys, with ``-`` or ``_``) on ``base``; unknown keys are errors."""
        known = {f.name: f.type for f in fields(cls)}
        out: dict[str, Any] = {}
        bad = []
        for k, v in raw.items():
            key = str(k).replace("-", "_")
            if key == "underlay_cidr":
                key = "underlay"
            elif key == "underlay" and str(v) in LAYOUTS:
                key = "layout"
            if key not in known:
                bad.append(f"unknown topology key {k!r} (known: {', '.join(sorted(known))})")
                continue
            if v is None:
                continue
            want_int = key in ("nodes", "pods_per_node", "node_cidr_mask")
            if want_int and (not isinstance(v, int) or isinstance(v, bool)):
                try:
                    v = int(str(v))
                except ValueError:
                    bad.append(f"{key.replace('_', '-')}: {v!r} is not a whole number")
                    continue
            if not want_int:
                v = str(v)
            out[key] = v
        if bad:
            raise TopologyError(bad)
        return replace(base or cls(), **out)


def load_topology_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON topology file into a flat mapping."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TopologyError([f"cannot read topology file {p}: {e.strerror}"]) from None
    try:
        data = tomllib.loads(text) if p.suffix != ".json" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise TopologyError([f"topology file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}"]) from None
    if not isinstance(data, dict):
        raise TopologyError([f"topology file {p} must hold a table of keys"])
    return data.get("lab", data) if isinstance(data.get("lab", data), dict) else data


def layout_of(value: str) -> tuple[str, str]:
    """``--underlay`` takes a layout word or a CIDR: ("layout", word) or ("underlay", CIDR)."""
    return ("layout", value) if value in LAYOUTS else ("underlay", value)


def _segments_of(spec: LabSpec) -> list[list[int]]:
    """Node indexes per node segment (1-based); flat has one segment with every node."""
    idx = list(range(1, spec.nodes + 1))
    if spec.layout == "routed":
        return [[i] for i in idx]
    if spec.layout == "mixed":
        return [idx[:2], idx[2:]]
    return [idx]


def _block_prefixlen(spec: LabSpec, underlay: ipaddress.IPv4Network) -> int:
    """Prefix length of each routed block: the underlay split into (node segments + 1) blocks."""
    count = len(_segments_of(spec)) + 1
    return underlay.prefixlen + max(0, (count - 1).bit_length())


def _net(problems: list[str], flag: str, value: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        hint = ""
        try:
            hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
        except ValueError:
            pass
        if flag == "underlay" and not hint:
            hint = f" (--underlay also takes a layout: {', '.join(LAYOUTS)})"
        problems.append(f"--{flag} {value!r} is not a CIDR: {e}{hint}")
        return None
    if net.version != 4:
        problems.append(f"--{flag} {value}: the lab is IPv4-only; give an IPv4 CIDR")
        return None
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        problems.append(f"--{flag} {value} is a reserved range; use a private range such as 10.x or 192.168.x")
        return None
    return net


def validate(spec: LabSpec) -> list[str]:
    """Every reason ``spec`` cannot work, each saying what to change; [] when it is fine."""
    p: list[str] = []
    if not _LAB_NAME.match(spec.name):
        p.append(
            f"--name {spec.name!r} is not a valid lab name: use 1-10 lower-case letters and digits, starting with a letter"
        )
    if not 1 <= spec.nodes <= MAX_NODES:
        p.append(f"--nodes {spec.nodes}: give between 1 and {MAX_NODES} nodes")
    if spec.pods_per_node < 0:
        p.append(f"--pods-per-node {spec.pods_per_node}: give 0 or more pods per node")
    cluster = _net(p, "cluster-cidr", spec.cluster_cidr)
    service = _net(p, "service-cidr", spec.service_cidr)
    underlay = _net(p, "underlay", spec.underlay)
    nets = [("--cluster-cidr", cluster), ("--service-cidr", service), ("--underlay", underlay)]
    for i, (fa, a) in enumerate(nets):
        for fb, b in nets[i + 1:]:
            if a is not None and b is not None and a.overlaps(b):
                p.append(f"{fa} {a} overlaps {fb} {b}: choose ranges that do not overlap")
    pool = ipaddress.ip_network(EXTERNAL_POOL)
    for fa, a in nets:
        if a is not None and a.overlaps(pool):
            p.append(f"{fa} {a} overlaps the lab's external IP pool {pool} (externalIPs, LoadBalancer "
                     "ingress): choose another range")
    if cluster is not None:
        if not cluster.prefixlen <= spec.node_cidr_mask <= 30:
            p.append(
                f"--node-cidr-mask {spec.node_cidr_mask} must lie between the cluster CIDR's /{cluster.prefixlen} and /30"
            )
        else:
            slots = 2 ** (spec.node_cidr_mask - cluster.prefixlen)
            if 1 <= spec.nodes <= MAX_NODES and spec.nodes > slots:
                p.append(
                    f"--cluster-cidr {cluster} holds only {slots} node CIDRs of /{spec.node_cidr_mask} for "
                    f"{spec.nodes} nodes: use a larger --cluster-cidr or a larger --node-cidr-mask"
                )
            usable = 2 ** (32 - spec.node_cidr_mask) - RESERVED_PER_NODE_CIDR
            need = spec.pods_per_node + HEADROOM_PODS
            if spec.pods_per_node >= 0 and need > usable:
                wider = max(0, 32 - (need + RESERVED_PER_NODE_CIDR - 1).bit_length())
                p.append(
                    f"--pods-per-node {spec.pods_per_node} (+{HEADROOM_PODS} for lab pods) does not fit a "
                    f"/{spec.node_cidr_mask} node pod CIDR ({usable} usable addresses): lower --pods-per-node "
                    f"to at most {max(0, usable - HEADROOM_PODS)} or set --node-cidr-mask {wider}"
                )
    if service is not None and service.num_addresses < 16:
        p.append(f"--service-cidr {service} is too small (the DNS service takes its 10th address): use /28 or larger")
    if spec.layout not in LAYOUTS:
        p.append(f"--underlay {spec.layout!r}: give a layout ({', '.join(LAYOUTS)}) or a CIDR")
    if spec.backend not in BACKENDS:
        p.append(f"--backend {spec.backend!r}: give one of {', '.join(BACKENDS)}")
    if spec.layout == "mixed" and spec.nodes < 3:
        p.append(f"--underlay mixed needs at least 3 nodes (two share a subnet, the rest another): "
                 f"--nodes {spec.nodes} is too few")
    routed = spec.layout in ("routed", "mixed")
    if underlay is not None and routed and 1 <= spec.nodes <= MAX_NODES and spec.layout in LAYOUTS:
        bl = _block_prefixlen(spec, underlay)
        need = UNDERLAY_FIRST_NODE - 1 + max(len(s) for s in _segments_of(spec))
        if bl > 30 or 2 ** (32 - bl) - 2 < need:
            blocks = len(_segments_of(spec)) + 1
            p.append(
                f"--underlay-cidr {underlay} split into {blocks} subnets gives /{bl} subnets, too small for "
                f"{need} host numbers each: use a larger underlay CIDR such as a /16"
            )
    elif underlay is not None and 1 <= spec.nodes <= MAX_NODES:
        hosts = underlay.num_addresses - 2
        if UNDERLAY_FIRST_NODE - 1 + spec.nodes > hosts:
            p.append(
                f"--underlay {underlay} has {max(hosts, 0)} host addresses; {spec.nodes} nodes need "
                f"{UNDERLAY_FIRST_NODE - 1 + spec.nodes}: use a larger underlay such as a /24"
            )
    return p


@dataclass(frozen=True)
class NodePlan:
    name: str          # Kubernetes node name, <lab>-n<i>
    index: int
    netns: str         # pnl-<lab>-n<i>
    ip: str            # underlay address (InternalIP)
    underlay_if: str   # the veth end on the underlay bridge (inside the underlay netns)
    segment: int = 0   # index into LabPlan.segments
    prefixlen: int = 24
    gateway: str = ""  # default route (the API server's host when flat, the router when routed)

    def pod_netns(self, k: int) -> str:
        return f"{self.netns}-p{k}"


@dataclass(frozen=True)
class SegmentPlan:
    """One L2 segment: a bridge in the underlay netns, and the router's leg on it (routed layouts)."""

    index: int
    cidr: str
    bridge: str
    router_ip: str = ""   # the router's address on this segment ("" when flat: no router)
    router_if: str = ""   # the router leg's bridge port (inside the underlay netns)
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabPlan:
    """Every name and address of one lab, derived from a valid :class:`LabSpec`."""

    spec: LabSpec
    prefix: str                # pnl-<lab>-  (sweep prefix)
    underlay_netns: str
    bridge: str
    underlay_prefixlen: int
    apiserver_ip: str          # on the bridge, in the underlay netns
    apiserver_port: int
    upstream_netns: str
    upstream_ip: str
    outside_netns: str
    outside_ip: str
    dns_service_ip: str
    nodes: tuple[NodePlan, ...] = field(default=())
    external_pool: str = EXTERNAL_POOL
    run_dir: Path = RUN_ROOT
    data_dir: Path = DATA_ROOT
    segments: tuple[SegmentPlan, ...] = field(default=())
    router_netns: str = ""     # "" when flat
    services_gateway: str = "" # default route of the API server/upstream/outside hosts ("" when flat)

    @property
    def routed(self) -> bool:
        return bool(self.router_netns)

    @property
    def master(self) -> str:
        """The API server URL as seen from inside lab namespaces."""
        return f"https://{self.apiserver_ip}:{self.apiserver_port}"

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def resolv_conf(self, namespace: str) -> str:
        return (
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {self.dns_service_ip}\n"
            "options ndots:5\n"
        )


def plan(spec: LabSpec, run_root: Path = RUN_ROOT, data_root: Path = DATA_ROOT) -> LabPlan:
    """All names and addresses for ``spec``; raises :class:`TopologyError` when it is invalid."""
    problems = validate(spec)
    if problems:
        raise TopologyError(problems)
    ul = ipaddress.ip_network(spec.underlay)
    svc = ipaddress.ip_network(spec.service_cidr)
    prefix = f"{PREFIX}{spec.name}-"
    if spec.layout == "flat":
        nodes = tuple(
            NodePlan(
                name=f"{spec.name}-n{i}",
                index=i,
                netns=f"{prefix}n{i}",
                ip=str(ul.network_address + UNDERLAY_FIRST_NODE - 1 + i),
                underlay_if=f"{PREFIX}n{i}",
                prefixlen=ul.prefixlen,
                gateway=str(ul.network_address + 1),
            )
            for i in range(1, spec.nodes + 1)
        )
        segments = (SegmentPlan(0, str(ul), f"{PREFIX}br", nodes=tuple(n.name for n in nodes)),)
        hosts = {"api": ul.network_address + 1, "up": ul.network_address + 2, "out": ul.network_address + 3}
        services_plen, router, services_gw = ul.prefixlen, "", ""
    else:
        blocks = list(ul.subnets(new_prefix=_block_prefixlen(spec, ul)))
        segs: list[SegmentPlan] = [SegmentPlan(0, str(blocks[0]), f"{PREFIX}br0", str(blocks[0].network_address + 1),
                                               f"{PREFIX}rt0")]
        node_list: list[NodePlan] = []
        for si, members in enumerate(_segments_of(spec), start=1):
            b = blocks[si]
            for pos, i in enumerate(members, start=1):
                node_list.append(NodePlan(
                    name=f"{spec.name}-n{i}", index=i, netns=f"{prefix}n{i}",
                    ip=str(b.network_address + UNDERLAY_FIRST_NODE - 1 + pos), underlay_if=f"{PREFIX}n{i}",
                    segment=si, prefixlen=b.prefixlen, gateway=str(b.network_address + 1)))
            segs.append(SegmentPlan(si, str(b), f"{PREFIX}br{si}", str(b.network_address + 1), f"{PREFIX}rt{si}",
                                    tuple(f"{spec.name}-n{i}" for i in members)))
        nodes = tuple(sorted(node_list, key=lambda n: n.index))
        segments = tuple(segs)
        b0 = blocks[0]
        hosts = {"api": b0.network_address + 2, "up": b0.network_address + 3, "out": b0.network_address + 4}
        services_plen, router, services_gw = b0.prefixlen, f"{prefix}rt", str(b0.network_address + 1)
    for n in nodes:
        assert len(n.underlay_if) <= IFNAMSIZ
    return LabPlan(
        spec=spec,
        prefix=prefix,
        underlay_netns=f"{prefix}ul",
        bridge=segments[0].bridge,
        underlay_prefixlen=services_plen,
        apiserver_ip=str(hosts["api"]),
        apiserver_port=6443,
        upstream_netns=f"{prefix}up",
        upstream_ip=str(hosts["up"]),
        outside_netns=f"{prefix}out",
        outside_ip=str(hosts["out"]),
        dns_service_ip=str(svc.network_address + 10),
        nodes=nodes,
        run_dir=run_root / spec.name,
        data_dir=data_root / spec.name,
        segments=segments,
        router_netns=router,
        services_gateway=services_gw,
    )
