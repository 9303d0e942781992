"""Loop detection with 2 workers: the probe one worker sends may come back to either worker (the
relay asks from a new source port each time); whichever gets it, every worker stops forwarding."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import dns.asyncquery
import dns.message
import dns.rcode

from podnet.dns.daemon import Options, PoolDaemon
from podnet.dns.forward import UpstreamAddr
from podnet.dns.testing import UdpRelay, cluster_objects
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer


def free_port(host: str) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


async def test_loop_found_by_one_worker_stops_every_worker():
    port = free_port("127.0.0.1")
    relay = await UdpRelay("127.0.0.5", ("127.0.0.1", port)).start()
    services, slices, namespaces = cluster_objects()
    informers = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(n) for n in namespaces]))
    opts = Options(listen=f"127.0.0.1:{port}", upstreams=[UpstreamAddr("127.0.0.5", relay.port)], health_listen=None,
                   ready_listen=None, metrics_listen=None, workers=2)
    daemon = PoolDaemon(opts, make_informers=lambda: informers)
    daemon.cfg = replace(daemon.cfg, report_interval=0.1)
    await daemon.start()
    pool = daemon.pool
    try:
        for inf in informers:
            inf.synced()
        upstream = str(UpstreamAddr("127.0.0.5", relay.port))
        for _ in range(500):
            if pool.ready() and all(w.report.looping == (upstream,) for w in pool.workers):
                break
            await asyncio.sleep(0.02)
        assert [w.report.looping for w in pool.workers] == [(upstream,), (upstream,)]
        replies = await asyncio.gather(*(
            dns.asyncquery.udp(dns.message.make_query("www.example.com.", "A"), "127.0.0.1", port=port, timeout=3)
            for _ in range(16)))
        assert {r.rcode() for r in replies} == {dns.rcode.SERVFAIL}
        assert relay.relayed < 20
    finally:
        await pool.stop()
        await relay.stop()
