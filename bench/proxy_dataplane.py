"""Data plane: new-connection latency to a ClusterIP with 10 vs 10k Services loaded.

Namespaces: client (10.0.3.3) -> node (routes, runs the rules) -> server (10.128.0.1, the
target service's endpoint). iptables rules are restored with iptables-legacy, the nftables mode's
table with ``nft -f``. All six rule sets are loaded at once (one node netns each); 7 (default) interleaved
rounds, each making N sequential TCP connections (connect + close) per rule set; medians over rounds
of each round's p50/p90/p99. The target is the service that sorts last, i.e. the worst case for a
linear KUBE-SERVICES chain. Shapes:
  podnet          : iptables mode, destination dispatch tree (dispatch.py)
  kube-proxy shape: iptables mode, the same services with a flat services chain (leaf = infinity)
  podnet nftables : nftables mode (one verdict map lookup, then the service chain)
Run: .venv/bin/python -P bench/proxy_dataplane.py [N] [rounds]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ only
from proxy_lib import objects, pool, require_root, restore_seconds  # noqa: E402

from podnet.proxy.nft_proxier import build as nft_build  # noqa: E402
from podnet.proxy.nft_render import render_full as nft_render_full  # noqa: E402
from podnet.proxy.render import render_full  # noqa: E402
from podnet.proxy.rules import JUMPS, NodeContext  # noqa: E402
from podnet.proxy.snapshot import build  # noqa: E402

CLIENT = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
for i in range(n + 50):
    s = socket.socket()
    t = time.perf_counter_ns()
    s.connect((host, port))
    dt = time.perf_counter_ns() - t
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    if i >= 50:
        lat.append(dt / 1000)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)], "p99": lat[int(len(lat) * 0.99)]}))
"""
SERVER = r"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(4096); print("ready", flush=True)
end = time.time() + 600
s.settimeout(5)
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""


def setup(p):
    node, client, server = p.netns("node"), p.netns("cli"), p.netns("srv")
    node.sysctl("net.ipv4.ip_forward", "1")
    for i, (ns, ip) in enumerate(((client, "10.0.3.3"), (server, "10.128.0.1"))):
        p.veth(node, f"p{i}", ns, "eth0")
        node.ip("addr", "add", "10.0.0.1/32", "dev", f"p{i}")
        node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
        ns.ip("addr", "add", f"{ip}/32", "dev", "eth0")
        ns.ip("route", "add", "10.0.0.1", "dev", "eth0")
        ns.ip("route", "add", "default", "via", "10.0.0.1")
    return node, client, server


def main(n: int, rounds: int = 7) -> None:
    require_root()
    p = pool()
    setups = []
    try:
        for count in (10, 10000):
            services, slices = objects(count, 1)
            target = services[-1]
            for shape, leaf in (("podnet", 16), ("kube-proxy shape", 10**9)):
                ctx = NodeContext(cluster_cidrs=("10.0.0.0/16",), node_ips=("10.0.0.1",), dispatch_leaf=leaf)
                text = render_full(build(services, slices, ctx, "node"))
                # the target service's endpoint is the one server
                text = text.replace(f"--to-destination {slices[-1].endpoints[0].addresses[0]}:8080", "--to-destination 10.128.0.1:8080")
                jumps = "".join(f"*{t}\n-I {c} 1 {r}\nCOMMIT\n" for t, c, r in JUMPS)
                node, client, server = setup(p)
                restore_seconds(node, text)
                restore_seconds(node, jumps)
                srv = server.popen(sys.executable, "-P", "-c", SERVER, stdout=subprocess.PIPE, text=True)
                assert srv.stdout.readline().strip() == "ready"
                setups.append((count, shape, client, target.cluster_ip, srv))
            ctx = NodeContext(cluster_cidrs=("10.0.0.0/16",), node_ips=("10.0.0.1",))
            text = nft_render_full(nft_build(services, slices, ctx, "node"))
            text = text.replace(f"dnat to {slices[-1].endpoints[0].addresses[0]}:8080", "dnat to 10.128.0.1:8080")
            node, client, server = setup(p)
            node.run("nft", "-f", "-", input=text)
            srv = server.popen(sys.executable, "-P", "-c", SERVER, stdout=subprocess.PIPE, text=True)
            assert srv.stdout.readline().strip() == "ready"
            setups.append((count, "podnet nftables", client, target.cluster_ip, srv))
        # Interleave: every round measures every configuration, so load drift hits all alike.
        results: dict[tuple[int, str], list[dict]] = {}
        for _ in range(rounds):
            for count, shape, client, ip, _srv in setups:
                out = client.run(sys.executable, "-P", "-c", CLIENT, ip, "80", str(n), timeout=300)
                results.setdefault((count, shape), []).append(json.loads(out))
    finally:
        for *_, srv in setups:
            srv.kill()
            srv.wait()
        p.close()
    med = {k: {q: statistics.median(r[q] for r in v) for q in ("p50", "p90", "p99")} for k, v in results.items()}
    print(f"{'services':>8} {'shape':>17} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8}   (medians over {rounds} interleaved rounds of {n})")
    for (count, shape), r in med.items():
        print(f"{count:>8} {shape:>17} {r['p50']:>8.1f} {r['p90']:>8.1f} {r['p99']:>8.1f}")
    for shape in ("podnet", "kube-proxy shape", "podnet nftables"):
        print(f"ratio p50 10000 vs 10 services, {shape}: {med[(10000, shape)]['p50'] / med[(10, shape)]['p50']:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 7)
