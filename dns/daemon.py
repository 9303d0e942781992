"""Wiring for the podnet-dns process: informers -> ZoneSync -> Handler <- DnsServer, plus forwarding,
cache, HTTP endpoints and signals.

Lifecycle: listeners start first (cluster names answer SERVFAIL, /ready 503), informers list and
watch, the first full sync installs the real table (/ready 200), then a loop probe is sent through
every upstream. SIGTERM/SIGINT start lameduck: /ready turns 503 while DNS and /health keep
answering for ``lameduck`` seconds, then everything stops and :func:`run` returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from podnet.dns import snapshot
from podnet.dns.cache import Cache
from podnet.dns.forward import Forwarder, UpstreamAddr, read_resolv_conf, self_matcher
from podnet.dns.handler import Handler
from podnet.dns.health import HttpEndpoints
from podnet.dns.metrics import Collector, Stats, render
from podnet.dns.server import DnsServer, split_hostport
from podnet.dns.watch import ZoneSync, initial_table

__all__ = ["Options", "Daemon", "run"]

log = logging.getLogger("podnet.dns")


@dataclass
class Options:
    master: str | None = None
    kubeconfig: str | None = None
    zone: str = "cluster.local"
    listen: str = "0.0.0.0:53"
    upstreams: list[UpstreamAddr] = field(default_factory=list)
    resolv_conf: str = "/etc/resolv.conf"
    ttl: int = 30
    health_listen: str | None = "0.0.0.0:8080"
    ready_listen: str | None = "0.0.0.0:8181"
    metrics_listen: str | None = "0.0.0.0:9153"
    lameduck: float = 5.0
    max_concurrent: int = 1000
    cache_capacity: int = 9984
    cache_max_ttl: int = 30
    dns_service: str = "kube-system/kube-dns"


class Daemon:
    def __init__(self, opts: Options, make_informers: Callable[[], tuple] | None = None) -> None:
        self.opts = opts
        self.cfg = snapshot.Config(zone=opts.zone.strip(".").lower(), ttl=opts.ttl, dns_service=opts.dns_service)
        host, port = split_hostport(opts.listen)
        upstreams = opts.upstreams or self._resolv_upstreams()
        self.cache = Cache(capacity=opts.cache_capacity, max_ttl=opts.cache_max_ttl, max_denial_ttl=opts.cache_max_ttl)
        self.forwarder = Forwarder(upstreams, self.cache, max_concurrent=opts.max_concurrent, is_self=self_matcher(host, port))
        self.stats = Stats()
        self.handler = Handler(initial_table(self.cfg), self.forwarder, self.stats)
        self.server = DnsServer(self.handler, host, port)
        self.make_informers = make_informers or self._kube_informers
        self.sync: ZoneSync | None = None
        self.http = HttpEndpoints(self.ready, self._metrics)
        self.collector = Collector(self.stats, f"dns://{opts.listen}", self.cache, self.forwarder, self.ready)
        self.stopping = asyncio.Event()
        self._client = None

    def _resolv_upstreams(self) -> list[UpstreamAddr]:
        try:
            ups = read_resolv_conf(Path(self.opts.resolv_conf).read_text())
        except OSError as e:
            log.warning("cannot read %s: %s; forwarding disabled", self.opts.resolv_conf, e)
            return []
        return ups

    def ready(self) -> bool:
        return self.sync is not None and self.sync.synced

    def _metrics(self) -> bytes:
        return render(self.collector)

    def _kube_informers(self) -> tuple:
        from podnet.kube import resources
        from podnet.kube.client import ApiClient
        from podnet.kube.informer import Informer

        self._client = ApiClient.from_flags(master=self.opts.master, kubeconfig=self.opts.kubeconfig)
        return tuple(Informer(self._client, r) for r in (resources.SERVICES, resources.ENDPOINT_SLICES, resources.NAMESPACES))

    async def start(self) -> list[asyncio.Task]:
        informers = self.make_informers()  # configuration errors surface before anything listens
        await self.server.start()
        await self.http.start(self.opts.health_listen, self.opts.ready_listen, self.opts.metrics_listen)
        self.sync = ZoneSync(self.handler, *informers, self.cfg)
        self.sync.attach()
        tasks = [asyncio.create_task(inf.run()) for inf in informers if hasattr(inf, "run")]
        tasks.append(asyncio.create_task(self._after_sync()))
        log.info("podnet-dns zone %s, upstreams %s", self.cfg.zone, ", ".join(u.name for u in self.forwarder.upstreams) or "none")
        return tasks

    async def _after_sync(self) -> None:
        await self.sync.synced_event.wait()
        try:
            await self.forwarder.probe()
        except Exception as e:  # noqa: BLE001
            log.warning("loop probe failed: %s", e)

    def begin_lameduck(self) -> None:
        """First SIGTERM/SIGINT: lameduck, then stop. A second one stops at once."""
        if self.http.lameduck:
            log.info("second signal: stopping now")
            self.stopping.set()
        else:
            log.info("lameduck for %.1fs", self.opts.lameduck)
            self.http.lameduck = True
            asyncio.get_running_loop().call_later(self.opts.lameduck, self.stopping.set)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_lameduck)
        tasks: list[asyncio.Task] = []
        try:
            tasks = await self.start()
            await self.stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.sync is not None:
                await self.sync.close()
            await self.server.stop()
            await self.http.stop()
            await self.forwarder.close()
            if self._client is not None:
                await self._client.close()
        log.info("stopped")
        return 0


def run(opts: Options) -> int:
    """Run the daemon until SIGTERM/SIGINT + lameduck; uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(Daemon(opts).run())
    return uvloop.run(Daemon(opts).run())
