"""How long the event loop is blocked while podnet-dns builds its first full table, chunked vs one-shot.

    .venv/bin/python -P bench/dns_sync_stall.py [--services 10000] [--rounds 3]

Feeds N generated ClusterIP Services (+ one EndpointSlice each, as bench/dns_static.py) through fake
informers into the real ZoneSync + Handler, and measures, while the first full sync is built, the
longest gap between two turns of a 1 ms ticker coroutine (= the longest time nothing else, no
query and no /health, could run) and the time until the table is served. Runs ``chunk_size`` =
default (chunked) and ``chunk_size`` = N+1 (one synchronous build, the old behaviour) alternately.
Also prints the peak RSS (VmHWM) of the process at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dns_static  # noqa: E402

from podnet.dns import snapshot, watch  # noqa: E402
from podnet.dns.handler import Handler  # noqa: E402
from podnet.kube.testing import FakeInformer  # noqa: E402
from podnet.kube.objects import Namespace  # noqa: E402


async def one(services, slices, namespaces, chunk: int) -> tuple[float, float, int]:
    cfg = snapshot.Config()
    handler = Handler(watch.initial_table(cfg))
    infs = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(n) for n in namespaces]))
    sync = watch.ZoneSync(handler, *infs, cfg, chunk_size=chunk)
    sync.attach()
    gaps: list[tuple[float, float]] = []
    done = False

    async def ticker():
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((last, now))
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    for inf in infs:
        inf.synced()
    t1 = time.perf_counter()
    await sync.synced_event.wait()
    total = time.perf_counter() - t0
    done = True
    await t
    gc.unfreeze()  # each round's objects may form cycles; let them go before the next round
    # The informers' own (synchronous, fake) event delivery is not the build: take it out of the gap that holds it.
    stall = max((b - a) - ((t1 - t0) if a <= t0 and t1 <= b else 0.0) for a, b in gaps)
    return stall, total, sync.chunks


def vm_hwm_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main_async(a) -> None:
    services, slices, namespaces = dns_static.cluster(a.services)
    res: dict[str, list[tuple[float, float, int]]] = {"chunked": [], "one-shot": []}
    for _ in range(a.rounds):
        for label, chunk in (("chunked", watch.CHUNK_SIZE), ("one-shot", a.services + 1)):
            gc.collect()
            res[label].append(await one(services, slices, namespaces, chunk))
    print(f"{a.services} services, {a.rounds} rounds, chunk_size {watch.CHUNK_SIZE}, load average {os.getloadavg()}")
    print("| build | longest loop stall (median, per round) | time to served (median) | chunks |")
    print("|---|---|---|---|")
    for label, rows in res.items():
        stalls = [r[0] * 1000 for r in rows]
        totals = [r[1] for r in rows]
        print(f"| {label} | {statistics.median(stalls):.1f} ms ({', '.join(f'{s:.1f}' for s in stalls)}) | "
              f"{statistics.median(totals):.2f} s | {rows[0][2]} |")
    print(f"VmHWM {vm_hwm_mib():.1f} MiB")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
