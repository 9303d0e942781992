"""nftables mode vs iptables mode: full sync and one endpoint change, side by side, in fresh namespaces.

For N Services x 5 endpoints (default 10k):
  bare nft -f       : the issue's bare shape for the same services (one named verdict map into chains of
                      plain numgen rules, nothing else) loaded by nft -f: the anchor of the full sync
  nft full          : podnet nftables mode, informer state -> table in the kernel (compute, render, nft -f)
  nft resync        : a later full sync of the same daemon (fragments cached, its table loaded: flushed
                      and written again), as the periodic and the repairing full syncs run
  nft -f alone      : nft -f of the very same text
  legacy full       : podnet iptables mode full sync (iptables-legacy)
  legacy restore    : iptables-legacy-restore --noflush of podnet's iptables text alone
  nft change        : one endpoint changed, podnet nftables partial sync, time to kernel
  legacy change     : the same change, podnet iptables mode partial sync (iptables-legacy)
  check, unchanged  : the per-period foreign-change check (canary_ok) when nothing was committed
                      since the last check: one generation read (a short child process)
  check, dump       : the same check after a commit: every rule of the table counted per chain and
                      every map's elements, compared with what was applied (child process)
  dump in-process   : the dump alone, timed inside the child (nft_count.census)
  check + repair    : a service chain flushed from outside: canary_ok finds it (in a period where
                      counting every chain fits its time budget), the next sync rewrites that chain only
Optional (slow, once each): PODNET_BENCH_IPT_NFT=1 adds iptables-nft-restore of podnet's iptables
text; PODNET_BENCH_KP=1 adds nft -f of kube-proxy's nftables shape (numgen vmap + endpoint chains).
PODNET_BENCH_REPS sets the repetitions (default 3); medians are printed (with their ratio to the bare
shape of the same run), the load average before and after, the CPU seconds (user+sys of this process
and its children, which load inflates far less than wall time) of the bare shape, the two full syncs
and nft -f alone, then every sample.
Run: .venv/bin/python -P bench/proxy_nft.py [N]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ only (never the checkout root)
from proxy_lib import cpu_seconds, median, objects, pool, require_root, restore_seconds
from proxy_sync import podnet_full, streamed_text

from podnet.kube.testing import FakeInformer
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.nft_proxier import NftFamilyProxier, build
from podnet.proxy.nft_rules import service_chain_names
from podnet.proxy.nft_render import render_full
from podnet.proxy.nft_run import NftRunner
from podnet.proxy.rules import NodeContext
from podnet.proxy.testing import ep, slice_

REPS = int(os.environ.get("PODNET_BENCH_REPS", "3"))
DUMP = """
import sys, time
from podnet.proxy.nft_count import census
chains = sys.stdin.read().split()
t = time.perf_counter()
c = census(4, "podnet", None, ["service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports",
                               "hairpin", "health-check-nodeports"], chains)
assert sum(c["chains"].values()) > 0
print(time.perf_counter() - t)
"""


def nft_seconds(ns, text: str) -> float:
    t = time.perf_counter()
    p = subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=text, text=True, capture_output=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr[:500])
    return dt


async def nft_full(ns, services, slices, ctx):
    fam = NftFamilyProxier(NftRunner(4, ["ip", "netns", "exec", ns.name]), ctx, "node-a")
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address="", proxy_mode="nftables"), [fam])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    for s in services:
        si.set(s)
    for s in slices:
        ei.set(s)
    si.synced(), ei.synced()
    c, t = cpu_seconds(), time.perf_counter()
    assert await d.sync_once()
    return time.perf_counter() - t, cpu_seconds() - c, d


def bare_shape(services, slices) -> str:
    """The issue's bare shape for the same services: one named verdict map into one chain per service of
    plain ``numgen random mod N == 0 ... dnat`` rules, and nothing else (no masquerade, no reject maps)."""
    out = ["add table ip bare", "delete table ip bare", "table ip bare {",
           "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
           "  chain services { ip daddr . meta l4proto . th dport vmap @service-ips ; }",
           "  chain nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; jump services ; }"]
    elements = []
    for s, sl in zip(services, slices):
        eps = [e.addresses[0] for e in sl.endpoints]
        rules = [f"{'' if i == len(eps) - 1 else f'numgen random mod {len(eps) - i} == 0 '}meta l4proto tcp dnat to {a}:8080"
                 for i, a in enumerate(eps)]
        out.append(f"  chain service-{s.name} {{\n" + "".join(f"    {r}\n" for r in rules) + "  }")
        elements.append(f"{s.cluster_ips[0]} . tcp . 80 : goto service-{s.name}")
    out.append("}")
    out.append(f"add element ip bare service-ips {{ {', '.join(elements)} }}")
    return "\n".join(out) + "\n"


def kube_proxy_shape(services, slices) -> str:
    """kube-proxy's nftables shape for the same services: service chain -> numgen vmap -> endpoint chains."""
    out = ["add table ip kp", "delete table ip kp", "table ip kp {",
           "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
           "  chain mark-for-masquerade { meta mark set meta mark | 0x4000 ; }",
           "  chain services { ip daddr . meta l4proto . th dport vmap @service-ips ; }",
           "  chain nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; jump services ; }"]
    elements = []
    for s, sl in zip(services, slices):
        sc = f"service-{s.name}"
        ecs = []
        for e in sl.endpoints:
            a = e.addresses[0]
            ec = f"endpoint-{s.name}-{a}"
            ecs.append(ec)
            out.append(f"  chain {ec} {{ ip saddr {a} jump mark-for-masquerade ; meta l4proto tcp dnat to {a}:8080 ; }}")
        vm = ", ".join(f"{i} : goto {c}" for i, c in enumerate(ecs))
        out.append(f"  chain {sc} {{ ip daddr {s.cluster_ips[0]} tcp dport 80 ip saddr != 10.128.0.0/9 jump mark-for-masquerade ; "
                   f"numgen random mod {len(ecs)} vmap {{ {vm} }} ; }}")
        elements.append(f"{s.cluster_ips[0]} . tcp . 80 : goto {sc}")
    out.append("}")
    out.append(f"add element ip kp service-ips {{ {', '.join(elements)} }}")
    return "\n".join(out) + "\n"


