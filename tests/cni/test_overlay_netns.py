"""Three nodes in two subnets behind a router that knows nothing of pod CIDRs; daemons with ``--backend auto``.

Topology: a router netns ``rt`` with bridge br1 (192.168.77.1/24, where the
lab API server listens) and bridge br2 (192.168.78.1/24), forwarding between
them; nodes n1 (192.168.77.11) and n2 (.12) on br1, n3 (192.168.78.13) on br2,
each with a default route via the router. ``auto`` must use host-gw between n1
and n2 and VXLAN to n3; pods talk across nodes over TCP and UDP with their own
source address; a DF datagram of the pod MTU crosses intact; deleted entries
come back; a recreated VXLAN device (new VTEP MAC) is followed by the peers; a
node that leaves takes its entries with it; a taken VXLAN port is one log line
and host-gw peers keep working. With a smaller hop on the router (IPv4 or IPv6
underlay), pods learn the smaller MTU by path-MTU discovery (podnet.cni.pmtu);
hand-made overlays show the kernel behaviour that design rests on.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podnet.cni import overlay
from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.host.nsenter import listening_socket

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

API_IP, API_PORT = "192.168.77.1", 6443
UNDERLAY = {"n1": ("br1", "192.168.77.11", "192.168.77.1"), "n2": ("br1", "192.168.77.12", "192.168.77.1"),
            "n3": ("br2", "192.168.78.13", "192.168.78.1")}


async def eventually(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(fn)
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def routes(node, family: str = "-4") -> dict[str, str]:
    """podnet's routes (proto 150) as ``dst -> "via X"`` / ``"via X dev D onlink"`` / ``"blackhole"``."""
    out = {}
    for line in node.ns.ip("-o", family, "route", "show", "proto", "150").splitlines():
        f = line.split()
        if f[0] == "blackhole":
            out[f[1]] = "blackhole"
        elif "onlink" in f:
            out[f[0]] = f"via {f[f.index('via') + 1]} dev {f[f.index('dev') + 1]} onlink"
        else:
            out[f[0]] = f"via {f[f.index('via') + 1]}"
    return out


def neighs(node, dev: str = "podnet.vxlan") -> set[tuple[str, str]]:
    out = node.ns.ip("neigh", "show", "dev", dev, "nud", "permanent", check=False)
    return {(f[0], f[2]) for f in (line.split() for line in out.splitlines()) if len(f) >= 3 and f[1] == "lladdr"}


def fdbs(node, dev: str = "podnet.vxlan") -> set[tuple[str, str]]:
    out = node.ns.run("bridge", "fdb", "show", "dev", dev, check=False)
    return {(f[0], f[f.index("dst") + 1]) for f in (line.split() for line in out.splitlines()) if "dst" in f}


def vtep_mac(node, dev: str = "podnet.vxlan") -> str:
    return json.loads(node.ns.ip("-j", "link", "show", dev))[0]["address"]


def v6(ip: str) -> str:
    """The IPv6 underlay address of a node or router address: 192.168.77.11 -> fd00:77::11."""
    a, b, c, d = ip.split(".")
    return f"fd00:{c}::{d}"


def routed_underlay(pool, ipv6: bool = False):
    """The router netns and three node netns, keyed n1..n3 (see the module docstring); with ``ipv6``
    the same again in fd00:77::/64 and fd00:78::/64 (no DAD)."""
    rt = pool.netns("rt")
    rt.sysctl("net.ipv4.ip_forward", "1")
    if ipv6:
        rt.sysctl("net.ipv6.conf.all.forwarding", "1")
    for br, gw in (("br1", "192.168.77.1/24"), ("br2", "192.168.78.1/24")):
        rt.ip("link", "add", br, "type", "bridge")
        rt.ip("addr", "add", gw, "dev", br)
        if ipv6:
            rt.ip("addr", "add", v6(gw.split("/")[0]) + "/64", "dev", br, "nodad")
        rt.ip("link", "set", br, "up")
    nodes = {}
    for key, (br, ip, gw) in UNDERLAY.items():
        n = pool.netns(key)
        port = f"p{key}"
        pool.veth(n, "eth0", rt, port)
        rt.ip("link", "set", port, "master", br)
        n.ip("addr", "add", f"{ip}/24", "dev", "eth0")
        n.ip("route", "add", "default", "via", gw)
        if ipv6:
            n.ip("addr", "add", v6(ip) + "/64", "dev", "eth0", "nodad")
            n.ip("-6", "route", "add", "default", "via", v6(gw))
        nodes[key] = n
    return rt, nodes


TCP_PAIR = r"""
import socket, sys
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "serve":
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, port)); s.listen(1)
    print("ready", flush=True)
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
else:
    c = socket.create_connection((addr, port), timeout=5)
    print(c.recv(100).decode())
"""


