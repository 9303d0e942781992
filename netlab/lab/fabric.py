"""The lab's wires: the underlay segments, node namespaces, the router, the outside and upstream hosts.

Layout (all inside lab namespaces; the root namespace is never touched). Flat
(``--underlay flat``, one segment)::

    pnl-<lab>-ul   bridge pnl-br with the API server's address (.1); routes to every
                   node's pod CIDR via that node (so pods can reach the API server);
                   no forwarding (outside hosts cannot reach pod IPs through it)
    pnl-<lab>-up   the upstream DNS host (.2), dnsmasq, routes to pod CIDRs
    pnl-<lab>-out  the outside client (.3), default route via .1, the external IP pool
                   (externalIPs, LoadBalancer ingress) routed via the first node
    pnl-<lab>-n<i> one node per netns: eth0 on the bridge (.10+i), ip_forward on,
                   no ICMP rate limit (so REJECTed clients always see "refused")

Routed and mixed (``--underlay routed|mixed``): the underlay netns holds one bridge per
segment (``pnl-br0`` the services segment, ``pnl-br<k>`` the node segments) and the API
server's address on ``pnl-br0``; ``pnl-<lab>-rt`` is the router, one leg (``eth<k>``, the
segment's .1) per bridge, forwarding on, no route to any pod CIDR (it routes the external
IP pool to the first node, as a load balancer in front of the cluster would). Every host's
default route is its segment's router leg.

Each host's eth0 is one end of a veth whose other end (pnl-n<i>, pnl-up, pnl-out)
is enslaved to its segment's bridge. :func:`build` is not idempotent on purpose: ``up``
refuses to run over an existing lab, and ``down`` (a sweep by prefix) removes it.

Sysctls: a new network namespace copies the root namespace's IPv4 ``conf/all`` and
``conf/default`` settings (``ip_forward`` among them; kernel ``devconf_inherit_init_net``
0, its default), so :func:`sysctls` gives every namespace the lab creates an explicit
value for every setting the lab relies on, written right after the namespace exists and
before any interface is moved in.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from podnet.host.netns import Netns, run
from podnet.host.nsenter import exec_argv
from podnet.netlab.lab.topology import LabPlan, PREFIX

__all__ = ["Host", "hosts", "build", "add_pod_cidr_routes", "batch", "sysctls", "namespaces", "RELIED_ON"]

# Settings every lab namespace gets explicitly (the inherited ones and the per-netns ones the
# lab depends on). rp_filter off: the kernel's own default, which a host with strict reverse-path
# filtering would otherwise pass on (and VXLAN/host-gw paths are asymmetric in routed layouts).
RELIED_ON = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
             "net.ipv4.icmp_ratelimit")
# The kernel's default ICMP rate limit (ms); lab hosts that are not nodes keep it.
ICMP_RATELIMIT_DEFAULT = "1000"


@dataclass(frozen=True)
class Host:
    netns: str
    ip: str
    bridge_port: str    # veth end on the bridge, inside the underlay netns
    forwarding: bool
    bridge: str = f"{PREFIX}br"
    prefixlen: int = 24
    gateway: str = ""


def hosts(plan: LabPlan) -> list[Host]:
    """Every namespace attached to an underlay bridge, in build order."""
    seg0 = plan.segments[0]
    gw = plan.services_gateway or plan.apiserver_ip
    out = [
        Host(plan.upstream_netns, plan.upstream_ip, f"{PREFIX}up", False, seg0.bridge, plan.underlay_prefixlen, gw),
        Host(plan.outside_netns, plan.outside_ip, f"{PREFIX}out", False, seg0.bridge, plan.underlay_prefixlen, gw),
    ]
    out += [Host(n.netns, n.ip, n.underlay_if, True, plan.segments[n.segment].bridge, n.prefixlen, n.gateway)
            for n in plan.nodes]
    return out


def namespaces(plan: LabPlan) -> list[str]:
    """Every network namespace :func:`build` creates, in creation order."""
    out = [plan.underlay_netns] + ([plan.router_netns] if plan.router_netns else [])
    return out + [h.netns for h in hosts(plan)]


def sysctls(plan: LabPlan) -> dict[str, dict[str, str]]:
    """netns -> {key: value} for every key of :data:`RELIED_ON`, for every namespace the lab creates.

    Forwarding is on exactly in the nodes and the router; the underlay (API server) host does
    not forward, so outside hosts cannot reach pod IPs through it.
    """
    node_ns = {n.netns for n in plan.nodes}
    out = {}
    for ns in namespaces(plan):
        node = ns in node_ns
        forwards = node or ns == plan.router_netns
        out[ns] = {
            "net.ipv4.ip_forward": "1" if forwards else "0",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            # A Service without endpoints is REJECTed with ICMP; the kernel's per-peer ICMP
            # rate limit (1/s after a burst of 6) would turn a fast client's later refusals
            # into timeouts, which is the rate limit, not the proxy. Lab nodes lift it.
            "net.ipv4.icmp_ratelimit": "0" if node else ICMP_RATELIMIT_DEFAULT,
        }
    return out


def batch(netns: str, commands: list[str]) -> None:
    """Run ``ip`` commands inside ``netns`` in one process (``ip -n NS -batch -``)."""
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def _add_netns(name: str, settings: dict[str, str]) -> Netns:
    run(["ip", "netns", "add", name])
    ns = Netns(name)
    ns.run("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items()))
    ns.ip("link", "set", "lo", "up")
    return ns


def build(plan: LabPlan, progress=lambda msg: None) -> None:
    """Create the underlay, its bridges, the router, and every host on it (see module docstring)."""
    want = sysctls(plan)
    ul = _add_netns(plan.underlay_netns, want[plan.underlay_netns])
    cmds = []
    for seg in plan.segments:
        cmds += [f"link add {seg.bridge} type bridge", f"link set {seg.bridge} up"]
    cmds.append(f"addr add {plan.apiserver_ip}/{plan.underlay_prefixlen} dev {plan.segments[0].bridge}")
    if plan.services_gateway:
        cmds.append(f"route add default via {plan.services_gateway}")
    batch(ul.name, cmds)
    if plan.router_netns:
        progress(f"router {plan.router_netns}: " + ", ".join(s.cidr for s in plan.segments))
        rt = _add_netns(plan.router_netns, want[plan.router_netns])
        for seg in plan.segments:
            batch(ul.name, [
                f"link add {seg.router_if} type veth peer name eth{seg.index} netns {rt.name}",
                f"link set {seg.router_if} master {seg.bridge}",
                f"link set {seg.router_if} up",
            ])
            plen = seg.cidr.split("/")[1]
            batch(rt.name, [f"addr add {seg.router_ip}/{plen} dev eth{seg.index}", f"link set eth{seg.index} up"])
        batch(rt.name, [f"route add {plan.external_pool} via {plan.nodes[0].ip}"])
    for h in hosts(plan):
        progress(f"host {h.netns} ({h.ip})")
        ns = _add_netns(h.netns, want[h.netns])
        batch(ul.name, [
            f"link add {h.bridge_port} type veth peer name eth0 netns {h.netns}",
            f"link set {h.bridge_port} master {h.bridge}",
            f"link set {h.bridge_port} up",
        ])
        batch(ns.name, [
            f"addr add {h.ip}/{h.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {h.gateway}",
        ])
        if h.netns == plan.outside_netns and not plan.router_netns:
            batch(ns.name, [f"route add {plan.external_pool} via {plan.nodes[0].ip}"])


def add_pod_cidr_routes(plan: LabPlan, pod_cidrs: dict[str, str]) -> None:
    """Flat layout: route each node's pod CIDR via that node from the underlay and upstream hosts.

    (The nodes themselves learn these routes from the CNI daemon.) Routed layouts add none:
    their hosts sit behind a router that knows no pod CIDR, and pods reach them masqueraded.
    """
    if plan.router_netns:
        return
    routes = [f"route replace {cidr} via {plan.node(node).ip}" for node, cidr in sorted(pod_cidrs.items())]
    for ns in (plan.underlay_netns, plan.upstream_netns):
        batch(ns, routes)


def wait_reachable(netns: str, ip: str, port: int, timeout: float = 5.0) -> bool:
    """True once a TCP connect from ``netns`` to ip:port succeeds (bounded by ``timeout``)."""
    code = (
        "import socket,sys,time\n"
        f"end=time.monotonic()+{timeout}\n"
        "while time.monotonic()<end:\n"
        "  try:\n"
        f"    socket.create_connection(('{ip}',{port}),timeout=0.5).close(); sys.exit(0)\n"
        "  except OSError: time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    p = subprocess.run(exec_argv(netns, ["python3", "-S", "-c", code]), capture_output=True)
    return p.returncode == 0
