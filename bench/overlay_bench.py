"""Cross-node pod<->pod over podnet's VXLAN, against the floor (a hand-configured kernel VXLAN) and host-gw.

    .venv/bin/python -P bench/overlay_bench.py [--seconds 5] [--rounds 3] [--out FILE]

Everything runs in network namespaces this script creates (prefix ``pnt-ovl-bench-``) and removes:
a router netns with two bridges (192.168.77.0/24 and 192.168.78.0/24, forwarding between them and knowing
nothing of pod CIDRs), node namespaces n1 and n2 on the first subnet and n3 (and n4, for the join timing) on
the second, each running ``podnet-cni daemon --backend auto`` against an in-process lab API server. A pod on
n1 reaches a pod on n3 over podnet's VXLAN and a pod on n2 over host-gw (the same daemons decide that).

The floor: the same two node namespaces n1 and n3 joined by a second, hand-configured kernel VXLAN device
(``flr``, VNI 99, port 4789, nolearning, one static FDB and one static neighbour entry each side), the
traffic running between addresses on those devices: VXLAN with nothing of podnet around it (no pod veth
hop, no routing into a pod). Same underlay path, MTU 1450 on both.

Measured, interleaved per round so machine noise hits all three alike: iperf3 TCP throughput
(``--seconds`` each) and sockperf UDP ping-pong latency (median of its per-message p50s). Plus the time
from a Node object being created to the first packet from an existing pod reaching a pod on that node
(its daemon already running: CIDR allocation, VTEP publication, peers' entries, the pod's ADD, the probe).

Path-MTU discovery (``--pmtu-rounds``): the router then forwards at most 1400 bytes between the subnets,
one byte-step smaller each round (1400, 1390, ...) so every round has something new to discover; each
round a fresh pod on n1 (no cached path MTU) sends 4 MiB over TCP to the pod on n3, then sends 4 MiB
again once it has learned: the first transfer includes the router's ICMP, the node's daemon noticing it
and setting the route MTU, the pod's retransmission after the node's "fragmentation needed"; the
difference of the two is what discovery cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from podnet.cni import install, overlay
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.host.netns import Netns, NetnsPool
from podnet.host.nsenter import listening_socket

PODNET_CNI = str(Path(sys.executable).parent / "podnet-cni")
API_IP, API_PORT = "192.168.77.1", 6443
NODES = {"n1": ("br1", "192.168.77.11", "192.168.77.1"), "n2": ("br1", "192.168.77.12", "192.168.77.1"),
         "n3": ("br2", "192.168.78.13", "192.168.78.1"), "n4": ("br2", "192.168.78.14", "192.168.78.1")}


class Node:
    def __init__(self, ns: Netns, d: Path) -> None:
        self.ns, self.dir = ns, d
        install.install(str(d / "bin"), str(d / "net.d"), str(d / "cni.sock"), str(d / "data"))
        self.proc = ns.popen(PODNET_CNI, "daemon", "--socket", str(d / "cni.sock"), "--node-name", ns.name,
                             "--data-dir", str(d / "data"), "--master", f"http://{API_IP}:{API_PORT}",
                             "--route-interval", "1", "--backend", "auto",
                             stdout=open(d / "daemon.log", "ab"), stderr=subprocess.STDOUT)

    def cni(self, verb: str, cid: str, netns: str = "") -> tuple[int, dict]:
        conf = json.loads((self.dir / "net.d" / "10-podnet.conflist").read_text())["plugins"][0]
        conf.update(cniVersion="1.1.0", name="podnet")
        env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
               "CNI_PATH": str(self.dir / "bin"), "CNI_ARGS": f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        p = subprocess.run(["ip", "netns", "exec", self.ns.name, str(self.dir / "bin" / "podnet-cni")],
                           input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
        out = json.loads(p.stdout) if p.stdout.strip() else {}
        return (0 if p.returncode == 0 else out.get("code", 99)), out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def fabric(pool: NetnsPool) -> tuple[Netns, dict[str, Netns]]:
    rt = pool.netns("rt")
    rt.sysctl("net.ipv4.ip_forward", "1")
    for br, gw in (("br1", "192.168.77.1/24"), ("br2", "192.168.78.1/24")):
        rt.ip("link", "add", br, "type", "bridge")
        rt.ip("addr", "add", gw, "dev", br)
        rt.ip("link", "set", br, "up")
    nodes = {}
    for key, (br, ip, gw) in NODES.items():
        n = pool.netns(key)
        pool.veth(n, "eth0", rt, "p" + key)
        rt.ip("link", "set", "p" + key, "master", br)
        n.ip("addr", "add", f"{ip}/24", "dev", "eth0")
        n.ip("route", "add", "default", "via", gw)
        nodes[key] = n
    return rt, nodes


def floor(a: Netns, a_ip: str, b: Netns, b_ip: str) -> tuple[str, str]:
    """A hand-made VXLAN between two node namespaces; returns the two overlay addresses."""
    macs = {"a": "02:99:00:00:00:01", "b": "02:99:00:00:00:02"}
    addrs = {"a": "10.99.0.1", "b": "10.99.0.2"}
    for me, ns, local, peer, peer_ip in (("a", a, a_ip, "b", b_ip), ("b", b, b_ip, "a", a_ip)):
        ns.ip("link", "add", "flr", "address", macs[me], "mtu", "1450", "type", "vxlan", "id", "99", "local", local,
              "dstport", "4789", "nolearning")
        ns.ip("addr", "add", addrs[me] + "/24", "dev", "flr")
        ns.ip("link", "set", "flr", "up")
        ns.ip("neigh", "replace", addrs[peer], "lladdr", macs[peer], "dev", "flr", "nud", "permanent")
        ns.run("bridge", "fdb", "append", macs[peer], "dev", "flr", "dst", peer_ip, "self", "permanent")
    return addrs["a"], addrs["b"]


def floor_pods(pool: NetnsPool, a: Netns, b: Netns) -> tuple[Netns, str, Netns, str]:
    """Two pod-like namespaces behind the hand-made VXLAN: a veth into each node namespace and
    static routes over ``flr``, podnet's data path built by hand (no daemon, no podnet code)."""
    pods = []
    for i, (node, peer_net, peer_gw) in enumerate(((a, "10.98.2.0/24", "10.99.0.2"),
                                                  (b, "10.98.1.0/24", "10.99.0.1")), start=1):
        p = pool.netns(f"fpod{i}")
        pool.veth(p, "eth0", node, "fv0")
        node.ip("link", "set", "fv0", "mtu", "1450")
        p.ip("link", "set", "eth0", "mtu", "1450")
        node.ip("addr", "add", f"10.98.{i}.1/24", "dev", "fv0")
        p.ip("addr", "add", f"10.98.{i}.2/24", "dev", "eth0")
        p.ip("route", "add", "default", "via", f"10.98.{i}.1")
        node.ip("route", "add", peer_net, "via", peer_gw, "dev", "flr")
        pods.append(p)
    return pods[0], "10.98.1.2", pods[1], "10.98.2.2"