def tcp_seen(server_ns, server_ip, client_ns, via: str = "", port: int = 8081) -> str:
    """The peer address a TCP server in a pod saw (the server may be reused at once: SO_REUSEADDR);
    ``via``: the address the client connects to instead (a Service's ClusterIP)."""
    srv = server_ns.popen(sys.executable, "-P", "-c", TCP_PAIR, "serve", server_ip, str(port), stdout=subprocess.PIPE,
                          text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        return client_ns.run(sys.executable, "-P", "-c", TCP_PAIR, "connect", via or server_ip, str(port)).strip()
    finally:
        srv.kill()
        srv.wait()


UDP_PAIR = r"""
import hashlib, socket, sys
mode, addr, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
df = sys.argv[4:] != ["nodf"]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "serve":
    s = socket.socket(fam, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 9090)); s.settimeout(20)
    print("ready", flush=True)
    data, peer = s.recvfrom(65535)
    report = f"{peer[0]} {len(data)} {hashlib.sha256(data).hexdigest()}"
    for _ in range(3):
        s.sendto(report.encode(), peer)
    print(report)
else:
    c = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET:
        # IP_MTU_DISCOVER = IP_PMTUDISC_DO (DF set, never fragmented) or IP_PMTUDISC_DONT (DF clear)
        c.setsockopt(socket.IPPROTO_IP, 10, 2 if df else 0)
    else:
        c.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
    payload = bytes(i % 251 for i in range(size))
    c.settimeout(0.5)
    for _ in range(20):
        c.sendto(payload, (addr, 9090))
        try:
            print(c.recv(200).decode(), hashlib.sha256(payload).hexdigest())
            break
        except socket.timeout:
            pass
"""


def udp_seen(server_ns, server_ip, client_ns, size: int, df: bool = True) -> tuple[str, int, bool]:
    """(peer address the server saw, datagram length it got, payload intact) for one datagram, DF set
    unless ``df`` is False (IPv4 only)."""
    srv = server_ns.popen(sys.executable, "-P", "-c", UDP_PAIR, "serve", server_ip, str(size),
                          stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        out = client_ns.run(sys.executable, "-P", "-c", UDP_PAIR, "send", server_ip, str(size),
                            *([] if df else ["nodf"])).split()
        assert len(out) == 4, out
        return out[0], int(out[1]), out[2] == out[3]
    finally:
        srv.kill()
        srv.wait()


async def wait_published(client, name: str) -> dict:
    async def get():
        return ((await client.get(overlay.NODES, name))["metadata"].get("annotations") or {})

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ann = await get()
        if ann.get("podnet.io/vtep-mac"):
            return ann
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not publish its VTEP: {ann}")


METRICS = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


async def test_auto_chooses_per_pair_and_vxlan_crosses_the_router(pool, make_node):
    rt, ns = routed_underlay(pool)
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--cluster-cidr", "10.244.0.0/16", "--route-interval", "0.5",
             "--backend", "auto"]
    sock = listening_socket(rt.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n = {k: make_node((), extra + (["--health-listen", "127.0.0.1:10258"] if k == "n1" else []), ns=ns[k])
             for k in ("n1", "n2", "n3")}
        for k, node in n.items():
            await client.create(overlay.NODES, {"metadata": {"name": node.ns.name}, "status": {
                "addresses": [{"type": "InternalIP", "address": UNDERLAY[k][1]}]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        ann = {k: await wait_published(client, node.ns.name) for k, node in n.items()}
        for k, node in n.items():
            assert ann[k]["podnet.io/vtep-mac"] == vtep_mac(node)
            assert ann[k]["podnet.io/public-ip"] == UNDERLAY[k][1] and ann[k]["podnet.io/backend"] == "auto"
        cidr = {k: (await client.get(overlay.NODES, node.ns.name))["spec"]["podCIDR"] for k, node in n.items()}
        net3 = cidr["n3"].split("/")[0]
        want1 = {cidr["n1"]: "blackhole", cidr["n2"]: "via 192.168.77.12",
                 cidr["n3"]: f"via {net3} dev podnet.vxlan onlink"}
        await eventually(lambda: routes(n["n1"]) == want1, "n1: host-gw to n2, vxlan to n3")
        net1, net2 = cidr["n1"].split("/")[0], cidr["n2"].split("/")[0]
        await eventually(lambda: routes(n["n3"]) == {
            cidr["n3"]: "blackhole", cidr["n1"]: f"via {net1} dev podnet.vxlan onlink",
            cidr["n2"]: f"via {net2} dev podnet.vxlan onlink"}, "n3: vxlan to both")
        assert neighs(n["n1"]) == {(net3, vtep_mac(n["n3"]))}
        assert fdbs(n["n1"]) == {(vtep_mac(n["n3"]), "192.168.78.13")}
        assert fdbs(n["n3"]) == {(vtep_mac(n["n1"]), "192.168.77.11"), (vtep_mac(n["n2"]), "192.168.77.12")}
        metrics = n["n1"].ns.run(sys.executable, "-P", "-c", METRICS, "http://127.0.0.1:10258/metrics")
        for line in ('podnet_cni_overlay_backend{backend="auto"} 1.0', 'podnet_cni_overlay_peer_cidrs{backend="vxlan"} 1.0',
                     'podnet_cni_overlay_peer_cidrs{backend="host-gw"} 1.0',
                     'podnet_cni_overlay_ignored_peers{reason="bad-vtep-mac"} 0.0'):
            assert line in metrics, line
        link = json.loads(n["n1"].ns.ip("-j", "-d", "link", "show", "podnet.vxlan"))[0]
        vx = link["linkinfo"]["info_data"]
        assert (vx["id"], vx["port"], vx["local"], vx.get("learning"), link["mtu"]) == (
            1, 8472, "192.168.77.11", False, 1450)

        pods, ips = {}, {}
        for k, node in n.items():
            pods[k] = pool.netns("p" + k[1])
            code, res = await asyncio.to_thread(node.cni, "ADD", "c" + k, pods[k].path)
            assert code == 0, res
            assert "mtu 1450 " in pods[k].ip("link", "show", "eth0")  # 1500 underlay - 50 bytes of VXLAN over IPv4
            ips[k] = res["ips"][0]["address"].split("/")[0]
        for a, b in (("n1", "n3"), ("n3", "n1"), ("n2", "n3"), ("n1", "n2")):
            assert await asyncio.to_thread(tcp_seen, pods[b], ips[b], pods[a]) == ips[a], (a, b)
        # UDP, DF set, the largest datagram the pod MTU allows: crosses the VXLAN hop intact, source kept
        full = 1450 - 28
        assert await asyncio.to_thread(udp_seen, pods["n3"], ips["n3"], pods["n1"], full) == (ips["n1"], full, True)
        assert await asyncio.to_thread(udp_seen, pods["n1"], ips["n1"], pods["n3"], full) == (ips["n3"], full, True)
        assert await asyncio.to_thread(udp_seen, pods["n2"], ips["n2"], pods["n1"], full) == (ips["n1"], full, True)

        # bad input: a newer Node copying n3's VTEP MAC and one with a garbage MAC are ignored and counted;
        # the routes, neighbours and FDB entries of everybody else stay as they are
        mac3 = vtep_mac(n["n3"])
        for name, mac in (("ghost-copy", mac3), ("ghost-garbage", "zz:zz")):
            await client.create(overlay.NODES, {"metadata": {"name": name, "annotations": {"podnet.io/vtep-mac": mac}},
                                                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.78.99"}]}})
        try:
            await eventually(lambda: "node ghost-copy: ignoring its ipv4 VTEP (duplicate-vtep-mac)" in n["n1"].log()
                             and "node ghost-garbage: ignoring its ipv4 VTEP (bad-vtep-mac)" in n["n1"].log(),
                             "ghosts ignored", timeout=60)
        except AssertionError as e:
            raise AssertionError(f"{e}\nn1's log ends:\n" + "\n".join(n["n1"].log().splitlines()[-40:])) from None
        metrics = n["n1"].ns.run(sys.executable, "-P", "-c", METRICS, "http://127.0.0.1:10258/metrics")
        assert 'podnet_cni_overlay_ignored_peers{reason="duplicate-vtep-mac"} 1.0' in metrics
        assert routes(n["n1"]) == want1 and neighs(n["n1"]) == {(net3, mac3)} and fdbs(n["n1"]) == {(mac3, "192.168.78.13")}
        assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"], pods["n1"]) == ips["n1"]
        for name in ("ghost-copy", "ghost-garbage"):
            await client.delete(overlay.NODES, name)

        # a Service on n1 whose only endpoint is the pod on n3: DNAT'ed on n1, carried over VXLAN, client IP kept
        await client.create(resources.SERVICES, {"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "clusterIP": "10.96.0.50", "ports": [{"port": 8081, "protocol": "TCP", "targetPort": 8081}]}})
        await client.create(resources.ENDPOINT_SLICES, {
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8081, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ips["n3"]], "conditions": {"ready": True}, "nodeName": n["n3"].ns.name}]})
        proxy = str(Path(sys.executable).with_name("podnet-proxy"))
        await asyncio.to_thread(n["n1"].ns.run, proxy, "--master", f"http://{API_IP}:{API_PORT}", "--hostname-override",
                                n["n1"].ns.name, "--cluster-cidr", "10.244.0.0/16", "--once", timeout=60)
        assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"], pods["n1"], "10.96.0.50") == ips["n1"]

        # the periodic re-check repairs a deleted route, neighbour and FDB entry
        mac3 = vtep_mac(n["n3"])
        n["n1"].ns.ip("route", "del", cidr["n3"])
        n["n1"].ns.ip("neigh", "del", net3, "dev", "podnet.vxlan")
        n["n1"].ns.run("bridge", "fdb", "del", mac3, "dev", "podnet.vxlan", "dst", "192.168.78.13")
        await eventually(lambda: routes(n["n1"]) == want1 and neighs(n["n1"]) == {(net3, mac3)}
                         and fdbs(n["n1"]) == {(mac3, "192.168.78.13")}, "entries repaired")

        # a recreated device on n3 (new VTEP MAC) is republished and followed by n1 and n2
        n["n3"].ns.ip("link", "del", "podnet.vxlan")
        await eventually(lambda: n["n3"].ns.ip("link", "show", "podnet.vxlan", check=False)
                         and vtep_mac(n["n3"]) != mac3, "n3 device recreated")
        new3 = vtep_mac(n["n3"])
        await eventually(lambda: fdbs(n["n1"]) == {(new3, "192.168.78.13")} and neighs(n["n1"]) == {(net3, new3)}
                         and fdbs(n["n2"]) == {(new3, "192.168.78.13")}, "peers follow the new VTEP MAC")
        await eventually(lambda: routes(n["n3"]).get(cidr["n1"]) == f"via {net1} dev podnet.vxlan onlink",
                         "n3 routes back over the new device")
        assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"], pods["n1"]) == ips["n1"]

        # n3 is readdressed (a new InternalIP on its interface): its VTEP moves there, the peers' FDB follows
        n["n3"].ns.ip("addr", "add", "192.168.78.23/24", "dev", "eth0")
        await client.patch(overlay.NODES, n["n3"].ns.name, {"status": {"addresses": [
            {"type": "InternalIP", "address": "192.168.78.23"}]}}, subresource="status")
        await eventually(lambda: {d for _, d in fdbs(n["n1"])} == {"192.168.78.23"}
                         and fdbs(n["n1"]) == {(vtep_mac(n["n3"]), "192.168.78.23")}, "n1 FDB follows n3's new address")
        ann3 = await wait_published(client, n["n3"].ns.name)
        assert ann3["podnet.io/public-ip"] == "192.168.78.23"
        await eventually(lambda: neighs(n["n3"]) and routes(n["n3"]).get(cidr["n1"], "").endswith("onlink"),
                         "n3 entries over the re-created device")
        assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"], pods["n1"]) == ips["n1"]

        # n3 leaves: its route, neighbour and FDB entry go from n1 and n2
        await client.delete(overlay.NODES, n["n3"].ns.name)
        for k in ("n1", "n2"):
            await eventually(lambda: cidr["n3"] not in routes(n[k]) and not neighs(n[k]) and not fdbs(n[k]),
                             f"{k}: n3's entries removed")
        assert routes(n["n1"])[cidr["n2"]] == "via 192.168.77.12"
        assert "backend auto" in n["n1"].log() and n["n1"].log().count("podnet.vxlan created") == 1
    finally:
        await client.close()
        await api.stop()


PORT_HOG = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8472))
print("ready", flush=True)
sys.stdin.read()
"""


async def test_vxlan_port_taken_is_one_line_and_host_gw_peers_keep_working(pool, make_node, tcp_peer_seen):
    rt, ns = routed_underlay(pool)
    hog = ns["n1"].popen(sys.executable, "-P", "-c", PORT_HOG, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--cluster-cidr", "10.244.0.0/16", "--route-interval", "0.3"]
    sock = listening_socket(rt.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        assert hog.stdout.readline().strip() == "ready"
        n = {k: make_node((), extra, ns=ns[k]) for k in ("n1", "n2", "n3")}
        for k, node in n.items():
            await client.create(overlay.NODES, {"metadata": {"name": node.ns.name}, "status": {
                "addresses": [{"type": "InternalIP", "address": UNDERLAY[k][1]}]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        cidr2 = (await client.get(overlay.NODES, n["n2"].ns.name))["spec"]["podCIDR"]
        await eventually(lambda: routes(n["n1"]).get(cidr2) == "via 192.168.77.12", "n1 host-gw route to n2")
        pa, pb = pool.netns("pa"), pool.netns("pb")
        code, ra = await asyncio.to_thread(n["n1"].cni, "ADD", "a", pa.path)
        assert code == 0, ra
        code, rb = await asyncio.to_thread(n["n2"].cni, "ADD", "b", pb.path)
        assert code == 0, rb
        a_ip, b_ip = ra["ips"][0]["address"].split("/")[0], rb["ips"][0]["address"].split("/")[0]
        assert await asyncio.to_thread(tcp_peer_seen, pb, b_ip, pa) == a_ip
        await asyncio.sleep(1.5)  # several re-checks while the port stays taken
        lines = [ln for ln in n["n1"].log().splitlines() if "already in use" in ln]
        assert len(lines) == 1 and "8472/udp" in lines[0], lines
        assert "podnet.io/vtep-mac" not in ((await client.get(overlay.NODES, n["n1"].ns.name))["metadata"]
                                            .get("annotations") or {})
        hog.stdin.close()
        hog.wait(10)
        cidr3 = (await client.get(overlay.NODES, n["n3"].ns.name))["spec"]["podCIDR"]
        await eventually(lambda: routes(n["n1"]).get(cidr3, "").endswith("dev podnet.vxlan onlink"),
                         "vxlan to n3 once the port is free")
        await wait_published(client, n["n1"].ns.name)
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
        await client.close()
        await api.stop()


async def test_ipv6_underlay_carries_ipv6_pods_and_dual_stack_pods_keep_their_addresses(pool, make_node):
    """Dual-stack underlay and pods: each pod family rides the VTEP of its own underlay family
    (podnet.vxlan6 with 70 bytes of overhead for IPv6), host-gw on the shared subnet for both."""
    rt, ns = routed_underlay(pool, ipv6=True)
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--route-interval", "0.5", "--backend", "auto"]
    sock = listening_socket(rt.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n = {k: make_node((), extra, ns=ns[k]) for k in ("n1", "n2", "n3")}
        cidrs = {k: (f"10.244.{k[1]}.0/24", f"fd00:10:{k[1]}::/64") for k in n}
        for k, node in n.items():
            ip4 = UNDERLAY[k][1]
            await client.create(overlay.NODES, {
                "metadata": {"name": node.ns.name}, "spec": {"podCIDR": cidrs[k][0], "podCIDRs": list(cidrs[k])},
                "status": {"addresses": [{"type": "InternalIP", "address": a} for a in (ip4, v6(ip4))]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        ann = await wait_published(client, n["n3"].ns.name)
        assert ann["podnet.io/public-ipv6"] == "fd00:78::13" and ann["podnet.io/vtep-mac-v6"] == vtep_mac(
            n["n3"], "podnet.vxlan6")
        await eventually(lambda: routes(n["n1"], "-6") == {
            "fd00:10:1::/64": "blackhole", "fd00:10:2::/64": "via fd00:77::12",
            "fd00:10:3::/64": "via fd00:10:3:: dev podnet.vxlan6 onlink"}, "n1 IPv6 routes")
        await eventually(lambda: fdbs(n["n1"], "podnet.vxlan6") == {(vtep_mac(n["n3"], "podnet.vxlan6"), "fd00:78::13")},
                         "n1 IPv6 FDB")
        assert neighs(n["n1"], "podnet.vxlan6") == {("fd00:10:3::", vtep_mac(n["n3"], "podnet.vxlan6"))}
        link = json.loads(n["n1"].ns.ip("-j", "-d", "link", "show", "podnet.vxlan6"))[0]
        assert (link["linkinfo"]["info_data"]["local6"], link["mtu"]) == ("fd00:77::11", 1430)
        assert n["n1"].log().count("podnet.vxlan6 created") == 1  # read back as wanted: never recreated
        assert n["n1"].log().count("route fd00:10:3::/64 ->") == 1  # the onlink route reads back equal: no churn

        pods, ips = await pods_on(pool, {k: n[k] for k in ("n1", "n3")})
        for k in ("n1", "n3"):
            assert "mtu 1430 " in pods[k].ip("link", "show", "eth0")  # the smaller of 1500-50 and 1500-70
        for fam, size in ((6, 1430 - 48), (4, 1430 - 28)):
            assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"][fam], pods["n1"]) == ips["n1"][fam]
            assert await asyncio.to_thread(udp_seen, pods["n3"], ips["n3"][fam], pods["n1"], size) == (
                ips["n1"][fam], size, True)
    finally:
        await client.close()
        await api.stop()


async def pods_on(pool, nodes) -> tuple[dict, dict]:
    """A pod on each of ``nodes`` (key -> daemon node), netns ``p<digit of the key>``: (pods, {key: {4: ip, 6: ip}})."""
    pods, ips = {}, {}
    for k, node in nodes.items():
        pods[k] = pool.netns("p" + k[1])
        code, res = await asyncio.to_thread(node.cni, "ADD", "c" + k, pods[k].path)
        assert code == 0, res
        ips[k] = {4 if ":" not in a else 6: a for a in (i["address"].split("/")[0] for i in res["ips"])}
    return pods, ips


async def test_dual_stack_pods_over_an_ipv4_only_underlay(pool, make_node):
    """No IPv6 on the underlay: IPv6 pod traffic to a node in another subnet rides the IPv4 VTEP
    (podnet.vxlan), IPv6 pod addresses kept; host-gw on the shared subnet stays IPv4-only."""
    rt, ns = routed_underlay(pool)
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--route-interval", "0.5", "--backend", "auto"]
    sock = listening_socket(rt.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n = {k: make_node((), extra, ns=ns[k]) for k in ("n1", "n3")}
        cidrs = {k: (f"10.244.{k[1]}.0/24", f"fd00:10:{k[1]}::/64") for k in n}
        for k, node in n.items():
            await client.create(overlay.NODES, {
                "metadata": {"name": node.ns.name}, "spec": {"podCIDR": cidrs[k][0], "podCIDRs": list(cidrs[k])},
                "status": {"addresses": [{"type": "InternalIP", "address": UNDERLAY[k][1]}]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        await eventually(lambda: routes(n["n1"], "-6") == {
            "fd00:10:1::/64": "blackhole", "fd00:10:3::/64": "via fd00:10:3:: dev podnet.vxlan onlink"},
            "n1 IPv6 route over the IPv4 VTEP")
        assert not n["n1"].ns.ip("link", "show", "podnet.vxlan6", check=False).strip()
        assert ("fd00:10:3::", vtep_mac(n["n3"])) in neighs(n["n1"])
        pods, ips = await pods_on(pool, n)
        assert await asyncio.to_thread(tcp_seen, pods["n3"], ips["n3"][6], pods["n1"]) == ips["n1"][6]
        assert await asyncio.to_thread(udp_seen, pods["n1"], ips["n1"][6], pods["n3"], 1450 - 48) == (
            ips["n3"][6], 1450 - 48, True)
    finally:
        await client.close()
        await api.stop()


BULK = r"""
import hashlib, socket, sys, time
mode, addr, limit, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "serve":
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 8082)); s.listen(1)
    s.settimeout(limit)
    print("ready", flush=True)
    c, peer = s.accept(); c.settimeout(limit)
    h, n = hashlib.sha256(), 0
    while n < size:
        b = c.recv(65536)
        if not b:
            break
        h.update(b); n += len(b)
    c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
else:
    payload = bytes(i % 251 for i in range(size))
    try:
        t0 = time.monotonic()
        c = socket.create_connection((addr, 8082), timeout=limit)
        c.sendall(payload); c.shutdown(socket.SHUT_WR)
        print(c.recv(200).decode(), hashlib.sha256(payload).hexdigest(), f"{time.monotonic() - t0:.3f}")
    except TimeoutError:
        print("timeout")
"""


def bulk(a, b, ip_b: str, limit: float = 30.0, size: int = 1 << 20) -> list[str]:
    """A TCP transfer of ``size`` bytes from netns ``a`` to a server on ``ip_b`` in ``b``: ``[bytes, sha256
    got, sha256 sent, seconds]`` when it completes, ``["timeout"]`` when it stalls for ``limit`` seconds."""
    srv = b.popen(sys.executable, "-P", "-c", BULK, "serve", ip_b, str(limit), str(size), stdout=subprocess.PIPE,
                  text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        return a.run(sys.executable, "-P", "-c", BULK, "send", ip_b, str(limit), str(size),
                     timeout=limit + 30).split()
    finally:
        srv.kill()
        srv.wait()


def crossed(out: list[str], size: int = 1 << 20) -> bool:
    """A :func:`bulk` result of a completed, intact transfer."""
    return len(out) == 4 and out[0] == str(size) and out[1] == out[2]


def vxlan_df(node_ns, dev: str = "podnet.vxlan") -> str:
    return json.loads(node_ns.ip("-j", "-d", "link", "show", dev))[0]["linkinfo"]["info_data"].get("df", "")


def route_mtu(node_ns, dst: str) -> str:
    """The ``mtu`` of ``ip route get dst`` in ``node_ns`` ('' without one)."""
    f = node_ns.ip("route", "get", dst).split()
    return f[f.index("mtu") + 1] if "mtu" in f else ""


@pytest.mark.parametrize("df", ["inherit", "unset"])
async def test_node_sends_from_its_pod_cidr_over_vxlan_and_tcp_crosses_a_smaller_mtu_hop(pool, make_node, df):
    """The node's own traffic to a remote pod over VXLAN leaves from the VXLAN device's address (its pod CIDR's
    network address, a /32), so the reply needs no route to the node's underlay address from the pod's side;
    and a 1 MiB TCP transfer pod->pod crosses a router hop whose route MTU (1400) is below the underlay's,
    either way ``--vxlan-df`` allows. ``inherit`` (the default): the router refuses the full-size outer
    packets (DF), each node learns the path MTU, gives its route to the other's pods mtu 1350 and answers
    its pod's oversized packets, so each pod learns 1350 and the router fragments no pod TCP segment.
    ``unset`` (flannel's way): the router fragments the outer packets (counted) and nobody learns anything.
    A full-size UDP datagram without DF crosses either way (fragmented on the node before encapsulation,
    or by the router), and a device whose DF mode was changed by hand is recreated with the configured one."""
    rt, ns = routed_underlay(pool)
    extra = ["--master", f"http://{API_IP}:{API_PORT}", "--cluster-cidr", "10.244.0.0/16", "--route-interval", "0.5",
             "--backend", "auto", "--vxlan-df", df]
    sock = listening_socket(rt.name, API_IP, API_PORT)
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n = {k: make_node((), extra, ns=ns[k]) for k in ("n1", "n3")}
        for k, node in n.items():
            await client.create(overlay.NODES, {"metadata": {"name": node.ns.name}, "status": {
                "addresses": [{"type": "InternalIP", "address": UNDERLAY[k][1]}]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        cidr = {k: (await client.get(overlay.NODES, node.ns.name))["spec"]["podCIDR"] for k, node in n.items()}
        net1 = cidr["n1"].split("/")[0]
        await eventually(lambda: routes(n["n1"]).get(cidr["n3"], "").endswith("dev podnet.vxlan onlink"),
                         "n1 routes n3's pods over VXLAN")
        await eventually(lambda: f"inet {net1}/32 " in n["n1"].ns.ip("-o", "-4", "addr", "show", "dev", "podnet.vxlan"),
                         "n1's VXLAN device carries its pod CIDR's network address")
        p1, p3 = pool.netns("p1"), pool.netns("p3")
        code, r1 = await asyncio.to_thread(n["n1"].cni, "ADD", "c1", p1.path)
        assert code == 0, r1
        code, r3 = await asyncio.to_thread(n["n3"].cni, "ADD", "c3", p3.path)
        assert code == 0, r3
        ip1, ip3 = r1["ips"][0]["address"].split("/")[0], r3["ips"][0]["address"].split("/")[0]
        # the node itself (not a pod) connects to the pod on n3: the pod sees n1's pod-CIDR address
        assert await asyncio.to_thread(tcp_seen, p3, ip3, n["n1"].ns) == net1
        # a deleted device address is put back by the periodic re-check
        n["n1"].ns.ip("addr", "del", f"{net1}/32", "dev", "podnet.vxlan")
        await eventually(lambda: f"inet {net1}/32 " in n["n1"].ns.ip("-o", "-4", "addr", "show", "dev", "podnet.vxlan"),
                         "device address repaired")

        # a smaller MTU on the router's path (a route MTU, which forwarding honours) between the two subnets
        rt.ip("route", "replace", "192.168.78.0/24", "dev", "br2", "mtu", "1400")
        rt.ip("route", "replace", "192.168.77.0/24", "dev", "br1", "mtu", "1400")
        assert vxlan_df(n["n1"].ns) == vxlan_df(n["n3"].ns) == df
        # the way back goes to another pod on n1: p1, once it knows the smaller MTU, advertises an MSS that
        # keeps p3's segments small, so n3 would have nothing to discover
        p1b = pool.netns("p1b")
        code, r1b = await asyncio.to_thread(n["n1"].cni, "ADD", "c1b", p1b.path)
        assert code == 0, r1b
        ip1b = r1b["ips"][0]["address"].split("/")[0]
        created, refused = ip_stat(rt, "FragCreates"), ip_stat(rt, "FragFails")
        for a, b, ip_b in ((p1, p3, ip3), (p3, p1b, ip1b)):
            out = await asyncio.to_thread(bulk, a, b, ip_b)
            assert crossed(out), out
        if df == "inherit":  # refused by the router, learned by the nodes and the pods; nothing fragmented
            assert ip_stat(rt, "FragFails") > refused and ip_stat(rt, "FragCreates") == created
            assert route_mtu(n["n1"].ns, ip3) == route_mtu(n["n3"].ns, ip1b) == "1350"
            assert route_mtu(p1, ip3) == route_mtu(p3, ip1b) == "1350"
            assert "underlay path MTU: 192.168.78.13 1400" in n["n1"].log()
            assert "underlay path MTU: 192.168.77.11 1400" in n["n3"].log()
        else:  # fragmented by the router, learned by nobody
            assert ip_stat(rt, "FragCreates") > created
            assert route_mtu(n["n1"].ns, ip3) == route_mtu(p1, ip3) == ""
        # a full-size UDP datagram without DF crosses too: fragmented by the pod (it knows the path MTU now)
        # or by the router
        fragmenter = p1 if df == "inherit" else rt
        created = ip_stat(fragmenter, "FragCreates")
        assert await asyncio.to_thread(udp_seen, p3, ip3, p1, 1450 - 28, False) == (ip1, 1450 - 28, True)
        assert ip_stat(fragmenter, "FragCreates") > created

        # the other outer DF mode set by hand: the re-check recreates the device with the configured one,
        # n3 follows its new VTEP MAC, and the transfer completes again
        n["n1"].ns.ip("link", "set", "podnet.vxlan", "type", "vxlan", "df", {"inherit": "unset", "unset": "inherit"}[df])
        await eventually(lambda: n["n1"].log().count("podnet.vxlan created") == 2 and vxlan_df(n["n1"].ns) == df,
                         f"device recreated with DF {df}")
        await eventually(lambda: {m for m, _ in fdbs(n["n3"])} == {vtep_mac(n["n1"])}, "n3 follows n1's new VTEP MAC")
        await eventually(lambda: neighs(n["n1"]) and routes(n["n1"]).get(cidr["n3"], "").endswith("onlink"),
                         "n1 entries over the recreated device")
        out = await asyncio.to_thread(bulk, p1, p3, ip3)
        assert crossed(out), out
    finally:
        await client.close()
        await api.stop()


def hand_made_overlay(pool, df: str, forward_use_pmtu: str, underlay: int = 4):
    """podnet's VXLAN layout built by hand (no daemon) on :func:`routed_underlay` with a 1400-byte route MTU on
    the router: nodes n1 and n3, VXLAN devices over the IPv4 (outer DF ``df``) or the IPv6 ``underlay``, a pod
    per node (p1 10.244.1.2, p3 10.244.3.2, pod MTU = the device's) and ``net.ipv4.ip_forward_use_pmtu`` =
    ``forward_use_pmtu`` on both nodes."""
    rt, ns = routed_underlay(pool, ipv6=underlay == 6)
    rt.ip("route", "replace", "192.168.78.0/24", "dev", "br2", "mtu", "1400")
    rt.ip("route", "replace", "192.168.77.0/24", "dev", "br1", "mtu", "1400")
    if underlay == 6:  # IPv6 forwarding honours a locked route MTU only
        rt.ip("-6", "route", "replace", "fd00:78::/64", "dev", "br2", "metric", "256", "mtu", "lock", "1400")
        rt.ip("-6", "route", "replace", "fd00:77::/64", "dev", "br1", "metric", "256", "mtu", "lock", "1400")
    dev, mtu = overlay.DEVICE[underlay], str(1500 - overlay.OVERHEAD[underlay])
    pods = {}
    for i, o in ((1, 3), (3, 1)):
        node, local, remote = ns[f"n{i}"], UNDERLAY[f"n{i}"][1], UNDERLAY[f"n{o}"][1]
        if underlay == 6:
            local, remote = v6(local), v6(remote)
        node.sysctl("net.ipv4.ip_forward", "1")
        node.sysctl("net.ipv4.ip_forward_use_pmtu", forward_use_pmtu)
        node.ip("link", "add", dev, "type", "vxlan", "id", "1", "dstport", "8472", "local", local,
                "nolearning", *(["df", df] if underlay == 4 else []))
        node.ip("link", "set", dev, "address", f"02:00:00:00:00:0{i}", "mtu", mtu, "up")
        node.ip("addr", "add", f"10.244.{i}.0/32", "dev", dev)
        node.ip("neigh", "replace", f"10.244.{o}.0", "lladdr", f"02:00:00:00:00:0{o}", "dev", dev, "nud", "permanent")
        node.run("bridge", "fdb", "append", f"02:00:00:00:00:0{o}", "dev", dev, "dst", remote)
        node.ip("route", "add", f"10.244.{o}.0/24", "via", f"10.244.{o}.0", "dev", dev, "onlink")
        pod = pods[i] = pool.netns(f"p{i}")
        pool.veth(pod, "eth0", node, f"veth{i}")
        pod.ip("link", "set", "eth0", "mtu", mtu)
        node.ip("link", "set", f"veth{i}", "mtu", mtu, "up")
        node.ip("addr", "add", f"10.244.{i}.1/32", "dev", f"veth{i}")
        node.ip("route", "add", f"10.244.{i}.2/32", "dev", f"veth{i}")
        pod.ip("addr", "add", f"10.244.{i}.2/24", "dev", "eth0")
        pod.ip("link", "set", "eth0", "up")
        pod.ip("route", "add", "default", "via", f"10.244.{i}.1")
    return rt, ns, pods


def test_an_ipv6_underlay_black_holes_ipv4_pod_tcp_without_a_route_mtu(pool):
    """What an IPv6 underlay with a smaller hop does to IPv4 pods without podnet's route MTU (the VXLAN
    device's DF mode plays no part: routers never fragment IPv6): the router's "packet too big" teaches
    the node the path MTU (1400) and the VXLAN driver records 1330 on the node's route to the remote pod,
    but IPv4 forwarding ignores it, so the pod's full-size TCP segments are dropped on its own node and
    the transfer stalls. With ``mtu 1330`` on the route to the remote pod CIDR it completes and the pod
    learns 1330."""
    rt, ns, pods = hand_made_overlay(pool, "", "0", underlay=6)
    assert bulk(pods[1], pods[3], "10.244.3.2", limit=4) == ["timeout"]
    assert "mtu 1400" in ns["n1"].ip("-6", "route", "get", "fd00:78::13")  # the node learned the path MTU
    assert "mtu" not in pods[1].ip("route", "get", "10.244.3.2")  # the pod never heard of it

    rt, ns, pods = hand_made_overlay(pool, "", "0", underlay=6)
    for i, o in ((1, 3), (3, 1)):
        ns[f"n{i}"].ip("route", "replace", f"10.244.{o}.0/24", "via", f"10.244.{o}.0", "dev", "podnet.vxlan6",
                       "onlink", "mtu", "1330")
    out = bulk(pods[1], pods[3], "10.244.3.2")
    assert crossed(out), out
    assert "mtu 1330" in pods[1].ip("route", "get", "10.244.3.2")


def test_the_kernel_tells_the_pod_only_through_a_route_mtu_or_the_node_wide_sysctl(pool):
    """The kernel behaviour podnet's path-MTU discovery rests on (podnet.cni.pmtu), on a hand-made overlay
    with outer ``df inherit``: the node learns the underlay PMTU from the router and the VXLAN driver
    records it on the node's route to the remote pod, but nothing tells the pod (the driver answers the
    inner sender only on a bridged device) and IPv4 forwarding ignores a learned PMTU unless the node-wide
    ``net.ipv4.ip_forward_use_pmtu`` is 1: the pod's full-size TCP segments are dropped on its own node and
    the transfer stalls. Forwarding does honour a route's own ``mtu``: with ``mtu 1350`` (1400 - 50) on the
    route to the remote pod CIDR, and without the sysctl, the node answers the pod with "fragmentation
    needed", the pod's route learns 1350, the transfer completes and the router fragments nothing; the
    sysctl does the same from the learned PMTU. A UDP datagram without DF crosses either way."""
    rt, ns, pods = hand_made_overlay(pool, "inherit", "0")
    assert vxlan_df(ns["n1"]) == "inherit"
    fails = ip_stat(ns["n1"], "FragFails")
    assert bulk(pods[1], pods[3], "10.244.3.2", limit=4) == ["timeout"]
    assert ip_stat(rt, "FragCreates") == 0 and ip_stat(ns["n1"], "FragFails") > fails  # dropped on n1, DF set
    assert "mtu 1400" in ns["n1"].ip("route", "get", "192.168.78.13")  # the node did learn the underlay PMTU
    assert "mtu" not in pods[1].ip("route", "get", "10.244.3.2")  # the pod never heard of it

    for sysctl, route_mtu_metric in (("0", ["mtu", "1350"]), ("1", [])):
        rt, ns, pods = hand_made_overlay(pool, "inherit", sysctl)
        for i, o in ((1, 3), (3, 1)):
            ns[f"n{i}"].ip("route", "replace", f"10.244.{o}.0/24", "via", f"10.244.{o}.0", "dev", "podnet.vxlan",
                           "onlink", *route_mtu_metric)
        out = bulk(pods[1], pods[3], "10.244.3.2")
        assert crossed(out), out
        assert ip_stat(rt, "FragCreates") == 0
        assert "mtu 1350" in pods[1].ip("route", "get", "10.244.3.2")
        assert udp_seen(pods[3], "10.244.3.2", pods[1], 1450 - 28, False) == ("10.244.1.2", 1450 - 28, True)
    assert "mtu 1400" in ns["n1"].ip("route", "get", "192.168.78.13")  # learned through the router's ICMP


def ip_stat(ns, name: str) -> int:
    """One counter of the ``Ip:`` line of /proc/net/snmp inside ``ns``."""
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").splitlines() if line.startswith("Ip:")]
    return int(lines[1][lines[0].index(name)])


def ipv6_api_socket(netns: str, port: int):
    """A listening TCP socket on ``[fd00:77::1]:port`` inside ``netns`` (the router of an IPv6-only underlay)."""
    import socket

    from podnet.host.nsenter import inside

    with inside(netns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("fd00:77::1", port))
        s.listen(64)
        s.setblocking(False)
        return s


@pytest.mark.parametrize(("underlay", "want_mtu"), [
    pytest.param(4, "1350", id="ipv4-underlay"),
    pytest.param(6, "1330", id="ipv6-underlay"),
])
async def test_pods_learn_a_smaller_underlay_hop_by_path_mtu_discovery(pool, make_node, underlay, want_mtu):
    """Dual-stack pods on two nodes in different subnets, over an IPv4-only or an IPv6-only underlay whose
    router forwards at most 1400 bytes between the subnets: a 4 MiB TCP transfer of each pod family
    completes, each pod learns the smaller MTU (``ip route get`` in the pod: 1400 less 50 or 70 bytes of
    encapsulation) and the node's route to the other node's pods carries it. Without podnet's route MTU
    an IPv6 underlay black-holes IPv4 pod TCP here (IPv4 forwarding ignores the PMTU the node learns).
    The route re-check runs every 30 s only: the ICMP watch is what notices the smaller hop. The
    transfer times (discovery included, then again once learned) are printed."""
    rt, ns = routed_underlay(pool, ipv6=underlay == 6)
    hop = ["mtu", "lock", "1400"]  # IPv6 forwarding honours a locked route MTU only
    for net, br in (("192.168.77.0/24", "br1"), ("192.168.78.0/24", "br2")):
        rt.ip("route", "replace", net, "dev", br, *hop)
        if underlay == 6:
            rt.ip("-6", "route", "replace", v6(net.split("/")[0]) + "/64", "dev", br, "metric", "256", *hop)
    if underlay == 6:
        for k in ("n1", "n3"):
            ns[k].ip("-4", "addr", "flush", "dev", "eth0")  # IPv6-only underlay
        sock, master = ipv6_api_socket(rt.name, API_PORT), f"http://[fd00:77::1]:{API_PORT}"
    else:
        sock, master = listening_socket(rt.name, API_IP, API_PORT), f"http://{API_IP}:{API_PORT}"
    extra = ["--master", master, "--route-interval", "30s", "--backend", "auto"]
    api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
    client = ApiClient.from_url(api.url)
    try:
        n = {k: make_node((), extra, ns=ns[k]) for k in ("n1", "n3")}
        under = {k: UNDERLAY[k][1] if underlay == 4 else v6(UNDERLAY[k][1]) for k in n}
        for k, node in n.items():
            cidrs = [f"10.244.{k[1]}.0/24", f"fd00:10:{k[1]}::/64"]
            await client.create(overlay.NODES, {
                "metadata": {"name": node.ns.name}, "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
                "status": {"addresses": [{"type": "InternalIP", "address": under[k]}]}})
        for node in n.values():
            await eventually(lambda: node.cni("STATUS", version="1.1.0")[0] == 0, "STATUS 0")
        dev = overlay.DEVICE[underlay]
        await eventually(lambda: routes(n["n1"], "-6").get("fd00:10:3::/64", "").endswith(f"dev {dev} onlink")
                         and routes(n["n1"]).get("10.244.3.0/24", "").endswith(f"dev {dev} onlink"),
                         f"n1 routes n3's pods of both families over {dev}")
        pods, ips = await pods_on(pool, n)
        size = 4 << 20
        for fam in (4, 6):
            first = await asyncio.to_thread(bulk, pods["n1"], pods["n3"], ips["n3"][fam], 60.0, size)
            assert crossed(first, size), (fam, first)
            again = await asyncio.to_thread(bulk, pods["n1"], pods["n3"], ips["n3"][fam], 60.0, size)
            assert crossed(again, size), (fam, again)
            print(f"IPv{underlay} underlay, IPv{fam} pods: {size >> 20} MiB in {first[3]} s with discovery, "
                  f"{again[3]} s after")
            assert route_mtu(pods["n1"], ips["n3"][fam]) == want_mtu, fam
        for cidr, fam in (("10.244.3.0/24", "-4"), ("fd00:10:3::/64", "-6")):
            assert f"mtu {want_mtu}" in n["n1"].ns.ip(fam, "route", "show", cidr)
        assert f"underlay path MTU: {under['n3']} 1400" in n["n1"].log()
    finally:
        await client.close()
        await api.stop()
