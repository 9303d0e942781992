"""Peak RSS of podnet-dns with real informers at N Services, beside the interpreter's own floor.

    .venv/bin/python -P bench/dns_memory.py [--services 10000] [--rounds 3] [--old-tree DIR] [--state FILE] [--workers N]

Runs the lab API server (``podnet lab apiserver``) on loopback, preloads N Services once, then starts
``podnet-dns --master ...`` (one process) ``--rounds`` times; each time it waits for ``/ready`` (all
informers listed, table built and swapped in), reads the process's VmHWM (peak) and VmRSS, and
stops it (``--workers N``: also each worker's VmHWM; ``--state FILE``: the API server's state file, so a second run skips the preload). With ``--old-tree DIR`` (a directory holding ``podnet/<package>`` copies of another
version of the tree) every round also runs that version (``PYTHONPATH=DIR``), alternating, so both
are measured against the same API server in the same minutes.

Also printed, for scale: VmHWM of an empty interpreter, and of one that has imported what
podnet-dns imports (uvloop, aiohttp, prometheus_client, podnet.dns.cli) but holds no Services.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
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


def status_kb(pid: int | str, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def svc_body(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}}}


def floor_kb(code: str, env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-P", "-c", code + "\nimport sys\n"
                          "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])"],
                         env=env, check=True, capture_output=True, text=True, cwd="/").stdout
    return int(out.split()[-1])


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


async def one_daemon(url: str, env: dict[str, str], workers: int) -> tuple[int, int, int, float, list[int]]:
    dns_port, http_port = free_port(), free_port()
    p = await asyncio.create_subprocess_exec(
        str(BIN / "podnet-dns"), "--master", url, "--listen", f"127.0.0.1:{dns_port}", "--upstream", "127.0.0.9:53",
        "--health-listen", f"127.0.0.1:{http_port}", "--ready-listen", f"127.0.0.1:{http_port}",
        "--metrics-listen", f"127.0.0.1:{http_port}", "--workers", str(workers), env=env, cwd="/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    t0 = time.perf_counter()
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(2400):
                try:
                    async with s.get(f"http://127.0.0.1:{http_port}/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("podnet-dns never became ready")
        ready = time.perf_counter() - t0
        kids = [status_kb(k, "VmHWM") for k in children(p.pid)]
        return status_kb(p.pid, "VmHWM"), status_kb(p.pid, "VmRSS"), status_kb(p.pid, "RssAnon"), ready, kids
    finally:
        p.terminate()
        await p.wait()


async def main_async(a: argparse.Namespace) -> int:
    api_port = free_port()
    state = ["--state", a.state] if a.state else []
    api = await asyncio.create_subprocess_exec(str(BIN / "podnet"), "lab", "apiserver", "--listen", f"127.0.0.1:{api_port}",
                                               "--service-cluster-ip-range", "10.96.0.0/12", *state,
                                               stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{api_port}"
    client = ApiClient.from_url(url)
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    variants = {"this tree": base_env}
    if a.old_tree:
        variants["old tree"] = {**base_env, "PYTHONPATH": a.old_tree}
    try:
        for _ in range(600):
            try:
                await client.list(resources.NAMESPACES)
                break
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.05)
        have = {i["metadata"]["name"] for i in (await client.list(resources.SERVICES))[0]}
        sem = asyncio.Semaphore(16)

        async def make(i: int) -> None:
            async with sem:
                await client.create(resources.SERVICES, svc_body(f"base-{i}"), namespace="default")

        t0 = time.perf_counter()
        await asyncio.gather(*(make(i) for i in range(a.services) if f"base-{i}" not in have))
        print(f"preloaded {a.services} services in {time.perf_counter() - t0:.1f}s; load {os.getloadavg()[0]:.1f}",
              flush=True)
        res: dict[str, list[tuple[int, int, int, float, list[int]]]] = {k: [] for k in variants}
        for r in range(a.rounds):
            for name, env in variants.items():
                hwm, rss, anon, ready, kids = await one_daemon(url, env, a.workers)
                res[name].append((hwm, rss, anon, ready, kids))
                if kids:
                    print(f"round {r + 1} {name}: worker VmHWM " + ", ".join(f"{k / 1024:.1f}" for k in kids) + " MiB")
                print(f"round {r + 1} {name}: VmHWM {hwm / 1024:.1f} MiB, VmRSS {rss / 1024:.1f} MiB "
                      f"(RssAnon {anon / 1024:.1f}), "
                      f"ready after {ready:.1f} s", flush=True)
        empty = floor_kb("pass", base_env)
        imports = floor_kb("import uvloop, aiohttp, prometheus_client, podnet.dns.cli", base_env)
        shape = "one process" if a.workers == 1 else f"--workers {a.workers} (the control process's figures)"
        print(f"\nload {os.getloadavg()[0]:.1f}; {a.services} Services, podnet-dns {shape}, medians of {a.rounds}\n")
        print("| what | VmHWM (median) | per round | VmRSS when ready (median) | of which RssAnon (private) |")
        print("|---|---|---|---|---|")
        print(f"| empty interpreter (`python -c pass`) | {empty / 1024:.1f} MiB | | |")
        print(f"| imports only (uvloop, aiohttp, prometheus_client, podnet.dns.cli) | {imports / 1024:.1f} MiB | | |")
        for name, rows in res.items():
            hwms = [row[0] for row in rows]
            print(f"| podnet-dns, {name} | **{statistics.median(hwms) / 1024:.1f} MiB** | "
                  f"{', '.join(f'{h / 1024:.1f}' for h in hwms)} | {statistics.median(row[1] for row in rows) / 1024:.1f} MiB | "
                  f"{statistics.median(row[2] for row in rows) / 1024:.1f} MiB |")
    finally:
        await client.close()
        api.terminate()
        await api.wait()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="podnet-dns --workers (workers' VmHWM printed per round)")
    ap.add_argument("--state", help="the API server's --state file (kept: a later run reuses its Services)")
    ap.add_argument("--old-tree", help="a directory with podnet/<package> copies of another version, run alternately")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
