"""dnsperf against podnet-dns and dnsmasq side by side, serving the same 10,000 names on loopback.

    .venv/bin/python -P bench/dns_perf.py [--services 10000] [--seconds 10] [--rounds 2]

Query mix: 95 % existing service names (A), 5 % NXDOMAIN names in the cluster zone.
Per server and round: one max-throughput run (dnsperf -c 4 -q 200 -T 1: QPS and average latency), and
one fixed-rate run (-Q 20000, -v: per-query latencies -> average and p99). Servers alternate so
machine noise hits both. Prints a markdown table; medians over rounds.
podnet-dns runs as bench/dns_static.py (same DnsServer/Handler as podnet-dns, table built from
generated Services, no API server); dnsmasq as Debian's dnsmasq-base with --addn-hosts.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dns_static import names  # noqa: E402

PODNET_ADDR = "127.0.0.7"
DNSMASQ_ADDR = "127.0.0.8"


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


def start_podnet(n: int) -> tuple[subprocess.Popen, int, int]:
    p = subprocess.Popen([sys.executable, "-P", str(HERE / "dns_static.py"), "--services", str(n), "--listen", f"{PODNET_ADDR}:0"],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"port=(\d+) rss_kb=(\d+)", line)
    if not m:
        raise RuntimeError(f"dns_static did not start: {line!r}")
    return p, int(m.group(1)), int(m.group(2))


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
    args = ["dnsperf", "-s", addr, "-p", str(port), "-d", str(qfile), "-l", str(seconds), "-c", "4", "-T", "1", "-q", "200"]
    if rate:
        args += ["-Q", str(rate), "-v"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    res = {
        "qps": float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1)),
        "avg_ms": 1000 * float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)),
        "lost": float(re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out).group(1)),
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
    a = ap.parse_args()
    for tool in ("dnsperf", "dnsmasq", "dig"):
        if not shutil.which(tool):
            print(f"missing {tool}")
            return 1
    with tempfile.TemporaryDirectory(prefix="pnt-dns-bench-") as d:
        tmp = Path(d)
        qfile = tmp / "queries.txt"
        write_queries(a.services, qfile)
        pn, pn_port, pn_rss = start_podnet(a.services)
        dm, dm_port = start_dnsmasq(a.services, tmp)
        results: dict[str, list[dict]] = {"podnet-dns": [], "dnsmasq": []}
        rate_results: dict[str, list[dict]] = {"podnet-dns": [], "dnsmasq": []}
        try:
            for r in range(a.rounds):
                for name, addr, port in (("podnet-dns", PODNET_ADDR, pn_port), ("dnsmasq", DNSMASQ_ADDR, dm_port)):
                    res = dnsperf(addr, port, qfile, a.seconds)
                    results[name].append(res)
                    print(f"round {r + 1} {name:10s} max: {res}", flush=True)
                    res = dnsperf(addr, port, qfile, max(3, a.seconds // 2), a.rate)
                    rate_results[name].append(res)
                    print(f"round {r + 1} {name:10s} at {a.rate} qps: {res}", flush=True)
            rss_after = int(next(line.split()[1] for line in open(f"/proc/{pn.pid}/status") if line.startswith("VmHWM")))
        finally:
            pn.terminate()
            dm.terminate()
            pn.wait(5)
            dm.wait(5)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print()
    print(f"| server | max QPS (median of {a.rounds}) | per-round QPS | avg latency at max (ms) | avg / p99 at {a.rate} qps (ms) | lost | NXDOMAIN share |")
    print("|---|---|---|---|---|---|---|")
    for name in results:
        rows, rrows = results[name], rate_results[name]
        print(f"| {name} | {med(rows, 'qps'):,.0f} | {', '.join(format(r['qps'], ',.0f') for r in rows)} | {med(rows, 'avg_ms'):.2f} | "
              f"{med(rrows, 'avg_ms'):.3f} / {med(rrows, 'p99_ms'):.3f} | {max(r['lost'] for r in rows)} % | {med(rows, 'nx'):.1f} % |")
    ratio = med(results["podnet-dns"], "qps") / med(results["dnsmasq"], "qps")
    print(f"\npodnet-dns / dnsmasq QPS ratio: {ratio:.2f}")
    print(f"podnet-dns peak RSS (VmHWM) with {a.services} services: {pn_rss / 1024:.1f} MiB after build, "
          f"{rss_after / 1024:.1f} MiB after the runs")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
