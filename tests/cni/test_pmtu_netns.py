"""The path-MTU pieces against the kernel, in namespaces of the tests/cni pool (``pnt-cni-``): route MTU
metrics applied by routes.sync and read back equal (no churn), the learned path MTU read by
KernelOverlayOps.path_mtus, and the raw ICMP watch seeing a "fragmentation needed" for a VXLAN packet.
The whole loop (daemons, a router with a smaller hop, pods learning the MTU) is in test_overlay_netns.py."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

def netns_with_a_link(pool):
    """A namespace with a veth pair v0/v1 up and 192.168.5.1/24 on v0."""
    ns = pool.netns("pm")
    ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    for dev in ("v0", "v1"):
        ns.ip("link", "set", dev, "up")
    ns.ip("addr", "add", "192.168.5.1/24", "dev", "v0")
    return ns


SYNC = """
from podnet.cni import routes
vx = routes.onlink("10.2.0.0", "v0")
vx6 = routes.onlink("fd00:2::", "v0")
d = routes.Desired({"10.2.0.0/24": vx, "fd00:2::/64": vx6, "10.3.0.0/24": "192.168.5.9"},
                   mtus={"10.2.0.0/24": 1350, "fd00:2::/64": 1330})
print(sorted(routes.sync(d)))
print(routes.sync(d))
print(sorted(routes.sync(routes.Desired(d.routes, mtus={"10.2.0.0/24": 1300}))))
print(sorted(routes.sync(routes.Desired(d.routes))))
"""


def test_route_mtus_are_applied_read_back_and_removed(pool):
    ns = netns_with_a_link(pool)
    out = ns.run(sys.executable, "-P", "-c", SYNC).splitlines()
    assert out[0] == str(sorted(["10.2.0.0/24 -> 10.2.0.0 dev v0 onlink mtu 1350", "10.3.0.0/24 -> 192.168.5.9",
                                 "fd00:2::/64 -> fd00:2:: dev v0 onlink mtu 1330"]))
    assert out[1] == "[]"  # read back equal: nothing replaced
    assert out[2] == str(["10.2.0.0/24 -> 10.2.0.0 dev v0 onlink mtu 1300",
                          "fd00:2::/64 -> fd00:2:: dev v0 onlink"])
    assert out[3] == str(["10.2.0.0/24 -> 10.2.0.0 dev v0 onlink"])
    assert "mtu" not in ns.ip("route", "show", "10.2.0.0/24")


PATH_MTU = """
from podnet.cni import overlay
ops = overlay.KernelOverlayOps()
print(*ops.path_mtus(["192.168.5.9", "192.168.6.9", "fd00:6::9", "10.99.0.1"]).values())
"""


def test_path_mtu_reads_the_route_a_destination_takes(pool):
    ns = netns_with_a_link(pool)
    ns.ip("addr", "add", "fd00:5::1/64", "dev", "v0", "nodad")
    ns.ip("route", "add", "192.168.6.0/24", "via", "192.168.5.7", "mtu", "1400")
    ns.ip("-6", "route", "add", "fd00:6::/64", "via", "fd00:5::7", "mtu", "1380")
    # no metric -> 0; a route's mtu -> it; IPv6 too; no route at all -> 0
    assert ns.run(sys.executable, "-P", "-c", PATH_MTU).split() == ["0", "1400", "1380", "0"]


WATCH = """
import asyncio, sys
from podnet.cni import pmtu

async def main():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    watch = pmtu.TooBigWatch(8472, lambda t: got.done() or got.set_result(t))
    print(watch.start(loop), flush=True)
    try:
        print(await asyncio.wait_for(got, 20))
    finally:
        watch.close()

asyncio.run(main())
"""

SEND = """
import socket, sys
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
for port, last in ((4789, "8"), (8472, "7")):  # only the second one is about VXLAN
    if sys.argv[1] == "4":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        msg = ICMP(type=3, code=4, nexthopmtu=1400) / IP(src="192.168.5.2", dst="192.168.7." + last) / UDP(dport=port)
        s.sendto(bytes(msg), ("192.168.5.2", 0))
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        pkt = IPv6(src="fd00:5::1", dst="fd00:5::2") / ICMPv6PacketTooBig(mtu=1380) / IPv6(
            src="fd00:5::2", dst="fd00:7::" + last) / UDP(dport=port)
        s.sendto(bytes(pkt)[40:], ("fd00:5::2", 0))  # the kernel fills in the ICMPv6 checksum
"""


@pytest.mark.parametrize(("family", "want"), [
    pytest.param("4", "TooBig(peer='192.168.7.7', mtu=1400)", id="ipv4-frag-needed"),
    pytest.param("6", "TooBig(peer='fd00:7::7', mtu=1380)", id="ipv6-packet-too-big"),
])
def test_the_watch_sees_icmp_about_vxlan_packets_only(pool, family, want):
    import subprocess

    a, b = pool.netns("icmpa"), pool.netns("icmpb")
    pool.veth(a, "eth0", b, "eth0")
    a.ip("addr", "add", "192.168.5.1/24", "dev", "eth0")
    b.ip("addr", "add", "192.168.5.2/24", "dev", "eth0")
    a.ip("addr", "add", "fd00:5::1/64", "dev", "eth0", "nodad")
    b.ip("addr", "add", "fd00:5::2/64", "dev", "eth0", "nodad")
    watcher = b.popen(sys.executable, "-P", "-c", WATCH, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "[]"  # both sockets open
        a.run(sys.executable, "-P", "-c", SEND, family)
        assert watcher.stdout.readline().strip() == want
    finally:
        watcher.kill()
        watcher.wait()
