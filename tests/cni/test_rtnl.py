"""podnet.cni.rtnl: hand-encoded rtnetlink messages and batches.

Encoding is checked against an independent decoder (pyroute2's message classes); batching
against the kernel in namespaces this test creates (``pnt-cni-`` prefix, removed after)."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from podnet.cni import rtnl

from .conftest import is_root


def decode(msg: rtnl.Msg, cls):
    data = struct.pack("=IHHII", 16 + len(msg.body), msg.kind, msg.flags, 1, 0) + msg.body
    m = cls(data)
    m.decode()
    return m


@pytest.mark.parametrize("msg, cls, want, attrs", [
    pytest.param(rtnl.get_link("eth0"), ifinfmsg, {"index": 0}, {"IFLA_IFNAME": "eth0"}, id="getlink-by-name"),
    pytest.param(rtnl.del_link("pnc0123456789a"), ifinfmsg, {"index": 0}, {"IFLA_IFNAME": "pnc0123456789a"},
                 id="dellink-by-name"),
    pytest.param(rtnl.link_up(7), ifinfmsg, {"index": 7, "flags": 1, "change": 1}, {}, id="link-up"),
    pytest.param(rtnl.add_addr(3, "10.244.1.1", 32, 2), ifaddrmsg,
                 {"family": socket.AF_INET, "prefixlen": 32, "index": 3, "flags": 2},
                 {"IFA_LOCAL": "10.244.1.1", "IFA_ADDRESS": "10.244.1.1", "IFA_FLAGS": 2}, id="addr-v4"),
    pytest.param(rtnl.add_addr(4, "fd00:1::2", 128, 2), ifaddrmsg,
                 {"family": socket.AF_INET6, "prefixlen": 128, "index": 4},
                 {"IFA_ADDRESS": "fd00:1::2"}, id="addr-v6"),
    pytest.param(rtnl.add_route("10.244.1.5", 32, 9, 149, 253), rtmsg,
                 {"family": socket.AF_INET, "dst_len": 32, "proto": 149, "scope": 253, "table": 254, "type": 1},
                 {"RTA_DST": "10.244.1.5", "RTA_OIF": 9}, id="route-to-pod"),
    pytest.param(rtnl.add_route("::", 0, 2, 4, 0, "fd00:1::1"), rtmsg,
                 {"family": socket.AF_INET6, "dst_len": 0, "proto": 4, "scope": 0},
                 {"RTA_GATEWAY": "fd00:1::1", "RTA_OIF": 2, "RTA_DST": None}, id="default-route-v6"),
])
def test_messages_decode_as_the_kernel_reads_them(msg, cls, want, attrs):
    m = decode(msg, cls)
    for k, v in want.items():
        assert m[k] == v, k
    for k, v in attrs.items():
        assert m.get_attr(k) == v, k


def test_new_veth_carries_both_ends():
    m = decode(rtnl.new_veth("pncabc", 1450, "0e:01:02:03:04:05", "eth0", 42, "0a:01:02:03:04:05"), ifinfmsg)
    assert (m["flags"], m["change"]) == (1, 1)
    assert m.get_attr("IFLA_IFNAME") == "pncabc" and m.get_attr("IFLA_MTU") == 1450
    assert m.get_attr("IFLA_ADDRESS") == "0e:01:02:03:04:05"
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0" and peer.get_attr("IFLA_NET_NS_FD") == 42
    assert peer.get_attr("IFLA_MTU") == 1450 and peer.get_attr("IFLA_ADDRESS") == "0a:01:02:03:04:05"


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (network namespaces)")


def link_index(ns, name: str) -> int:
    return json.loads(ns.ip("-j", "link", "show", name))[0]["ifindex"]


@needs_root
def test_batch_answers_each_message_in_order_and_goes_on_after_an_error(pool):
    node, pod = pool.netns("n"), pool.netns("p")
    node_fd, pod_fd = os.open(node.path, os.O_RDONLY), os.open(pod.path, os.O_RDONLY)
    try:
        with rtnl.in_netns(node_fd) as n, rtnl.in_netns(pod_fd) as p:
            created, got = n.batch([rtnl.new_veth("pnctest", 1400, "0e:00:00:00:00:01", "eth0", pod_fd,
                                                  "0a:00:00:00:00:01"), rtnl.get_link("pnctest")])
            assert created == 0
            link = rtnl.parse_link(got)
            assert link.index == link_index(node, "pnctest")
            assert link.link == link_index(pod, "eth0")  # a veth's IFLA_LINK is its peer's index
            res = p.batch([rtnl.link_up(link.link),
                           rtnl.add_addr(link.link, "10.9.0.2", 32, 2),
                           rtnl.add_addr(link.link, "10.9.0.2", 32, 2),  # again: EEXIST, the next still runs
                           rtnl.add_route("10.9.0.1", 32, link.link, 4, 253)])
            assert res == [0, 0, errno.EEXIST, 0]
            assert "10.9.0.1 dev eth0" in pod.ip("route")
            assert isinstance(p.request(rtnl.get_link("eth0")), bytes)
            assert p.request(rtnl.get_link("nosuch0")) == errno.ENODEV
            assert n.batch([rtnl.del_link("pnctest"), rtnl.del_link("pnctest")]) == [0, errno.ENODEV]
            assert "eth0" not in pod.ip("link")  # the peer went with it
    finally:
        os.close(node_fd)
        os.close(pod_fd)


@needs_root
def test_in_netns_leaves_the_calling_thread_where_it_was(pool):
    pod = pool.netns("p")
    before = os.stat("/proc/thread-self/ns/net").st_ino
    fd = os.open(pod.path, os.O_RDONLY)
    try:
        with rtnl.in_netns(fd) as p:
            assert os.stat("/proc/thread-self/ns/net").st_ino == before
            assert rtnl.parse_link(p.request(rtnl.get_link("lo"))).index == 1  # the pod's lo, not ours
    finally:
        os.close(fd)


@needs_root
def test_dump_lists_every_link_with_its_name(pool):
    ns = pool.netns("n")
    for i in range(20):  # a dump of 41 links spans several datagrams
        ns.ip("link", "add", f"pnt{i}", "type", "veth", "peer", "name", f"pnt{i}b")
    fd = os.open(ns.path, os.O_RDONLY)
    try:
        with rtnl.in_netns(fd) as n:
            links = [rtnl.parse_link(b) for b in n.dump(rtnl.all_links())]
    finally:
        os.close(fd)
    assert {link.name for link in links} == {"lo", *(f"pnt{i}" for i in range(20)), *(f"pnt{i}b" for i in range(20))}
    assert {link.index for link in links} == {json.loads(ns.ip("-j", "link", "show", link.name))[0]["ifindex"]
                                             for link in links}


@needs_root
def test_address_and_route_dumps_parse_as_ip_shows_them(pool):
    ns, peer = pool.netns("n"), pool.netns("p")
    pool.veth(ns, "up0", peer, "up1")
    ns.ip("addr", "add", "192.168.50.2/24", "dev", "up0")
    ns.ip("addr", "add", "fd50::2/64", "dev", "up0", "nodad")
    ns.ip("route", "add", "10.1.0.0/24", "via", "192.168.50.9", "proto", "150")
    ns.ip("route", "add", "10.2.0.0/24", "via", "192.168.50.8", "dev", "up0", "onlink", "proto", "150")
    ns.ip("route", "add", "blackhole", "10.3.0.0/24", "proto", "150")
    ns.ip("-6", "route", "add", "fd60::/64", "via", "fd50::9", "proto", "150")
    fd = os.open(ns.path, os.O_RDONLY)
    try:
        with rtnl.in_netns(fd) as n:
            addrs = [rtnl.parse_addr(b) for b in n.dump(rtnl.all_addrs())]
            routes = [rtnl.parse_route(b) for fam in (socket.AF_INET, socket.AF_INET6)
                      for b in n.dump(rtnl.all_routes(fam)) if rtnl.route_proto(b) == 150]
    finally:
        os.close(fd)
    up0 = link_index(ns, "up0")
    assert {(a.index, a.address, a.prefixlen) for a in addrs if a.scope == 0} == {
        (up0, "192.168.50.2", 24), (up0, "fd50::2", 64)}
    assert {(r.dst, r.dst_len, r.gateway, r.oif, r.type, bool(r.flags & 4), r.table) for r in routes} == {
        ("10.1.0.0", 24, "192.168.50.9", up0, 1, False, 254),
        ("10.2.0.0", 24, "192.168.50.8", up0, 1, True, 254),
        ("10.3.0.0", 24, "", 0, 6, False, 254),
        ("fd60::", 64, "fd50::9", up0, 1, False, 254),
    }
