"""The lab's wires: the underlay segment, node namespaces, the outside and upstream hosts.

Layout (all inside lab namespaces; the root namespace is never touched):

    pnl-<lab>-ul   bridge pnl-br with the API server's address (.1); routes to every
                   node's pod CIDR via that node (so pods can reach the API server);
                   no forwarding (outside hosts cannot reach pod IPs through it)
    pnl-<lab>-up   the upstream DNS host (.2), dnsmasq, routes to pod CIDRs
    pnl-<lab>-out  the outside client (.3), default route via .1, the external IP pool
                   (externalIPs, LoadBalancer ingress) routed via the first node
    pnl-<lab>-n<i> one node per netns: eth0 on the bridge (.10+i), ip_forward on,
                   no ICMP rate limit (so REJECTed clients always see "refused")

Each host's eth0 is one end of a veth whose other end (pnl-n<i>, pnl-up, pnl-out)
is enslaved to the bridge. :func:`build` is not idempotent on purpose: ``up``
refuses to run over an existing lab, and ``down`` (a sweep by prefix) removes it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from podnet.host.netns import Netns, run
from podnet.netlab.lab.topology import LabPlan, PREFIX

__all__ = ["Host", "hosts", "build", "add_pod_cidr_routes", "batch"]


@dataclass(frozen=True)
class Host:
    netns: str
    ip: str
    bridge_port: str    # veth end on the bridge, inside the underlay netns
    forwarding: bool


def hosts(plan: LabPlan) -> list[Host]:
    """Every namespace attached to the underlay bridge, in build order."""
    out = [
        Host(plan.upstream_netns, plan.upstream_ip, f"{PREFIX}up", False),
        Host(plan.outside_netns, plan.outside_ip, f"{PREFIX}out", False),
    ]
    out += [Host(n.netns, n.ip, n.underlay_if, True) for n in plan.nodes]
    return out


def batch(netns: str, commands: list[str]) -> None:
    """Run ``ip`` commands inside ``netns`` in one process (``ip -n NS -batch -``)."""
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def _add_netns(name: str) -> Netns:
    run(["ip", "netns", "add", name])
    ns = Netns(name)
    ns.ip("link", "set", "lo", "up")
    return ns


def build(plan: LabPlan, progress=lambda msg: None) -> None:
    """Create the underlay, its bridge, and every host on it (see module docstring)."""
    plen = plan.underlay_prefixlen
    ul = _add_netns(plan.underlay_netns)
    batch(ul.name, [
        f"link add {plan.bridge} type bridge",
        f"link set {plan.bridge} up",
        f"addr add {plan.apiserver_ip}/{plen} dev {plan.bridge}",
    ])
    # No forwarding on the underlay host: it answers for the API server (and routes its
    # replies to pods), but outside hosts cannot reach pod IPs through it.
    for h in hosts(plan):
        progress(f"host {h.netns} ({h.ip})")
        ns = _add_netns(h.netns)
        batch(ul.name, [
            f"link add {h.bridge_port} type veth peer name eth0 netns {h.netns}",
            f"link set {h.bridge_port} master {plan.bridge}",
            f"link set {h.bridge_port} up",
        ])
        batch(ns.name, [
            f"addr add {h.ip}/{plen} dev eth0",
            "link set eth0 up",
            f"route add default via {plan.apiserver_ip}",
        ])
        if h.netns == plan.outside_netns:
            batch(ns.name, [f"route add {plan.external_pool} via {plan.nodes[0].ip}"])
        if h.forwarding:
            ns.sysctl("net.ipv4.ip_forward", "1")
            # A Service without endpoints is REJECTed with ICMP; the kernel's per-peer ICMP
            # rate limit (1/s after a burst of 6) would turn a fast client's later refusals
            # into timeouts, which is the rate limit, not the proxy. Lab nodes lift it.
            ns.sysctl("net.ipv4.icmp_ratelimit", "0")


def add_pod_cidr_routes(plan: LabPlan, pod_cidrs: dict[str, str]) -> None:
    """Route each node's pod CIDR via that node from the underlay and upstream hosts.

    (The nodes themselves learn these routes from the CNI daemon, host-gw style.)
    """
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
    p = subprocess.run(["ip", "netns", "exec", netns, "python3", "-S", "-c", code], capture_output=True)
    return p.returncode == 0
