"""Full sync and one-endpoint-change cost, each beside its anchor, in fresh network namespaces.

For 1k and 10k Services x 5 endpoints (iptables-legacy, as the issue asks):
  podnet full sync  : from synced informer state to rules in the kernel (compute, render,
                      list existing chains, iptables-restore, ensure the built-in jumps)
  restore alone     : iptables-legacy-restore --noflush of the very same text
  kube-proxy shape  : restore alone of the same services with a flat (linear) services chain, in
                      kube-proxy's per-rule form (proxy_lib.kube_proxy_shape): the anchor
  one endpoint change with the services loaded: podnet partial sync vs a minimal restore (floor)
  warm full         : a later full sync (periodic / after a failure) with the table loaded
Podnet and restore-alone alternate which goes first in each repetition; medians are printed,
then every sample, the shape of both texts (lines, bytes, chains, rules, -m matches) and the
machine's load before and after. PODNET_BENCH_REPS sets the repetitions (default 5).
Run: .venv/bin/python -P bench/proxy_sync.py [sizes...] [--plot PATH] [--busy-core]
  --plot PATH: a PNG of full-sync seconds against services, podnet beside the kube-proxy-shaped
               restore (bench/plot.py; needs the bench extra, matplotlib)
  --busy-core: one busy-looping child process (bounded: BUSY_SECONDS at most, stopped at the end)
               runs through every measurement, so the second core is taken and podnet's Python
               cannot hide behind the restore
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ only (never the checkout root)
from proxy_lib import cpu_seconds, kube_proxy_shape, median, objects, pool, require_root, restore_seconds, text_shape

from podnet.kube.testing import FakeInformer
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.iptables import IptablesRunner
from podnet.proxy.proxier import FamilyProxier, Proxier
from podnet.proxy.render import render_full
from podnet.proxy.rules import NodeContext
from podnet.proxy.snapshot import build
from podnet.proxy.testing import FakeIptables, ep, slice_

REPS = int(os.environ.get("PODNET_BENCH_REPS", "5"))
BUSY_SECONDS = 1800
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def busy_core(seconds: int = BUSY_SECONDS) -> subprocess.Popen:
    """A child process spinning on one core for at most ``seconds`` (terminate it when done)."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)])


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
    c, t = cpu_seconds(), time.perf_counter()
    assert await d.sync_once()
    return time.perf_counter() - t, d, fam, cpu_seconds() - c


def restore_cpu(ns, text) -> tuple[float, float]:
    c = cpu_seconds()
    return restore_seconds(ns, text), cpu_seconds() - c


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


async def main(sizes, plot_path=None, busy=False):
    require_root()
    spinner = busy_core() if busy else None
    try:
        await measure(sizes, plot_path, busy)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()


async def measure(sizes, plot_path, busy):
    load0 = os.getloadavg()
    started = time.time()
    ctx = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",))
    flat = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",), dispatch_leaf=10**9)
    rows = []
    raws: dict[int, dict[str, list[float]]] = {}
    shapes: dict[int, tuple[dict, dict]] = {}
    for n in sizes:
        services, slices = objects(n)
        text = await streamed_text(services, slices, ctx)  # exactly what podnet's full sync writes
        flat_text = kube_proxy_shape(render_full(build(services, slices, flat, "node-a")))
        res = {"podnet": [], "alone": [], "flat": [], "change": [], "floor": [], "warm": [],
               "cpu podnet": [], "cpu alone": [], "cpu flat": []}

        def alone():
            wall, cpu = restore_cpu(p.netns("a"), text)
            res["alone"].append(wall)
            res["cpu alone"].append(cpu)

        for rep in range(REPS):
            p = pool()
            try:
                if rep % 2:  # alternate which side goes first
                    alone()
                ns = p.netns("p")
                dt, d, fam, cpu = await podnet_full(ns, services, slices, ctx)
                res["podnet"].append(dt)
                res["cpu podnet"].append(cpu)
                if not rep % 2:
                    alone()
                wall, cpu = restore_cpu(p.netns("k"), flat_text)
                res["flat"].append(wall)
                res["cpu flat"].append(cpu)
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
        shapes[n] = (text_shape(text), text_shape(flat_text))
    print(f"{'services':>8} {'lines':>7} {'podnet full':>12} {'restore alone':>14} {'ratio':>6} {'kube-proxy shape':>17} "
          f"{'1-ep change':>12} {'floor':>8} {'warm full':>10}")
    for n, r, lines, flat_lines in rows:
        print(f"{n:>8} {lines:>7} {r['podnet']:>11.3f}s {r['alone']:>13.3f}s {r['podnet'] / r['alone']:>6.2f} "
              f"{r['flat']:>16.3f}s {r['change'] * 1000:>10.1f}ms {r['floor'] * 1000:>6.1f}ms {r['warm']:>9.3f}s")
    for n, r, *_ in rows:
        print(f"{n:>8} vs kube-proxy shape: {r['podnet'] / r['flat']:.2f}x wall (podnet full sync / its restore alone); "
              f"CPU s (user+sys, with children): podnet {r['cpu podnet']:.3f}, restore alone {r['cpu alone']:.3f}, "
              f"kube-proxy shape {r['cpu flat']:.3f}: podnet text restore / kube-proxy shape "
              f"{r['cpu alone'] / r['cpu flat']:.2f}x, podnet full / kube-proxy shape {r['cpu podnet'] / r['cpu flat']:.2f}x")
    for n, r, *_ in rows:
        print(f"{n:>8} samples: " + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in v) for k, v in raws[n].items()))
    for n, (mine, theirs) in shapes.items():
        print(f"{n:>8} text shape podnet: {mine}")
        print(f"{n:>8} text shape kube-proxy: {theirs}")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f}, after {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"{REPS} repetitions, {time.time() - started:.0f} s" + ("; one core kept busy throughout" if busy else ""))
    if plot_path:
        plot_rows(plot_path, [(n, r) for n, r, *_ in rows], load0[0])
        print(f"plot: {plot_path}")


def plot_rows(path: str, rows: list[tuple[int, dict[str, float]]], load: float) -> None:
    """CPU seconds (user + system, the process and its children) against services: on a shared
    machine wall time mostly measures the other work; CPU is what the sync itself costs."""
    from plot import curves

    curves(path, f"proxy full sync, services x 5 endpoints (iptables-legacy, median of {REPS})",
           "services", "CPU seconds (user + sys, with children)", {
               "podnet full sync (compute + stream + restore + save)": [(n, r["cpu podnet"]) for n, r in rows],
               "podnet text, restore alone": [(n, r["cpu alone"]) for n, r in rows],
               "kube-proxy-shaped text, restore alone (anchor)": [(n, r["cpu flat"]) for n, r in rows],
           }, anchors=("kube-proxy-shaped text, restore alone (anchor)",),
           note=f"bench/proxy_sync.py --plot, fresh netns per run, load average {load:.1f} at start, shared 2-core VM")


def _args(argv: list[str]) -> tuple[list[int], str | None, bool]:
    plot_path = None
    busy = "--busy-core" in argv
    argv = [a for a in argv if a != "--busy-core"]
    if "--plot" in argv:
        i = argv.index("--plot")
        plot_path = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    return [int(a) for a in argv] or [1000, 10000], plot_path, busy


if __name__ == "__main__":
    asyncio.run(main(*_args(sys.argv[1:])))
