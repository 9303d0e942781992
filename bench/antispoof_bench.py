"""The anti-spoofing check's data-path cost, side by side in one run: pod-to-pod traffic through a node with
the ``PODNET-ANTISPOOF`` jump (``-m rpfilter`` on every packet from a ``pnc`` interface, raw PREROUTING)
against the same node without the jump, and against the IPv4-only alternative, the ``rp_filter=1`` sysctl
on each ``pnc`` interface.

    .venv/bin/python -P bench/antispoof_bench.py [--rounds 7] [--udp 2000] [--tcp 300] [--out bench/results/antispoof.md]

Topology (namespaces ``pnt-s5af-bench-*``, removed at the end, also after a failure): one node namespace,
two pod namespaces on point-to-point veths named as podnet names them (``pnc`` + 11 hex digits), /32 routes,
the node as the pods' gateway (the routed layout of cni/netops.py). Pod B runs a UDP echo and a TCP
accept-and-close server; pod A runs the client. Each round measures, in pod A: UDP request/response
round trips (``--udp`` of them, sequential) and new TCP connections (``--tcp`` connect + one byte + close,
sequential); rounds cycle through the modes "off" (no jump, rp_filter 0), "rpfilter" (the jump) and
"sysctl" (no jump, rp_filter 1 on both pnc interfaces), so machine noise hits all alike. Reported: the
median over rounds of each round's median round-trip time and the ratios to "off"; the load average
before and after. Every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from podnet.cni import antispoof
from podnet.host.netns import NetnsPool

PY = sys.executable
A, B, GW = "10.9.0.1", "10.9.0.2", "10.9.255.254"

SERVER = r"""
import socket, sys, threading, time
addr = sys.argv[1]
deadline = time.time() + float(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, 7000)); u.settimeout(1)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((addr, 7001)); t.listen(512)
t.settimeout(1)
def udp():
    while time.time() < deadline:
        try:
            data, peer = u.recvfrom(64)
        except socket.timeout:
            continue
        u.sendto(data, peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while time.time() < deadline:
    try:
        c, _ = t.accept()
    except socket.timeout:
        continue
    c.recv(1); c.close()
"""

CLIENT = r"""
import json, socket, statistics, sys, time
addr, n_udp, n_tcp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2); u.connect((addr, 7000))
udp = []
for i in range(n_udp):
    t0 = time.perf_counter(); u.send(b"x"); u.recv(64); udp.append((time.perf_counter() - t0) * 1e6)
tcp = []
for i in range(n_tcp):
    t0 = time.perf_counter()
    c = socket.create_connection((addr, 7001), timeout=2); c.send(b"x"); c.recv(1); c.close()
    tcp.append((time.perf_counter() - t0) * 1e6)
print(json.dumps({"udp": statistics.median(udp), "tcp": statistics.median(tcp)}))
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(pool: NetnsPool):
    node, a, b = pool.netns("node"), pool.netns("a"), pool.netns("b")
    node.sysctl("net.ipv4.ip_forward", "1")
    for host, (pod, ip) in zip(HOSTS, ((a, A), (b, B))):
        pool.veth(node, host, pod, "eth0")
        node.ip("addr", "add", f"{GW}/32", "dev", host)
        node.ip("route", "add", f"{ip}/32", "dev", host)
        pod.ip("addr", "add", f"{ip}/32", "dev", "eth0")
        pod.ip("link", "set", "lo", "up")
        pod.ip("route", "add", GW, "dev", "eth0")
        pod.ip("route", "add", "default", "via", GW)
    node.run("iptables-restore", "--noflush", "--wait", input=antispoof.restore_text(jump=True))
    return node, a, b


MODES = ("off", "rpfilter", "sysctl")
HOSTS = [f"pnc{i:011x}" for i in range(2)]


def set_mode(node, mode: str, was: str) -> None:
    rule = ["PREROUTING", "-i", "pnc+", "-j", antispoof.CHAIN]
    if was == "rpfilter":
        node.run("iptables", "--wait", "-t", "raw", "-D", *rule)
    if mode == "rpfilter":
        node.run("iptables", "--wait", "-t", "raw", "-I", *rule)
    for host in HOSTS:
        node.sysctl(f"net.ipv4.conf.{host}.rp_filter", "1" if mode == "sysctl" else "0")
    assert antispoof.parse_save(node.run("iptables-save", "-t", "raw")).jumps == (mode == "rpfilter")


def main() -> int:
    p = argparse.ArgumentParser(description="anti-spoofing data-path cost, side by side")
    p.add_argument("--rounds", type=int, default=7, help="rounds per mode, interleaved")
    p.add_argument("--udp", type=int, default=2000, help="UDP round trips per round")
    p.add_argument("--tcp", type=int, default=300, help="new TCP connections per round")
    p.add_argument("--out", default="", help="append the run to this markdown file")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    started, load0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), loadavg()
    pool = NetnsPool("pnt-s5af-bench-")
    srv = None
    try:
        node, a, b = build(pool)
        srv = b.popen(PY, "-P", "-c", SERVER, B, "600", stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        samples: dict[str, list[dict]] = {m: [] for m in MODES}
        mode = "rpfilter"  # the jump is in place after build()
        for _ in range(args.rounds):
            for want in MODES:
                set_mode(node, want, mode)
                mode = want
                samples[want].append(json.loads(a.run(PY, "-P", "-c", CLIENT, B, str(args.udp), str(args.tcp),
                                                      timeout=300)))
        state = antispoof.parse_save(node.run("iptables-save", "-c", "-t", "raw"))
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        pool.close()
    load1 = loadavg()
    rows = []
    for key, what in (("udp", f"UDP request/response RTT, us (median of {args.udp} per round)"),
                      ("tcp", f"new TCP connection (connect, 1 byte, close), us (median of {args.tcp} per round)")):
        off, rpf, sysctl = (statistics.median(s[key] for s in samples[m]) for m in MODES)
        rows.append(f"| {what} | {off:.1f} | {rpf:.1f} ({rpf / off:.3f}x) | {sysctl:.1f} ({sysctl / off:.3f}x) |")
    text = "\n".join([
        f"### Run {started}, load average {load0} -> {load1}",
        "",
        f"`.venv/bin/python -P bench/antispoof_bench.py --rounds {args.rounds} --udp {args.udp} --tcp {args.tcp}`; "
        f"{args.rounds} rounds per mode, interleaved; medians over rounds; spoofed drops counted during the run: "
        f"{state.dropped}.",
        "",
        "| measurement | no check | `-m rpfilter` jump (podnet) | `rp_filter=1` sysctl on pnc (IPv4 only) |",
        "|---|---|---|---|",
        *rows,
        "",
    ])
    print(text)
    if args.out:
        out = Path(args.out)
        head = "" if out.exists() else (
            "# Anti-spoofing: data-path cost\n\nThe CNI daemon's `PODNET-ANTISPOOF` check (cni/antispoof.py) "
            "against the same node without it, pod to pod through the node, side by side in one run "
            "(bench/antispoof_bench.py). Runs are appended, newest last.\n\n")
        with out.open("a") as f:
            f.write(head + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
