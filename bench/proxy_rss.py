"""Daemon peak RSS at 10k Services x 5 endpoints, iptables mode and nftables mode.

Runs the daemon's in-process path in a child process per mode: raw API JSON for 10k Services
and their EndpointSlices is converted at the boundary (podnet.kube.resources.convert, as the
informer does), fed to the Daemon through informer-shaped fakes, fully synced into a fresh
network namespace (iptables-legacy, or ``nft -f`` in nftables mode), then one endpoint change is
synced. The child reports its peak RSS (ru_maxrss) and its RSS right after imports.
Run: .venv/bin/python -P bench/proxy_rss.py [services] [iptables|nftables ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ only
from proxy_lib import pool, require_root  # noqa: E402

CHILD = r"""
import asyncio, ipaddress, json, random, resource, sys
def rss_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
from podnet.kube import resources as r
from podnet.kube.testing import FakeInformer
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.iptables import IptablesRunner
from podnet.proxy.nft_proxier import NftFamilyProxier
from podnet.proxy.nft_run import NftRunner
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.rules import NodeContext
base = rss_kb()
ns, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(42)
svc_base, ep_base = ipaddress.ip_address("10.96.0.0"), ipaddress.ip_address("10.128.0.0")
async def main():
    ctx = NodeContext(cluster_cidrs=("10.128.0.0/9",), node_ips=("192.168.0.2",))
    prefix = ["ip", "netns", "exec", ns]
    if mode == "nftables":
        fam = NftFamilyProxier(NftRunner(4, prefix), ctx, "node-a")
    else:
        fam = FamilyProxier(IptablesRunner(4, "legacy", prefix), ctx, "node-a")
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address="", proxy_mode=mode), [fam])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    for i, off in enumerate(rnd.sample(range(1, 1 << 20), n)):
        si.set(r.convert(r.SERVICES, {"metadata": {"name": f"svc-{i}", "namespace": "default", "uid": f"u{i}", "resourceVersion": str(i)},
            "spec": {"clusterIP": str(svc_base + off), "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        ei.set(r.convert(r.ENDPOINT_SLICES, {"metadata": {"name": f"svc-{i}-x", "namespace": "default",
            "labels": {"kubernetes.io/service-name": f"svc-{i}"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": [str(ep_base + i * 5 + j)], "nodeName": "node-b", "conditions": {"ready": True}} for j in range(5)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    si.synced(); ei.synced()
    assert await d.sync_once()
    old = ei.store["default/svc-7-x"]
    raw = {"metadata": {"name": "svc-7-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "svc-7"}},
           "addressType": "IPv4", "endpoints": [{"addresses": ["10.127.0.1"]}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    ei.set(r.convert(r.ENDPOINT_SLICES, raw))
    assert await d.sync_once()
asyncio.run(main())
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "end_kb": rss_kb()}))
"""


def main(n: int, modes: list[str]) -> None:
    require_root()
    print(f"{'mode':>9} {'services':>8} {'after imports':>14} {'peak RSS':>10} {'RSS at end':>11} {'per service':>12}")
    for mode in modes:
        p = pool()
        try:
            ns = p.netns("rss")
            out = subprocess.run([sys.executable, "-P", "-c", CHILD, ns.name, str(n), mode], capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                sys.exit(out.stderr[-2000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            p.close()
        print(f"{mode:>9} {n:>8} {r['base_kb'] / 1024:>12.1f}MB {r['peak_kb'] / 1024:>8.1f}MB {r['end_kb'] / 1024:>9.1f}MB "
              f"{(r['peak_kb'] - r['base_kb']) / n:>10.1f}KB", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000, sys.argv[2:] or ["iptables", "nftables"])
