"""Wiring for the podnet-dns process: informers -> ZoneSync -> Handler <- DnsServer, plus forwarding,
cache, HTTP endpoints and signals.

Lifecycle: listeners start first (cluster names answer SERVFAIL, /ready 503), informers list and
watch, the first full sync installs the real table (/ready 200), then a loop probe is sent through
every upstream. With ``workers`` > 1 (:class:`PoolDaemon`) this process runs the informers and the
HTTP endpoints and N worker processes answer DNS on the same address (:mod:`podnet.dns.workers`);
/ready and /metrics then cover all of them. /ready turns 503 again while rebuilds fail (the table served is stale). SIGTERM/SIGINT start lameduck: /ready turns 503 while DNS and /health keep
answering for ``lameduck`` seconds, then everything stops and :func:`run` returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from podnet.dns import snapshot
from podnet.dns.cache import Cache
from podnet.dns.chain import BlockChain, Chain
from podnet.dns.forward import Forwarder, UpstreamAddr, read_resolv_conf, self_matcher
from podnet.dns.handler import Handler
from podnet.dns.health import HttpEndpoints
from podnet.dns.metrics import Collector, Stats, render
from podnet.dns.server import DnsServer
from podnet.dns.watch import ZoneSync, initial_table
from podnet.dns.workers import CacheView, ForwarderView, WorkerConfig, WorkerPool, log_settings
from podnet.host import loop
from podnet.host.addr import listen_address
from podnet.kube.objects import EndpointSlice, Service

__all__ = ["Options", "Daemon", "PoolDaemon", "run", "default_workers"]

log = logging.getLogger("podnet.dns")


@dataclass(frozen=True)
class Options:
    """Everything the flag-configured daemon runs with (dns/cli.py builds it from the flags)."""

    master: str | None = None
    kubeconfig: str | None = None
    zone: str = "cluster.local"
    listen: str = "0.0.0.0:53"
    upstreams: tuple[UpstreamAddr, ...] = ()
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
    workers: int = 1
    """DNS worker processes; 1 answers in this process."""


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolv_upstreams(path: str) -> list[UpstreamAddr]:
    try:
        return read_resolv_conf(Path(path).read_text())
    except OSError as e:
        log.warning("cannot read %s: %s; forwarding disabled", path, e)
        return []


_UNREAD = {
    Service: {"uid": "", "resource_version": "", "labels": (), "selector": ()},
    EndpointSlice: {"uid": "", "resource_version": "", "labels": ()},
}
"""Per type, the fields no DNS answer, index or metric reads, and the empty value stored instead
(a slice's Service comes from its own ``service_name`` field, not from its labels)."""


def dns_fields_only(obj):
    """A Service or EndpointSlice as podnet-dns stores it: the :data:`_UNREAD` fields emptied (at 10k
    Services + 10k slices the informers keep ~4 MiB less). Every other field, the key, and whether two
    stored values are equal (so which updates handlers see) are as before."""
    return replace(obj, **_UNREAD[type(obj)])


def kube_informers(opts: Options) -> tuple:
    """(client, (Services, EndpointSlices, Namespaces informers)) from the flags; Services and
    EndpointSlices are stored through :func:`dns_fields_only`."""
    from podnet.kube import resources
    from podnet.kube.client import ApiClient
    from podnet.kube.informer import Informer

    client = ApiClient.from_flags(master=opts.master, kubeconfig=opts.kubeconfig)
    return client, (Informer(client, resources.SERVICES, transform=dns_fields_only),
                    Informer(client, resources.ENDPOINT_SLICES, transform=dns_fields_only),
                    Informer(client, resources.NAMESPACES))


class Daemon:
    def __init__(self, opts: Options, make_informers: Callable[[], tuple] | None = None) -> None:
        self.opts = opts
        self.cfg = snapshot.Config(zone=opts.zone.strip(".").lower(), ttl=opts.ttl, dns_service=opts.dns_service)
        host, port = listen_address(opts.listen, 53)
        upstreams = opts.upstreams or self._resolv_upstreams()
        self.cache = Cache(capacity=opts.cache_capacity, max_ttl=opts.cache_max_ttl, max_denial_ttl=opts.cache_max_ttl)
        self.forwarder = Forwarder(upstreams, self.cache, max_concurrent=opts.max_concurrent, is_self=self_matcher(host, port))
        self.stats = Stats()
        self.handler = Handler(initial_table(self.cfg), self.forwarder, self.stats)
        # The errors plugin of the stock Corefile (coredns_plugin_enabled advertises it): SERVFAIL causes logged.
        self.server = DnsServer(Chain([BlockChain(("",), self.handler, self.forwarder, errors=True, cluster_zone=self.cfg.zone)],
                                      self.stats), host, port)
        self.make_informers = make_informers or self._kube_informers
        self.sync: ZoneSync | None = None
        self.http = HttpEndpoints(self.ready, self._metrics)
        self.collector = Collector(self.stats, f"dns://{opts.listen}", self.cache, self.forwarder, self.ready)
        self.stopping = asyncio.Event()
        self._client = None

    def _resolv_upstreams(self) -> list[UpstreamAddr]:
        return resolv_upstreams(self.opts.resolv_conf)

    def ready(self) -> bool:
        return self.sync is not None and self.sync.ready

    def _metrics(self) -> bytes:
        return render(self.collector)

    def _kube_informers(self) -> tuple:
        self._client, informers = kube_informers(self.opts)
        return informers

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
        return await run_until_stopped(self)

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.close()
        await self.server.stop()
        await self.http.stop()
        await self.forwarder.close()
        if self._client is not None:
            await self._client.close()


class PoolDaemon:
    """``workers`` > 1: informers, /health, /ready and /metrics here; DNS in a :class:`WorkerPool`.

    Lifecycle as :class:`Daemon`: the workers listen first (SERVFAIL for cluster names, /ready 503),
    /ready turns 200 once every worker has synced, SIGTERM/SIGINT start lameduck (the workers keep
    answering), then the workers are stopped and :meth:`run` returns 0.
    """

    def __init__(self, opts: Options, make_informers: Callable[[], tuple] | None = None,
                 argv: Callable[[int], list[str]] | None = None) -> None:
        self.opts = opts
        host, port = listen_address(opts.listen, 53)
        upstreams = opts.upstreams or resolv_upstreams(opts.resolv_conf)
        self.cfg = WorkerConfig(
            host, port, zone=opts.zone, ttl=opts.ttl, dns_service=opts.dns_service, upstreams=tuple(upstreams),
            cache_capacity=opts.cache_capacity, cache_max_ttl=opts.cache_max_ttl, max_concurrent=opts.max_concurrent,
        )
        fmt, verbosity = log_settings()
        self.cfg = replace(self.cfg, log_format=fmt, log_verbosity=verbosity)
        self.make_informers = make_informers or self._kube_informers
        self.argv = argv
        self.pool: WorkerPool | None = None
        self.http = HttpEndpoints(self.ready, self._metrics)
        self.stopping = asyncio.Event()
        self._client = None

    def _kube_informers(self) -> tuple:
        self._client, informers = kube_informers(self.opts)
        return informers

    def ready(self) -> bool:
        return self.pool is not None and self.pool.ready()

    def _metrics(self) -> bytes:
        from podnet.dns.cache import CacheStats
        from podnet.dns.forward import ForwardStats

        r = self.pool.merged() if self.pool is not None else None
        if r is None:
            return b""
        collector = Collector(r.stats, f"dns://{self.opts.listen}", CacheView(r.cache_counts, r.cache_stats or CacheStats()),
                              ForwarderView(r.fwd_stats or ForwardStats()), self.ready)
        return render(collector)

    async def start(self) -> list[asyncio.Task]:
        informers = self.make_informers()
        self.pool = WorkerPool(self.opts.workers, self.cfg, informers, argv=self.argv)
        await self.pool.start()
        await self.http.start(self.opts.health_listen, self.opts.ready_listen, self.opts.metrics_listen)
        log.info("podnet-dns zone %s, %d workers, upstreams %s", self.cfg.zone, self.opts.workers,
                 ", ".join(str(u) for u in self.cfg.upstreams) or "none")
        return [asyncio.create_task(inf.run()) for inf in informers if hasattr(inf, "run")]

    begin_lameduck = Daemon.begin_lameduck

    async def run(self) -> int:
        return await run_until_stopped(self)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
        await self.http.stop()
        if self._client is not None:
            await self._client.close()


async def run_until_stopped(daemon: Daemon | PoolDaemon) -> int:
    """Start ``daemon``, serve until SIGTERM/SIGINT and its lameduck end, cancel its tasks, close it."""
    loop.stop_on_signals(daemon.begin_lameduck)
    tasks: list[asyncio.Task] = []
    try:
        tasks = await daemon.start()
        await daemon.stopping.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await daemon.close()
    log.info("stopped")
    return 0


def run(opts: Options) -> int:
    """Run the daemon until SIGTERM/SIGINT + lameduck; uvloop when it is installed."""
    cls = PoolDaemon if opts.workers > 1 else Daemon
    return loop.run(cls(opts).run())
