"""Two nodes on a shared L2 segment, pod CIDRs and host-gw routes from the lab API server's Node objects.

Topology: a switch netns with bridge br0 (192.168.77.1, where the API server
also listens), node netns n1/n2 (192.168.77.11/.12) each running the daemon
with ``--master`` and no static CIDR. Checks: STATUS is 50 until the Node has a
pod CIDR, pods on different nodes talk over TCP and the server sees the
client's pod IP (no NAT), routes follow Nodes joining/changing/leaving and a
deleted route comes back.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.host.nsenter import listening_socket

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

API_IP, API_PORT = "192.168.77.1", 6443


def node_obj(name: str, ip: str) -> dict:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


async def eventually(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(fn)
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def routes(node) -> dict[str, str]:
    out = {}
    for line in node.ns.ip("-o", "route", "show", "proto", "150").splitlines():
        f = line.split()
        if f[0] == "blackhole":
            out[f[1]] = "blackhole"
        elif "via" in f:
            out[f[0]] = f[f.index("via") + 1]
    return out


def underlay(pool, ipv6: bool):
    """A switch netns (bridge, the API address) and two node namespaces on it.

    Nodes are ``(netns, "192.168.77.<i>")``, or with ``ipv6`` ``(netns, (v4, "fd00:77::<i>"))``
    (no DAD, so routes work at once).
    """
    sw = pool.netns("sw")
    sw.ip("link", "add", "br0", "type", "bridge")
    sw.ip("addr", "add", f"{API_IP}/24", "dev", "br0")
    if ipv6:
        sw.ip("addr", "add", "fd00:77::1/64", "dev", "br0", "nodad")
    sw.ip("link", "set", "br0", "up")
    nodes = []
    for i in (11, 12):
        n = pool.netns("n")
        pool.veth(n, "eth0", sw, f"port{i}")
        sw.ip("link", "set", f"port{i}", "master", "br0")
        n.ip("addr", "add", f"192.168.77.{i}/24", "dev", "eth0")
        if ipv6:
            n.ip("addr", "add", f"fd00:77::{i}/64", "dev", "eth0", "nodad")
        nodes.append((n, (f"192.168.77.{i}", f"fd00:77::{i}") if ipv6 else f"192.168.77.{i}"))
    return sw, nodes


async def del_pods_and_check_clean(n1, pa, n2, pb) -> None:
    """DEL pod "a" on n1 and "b" on n2; nothing of theirs may remain on the nodes."""
    assert await asyncio.to_thread(n1.cni, "DEL", "a", pa.path) == (0, None)
    assert await asyncio.to_thread(n2.cni, "DEL", "b", pb.path) == (0, None)
    assert n1.host_veths() == [] and n2.host_veths() == [] and n1.reservations() == []


@pytest.fixture
def fabric(pool):
    return underlay(pool, ipv6=False)


async def test_two_nodes_host_gw_without_nat(fabric, make_node, pool, tcp_peer_seen):
    sw, nsips = fabric
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--cluster-cidr", "10.244.0.0/16", "--route-interval", "0.5"]
    sock = listening_socket(sw.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    if True:
        client = ApiClient.from_url(api.url)
        try:
            n1 = make_node((), extra, ns=nsips[0][0])
            n2 = make_node((), extra, ns=nsips[1][0])
            # no Node object yet: not ready
            code, out = await asyncio.to_thread(n1.cni, "STATUS", version="1.1.0")
            assert code == 50 and "pod CIDR" in out["msg"]
            for node, (_, ip) in zip((n1, n2), nsips):
                await client.create(resources.NODES, node_obj(node.ns.name, ip))
            for node in (n1, n2):
                await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
            cidr1 = (await client.get(resources.NODES, n1.ns.name))["spec"]["podCIDR"]
            cidr2 = (await client.get(resources.NODES, n2.ns.name))["spec"]["podCIDR"]
            await eventually(lambda: routes(n1) == {cidr1: "blackhole", cidr2: "192.168.77.12"}, "n1 routes")
            await eventually(lambda: routes(n2) == {cidr2: "blackhole", cidr1: "192.168.77.11"}, "n2 routes")

            pa, pb = pool.netns("pa"), pool.netns("pb")
            code, ra = await asyncio.to_thread(n1.cni, "ADD", "a", pa.path)
            assert code == 0, ra
            code, rb = await asyncio.to_thread(n2.cni, "ADD", "b", pb.path)
            assert code == 0, rb
            a_ip, b_ip = ra["ips"][0]["address"].split("/")[0], rb["ips"][0]["address"].split("/")[0]
            assert a_ip.startswith(cidr1.rsplit(".", 2)[0]) and b_ip.startswith(cidr2.rsplit(".", 2)[0])
            assert await asyncio.to_thread(tcp_peer_seen, pb, b_ip, pa) == a_ip
            assert await asyncio.to_thread(tcp_peer_seen, pa, a_ip, pb) == b_ip

            # a deleted route comes back
            n1.ns.ip("route", "del", cidr2)
            await eventually(lambda: routes(n1).get(cidr2) == "192.168.77.12", "route restored")
            # a node joins, changes address, leaves
            await client.create(resources.NODES, node_obj("n3", "192.168.77.13"))
            cidr3 = await eventually(lambda: next((d for d, v in routes(n1).items() if v == "192.168.77.13"), None),
                                     "n3 route")
            await client.patch(resources.NODES, "n3", {"status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.77.14"}]}}, subresource="status")
            await eventually(lambda: routes(n1).get(cidr3) == "192.168.77.14", "n3 route changed")
            await client.delete(resources.NODES, "n3")
            await eventually(lambda: cidr3 not in routes(n1) and cidr3 not in routes(n2), "n3 route removed")

            await del_pods_and_check_clean(n1, pa, n2, pb)
        finally:
            await client.close()
            await api.stop()


def test_masquerade_only_for_traffic_leaving_the_cluster(make_node, pool, tcp_peer_seen):
    """--masquerade: pod -> outside is SNAT'ed to the node's address; pod -> pod keeps the pod IP."""
    node_ns, outside = pool.netns("n"), pool.netns("out")
    pool.veth(node_ns, "eth1", outside, "eth0")
    node_ns.ip("addr", "add", "192.168.99.1/24", "dev", "eth1")
    outside.ip("addr", "add", "192.168.99.2/24", "dev", "eth0")
    node = make_node(("10.244.7.0/24",), ["--masquerade", "--cluster-cidr", "10.244.0.0/16"], ns=node_ns)
    a, b = pool.netns("pa"), pool.netns("pb")
    _, ra = node.cni("ADD", "a", a.path)
    _, rb = node.cni("ADD", "b", b.path)
    a_ip, b_ip = ra["ips"][0]["address"].split("/")[0], rb["ips"][0]["address"].split("/")[0]
    assert "-A PODNET-MASQ -d 10.244.0.0/16 -j RETURN" in node_ns.run("iptables", "-t", "nat", "-S")
    assert tcp_peer_seen(outside, "192.168.99.2", a) == "192.168.99.1"
    assert tcp_peer_seen(b, b_ip, a) == a_ip


def dual_node_obj(name: str, ips: tuple[str, ...], cidrs: tuple[str, ...]) -> dict:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)},
            "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips]}}


@pytest.fixture
def dual_fabric(pool):
    """Like ``fabric``, with IPv6 on the underlay too (fd00:77::/64)."""
    return underlay(pool, ipv6=True)


CROSS_NODE_CASES = [
    pytest.param(("fd00:10:1::/64",), ("fd00:10:2::/64",), id="ipv6-only"),
    pytest.param(("10.244.1.0/24", "fd00:10:1::/64"), ("10.244.2.0/24", "fd00:10:2::/64"), id="dual-stack"),
    pytest.param(("fd00:10:1::/64", "10.244.1.0/24"), ("fd00:10:2::/64", "10.244.2.0/24"), id="dual-stack-v6-first"),
]


@pytest.mark.parametrize(("cidrs1", "cidrs2"), CROSS_NODE_CASES)
async def test_cross_node_ipv6_and_dual_stack_without_nat(dual_fabric, make_node, pool, tcp_peer_seen,
                                                         cidrs1, cidrs2):
    """Pods on two nodes talk over every family of their pod CIDRs; the server sees the client's pod IP."""
    sw, nsips = dual_fabric
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--route-interval", "0.5"]
    sock = listening_socket(sw.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n1 = make_node((), extra, ns=nsips[0][0])
        n2 = make_node((), extra, ns=nsips[1][0])
        for node, (_, ips), cidrs in zip((n1, n2), nsips, (cidrs1, cidrs2)):
            await client.create(resources.NODES, dual_node_obj(node.ns.name, ips, cidrs))
        for node in (n1, n2):
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")

        def all_routes(node) -> dict[str, str]:
            out = routes(node)
            for line in node.ns.ip("-o", "-6", "route", "show", "proto", "150").splitlines():
                f = line.split()
                out[f[1] if f[0] == "blackhole" else f[0]] = "blackhole" if f[0] == "blackhole" else f[f.index("via") + 1]
            return out

        peer = {cidr: ip for ip in nsips[1][1] for cidr in cidrs2 if (":" in ip) == (":" in cidr)}
        want1 = {**{c: "blackhole" for c in cidrs1}, **peer}
        await eventually(lambda: all_routes(n1) == want1, "n1 routes")
        assert n1.ns.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"

        pa, pb = pool.netns("pa"), pool.netns("pb")
        code, ra = await asyncio.to_thread(n1.cni, "ADD", "a", pa.path)
        assert code == 0, ra
        code, rb = await asyncio.to_thread(n2.cni, "ADD", "b", pb.path)
        assert code == 0, rb
        a_ips = [ip["address"].split("/")[0] for ip in ra["ips"]]
        b_ips = [ip["address"].split("/")[0] for ip in rb["ips"]]
        assert len(a_ips) == len(b_ips) == len(cidrs1)
        for a_ip, b_ip in zip(a_ips, b_ips):
            assert await asyncio.to_thread(tcp_peer_seen, pb, b_ip, pa) == a_ip
            assert await asyncio.to_thread(tcp_peer_seen, pa, a_ip, pb) == b_ip

        await del_pods_and_check_clean(n1, pa, n2, pb)
    finally:
        await client.close()
        await api.stop()
