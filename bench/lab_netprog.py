"""Benchmark: network programming latency in a lab.

Time from a Service create in the API to (a) every node routing it: a pod on
each node connects to the new ClusterIP (traversing its own node's proxy
rules) and gets an answer, and (b) cluster DNS resolving its name (an A query
for <svc>.default.svc.cluster.local sent to the kube-dns ClusterIP answers the
new ClusterIP). Median and p99 over N Services (default 50), created one at a
time against the lab's existing echo pods (so endpoints exist at once).

Run as root: .venv/bin/python -P bench/lab_netprog.py [--services 50] [--lab NAME] [--nodes 2 --pods 3]
Brings up its own lab (default 2 nodes x 3 pods) for each proxy min-sync period compared (100ms,
the lab default, and 1s, kube-proxy's default), removed afterwards, unless --lab names a running one.
The machine's load average is printed with each table.
Pollers are long-lived processes inside pod namespaces retrying every 2 ms, so
the measurement is not dominated by process start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.check.checkkit import pod_netns_map
from podnet.netlab.lab import labstate, manifests as m

PODNET = str(Path(sys.executable).parent / "podnet")

POLLER = r'''
import socket, struct, sys, time
def dns_a(server, name, timeout=0.05):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
    try:
        s.sendto(q, (server, 53)); data = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    if len(data) < 12 or data[3] & 0xF != 0 or struct.unpack(">H", data[6:8])[0] == 0:
        return None
    return socket.inet_ntoa(data[-4:])   # the last record's RDATA (one A answer)
for line in sys.stdin:
    kind, a, b = line.split()
    end = time.time() + 20
    ok = False
    while time.time() < end and not ok:
        if kind == "tcp":
            try:
                c = socket.create_connection((a, int(b)), timeout=0.05); c.sendall(b"x\n"); ok = bool(c.recv(100)); c.close()
            except OSError:
                time.sleep(0.002)
        else:
            ok = dns_a(a, b.split("=")[0]) == b.split("=")[1]
            if not ok:
                time.sleep(0.002)
    print(("ok " if ok else "timeout ") + repr(time.time()), flush=True)
'''


class Poller:
    def __init__(self, netns: str) -> None:
        self.p = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-S", "-c", POLLER],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    async def answer(self) -> tuple[bool, float]:
        line = await asyncio.to_thread(self.p.stdout.readline)
        status, t = line.split()
        return status == "ok", float(t)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(5)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def measure(lab: str, n: int) -> None:
    st = labstate.load(lab)
    plan = st.plan()
    nsmap = pod_netns_map(plan.run_dir)
    # one client pod per node (its node's proxy rules carry its traffic)
    clients = [nsmap[f"default/echo-n{node.index}-1"] for node in plan.nodes]
    pollers = [Poller(ns) for ns in clients]
    dns_poller = Poller(clients[0])
    route_lat, dns_lat, both = [], [], []
    load0 = os.getloadavg()[0]
    async with ApiClient.from_flags(master=st.local_master, kubeconfig=str(plan.run_dir / "kubeconfig")) as client:
        try:
            for i in range(n):
                name = f"np-{i}"
                body = m.service(name, {"app": "echo"}, [("echo", "TCP", 80, m.ECHO_PORT)], labels={"bench": "np"})
                t0 = time.time()
                svc = await client.create(r.SERVICES, body, "default")
                ip = svc["spec"]["clusterIP"]
                for p in pollers:
                    p.ask(f"tcp {ip} 80")
                dns_poller.ask(f"dns {plan.dns_service_ip} {name}.default.svc.cluster.local={ip}")
                answers = await asyncio.gather(*(p.answer() for p in pollers), dns_poller.answer())
                if not all(ok for ok, _ in answers):
                    print(f"{name}: not programmed within 20 s: {answers}", file=sys.stderr)
                    continue
                r_all = max(t for _, t in answers[:-1]) - t0
                d = answers[-1][1] - t0
                route_lat.append(r_all)
                dns_lat.append(d)
                both.append(max(r_all, d))
        finally:
            for p in pollers + [dns_poller]:
                p.close()
            items, _ = await client.list(r.SERVICES, "default", label_selector="bench=np")
            for it in items:
                await client.delete(r.SERVICES, it["metadata"]["name"], "default")
    print(f"\nnetwork programming latency, lab {lab!r} ({len(plan.nodes)} nodes), {len(both)}/{n} Services, "
          f"load average at start/end {load0:.2f}/{os.getloadavg()[0]:.2f}\n")
    print("| measured from Service create to | median (ms) | p99 (ms) | max (ms) |")
    print("|---|---|---|---|")
    for label, xs in (("every node routes it (TCP answer via ClusterIP)", route_lat),
                      ("DNS answers its ClusterIP", dns_lat), ("both", both)):
        if xs:
            print(f"| {label} | {statistics.median(xs) * 1000:.0f} | {pct(xs, 0.99) * 1000:.0f} | {max(xs) * 1000:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--lab", help="a running lab (default: bring up a lab per min-sync period, remove it)")
    ap.add_argument("--nodes", type=int, default=2, help="nodes of the lab brought up (default 2)")
    ap.add_argument("--pods", type=int, default=3, help="echo pods per node of the lab brought up (default 3)")
    ap.add_argument("--min-sync", default="100ms,1s",
                    help="proxy --iptables-min-sync-period values to compare (lab default 100ms, kube-proxy's 1s)")
    a = ap.parse_args()
    n = max(1, min(a.services, 500))
    if a.lab:
        asyncio.run(measure(a.lab, n))
        return 0
    for period in a.min_sync.split(","):
        lab = "bnp"
        subprocess.run([PODNET, "lab", "up", "--name", lab, "--nodes", str(max(1, a.nodes)), "--pods-per-node",
                        str(max(1, a.pods)), "--proxy-min-sync-period", period], check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
        try:
            print(f"\n### proxy --iptables-min-sync-period {period}")
            asyncio.run(measure(lab, n))
        finally:
            subprocess.run([PODNET, "lab", "down", "--name", lab], stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
