"""Routes to other nodes' pod CIDRs: host-gw (via the node's InternalIP) or over an overlay device.

Which route each remote pod CIDR gets (host-gw or ``via <CIDR address> dev
podnet.vxlan onlink``) is decided by :func:`podnet.cni.overlay.plan`; this module
holds the host-gw-only computation and the one apply step for both kinds.

:func:`desired_routes` is pure: Node objects in, ``{pod CIDR: gateway}`` out
(plus a ``blackhole`` for this node's own CIDRs, so a packet for an unused
local pod IP is dropped instead of leaving by the default route; pod /32
routes are more specific). :func:`sync` is the one apply step: it lists the
routes podnet owns (marked with protocol 150), replaces wrong or missing
ones and deletes stale ones, so it is idempotent and run periodically it
brings back a route someone deleted (flannel re-checks every 10 s too).

Masquerade (only with ``--masquerade``): traffic from this node's pod CIDR
to anything *outside* the cluster CIDR is SNAT'ed; pod-to-pod traffic never
is. The rules live in chain ``PODNET-MASQ`` of the node namespace's nat table,
applied atomically with ``iptables-restore --noflush``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Iterable

from podnet.cni import rtnl
from podnet.kube.objects import Node

BLACKHOLE = "blackhole"
RTPROT_PODNET_GW = 150
"""Protocol number marking host-gw, overlay and blackhole routes (pod /32 routes use 149, netops.RTPROT_PODNET)."""
RTNH_F_ONLINK = 4


def onlink(gateway: str, dev: str) -> str:
    """The :attr:`Desired.routes` value of a route ``via gateway dev <dev> onlink`` (an overlay route)."""
    return f"{gateway} dev {dev} onlink"


def _split(via: str) -> tuple[str, str]:
    """(gateway, device) of a route value; device is '' for a plain host-gw next hop."""
    gw, _, dev = via.partition(" dev ")
    return gw, dev.removesuffix(" onlink")


@dataclass(frozen=True, slots=True)
class Desired:
    routes: dict[str, str]
    """pod CIDR -> next hop (another node's IP of the same family), 'blackhole', or
    :func:`onlink` ``(gateway, device)`` for a route over an overlay device."""
    unroutable: tuple[str, ...] = ()
    """``node: pod CIDR`` pairs that get no route because the node lists no address of the
    CIDR's family (e.g. an IPv6 pod CIDR on a node with only an IPv4 InternalIP) or, over
    VXLAN, because it or this node has no usable VTEP."""
    mtus: dict[str, int] = field(default_factory=dict)
    """pod CIDR -> the route's ``mtu`` metric, for routes that need one below their device's MTU (a smaller
    underlay path to that peer); a CIDR not listed gets a route without one. IPv4 and IPv6 forwarding
    both honour it: a forwarded packet over it with DF (every IPv6 packet) is answered with
    "fragmentation needed" / "packet too big" carrying this MTU."""


def desired_routes(nodes: Iterable[Node], self_name: str, own_cidrs: Iterable[str]) -> Desired:
    """Pure. CIDRs and next hops are in the kernel's canonical text form (``fd00:1::/64``, not
    ``FD00:0001:0::/64``), so :func:`sync` compares like with like and never re-replaces a correct
    route; a pod CIDR whose node has no address of the same family gets no route."""
    routes: dict[str, str] = {str(ipaddress.ip_network(c, strict=False)): BLACKHOLE for c in own_cidrs}
    unroutable: list[str] = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name == self_name:
            continue
        for raw in node.pod_cidrs:
            net = ipaddress.ip_network(raw, strict=False)
            cidr = str(net)
            via = next((str(a) for a in map(ipaddress.ip_address, node.ips("InternalIP", "ExternalIP"))
                        if a.version == net.version), None)
            if via is None:
                unroutable.append(f"{node.name}: {cidr}")
            elif cidr not in routes:
                routes[cidr] = via
    return Desired(routes, tuple(unroutable))


def _family(cidr: str) -> int:
    return socket.AF_INET6 if ":" in cidr else socket.AF_INET


def current_routes() -> dict[str, tuple[str, int]]:
    """podnet's routes to other nodes in the main table of the calling thread's netns: dst -> (via, mtu
    metric or 0).

    Raw dumps (:mod:`podnet.cni.rtnl`) whose answers are decoded only when their protocol is
    podnet's: a node with 1000 pods has 1000 routes to pods that are skipped by one byte."""
    out = {}
    names: dict[int, str] | None = None
    with rtnl.Rtnl() as nl:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for body in nl.dump(rtnl.all_routes(fam)):
                if rtnl.route_proto(body) != RTPROT_PODNET_GW:
                    continue
                r = rtnl.parse_route(body)
                if r.table != rtnl.RT_TABLE_MAIN:
                    continue
                dst = f"{r.dst or ('::' if fam == socket.AF_INET6 else '0.0.0.0')}/{r.dst_len}"
                if r.type == 6:  # RTN_BLACKHOLE
                    via = BLACKHOLE
                elif r.flags & RTNH_F_ONLINK:
                    if names is None:
                        names = {link.index: link.name for link in map(rtnl.parse_link, nl.dump(rtnl.all_links()))}
                    via = onlink(r.gateway, names.get(r.oif, "?"))
                else:
                    via = r.gateway
                out[dst] = (via, r.mtu)
    return out


