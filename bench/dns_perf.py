"""dnsperf against podnet-dns and dnsmasq side by side, serving the same 10,000 names on loopback.

    .venv/bin/python -P bench/dns_perf.py [--services 10000] [--seconds 10] [--rounds 2] [--workers 1,2]

Query mix: 95 % existing service names (A), 5 % NXDOMAIN names in the cluster zone.
Per server and round: one max-throughput run (dnsperf -c 4 -q 200 -T 1: QPS and average latency), and
one fixed-rate run (-Q 20000, -v: per-query latencies -> average and p99). Servers alternate so
machine noise hits both. Prints a markdown table; medians over rounds.
podnet-dns runs once per ``--workers`` count: 1 as bench/dns_static.py (same DnsServer/Handler as
podnet-dns in one process, table built from generated Services, no API server); N > 1 as this
script's ``--serve`` mode, podnet-dns's WorkerPool (a control process relaying the generated
objects to N worker processes on one SO_REUSEPORT address). dnsmasq as Debian's dnsmasq-base
with --addn-hosts. Peak RSS (VmHWM) is reported per process.
"""

from __future__ import annotations

import argparse
import os
import random
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dns_static import cluster, names  # noqa: E402

PODNET_ADDR = "127.0.0.7"
DNSMASQ_ADDR = "127.0.0.8"
CLIENTS = 4


