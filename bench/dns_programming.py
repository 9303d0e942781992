"""DNS programming latency: time from a Service create in the API to its name resolving, plus RSS.

    .venv/bin/python -P bench/dns_programming.py [--baseline 10000] [--samples 200] [--workers N] [--probes 8]

Runs the lab API server (``podnet lab apiserver``) and ``podnet-dns --master ...`` as separate
processes on loopback, preloads --baseline Services (so the DNS table is that big), then creates
--samples more one at a time; for each, the clock starts just before the create request and stops
when it has answered NOERROR on each of --probes UDP sockets (own source ports, so with --workers > 1
SO_REUSEPORT spreads them over the workers: every worker must have it; queries every ~1 ms, each
waiting at most 50 ms). Prints p50/p90/p99/max and the peak RSS (VmHWM) of podnet-dns's processes
before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import aiohttp

from podnet.kube import resources
from podnet.kube.client import ApiClient

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def tree_hwm(pid: int) -> str:
    """VmHWM of the process and of its children (the DNS workers), in MiB."""
    try:
        kids = [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        kids = []
    parts = [f"{vm_hwm_kb(pid) / 1024:.1f}"] + [f"{vm_hwm_kb(k) / 1024:.1f}" for k in kids]
    return " + ".join(parts) + " MiB"


def query(name: str, qid: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + b"\0\1\0\1"


class Prober(asyncio.DatagramProtocol):
    def __init__(self):
        self.waiter: asyncio.Future | None = None

    def datagram_received(self, data, addr):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def wait_resolves(tr, prober: Prober, name: str, limit: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    qid = 1
    while loop.time() < deadline:
        prober.waiter = loop.create_future()
        tr.sendto(query(name, qid))
        qid = (qid + 1) & 0xFFFF
        try:
            reply = await asyncio.wait_for(prober.waiter, 0.05)
            if reply[3] & 0x0F == 0 and struct.unpack_from("!H", reply, 6)[0] > 0:
                return True
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.001)
    return False


def programming_quantiles(metrics: str) -> str:
    """p50/p99 upper bucket bounds from the exported programming-duration histogram."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("coredns_kubernetes_dns_programming_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return "n/a"
    total = buckets[-1][1]
    out = []
    for q in (0.5, 0.99):
        bound = next(b for b, c in buckets if c >= q * total)
        out.append(f"p{int(q * 100)} <= {bound * 1000:.1f} ms")
    return f"{', '.join(out)} over {int(total)} rebuilds"


def svc_body(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}}}


async def main_async(a) -> int:
    api_port, dns_port, http_port = free_port(), free_port(), free_port()
    api = await asyncio.create_subprocess_exec(str(BIN / "podnet"), "lab", "apiserver", "--listen", f"127.0.0.1:{api_port}",
                                               "--service-cluster-ip-range", "10.96.0.0/12",
                                               stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{api_port}"
    client = ApiClient.from_url(url)
    dnsp = None
    try:
        for _ in range(200):
            try:
                await client.list(resources.NAMESPACES)
                break
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def make(i):
            async with sem:
                await client.create(resources.SERVICES, svc_body(f"base-{i}"), namespace="default")

        await asyncio.gather(*(make(i) for i in range(a.baseline)))
        print(f"preloaded {a.baseline} services in {time.perf_counter() - t0:.1f}s", flush=True)
        dnsp = await asyncio.create_subprocess_exec(
            str(BIN / "podnet-dns"), "--master", url, "--listen", f"127.0.0.1:{dns_port}", "--upstream", "127.0.0.9:53",
            "--health-listen", f"127.0.0.1:{http_port}", "--ready-listen", f"127.0.0.1:{http_port}",
            "--metrics-listen", f"127.0.0.1:{http_port}", "--workers", str(a.workers), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        t0 = time.perf_counter()
        async with aiohttp.ClientSession() as s:
            for _ in range(1200):
                try:
                    async with s.get(f"http://127.0.0.1:{http_port}/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        sync_s = time.perf_counter() - t0
        rss_synced = tree_hwm(dnsp.pid)
        print(f"podnet-dns ready after {sync_s:.1f}s, VmHWM {rss_synced}", flush=True)
        loop = asyncio.get_running_loop()
        probes = [await loop.create_datagram_endpoint(Prober, remote_addr=("127.0.0.1", dns_port)) for _ in range(a.probes)]
        lat = []
        failures = 0
        for i in range(a.samples):
            name = f"probe-{i}"
            t0 = time.perf_counter()
            await client.create(resources.SERVICES, svc_body(name), namespace="default")
            got = await asyncio.gather(*(wait_resolves(tr, prober, f"{name}.default.svc.cluster.local") for tr, prober in probes))
            if all(got):
                lat.append(time.perf_counter() - t0)
            else:
                failures += 1
        for tr, _ in probes:
            tr.close()
        rss_end = tree_hwm(dnsp.pid)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{http_port}/metrics") as r:
                metrics = await r.text()
        server_side = programming_quantiles(metrics)
        lat.sort()

        def pct(p):
            return 1000 * lat[min(len(lat) - 1, int(len(lat) * p))]

        print()
        print(f"| baseline services | samples | p50 ms | p90 ms | p99 ms | max ms | not resolved in 10 s | VmHWM synced | VmHWM end |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {a.baseline} | {len(lat)} | {pct(0.5):.1f} | {pct(0.9):.1f} | {pct(0.99):.1f} | {1000 * lat[-1]:.1f} | {failures} | "
              f"{rss_synced} | {rss_end} |")
        print(f"workers: {a.workers}, probe sockets: {a.probes}")
        print(f"(mean {1000 * statistics.mean(lat):.1f} ms; load average {os.getloadavg()})")
        print("server side only (watch event -> new table served, coredns_kubernetes_dns_programming_duration_seconds, "
              f"bucket upper bounds): {server_side}")
        return 0
    finally:
        await client.close()
        for p in (dnsp, api):
            if p is not None and p.returncode is None:
                p.terminate()
                await p.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1, help="podnet-dns --workers")
    ap.add_argument("--probes", type=int, default=1, help="UDP sockets that must each see a new name")
    a = ap.parse_args()
    if not shutil.which("podnet-dns") and not (BIN / "podnet-dns").exists():
        print("podnet-dns not installed")
        return 1
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main())