async def main(n: int):
    require_root()
    ctx = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",))
    services, slices = objects(n)
    t = time.perf_counter()
    nft_text = render_full(build(services, slices, ctx, "node-a"))
    compute = time.perf_counter() - t
    ipt_text = await streamed_text(services, slices, ctx)
    bare_text = bare_shape(services, slices)
    load_before = os.getloadavg()
    res: dict[str, list[float]] = {k: [] for k in ("bare nft -f", "nft full", "nft resync", "nft -f alone", "legacy full", "legacy restore",
                                                   "nft change", "legacy change", "check, unchanged",
                                                   "check, dump", "dump in-process", "check + repair")}
    cpu: dict[str, list[float]] = {k: [] for k in ("bare nft -f", "nft full", "nft resync", "nft -f alone")}
    for rep in range(REPS):
        p = pool()
        try:
            ns_n, ns_l = p.netns("n"), p.netns("l")
            ns_b, ns_a = p.netns("b"), p.netns("na")
            c = cpu_seconds()
            res["bare nft -f"].append(nft_seconds(ns_b, bare_text))
            cpu["bare nft -f"].append(cpu_seconds() - c)
            c = cpu_seconds()
            res["nft -f alone"].append(nft_seconds(ns_a, nft_text))
            cpu["nft -f alone"].append(cpu_seconds() - c)
            dt, dc, dn = await nft_full(ns_n, services, slices, ctx)
            res["nft full"].append(dt)
            cpu["nft full"].append(dc)
            dn.proxier.families[0].need_full = True  # a later full sync: fragments cached, the table loaded
            c, t = cpu_seconds(), time.perf_counter()
            assert await dn.sync_once() and dn.proxier.last_reports[0].full
            res["nft resync"].append(time.perf_counter() - t)
            cpu["nft resync"].append(cpu_seconds() - c)
            res["legacy restore"].append(restore_seconds(p.netns("la"), ipt_text))
            dt, dl, *_ = await podnet_full(ns_l, services, slices, ctx)
            res["legacy full"].append(dt)
            victim = slices[n // 2]
            new = slice_(service=victim.service_name, name=victim.name, ports=((8080, "TCP", "http"),),
                         endpoints=[ep(e.addresses[0]) for e in victim.endpoints[:4]] + [ep(f"10.127.0.{rep + 1}")])
            for key, d in (("nft change", dn), ("legacy change", dl)):
                t = time.perf_counter()
                d.proxier.on_slice(victim, new)
                assert await d.sync_once()
                assert not d.proxier.last_reports[0].full
                res[key].append(time.perf_counter() - t)
            fam = dn.proxier.families[0]
            t = time.perf_counter()
            assert await fam.canary_ok()  # after the change: a commit since the last check, so a dump
            res["check, dump"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert await fam.canary_ok()
            res["check, unchanged"].append(time.perf_counter() - t)
            chains = "\n".join(sorted(fam.applied.chains()))
            res["dump in-process"].append(float(ns_n.run(sys.executable, "-P", "-c", DUMP, input=chains, timeout=120)))
            victim_chain = service_chain_names(f"{victim.namespace}/{victim.service_name}:http", "TCP")[0]
            ns_n.run("nft", "flush", "chain", "ip", "podnet", victim_chain)
            fam.next_full_check = None  # the period in which counting every chain is affordable again
            t = time.perf_counter()
            assert not await fam.canary_ok()
            assert await dn.sync_once() and not dn.proxier.last_reports[0].full
            res["check + repair"].append(time.perf_counter() - t)
            assert await fam.canary_ok()
        finally:
            p.close()
    print(f"{n} services x 5 endpoints; nft text {nft_text.count(chr(10))} lines (compute+render {compute:.2f}s), "
          f"bare shape {bare_text.count(chr(10))} lines, iptables text {ipt_text.count(chr(10))} lines; {REPS} reps; "
          f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; medians:")
    bare = median(res["bare nft -f"])
    for k, v in res.items():
        print(f"  {k:>16}: {median(v):8.3f}s  ({median(v) / bare:.2f}x bare)")
    bare_cpu = median(cpu["bare nft -f"])
    print("CPU seconds (user+sys of this process and its children; unlike wall time, not inflated by load):")
    for k, v in cpu.items():
        print(f"  {k:>16}: {median(v):8.3f}s  ({median(v) / bare_cpu:.2f}x bare)")
    print("samples: " + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in v) for k, v in res.items()), flush=True)
    print("cpu samples: " + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in v) for k, v in cpu.items()), flush=True)
    # The slow anchors, once each, printed as they finish.
    if os.environ.get("PODNET_BENCH_KP") == "1":
        p = pool()
        try:
            print(f"  kube-proxy nft shape, nft -f: {nft_seconds(p.netns('k'), kube_proxy_shape(services, slices)):8.3f}s (once)", flush=True)
        finally:
            p.close()
    if os.environ.get("PODNET_BENCH_IPT_NFT") == "1":
        p = pool()
        try:
            print(f"  iptables-nft-restore: {restore_seconds(p.netns('x'), ipt_text, 'iptables-nft-restore'):8.3f}s (once)", flush=True)
        finally:
            p.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000))
