"""Benchmark: Service events through lab apiserver -> informer, and list/sync times.

Runs the lab API server as a separate process (``podnet lab apiserver``) so the
server and the watcher each get a core, then measures, for N Services:

- create rate (50 concurrent clients' requests);
- watch throughput: all N ADDED events replayed from the server's history
  (watch from the version before the creates), consumed by a podnet Informer
  (decode + validate + freeze + store + handler) versus a bare aiohttp reader
  that only json-decodes each line (the anchor: the cost of the stream itself);
- list: ApiClient.list (paged by 500 and unpaged), a fresh Informer's first
  sync, and ``kubectl get svc -A -o json`` (the anchor) on the same data.

Usage: .venv/bin/python -P bench/kube_watch.py [--services 10000] [--repeat 3]
Prints a markdown table; --out appends it to a file (bench/results/kube.md).

Watch fan-out (``--fanout 1,20 [--events 2000] [--rate 100]``), instead of the above: for each
watcher count W, a fresh API server (``--no-controllers``: only the Services' own events), W
watch streams on ``/api/v1/namespaces/default/services`` held by one separate reader process (it
finds each event's send stamp by a byte search, no JSON decode, so the readers stay cheap), then
(a) a burst of ``--events`` creates (50 in flight): events delivered per second to all W watchers
together, from the first create to the last event at the last watcher, and (b) ``--rate`` creates
per second for 2 s: per-event latency from the create call to each watcher's read (median, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.kube.informer import Informer

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def wait_ready(url: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            try:
                async with s.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("API server did not start")


def svc(i: int) -> dict:
    return {"metadata": {"name": f"svc-{i:05d}", "labels": {"app": f"a{i % 50}"}},
            "spec": {"selector": {"app": f"a{i % 50}"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                               {"name": "https", "port": 443, "targetPort": 8443}]}}


async def raw_watch_count(url: str, rv: str, n: int, done: asyncio.Event, stamps: dict) -> None:
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}
    seen = 0
    async with aiohttp.ClientSession() as s, s.get(url + "/api/v1/services", params=params) as resp:
        buf = b""
        while seen < n:
            chunk = await resp.content.readany()
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line and json.loads(line)["type"] == "ADDED":
                    seen += 1
    stamps["raw"] = time.perf_counter()
    done.set()


async def one_round(n: int, tmp: Path) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(VENV_BIN / "podnet"), "lab", "apiserver", "--listen", f"127.0.0.1:{port}",
                             "--watch-history", str(n * 2)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        await wait_ready(url)
        async with ApiClient.from_url(url) as client:
            _, rv0 = await client.list(r.SERVICES)
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(50)

            async def create(i: int) -> None:
                async with sem:
                    await client.create(r.SERVICES, svc(i), namespace="default")

            await asyncio.gather(*(create(i) for i in range(n)))
            out["create/s"] = n / (time.perf_counter() - t0)

            # Replay all N events from the server's history, as fast as they can be consumed.
            stamps: dict[str, float] = {}
            raw_done = asyncio.Event()
            t0 = time.perf_counter()
            await asyncio.wait_for(raw_watch_count(url, rv0, n, raw_done, stamps), 300)
            out["raw json events/s (anchor)"] = n / (stamps["raw"] - t0)

            inf = Informer(client, r.SERVICES)
            await inf.replace([], rv0)
            got = asyncio.Event()
            count = 0

            def on_add(_obj):
                nonlocal count
                count += 1
                if count == n:
                    got.set()

            inf.add_handler(on_add=on_add)
            t0 = time.perf_counter()
            task = asyncio.create_task(inf.step(need_list=False))
            await asyncio.wait_for(got.wait(), 300)
            out["informer events/s"] = n / (time.perf_counter() - t0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

            t = time.perf_counter()
            items, _ = await client.list(r.SERVICES, limit=500)
            out["ApiClient.list paged 500 (s)"] = time.perf_counter() - t
            assert len(items) == n
            t = time.perf_counter()
            items, _ = await client.list(r.SERVICES, limit=None)
            out["ApiClient.list unpaged (s)"] = time.perf_counter() - t
            fresh = Informer(client, r.SERVICES)
            t = time.perf_counter()
            sync_task = asyncio.create_task(fresh.run())
            await fresh.wait_synced()
            out["Informer first sync (s)"] = time.perf_counter() - t
            assert len(fresh) == n
            sync_task.cancel()
            await asyncio.gather(sync_task, return_exceptions=True)
        kubectl = shutil.which("kubectl")
        if kubectl:
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                kubectl, "--server", url, "get", "svc", "-A", "-o", "json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env={"HOME": str(tmp), "PATH": os.environ.get("PATH", "")})
            data, _ = await asyncio.wait_for(p.communicate(), 300)
            out["kubectl get -o json (s) (anchor)"] = time.perf_counter() - t
            assert len(json.loads(data)["items"]) == n
    finally:
        proc.terminate()
        proc.wait(10)
    return out


READERS = r"""
import asyncio, json, sys, time
import aiohttp
url, w, n, rv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
KEY = b'"bench.podnet.io/t":"'
async def one(s, i, out):
    async with s.get(url + "/api/v1/namespaces/default/services",
                     params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}) as resp:
        ready.append(i)
        if len(ready) == w:
            print("ready", flush=True)
        buf, seen = b"", 0
        while seen < n:
            chunk = await resp.content.readany()
            now = time.time()
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                k = line.find(KEY)
                if k >= 0 and b'"ADDED"' in line:
                    seen += 1
                    j = k + len(KEY)
                    out.append(now - float(line[j:line.index(b'"', j)]))
        last.append(now)
