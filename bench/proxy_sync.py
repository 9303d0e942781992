"""Full sync and one-endpoint-change cost, each beside its anchor, in fresh network namespaces.

For 1k and 10k Services x 5 endpoints (iptables-legacy, as the issue asks):
  podnet full sync  : from synced informer state to rules in the kernel (compute, render,
                      list existing chains, iptables-restore, ensure the built-in jumps)
  restore alone     : iptables-legacy-restore --noflush of the very same text
  kube-proxy shape  : restore alone of the same services with a flat (linear) services chain
  one endpoint change with the services loaded: podnet partial sync vs a minimal restore (floor)
  warm full         : a later full sync (periodic / after a failure) with the table loaded
Podnet and restore-alone alternate which goes first in each repetition; medians are printed,
then every sample. PODNET_BENCH_REPS sets the repetitions (default 5).
Run: .venv/bin/python -P bench/proxy_sync.py [sizes...]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ only (never the checkout root)
from proxy_lib import median, objects, pool, require_root, restore_seconds

from podnet.kube.testing import FakeInformer
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.iptables import IptablesRunner
from podnet.proxy.proxier import FamilyProxier, Proxier
from podnet.proxy.render import render_full
from podnet.proxy.rules import NodeContext
from podnet.proxy.snapshot import build
from podnet.proxy.testing import FakeIptables, ep, slice_

REPS = int(os.environ.get("PODNET_BENCH_REPS", "5"))


async def podnet_full(ns, services, slices, ctx):
    fam = FamilyProxier(IptablesRunner(4, "legacy", ["ip", "netns", "exec", ns.name]), ctx, "node-a")
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), [fam])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    for s in services:
        si.set(s)
    for s in slices:
        ei.set(s)
    si.synced(), ei.synced()
    t = time.perf_counter()
    assert await d.sync_once()
    return time.perf_counter() - t, d, fam


class _Capture(FakeIptables):
    async def restore_stream(self, chunks):
        self.text = "".join([c async for c in chunks])


async def streamed_text(services, slices, ctx) -> str:
    cap = _Capture()
    fam = FamilyProxier(cap, ctx, "node-a")
    p = Proxier([fam])
    for s in services:
        p.on_service(None, s)
    for s in slices:
        p.on_slice(None, s)
    p.services_synced = p.slices_synced = True
    assert await p.sync()
    return cap.text


async def main(sizes):
    require_root()
    ctx = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",))
    flat = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",), dispatch_leaf=10**9)
    rows = []
    raws: dict[int, dict[str, list[float]]] = {}
    for n in sizes:
        services, slices = objects(n)
        text = await streamed_text(services, slices, ctx)  # exactly what podnet's full sync writes
        flat_text = render_full(build(services, slices, flat, "node-a"))
        res = {"podnet": [], "alone": [], "flat": [], "change": [], "floor": [], "warm": []}
        for rep in range(REPS):
            p = pool()
            try:
                if rep % 2:  # alternate which side goes first
                    res["alone"].append(restore_seconds(p.netns("a"), text))
                ns = p.netns("p")
                dt, d, fam = await podnet_full(ns, services, slices, ctx)
                res["podnet"].append(dt)
                if not rep % 2:
                    res["alone"].append(restore_seconds(p.netns("a"), text))
                res["flat"].append(restore_seconds(p.netns("k"), flat_text))
                # one endpoint change, time to kernel (partial sync)
                victim = slices[n // 2]
                new = slice_(service=victim.service_name, name=victim.name, ports=((8080, "TCP", "http"),),
                             endpoints=[ep(e.addresses[0]) for e in victim.endpoints[:4]] + [ep("10.127.0.1")])
                t = time.perf_counter()
                d.proxier.on_slice(victim, new)
                assert await d.sync_once()
                res["change"].append(time.perf_counter() - t)
                res["floor"].append(restore_seconds(ns, "*nat\n:PODNET-BENCH - [0:0]\nCOMMIT\n"))
                # a warm full sync (periodic, or after a failure): fragments cached, table loaded
                fam.need_full = True
                t = time.perf_counter()
                assert await d.sync_once()
                res["warm"].append(time.perf_counter() - t)
            finally:
                p.close()
        rows.append((n, {k: median(v) for k, v in res.items()}, text.count("\n"), flat_text.count("\n")))
        raws[n] = res
    print(f"{'services':>8} {'lines':>7} {'podnet full':>12} {'restore alone':>14} {'ratio':>6} {'kube-proxy shape':>17} "
          f"{'1-ep change':>12} {'floor':>8} {'warm full':>10}")
    for n, r, lines, flat_lines in rows:
        print(f"{n:>8} {lines:>7} {r['podnet']:>11.3f}s {r['alone']:>13.3f}s {r['podnet'] / r['alone']:>6.2f} "
              f"{r['flat']:>16.3f}s {r['change'] * 1000:>10.1f}ms {r['floor'] * 1000:>6.1f}ms {r['warm']:>9.3f}s")
    for n, r, *_ in rows:
        print(f"{n:>8} samples: " + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in v) for k, v in raws[n].items()))


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [1000, 10000]))
