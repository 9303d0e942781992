"""Anti-spoofing in real namespaces: a pod's packets with a source other than its own are dropped in its
node's namespace, to a pod on the same node and to a pod on another node, IPv4 and IPv6; its own source
passes. Two node namespaces run the CNI daemon (static pod CIDRs); the routes between them are set by
hand on a shared link, either host-gw (via the other node's address) or through a point-to-point VXLAN
device (the reverse path of a remote pod's address is then the VXLAN device, as with ``--backend vxlan``).
Pods are added through the plugin binary as a runtime does. Namespaces: ``pnt-s5af-``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from podnet.cni import antispoof
from podnet.host.netns import Netns, NetnsPool

from .conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")

# Binds to an address the pod does not own (IP_TRANSPARENT / IPV6_TRANSPARENT), sends each datagram, and
# finally a marker from the pod's own address.
SEND = r"""
import socket, sys
dst, marker_src, *forged = sys.argv[1:]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
for i, src in enumerate(forged):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)  # IPV6_TRANSPARENT
    else:
        s.setsockopt(socket.IPPROTO_IP, 19, 1)    # IP_TRANSPARENT
    s.bind((src, 0))
    s.sendto(b"forged %d" % i, (dst, 9999))
    s.close()
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((marker_src, 0))
s.sendto(b"marker", (dst, 9999))
"""

# Prints "<source> <payload>" for every datagram until the marker arrives (at most 60 s).
RECEIVE = r"""
import socket, sys
addr = sys.argv[1]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((addr, 9999))
s.settimeout(60)
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100)
    print(peer[0], data.decode(), flush=True)
    if data == b"marker":
        break
