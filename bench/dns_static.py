"""A podnet-dns server over a generated cluster (no API server), for benchmarks.

    .venv/bin/python -P bench/dns_static.py --services 10000 --listen 127.0.0.1:0

Builds N ClusterIP services ``svc-<i>.ns-<i % 100>.svc.cluster.local`` (10.96.0.0/12 + 1 endpoint each),
prints ``port=<P> rss_kb=<VmHWM>`` on stdout once serving, and runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer, split_hostport
from podnet.dns.testing import eps, svc


def cluster(n: int) -> tuple[list, list, list]:
    base = int(ipaddress.IPv4Address("10.96.0.1"))
    pods = int(ipaddress.IPv4Address("10.244.0.1"))
    services, slices = [], []
    for i in range(n):
        ns = f"ns-{i % 100}"
        services.append(svc(ns, f"svc-{i}", clusterIP=str(ipaddress.IPv4Address(base + i)),
                            ports=[{"name": "http", "port": 80}]))
        slices.append(eps(ns, f"svc-{i}", f"svc-{i}-a", "IPv4", [{"addresses": [str(ipaddress.IPv4Address(pods + i))]}],
                          [{"name": "http", "port": 8080}]))
    return services, slices, [f"ns-{j}" for j in range(100)]


def names(n: int) -> list[tuple[str, str]]:
    base = int(ipaddress.IPv4Address("10.96.0.1"))
    return [(f"svc-{i}.ns-{i % 100}.svc.cluster.local", str(ipaddress.IPv4Address(base + i))) for i in range(n)]


def vm_hwm_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def serve(n: int, listen: str) -> None:
    table = answers.compile_table(snapshot.build(*cluster(n)))
    host, port = split_hostport(listen, 0)
    server = DnsServer(Handler(table), host, port)
    await server.start()
    print(f"port={server.port} rss_kb={vm_hwm_kb()} names={len(table.exists)} entries={len(table.hot)}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args()
    if not a.no_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(a.services, a.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
