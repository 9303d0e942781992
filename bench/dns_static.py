"""A podnet-dns server over a generated cluster (no API server), for benchmarks.

    .venv/bin/python -P bench/dns_static.py --services 10000 --listen 127.0.0.1:0

Builds N ClusterIP services ``svc-<i>.ns-<i % 100>.svc.cluster.local`` (10.96.0.0/12 + 1 endpoint each),
feeds them through in-memory informers into the same ZoneSync as podnet-dns (so the table is built
the way the daemon builds it: in chunks, records released once compiled), prints
``port=<P> rss_kb=<VmHWM>`` on stdout once serving, and runs until killed. ``--one-shot`` builds
the table with one snapshot.build + compile_table call instead (every record set alive at once).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys

from podnet.dns import answers, snapshot, watch
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer, split_hostport
from podnet.dns.testing import eps, svc
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer


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


async def build(n: int, one_shot: bool) -> Handler:
    services, slices, namespaces = cluster(n)
    if one_shot:
        return Handler(answers.compile_table(snapshot.build(services, slices, namespaces)))
    cfg = snapshot.Config()
    handler = Handler(watch.initial_table(cfg))
    informers = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(ns) for ns in namespaces]))
    del services, slices
    sync = watch.ZoneSync(handler, *informers, cfg)
    sync.attach()
    for inf in informers:
        inf.synced()
    await sync.synced_event.wait()
    return handler


async def serve(n: int, listen: str, one_shot: bool, batch_udp: bool = True) -> None:
    handler = await build(n, one_shot)
    table = handler.table
    host, port = split_hostport(listen, 0)
    server = DnsServer(handler, host, port, batch_udp=batch_udp)
    await server.start()
    # (no count of all names here: walking table.exists allocates, and VmHWM would include that)
    print(f"port={server.port} rss_kb={vm_hwm_kb()} entries={len(table.hot)} ents={len(table.ents)}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--udp", choices=("batch", "loop"), default="batch",
                   help="batch: recvmmsg/sendmmsg (the default server); loop: one event-loop callback per datagram")
    p.add_argument("--one-shot", action="store_true", help="build with one snapshot.build + compile_table call")
    a = p.parse_args()
    if not a.no_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(a.services, a.listen, a.one_shot, a.udp == "batch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