def vm_hwm_kb(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def serve_pool(n: int, workers: int, listen: str) -> int:
    """--serve: podnet-dns's WorkerPool over n generated services; prints port, per-process VmHWM, pids."""
    import asyncio

    import uvloop

    from podnet.dns.server import split_hostport
    from podnet.kube.testing import FakeInformer
    from podnet.dns.workers import WorkerConfig, WorkerPool
    from podnet.kube.objects import Namespace

    async def go() -> None:
        services, slices, namespaces = cluster(n)
        informers = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(x) for x in namespaces]))
        del services, slices
        host, port = split_hostport(listen, 0)
        pool = WorkerPool(workers, WorkerConfig(host, port), informers)
        await pool.start()  # as podnet-dns: listen first, then the informers list
        for inf in informers:
            inf.synced()
        for _ in range(6000):
            if pool.ready():
                break
            await asyncio.sleep(0.01)
        pids = [os.getpid(), *pool.pids()]
        print(f"port={pool.port} rss_kb={max(vm_hwm_kb(p) for p in pids[1:])} pids={','.join(map(str, pids))}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await pool.stop()

    uvloop.run(go())
    return 0


def free_port(host: str) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def start_podnet(n: int, workers: int = 1, udp: str = "batch") -> tuple[subprocess.Popen, int, list[int]]:
    """(process, port, pids of the processes that hold a table: the one process, or the workers)."""
    if workers == 1:
        args = [sys.executable, "-P", str(HERE / "dns_static.py"), "--services", str(n), "--listen", f"{PODNET_ADDR}:0",
                "--udp", udp]
    else:
        args = [sys.executable, "-P", str(Path(__file__).resolve()), "--serve", "--services", str(n), "--workers", str(workers),
                "--listen", f"{PODNET_ADDR}:0"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"port=(\d+) rss_kb=(\d+)", line)
    if not m:
        raise RuntimeError(f"podnet-dns ({workers} workers) did not start: {line!r}")
    pm = re.search(r"pids=([\d,]+)", line)
    pids = [int(x) for x in pm.group(1).split(",")] if pm else [p.pid]
    return p, int(m.group(1)), pids


def start_dnsmasq(n: int, tmp: Path) -> tuple[subprocess.Popen, int]:
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"{ip} {name}\n" for name, ip in names(n)))
    port = free_port(DNSMASQ_ADDR)
    p = subprocess.Popen([
        "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", f"--port={port}",
        f"--listen-address={DNSMASQ_ADDR}", "--bind-interfaces", "--local=/cluster.local/", "--cache-size=10000",
        "--user=root", "--pid-file=", "--log-facility=/dev/null",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        r = subprocess.run(["dig", "+short", "+tries=1", "+time=1", "-p", str(port), f"@{DNSMASQ_ADDR}", names(n)[0][0]],
                           capture_output=True, text=True)
        if r.stdout.strip():
            return p, port
        time.sleep(0.1)
    raise RuntimeError("dnsmasq did not answer")


def write_queries(n: int, path: Path, count: int = 50000) -> None:
    rng = random.Random(7)
    all_names = names(n)
    lines = []
    for _ in range(count):
        if rng.random() < 0.05:
            lines.append(f"nx-{rng.randrange(10**9)}.ns-{rng.randrange(100)}.svc.cluster.local A")
        else:
            lines.append(f"{rng.choice(all_names)[0]} A")
    path.write_text("\n".join(lines) + "\n")


def dnsperf(addr: str, port: int, qfile: Path, seconds: int, rate: int | None = None) -> dict:
    args = ["dnsperf", "-s", addr, "-p", str(port), "-d", str(qfile), "-l", str(seconds), "-c", str(CLIENTS), "-T", "1", "-q", "200"]
    if rate:
        args += ["-Q", str(rate), "-v"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    res = {
        "qps": float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1)),
        "avg_ms": 1000 * float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)),
        "lost": float(re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out).group(1)),
        "completed": int(re.search(r"Queries completed:\s+(\d+)", out).group(1)),
        "nx": float((re.search(r"NXDOMAIN \d+ \(([\d.]+)%\)", out) or re.search(r"()", "")).group(1) or 0),
    }
    if rate:
        lat, unanswered = [], 0
        for line in out.splitlines():
            if line.startswith("> "):
                try:
                    lat.append(float(line.rsplit(" ", 1)[1]))
                except ValueError:  # "> T name type": timed out
                    unanswered += 1
        lat.sort()
        res["timeouts"] = unanswered
        res["p99_ms"] = 1000 * lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
        res["n"] = len(lat)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--workers", default="1", help="comma-separated podnet-dns worker counts to run side by side (e.g. 1,2)")
    ap.add_argument("--loop-anchor", action="store_true",
                    help="also run one process answering one datagram per event-loop callback (the server before batching)")
    ap.add_argument("--clients", type=int, default=4,
                    help="dnsperf -c: source ports (SO_REUSEPORT spreads by source port, so a few clients can land unevenly)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--listen", default=f"{PODNET_ADDR}:0", help=argparse.SUPPRESS)
    a = ap.parse_args()
    worker_counts = [int(x) for x in a.workers.split(",")]
    if a.serve:
        return serve_pool(a.services, worker_counts[0], a.listen)
    for tool in ("dnsperf", "dnsmasq", "dig"):
        if not shutil.which(tool):
            print(f"missing {tool}")
            return 1
    global CLIENTS
    CLIENTS = a.clients
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="pnt-dns-bench-") as d:
        tmp = Path(d)
        qfile = tmp / "queries.txt"
        write_queries(a.services, qfile)
        podnets = {}
        variants = [(f"podnet-dns {w}w", w, "batch") for w in worker_counts]
        if a.loop_anchor:
            variants.append(("podnet-dns 1w loop", 1, "loop"))
        for label, w, udp in variants:
            proc, port, pids = start_podnet(a.services, w, udp)
            podnets[label] = (proc, port, pids, {p: vm_hwm_kb(p) for p in pids})
        dm, dm_port = start_dnsmasq(a.services, tmp)
        servers = [(name, PODNET_ADDR, v[1]) for name, v in podnets.items()] + [("dnsmasq", DNSMASQ_ADDR, dm_port)]
        server_pids = {name: v[2] for name, v in podnets.items()} | {"dnsmasq": [dm.pid]}
        results: dict[str, list[dict]] = {name: [] for name, _, _ in servers}
        rate_results: dict[str, list[dict]] = {name: [] for name, _, _ in servers}
        rss_after = {}
        try:
            for r in range(a.rounds):
                for name, addr, port in servers:
                    cpu0 = cpu_seconds(server_pids[name])
                    res = dnsperf(addr, port, qfile, a.seconds)
                    # CPU time per answered query: how much work a query costs, whatever else the machine runs.
                    res["cpu_us"] = 1e6 * (cpu_seconds(server_pids[name]) - cpu0) / max(1, res["completed"])
                    results[name].append(res)
                    print(f"round {r + 1} {name:14s} max: {res}", flush=True)
                    res = dnsperf(addr, port, qfile, max(3, a.seconds // 2), a.rate)
                    rate_results[name].append(res)
                    print(f"round {r + 1} {name:14s} at {a.rate} qps: {res}", flush=True)
                    loads.append(os.getloadavg())
            rss_after = {name: {p: vm_hwm_kb(p) for p in v[2]} for name, v in podnets.items()}
        finally:
            for proc, *_ in podnets.values():
                proc.terminate()
            dm.terminate()
            for proc, *_ in podnets.values():
                proc.wait(10)
            dm.wait(5)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print()
    print(f"| server | max QPS (median of {a.rounds}) | per-round QPS | CPU per query at max (us) | avg latency at max (ms) | "
          f"avg / p99 at {a.rate} qps (ms) | lost | NXDOMAIN share |")
    print("|---|---|---|---|---|---|---|---|")
    for name in results:
        rows, rrows = results[name], rate_results[name]
        print(f"| {name} | {med(rows, 'qps'):,.0f} | {', '.join(format(r['qps'], ',.0f') for r in rows)} | {med(rows, 'cpu_us'):.1f} | "
              f"{med(rows, 'avg_ms'):.2f} | "
              f"{med(rrows, 'avg_ms'):.3f} / {med(rrows, 'p99_ms'):.3f} | {max(r['lost'] for r in rows)} % | {med(rows, 'nx'):.1f} % |")
    print()
    for name, (_, _, pids, hwm) in podnets.items():
        ratio = med(results[name], "qps") / med(results["dnsmasq"], "qps")
        after = rss_after.get(name, {})
        per = ", ".join(f"{'control' if len(pids) > 1 and i == 0 else 'worker' if len(pids) > 1 else 'process'} "
                        f"{hwm[p] / 1024:.1f}/{after.get(p, 0) / 1024:.1f}" for i, p in enumerate(pids))
        cpu_ratio = med(results[name], "cpu_us") / med(results["dnsmasq"], "cpu_us")
        print(f"{name} / dnsmasq QPS ratio: {ratio:.2f}, CPU per query ratio: {cpu_ratio:.2f}; peak RSS (VmHWM MiB, after build/after runs) with {a.services} services: {per}")
    print(f"clients (dnsperf -c): {a.clients}; cores: {os.cpu_count()}")
    print(f"load average (1 min) before, after each server's runs: {', '.join(f'{l[0]:.2f}' for l in loads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