async def main():
    out = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
        await asyncio.wait_for(asyncio.gather(*(one(s, i, out) for i in range(w))), 600)
    print(json.dumps({"lat": out, "last": max(last)}), flush=True)
ready, last = [], []
asyncio.run(main())
"""


def stamped(name: str) -> dict:
    return {"metadata": {"name": name, "annotations": {"bench.podnet.io/t": repr(time.time())}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


async def fanout_round(watchers: int, events: int, rate: float) -> dict[str, float]:
    """One fresh API server, ``watchers`` streams; see the module docstring."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(VENV_BIN / "podnet"), "lab", "apiserver", "--listen", f"127.0.0.1:{port}",
                             "--no-controllers", "--watch-history", str(events * 2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        await wait_ready(url)
        async with ApiClient.from_url(url) as client:
            for phase, n in (("burst", events), ("paced", max(1, int(rate * 2)))):
                _, rv = await client.list(r.SERVICES, "default")  # watch from here: only this phase's events
                readers = await asyncio.create_subprocess_exec(
                    sys.executable, "-P", "-c", READERS, url, str(watchers), str(n), rv,
                    stdout=asyncio.subprocess.PIPE)
                line = await asyncio.wait_for(readers.stdout.readline(), 60)
                assert line.strip() == b"ready", line
                sem = asyncio.Semaphore(50 if phase == "burst" else 1)
                t0 = time.time()

                async def create(i: int) -> None:
                    if phase == "paced":
                        await asyncio.sleep(max(0.0, t0 + i / rate - time.time()))
                    async with sem:
                        await client.create(r.SERVICES, stamped(f"{phase}-{i:05d}"), namespace="default")

                await asyncio.gather(*(create(i) for i in range(n)))
                data, _ = await asyncio.wait_for(readers.communicate(), 600)
                res = json.loads(data.splitlines()[-1])
                lat = sorted(res["lat"])
                assert len(lat) == n * watchers, (len(lat), n * watchers)
                if phase == "burst":
                    out["burst: events/s delivered (all watchers)"] = n * watchers / (res["last"] - t0)
                    out["burst: last event at last watcher (s)"] = res["last"] - t0
                else:
                    out["paced: latency median (ms)"] = statistics.median(lat) * 1000
                    out["paced: latency p99 (ms)"] = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))] * 1000
    finally:
        proc.terminate()
        proc.wait(10)
    return out


async def fanout(args) -> None:
    counts = [max(1, min(int(x), 200)) for x in args.fanout.split(",")]
    events = max(1, min(args.events, 50_000))
    rate = max(1.0, min(args.rate, 1000.0))
    rows = {}
    for w in counts:
        load0 = os.getloadavg()[0]
        rows[w] = await fanout_round(w, events, rate)
        rows[w]["load average at start"] = load0
        print(f"{w} watcher(s): " + ", ".join(f"{k}={v:.3g}" for k, v in rows[w].items()), file=sys.stderr)
    keys = list(rows[counts[0]])
    lines = [f"### lab API server watch fan-out, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`.venv/bin/python -P bench/kube_watch.py --fanout {args.fanout} --events {events} --rate {rate:g}` "
             f"({os.cpu_count()} cores)", "",
             "| metric | " + " | ".join(f"{w} watcher(s)" for w in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{rows[w][k]:.3g}" for w in counts) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="append the markdown table to this file")
    ap.add_argument("--fanout", help="watch fan-out instead: comma-separated watcher counts, e.g. 1,20")
    ap.add_argument("--events", type=int, default=2000, help="Services created in the fan-out burst")
    ap.add_argument("--rate", type=float, default=100.0, help="creates per second in the fan-out latency phase")
    args = ap.parse_args()
    if args.fanout:
        await fanout(args)
        return
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            rounds.append(await one_round(args.services, Path(tmp)))
            print(f"round {i + 1}: " + ", ".join(f"{k}={v:.3g}" for k, v in rounds[-1].items()), file=sys.stderr)
    lines = [f"### kube watch/list, {args.services} Services, {args.repeat} rounds, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`.venv/bin/python -P bench/kube_watch.py --services {args.services} --repeat {args.repeat}` "
             f"(lab apiserver in its own process; {os.cpu_count()} cores)", "",
             "| metric | median | min | max |", "|---|---|---|---|"]
    for key in rounds[0]:
        vals = [r_[key] for r_ in rounds]
        lines.append(f"| {key} | {statistics.median(vals):.3g} | {min(vals):.3g} | {max(vals):.3g} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    asyncio.run(main())