def iperf(server: Netns, ip: str, client: Netns, seconds: float) -> float:
    """Gbit/s received over one TCP stream."""
    srv = server.popen("iperf3", "-s", "-1", "-B", ip, "-p", "5201", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            out = client.run("iperf3", "-c", ip, "-p", "5201", "-t", str(seconds), "-J", check=False,
                             timeout=seconds + 30)
            res = json.loads(out) if out.strip() else {}
            if "error" not in res and res:
                return res["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)  # server not listening yet
        raise RuntimeError(f"iperf3 to {ip} failed: {out[-500:]}")
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def sockperf(server: Netns, ip: str, client: Netns, seconds: float) -> float:
    """Median one-way latency (usec) of a UDP ping-pong, as sockperf reports it (half the round trip)."""
    srv = server.popen("sockperf", "server", "-i", ip, "-p", "11111", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = client.run("sockperf", "ping-pong", "-i", ip, "-p", "11111", "-t", str(seconds), timeout=seconds + 30)
        m = re.search(r"percentile 50\.000 =\s*([0-9.]+)", out)
        if not m:
            raise RuntimeError(f"sockperf to {ip}: {out[-500:]}")
        return float(m.group(1))
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 11111)); s.settimeout(30)
print("ready", flush=True)
data, peer = s.recvfrom(100); s.sendto(data, peer)
"""

PROBE = r"""
import socket, sys, time
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(0.005)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    c.sendto(b"x", (sys.argv[1], 11111))
    try:
        c.recv(100); print(time.time()); break
    except OSError:
        pass
"""


async def wait(fn, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await asyncio.to_thread(fn)
        if v:
            return v
        await asyncio.sleep(0.02)
    raise RuntimeError(f"timed out: {what}")


SEND = r"""
import socket, sys, time
size = 4 << 20
t0 = time.monotonic()
c = socket.create_connection((sys.argv[1], 5202), timeout=60)
c.sendall(bytes(size)); c.shutdown(socket.SHUT_WR)
assert c.recv(100) == str(size).encode()
print(f"{time.monotonic() - t0:.4f}")
"""

SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5202)); s.listen(4)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    c, _peer = s.accept(); c.settimeout(60); n = 0
    while (b := c.recv(1 << 16)):
        n += len(b)
    c.sendall(str(n).encode()); c.close()
"""


def route_mtu(ns: Netns, dst: str) -> str:
    f = ns.ip("route", "get", dst).split()
    return f[f.index("mtu") + 1] if "mtu" in f else "-"


async def discovery(a: argparse.Namespace, pool: NetnsPool, rt: Netns, node1: "Node", pod3: Netns,
                    ip3: str) -> list[str]:
    """Per round: (first transfer s, second transfer s, hop MTU, the fresh pod's learned route MTU)."""
    out = []
    srv = pod3.popen(sys.executable, "-P", "-c", SINK, ip3, str(2 * a.pmtu_rounds), stdout=subprocess.PIPE,
                     text=True)
    try:
        srv.stdout.readline()
        for r in range(a.pmtu_rounds):
            hop = 1400 - 10 * r
            for net, br in (("192.168.78.0/24", "br2"), ("192.168.77.0/24", "br1")):
                rt.ip("route", "replace", net, "dev", br, "mtu", "lock", str(hop))
            pod = pool.netns(f"pmtu{r}")
            code, res = node1.cni("ADD", f"pmtu{r}", pod.path)
            assert code == 0, res
            first = float(pod.run(sys.executable, "-P", "-c", SEND, ip3, timeout=120))
            second = float(pod.run(sys.executable, "-P", "-c", SEND, ip3, timeout=120))
            out.append((first, second, hop, route_mtu(pod, ip3)))
            print(f"pmtu round {r + 1}: hop {hop}: {first:.3f} s then {second:.3f} s, pod learned "
                  f"{out[-1][3]}", file=sys.stderr)
    finally:
        srv.kill()
        srv.wait()
    return out


def pod_ip(res: dict) -> str:
    return res["ips"][0]["address"].split("/")[0]


async def run(a: argparse.Namespace) -> list[str]:
    pool = NetnsPool("pnt-ovl-bench-")
    tmp = Path(tempfile.mkdtemp(prefix="podnet-ovl-bench-"))
    nodes: dict[str, Node] = {}
    api = client = None
    load_before = os.getloadavg()[0]
    try:
        rt, ns = fabric(pool)
        sock = listening_socket(rt.name, API_IP, API_PORT)
        api = await LabApiServer(cluster_cidr="10.244.0.0/16").start(["127.0.0.1:0"], sockets=[sock])
        client = ApiClient.from_url(api.url)
        for k, n in ns.items():
            (tmp / k).mkdir()
            nodes[k] = Node(n, tmp / k)
        for k in ("n1", "n2", "n3"):
            await client.create(overlay.NODES, {"metadata": {"name": ns[k].name}, "status": {
                "addresses": [{"type": "InternalIP", "address": NODES[k][1]}]}})
        for k in ("n1", "n2", "n3"):
            await wait(lambda: nodes[k].cni("STATUS", "s")[0] == 0, f"{k} ready")
        cidr3 = (await client.get(overlay.NODES, ns["n3"].name))["spec"]["podCIDR"]
        await wait(lambda: "dev podnet.vxlan " in ns["n1"].ip("route", "show", cidr3), "n1 vxlan route to n3")
        pods, ips = {}, {}
        for k in ("n1", "n2", "n3"):
            pods[k] = pool.netns("pod" + k[1])
            code, res = nodes[k].cni("ADD", "bench" + k, pods[k].path)
            assert code == 0, res
            ips[k] = pod_ip(res)
        f1, f3 = floor(ns["n1"], NODES["n1"][1], ns["n3"], NODES["n3"][1])
        fa, fa_ip, fc, fc_ip = floor_pods(pool, ns["n1"], ns["n3"])
        paths = {"podnet VXLAN (pod n1 -> pod n3)": (pods["n3"], ips["n3"], pods["n1"]),
                 "floor: kernel VXLAN, static FDB (node n1 -> node n3)": (ns["n3"], f3, ns["n1"]),
                 "floor + a pod veth hop each side, by hand": (fc, fc_ip, fa),
                 "podnet host-gw (pod n1 -> pod n2)": (pods["n2"], ips["n2"], pods["n1"])}
        tput: dict[str, list[float]] = {p: [] for p in paths}
        lat: dict[str, list[float]] = {p: [] for p in paths}
        for r in range(a.rounds):
            for name, (s, ip, c) in paths.items():
                tput[name].append(await asyncio.to_thread(iperf, s, ip, c, a.seconds))
            for name, (s, ip, c) in paths.items():
                lat[name].append(await asyncio.to_thread(sockperf, s, ip, c, a.seconds))
            print(f"round {r + 1}: " + "; ".join(f"{n.split(' (')[0]} {tput[n][-1]:.2f} Gbit/s {lat[n][-1]:.1f} us"
                                                   for n in paths), file=sys.stderr)

        # join: n4's daemon runs already; its Node appears now; time to the first pod packet reaching it
        pod4 = pool.netns("pod4")
        t0 = time.time()
        await client.create(overlay.NODES, {"metadata": {"name": ns["n4"].name}, "status": {
            "addresses": [{"type": "InternalIP", "address": NODES["n4"][1]}]}})
        await wait(lambda: nodes["n4"].cni("STATUS", "s")[0] == 0, "n4 ready", 10)
        code, res = nodes["n4"].cni("ADD", "bench-n4", pod4.path)
        assert code == 0, res
        ip4 = pod_ip(res)
        srv = pod4.popen(sys.executable, "-P", "-c", ECHO, ip4, stdout=subprocess.PIPE, text=True)
        try:
            srv.stdout.readline()
            out = pods["n1"].run(sys.executable, "-P", "-c", PROBE, ip4, "10", timeout=30).strip()
        finally:
            srv.kill()
            srv.wait()
        join_ms = (float(out) - t0) * 1000 if out else float("nan")
        found = await discovery(a, pool, rt, nodes["n1"], pods["n3"], ips["n3"]) if a.pmtu_rounds else []

        fl = "floor: kernel VXLAN, static FDB (node n1 -> node n3)"
        rows = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load_before:.1f} before, "
                f"{os.getloadavg()[0]:.1f} after: "
                f"{a.rounds} rounds x {a.seconds:g} s per measurement, medians over rounds.", "",
                "| path | TCP throughput Gbit/s (iperf3, 1 stream) | x floor | UDP ping-pong p50 us (sockperf) | x floor |",
                "|---|---|---|---|---|"]
        for name in paths:
            t, l_ = statistics.median(tput[name]), statistics.median(lat[name])
            rows.append(f"| {name} | {t:.2f} | {t / statistics.median(tput[fl]):.2f} | {l_:.1f} | "
                        f"{l_ / statistics.median(lat[fl]):.2f} |")
        rows += ["", f"Node join -> first pod packet across VXLAN: {join_ms:.0f} ms (Node created, CIDR allocated, "
                     "VTEP published, peers programmed, pod ADDed on the new node, probe every 5 ms from pod n1)."]
        if found:
            firsts, seconds = [f[0] for f in found], [f[1] for f in found]
            rows += ["", f"Path-MTU discovery, {len(found)} rounds (router hop 1400, 1390, ... bytes; a fresh pod on n1 "
                         "sends 4 MiB over TCP to the pod on n3, then 4 MiB again): first transfer median "
                         f"{statistics.median(firsts):.3f} s (max {max(firsts):.3f}), once learned "
                         f"{statistics.median(seconds):.3f} s: discovery cost "
                         f"{statistics.median(f - s for f, s in zip(firsts, seconds)):.3f} s median; "
                         "the pod learned " + ", ".join(f"{f[3]} (hop {f[2]})" for f in found) + "."]
        return rows
    finally:
        for n in nodes.values():
            n.stop()
        if client:
            await client.close()
        if api:
            await api.stop()
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    ap.add_argument("--pmtu-rounds", type=int, default=5, help="path-MTU discovery rounds (0: none)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    rows = asyncio.run(run(a))
    text = "\n".join(rows) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