"""


@pytest.fixture
def own_pool():
    p = NetnsPool("pnt-s5af-")
    try:
        yield p
    finally:
        p.close()


@dataclass
class Pod:
    ns: Netns
    ips: dict[int, str]


@pytest.fixture
def cluster(request, own_pool, make_node):
    """Two nodes, pods a and b on n1, pod c on n2, dual stack, host-gw (default) or VXLAN routes between
    the nodes (``indirect`` parameter)."""
    backend = getattr(request, "param", "host-gw")
    n1ns, n2ns = own_pool.netns("n1"), own_pool.netns("n2")
    own_pool.veth(n1ns, "eth0", n2ns, "eth0")
    for ns, me, peer, peer_cidrs in ((n1ns, 1, 2, ("10.244.2.0/24", "fd00:10:244:2::/64")),
                                     (n2ns, 2, 1, ("10.244.1.0/24", "fd00:10:244:1::/64"))):
        ns.ip("addr", "add", f"192.168.51.{me}/24", "dev", "eth0")
        ns.ip("-6", "addr", "add", f"fd00:51::{me}/64", "dev", "eth0", "nodad")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("link", "set", "lo", "up")
        v4, v6 = (f"192.168.51.{peer}", f"fd00:51::{peer}")
        if backend == "vxlan":
            ns.ip("link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "8472", "local", f"192.168.51.{me}",
                  "remote", f"192.168.51.{peer}", "dev", "eth0")
            ns.ip("addr", "add", f"10.250.0.{me}/30", "dev", "vx0")
            ns.ip("-6", "addr", "add", f"fd00:250::{me}/64", "dev", "vx0", "nodad")
            ns.ip("link", "set", "vx0", "up")
            v4, v6 = f"10.250.0.{peer}", f"fd00:250::{peer}"
        ns.ip("route", "add", peer_cidrs[0], "via", v4)
        ns.ip("-6", "route", "add", peer_cidrs[1], "via", v6)
    n1 = make_node(("10.244.1.0/24", "fd00:10:244:1::/64"), ns=n1ns)
    n2 = make_node(("10.244.2.0/24", "fd00:10:244:2::/64"), ns=n2ns)
    pods = {}
    for name, node in (("a", n1), ("b", n1), ("c", n2)):
        ns = own_pool.netns(name)
        code, out = node.cni("ADD", cid=name, netns=ns.path)
        assert code == 0, out
        ips = {6 if ":" in i["address"] else 4: i["address"].split("/")[0] for i in out["ips"]}
        assert set(ips) == {4, 6}, out
        pods[name] = Pod(ns, ips)
    return n1ns, n2ns, pods


def _exchange(sender: Pod, receiver: Pod, family: int, forged: list[str]) -> list[str]:
    """The sources of what ``receiver`` got: ``forged`` datagrams, then a marker from the sender's own address."""
    dst = receiver.ips[family]
    srv = receiver.ns.popen(sys.executable, "-P", "-c", RECEIVE, dst, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        sender.ns.run(sys.executable, "-P", "-c", SEND, dst, sender.ips[family], *forged)
        out, _ = srv.communicate(timeout=90)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    lines = [line.split(" ", 1) for line in out.splitlines()]
    assert lines and lines[-1][1] == "marker", out
    return [src for src, _ in lines]


def _dropped(node: Netns, family: int) -> int:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    state = antispoof.parse_save(node.run(tool, "-c", "-t", "raw"))
    assert state.intact
    return state.dropped


OUTSIDE = {4: "203.0.113.7", 6: "2001:db8::7"}


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("where", ["same-node", "other-node"])
@pytest.mark.parametrize("cluster", ["host-gw", "vxlan"], indirect=True)
def test_a_pod_cannot_send_with_a_source_not_its_own(cluster, family, where):
    n1, _n2, pods = cluster
    a, b, c = pods["a"], pods["b"], pods["c"]
    receiver = b if where == "same-node" else c
    # the other pod (same node when sending to c, other node when sending to b), the node's own address
    # and an outside address
    other = c if receiver is b else b
    forged = [other.ips[family], "192.168.51.1" if family == 4 else "fd00:51::1", OUTSIDE[family]]
    before = _dropped(n1, family)
    seen = _exchange(a, receiver, family, forged)
    assert seen == [a.ips[family]], f"forged sources got through: {seen}"
    assert _dropped(n1, family) - before == len(forged)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("cluster", ["host-gw", "vxlan"], indirect=True)
def test_own_source_passes_both_ways(cluster, family):
    _n1, _n2, pods = cluster
    a, b, c = pods["a"], pods["b"], pods["c"]
    assert _exchange(a, b, family, []) == [a.ips[family]]
    assert _exchange(c, a, family, []) == [c.ips[family]]


def test_the_check_is_repaired_after_a_foreign_flush(cluster):
    """Someone flushes the chain and adds a second jump: the daemon's next re-check restores exactly one
    jump and the rules (the same ensure() the daemon runs on every route tick, run in the node namespace)."""
    n1, _n2, _pods = cluster
    n1.run("iptables", "-t", "raw", "-F", antispoof.CHAIN)
    n1.run("iptables", "-t", "raw", "-A", "PREROUTING", "-i", "pnc+", "-j", antispoof.CHAIN)
    assert not antispoof.parse_save(n1.run("iptables-save", "-c", "-t", "raw")).intact
    code = ("from podnet.cni import antispoof\n"
            "print(antispoof.ensure(antispoof.KernelTables(), 4).intact)")
    assert n1.run(sys.executable, "-P", "-c", code).strip() == "True"
    assert _dropped(n1, 4) == 0


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_without_the_check_forged_sources_arrive(cluster, family):
    """The forged datagrams really leave the pod: with the jump removed they reach both receivers."""
    n1, _n2, pods = cluster
    a, b, c = pods["a"], pods["b"], pods["c"]
    tool = "iptables" if family == 4 else "ip6tables"
    n1.run(tool, "-t", "raw", "-D", "PREROUTING", "-i", "pnc+", "-j", antispoof.CHAIN)
    assert _exchange(a, b, family, [c.ips[family], OUTSIDE[family]]) == [c.ips[family], OUTSIDE[family], a.ips[family]]
    assert _exchange(a, c, family, [b.ips[family]]) == [b.ips[family], a.ips[family]]