def sync(desired: Desired) -> list[str]:
    """Make the node's podnet-owned routes equal ``desired``; returns the changes made.

    Each route is handled on its own: one that fails is reported (RuntimeError
    after the others were done) and retried on the next sync.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    changes, errors = [], []
    with IPRoute() as ipr:
        have = current_routes()
        for dst, via in desired.routes.items():
            mtu = desired.mtus.get(dst, 0) if via != BLACKHOLE else 0
            if have.get(dst) == (via, mtu):
                continue
            kw = {"dst": dst, "family": _family(dst), "proto": RTPROT_PODNET_GW}
            if mtu:
                kw["metrics"] = {"mtu": mtu}
            gw, dev = _split(via)
            try:
                if via == BLACKHOLE:
                    ipr.route("replace", type="blackhole", **kw)
                elif dev:
                    idx = ipr.link_lookup(ifname=dev)
                    if not idx:
                        errors.append(f"{dst} via {via}: no device {dev}")
                        continue
                    ipr.route("replace", gateway=gw, oif=idx[0], flags=RTNH_F_ONLINK, **kw)
                else:
                    ipr.route("replace", gateway=via, **kw)
                changes.append(f"{dst} -> {via}" + (f" mtu {mtu}" if mtu else ""))
            except NetlinkError as e:
                errors.append(f"{dst} via {via}: {e}")
        for dst, (via, _mtu) in have.items():
            if dst in desired.routes:
                continue
            kw = {"dst": dst, "family": _family(dst), "proto": RTPROT_PODNET_GW}
            if via == BLACKHOLE:
                kw["type"] = "blackhole"
            try:
                ipr.route("del", **kw)
                changes.append(f"{dst} removed")
            except NetlinkError as e:
                if e.code != errno.ESRCH:
                    errors.append(f"removing {dst}: {e}")
    if errors:
        raise RuntimeError("; ".join(errors) + (f" (done: {', '.join(changes)})" if changes else ""))
    return changes


def masquerade_rules(pod_cidrs: Iterable[str], cluster_cidrs: Iterable[str], enabled: bool) -> str:
    """iptables-restore text for one family: the PODNET-MASQ chain, flushed and refilled."""
    lines = ["*nat", ":PODNET-MASQ - [0:0]", "-F PODNET-MASQ"]
    if enabled:
        for c in cluster_cidrs:
            lines.append(f"-A PODNET-MASQ -d {c} -j RETURN")
        lines.append("-A PODNET-MASQ -j MASQUERADE")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def apply_masquerade(pod_cidrs: list[str], cluster_cidrs: list[str], enabled: bool) -> None:
    for fam, tool in ((4, "iptables"), (6, "ip6tables")):
        pods = [c for c in pod_cidrs if ipaddress.ip_network(c).version == fam]
        clusters = [c for c in cluster_cidrs if ipaddress.ip_network(c).version == fam]
        if not pods or not enabled:
            continue
        subprocess.run([f"{tool}-restore", "--noflush", "--wait"], input=masquerade_rules(pods, clusters, True),
                       text=True, check=True, capture_output=True)
        for c in pods:
            rule = ["POSTROUTING", "-s", c, "-m", "comment", "--comment", "podnet pod traffic",
                    "-j", "PODNET-MASQ"]
            if subprocess.run([tool, "--wait", "-t", "nat", "-C", *rule], capture_output=True).returncode != 0:
                subprocess.run([tool, "--wait", "-t", "nat", "-A", *rule], check=True, capture_output=True)
