"""Path-MTU discovery as data (pure): the route MTU per peer from a learned underlay path MTU, the plan's
route metrics, the ICMP messages that trigger a re-read, and the notification rate limit; then through
the overlay's side-effect layer with the fake netlink layer (podnet.cni.testing.FakeOverlayOps)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6

from podnet.cni import overlay, pmtu
from podnet.cni.overlay import Config, Host, Iface, Vtep
from podnet.cni.testing import FakeOverlayOps
from podnet.kube.objects import NodeAddress

HOST = Host((Iface("eth0", 1500, ("192.168.1.10/24", "fd00:1::10/64")),))
VTEPS = {4: Vtep("02:00:00:00:00:0a", "192.168.1.10"), 6: Vtep("02:00:00:00:06:0a", "fd00:1::10")}


def node(name, cidrs, ips, **ann):
    keys = {"mac": "podnet.io/vtep-mac", "mac6": "podnet.io/vtep-mac-v6"}
    return overlay.AnnotatedNode(name, tuple(NodeAddress("InternalIP", a) for a in ips), tuple(cidrs),
                                 annotations=tuple(sorted((keys[k], v) for k, v in ann.items())))


SELF = node("a", ["10.244.0.0/24"], ["192.168.1.10", "fd00:1::10"])
SAME = node("b", ["10.244.1.0/24"], ["192.168.1.11"], mac="02:00:00:00:00:0b")  # host-gw
FAR = node("c", ["10.244.2.0/24", "fd00:10:2::/64"], ["192.168.2.12"], mac="02:00:00:00:00:0c")
FAR6 = node("d", ["10.244.3.0/24", "fd00:10:3::/64"], ["fd00:3::13"], mac6="02:00:00:00:06:0d")


@pytest.mark.parametrize(("path_mtu", "overhead", "family", "device_mtu", "want"), [
    pytest.param(1400, 50, 4, 1450, 1350, id="ipv4-underlay-smaller-hop"),
    pytest.param(1400, 70, 6, 1430, 1330, id="ipv6-underlay-smaller-hop"),
    pytest.param(1400, 50, 6, 1450, 1350, id="ipv6-pods-over-ipv4-underlay"),
    pytest.param(0, 50, 4, 1450, 0, id="nothing-learned"),
    pytest.param(1500, 50, 4, 1450, 0, id="path-as-big-as-the-interface"),
    pytest.param(9000, 50, 4, 1450, 0, id="route-metric-above-the-device"),
    pytest.param(552, 50, 4, 1450, 576, id="ipv4-floor"),
    pytest.param(1300, 50, 6, 1450, 1280, id="ipv6-floor"),
])
def test_route_mtu(path_mtu, overhead, family, device_mtu, want):
    assert pmtu.route_mtu(path_mtu, overhead, family, device_mtu) == want


def planned(path_mtus, nodes=(SELF, SAME, FAR, FAR6)):
    p = overlay.plan(Config("auto"), list(nodes), "a", ["10.244.0.0/24"], HOST, VTEPS)
    return overlay.plan_path_mtus(p, path_mtus, {4: 1450, 6: 1430})


@pytest.mark.parametrize(("path_mtus", "want"), [
    pytest.param({}, {}, id="none-learned-no-metrics"),
    pytest.param({"192.168.2.12": 1400}, {"10.244.2.0/24": 1350, "fd00:10:2::/64": 1350},
                 id="every-cidr-over-that-vtep"),
    pytest.param({"fd00:3::13": 1400}, {"10.244.3.0/24": 1330, "fd00:10:3::/64": 1330}, id="ipv6-underlay-peer"),
    pytest.param({"192.168.1.11": 1000}, {}, id="host-gw-peer-untouched"),
    pytest.param({"192.168.2.12": 1500, "fd00:3::13": 1280}, {"10.244.3.0/24": 1210, "fd00:10:3::/64": 1280},
                 id="no-metric-at-full-size-floors-per-pod-family"),
])
def test_plan_path_mtus(path_mtus, want):
    p = planned(path_mtus)
    assert p.routes.mtus == want
    assert set(p.routes.routes) >= set(want)  # only routes the plan has


def test_plan_names_the_vtep_of_every_vxlan_route():
    p = planned({})
    assert sorted(p.vxlan_peers) == [("10.244.2.0/24", 4, "192.168.2.12"), ("10.244.3.0/24", 6, "fd00:3::13"),
                                     ("fd00:10:2::/64", 4, "192.168.2.12"), ("fd00:10:3::/64", 6, "fd00:3::13")]


def test_overlay_reads_the_learned_path_mtu_and_logs_changes(caplog):
    ops = FakeOverlayOps(HOST)
    o = overlay.Overlay(Config("auto"), ops)
    nodes = [SELF, SAME, FAR]
    with caplog.at_level(logging.INFO, "podnet.cni.overlay"):
        assert o.prepare(nodes, "a", ["10.244.0.0/24"]).routes.mtus == {}
        ops.learned_mtus["192.168.2.12"] = 1400
        assert o.prepare(nodes, "a", ["10.244.0.0/24"]).routes.mtus == {"10.244.2.0/24": 1350, "fd00:10:2::/64": 1350}
        o.prepare(nodes, "a", ["10.244.0.0/24"])
        del ops.learned_mtus["192.168.2.12"]  # the kernel's learned path MTU expired
        assert o.prepare(nodes, "a", ["10.244.0.0/24"]).routes.mtus == {}
    lines = [r.getMessage() for r in caplog.records if "path MTU" in r.getMessage()]
    assert lines == ["underlay path MTU: 192.168.2.12 1400", "underlay path MTU: 192.168.2.12 back to the interface's"]


def test_a_failed_read_keeps_the_route_mtus_until_the_next_one(caplog):
    ops = FakeOverlayOps(HOST)
    o = overlay.Overlay(Config("auto"), ops)
    ops.learned_mtus["192.168.2.12"] = 1400
    o.prepare([SELF, FAR], "a", ["10.244.0.0/24"])

    def broken(ips):
        raise OSError(105, "No buffer space available")

    ops.path_mtus = broken
    with caplog.at_level(logging.WARNING, "podnet.cni.overlay"):
        assert o.prepare([SELF, FAR], "a", ["10.244.0.0/24"]).routes.mtus == {"10.244.2.0/24": 1350,
                                                                              "fd00:10:2::/64": 1350}
    assert "reading the underlay path MTUs: [Errno 105] No buffer space available" in caplog.text


def frag_needed(dst="192.168.2.12", dport=8472, code=4, mtu=1400, inner=None) -> bytes:
    quoted = inner if inner is not None else IP(src="192.168.1.10", dst=dst) / UDP(sport=40000, dport=dport)
    return bytes(IP(src="192.168.9.1", dst="192.168.1.10") / ICMP(type=3, code=code, nexthopmtu=mtu) / quoted)


def too_big6(dst="fd00:3::13", dport=8472, mtu=1400, kind=ICMPv6PacketTooBig) -> bytes:
    """An IPv6 packet carrying the ICMPv6 error (a raw ICMPv6 socket reads from byte 40 on)."""
    msg = kind(mtu=mtu) if kind is ICMPv6PacketTooBig else kind()
    return bytes(IPv6(src="fd00:9::1", dst="fd00:1::10") / msg / IPv6(src="fd00:1::10", dst=dst) /
                 UDP(sport=40000, dport=dport))


@pytest.mark.parametrize(("packet", "want"), [
    pytest.param(frag_needed(), pmtu.TooBig("192.168.2.12", 1400), id="frag-needed-for-vxlan"),
    pytest.param(frag_needed(dport=4789), None, id="other-udp-port"),
    pytest.param(frag_needed(code=1), None, id="host-unreachable"),
    pytest.param(frag_needed(inner=IP(src="192.168.1.10", dst="192.168.2.12") / TCP(dport=8472)), None,
                 id="quoted-tcp"),
    pytest.param(frag_needed()[:40], None, id="truncated"),
    pytest.param(b"", None, id="empty"),
])
def test_parse_icmp4(packet, want):
    assert pmtu.parse_icmp4(packet, 8472) == want


@pytest.mark.parametrize(("message", "want"), [
    pytest.param(too_big6()[40:], pmtu.TooBig("fd00:3::13", 1400), id="packet-too-big-for-vxlan"),
    pytest.param(too_big6(dport=4789)[40:], None, id="other-udp-port"),
    pytest.param(too_big6(kind=ICMPv6DestUnreach)[40:], None, id="unreachable"),
    pytest.param(too_big6()[40:60], None, id="truncated"),
])
def test_parse_icmp6(message, want):
    assert pmtu.parse_icmp6(message, 8472) == want


async def test_notifications_are_rate_limited_and_the_last_one_is_kept():
    now = [100.0]
    got = []
    watch = pmtu.TooBigWatch(8472, got.append, min_gap=0.05, clock=lambda: now[0])
    watch._loop = asyncio.get_running_loop()
    first, second, third = (pmtu.TooBig("192.168.2.12", m) for m in (1400, 1300, 1200))
    watch._deliver(first)
    watch._deliver(second)  # within the gap: held
    watch._deliver(third)  # replaces the held one
    assert got == [first]
    now[0] += 0.05
    await asyncio.sleep(0.2)  # the held notification is delivered when the gap ends
    assert got == [first, third]
