"""Wiring: informers -> Proxier (trackers) -> SyncRunner -> restore; health, metrics.

Lifecycle guarantees:

* start: informers list+watch; nothing is programmed until Services and
  EndpointSlices have both synced; the first sync is full and does not flush
  anything beyond podnet's own chains (existing rules stay until replaced);
* API outage: informers reconnect with backoff; no sync is triggered by the
  outage itself, so the kernel keeps the last rules; periodic syncs still
  run (and, with nothing changed, write nothing);
* SIGTERM/stop: tasks are cancelled, listeners closed, rules left in place
  (a restart must never break established or new connections);
* periods: :class:`Config` never holds a zero or negative sync period (0 means
  kube-proxy's default, as in its configuration), so no loop is paced at zero;
* ``after_first_sync`` runs once, after the first sync that succeeded with both
  informers synced (the kube-proxy migration hook), and again after a failure.

One :class:`SyncRunner` is the only writer of podnet's rules in the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podnet.host.addr import listen_address
from podnet.host.serving import HttpEndpoint
from podnet.kube import resources
from podnet.kube.names import ZONE_LABEL
from podnet.proxy import metrics as m
from podnet.proxy.config import Conntrack
from podnet.proxy.healthcheck import HealthServer, ProxyHealth, ServiceHealthServers
from podnet.proxy.proxier import FamilyProxier, Proxier
from podnet.proxy.sync import Clock, MonotonicClock, Pacer, SyncRunner

log = logging.getLogger("podnet.proxy")

DEFAULT_SYNC_PERIOD = 30.0
DEFAULT_MIN_SYNC_PERIOD = 1.0
ONCE_NODE_WAIT = 5.0
"""--once: how long to wait for the Node (its zone) after Services and EndpointSlices synced."""


@dataclass(frozen=True)
class Config:
    """The proxy's options (podnet-proxy's flags and KubeProxyConfiguration, resolved by proxy/cli.py)."""

    master: str | None = None
    kubeconfig: str | None = None
    hostname_override: str = ""
    cluster_cidr: tuple[str, ...] = ()
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] = ()
    sync_period: float = 30.0
    min_sync_period: float = 1.0
    healthz_bind_address: str = "0.0.0.0:10256"
    metrics_bind_address: str = "127.0.0.1:10249"
    masquerade_bit: int = 14
    localhost_nodeports: bool = True
    max_endpoints_per_service_port: int = 0
    """0: no bound (kube-proxy has none)."""
    ip_families: tuple[int, ...] = ()
    """Empty means detect (IPv4, plus IPv6 when ip6tables works)."""
    proxy_mode: str = "iptables"
    """iptables (the default) or nftables."""
    conntrack: Conntrack | None = None
    """kube-proxy's conntrack sysctls to apply at start-up (None: leave the kernel's)."""

    def __post_init__(self) -> None:
        # A zero or negative period would pace the sync and canary loops at zero, i.e. spin;
        # kube-proxy's defaulting turns 0 into its default and so does this.
        if self.sync_period <= 0:
            object.__setattr__(self, "sync_period", DEFAULT_SYNC_PERIOD)
        if self.min_sync_period <= 0:
            object.__setattr__(self, "min_sync_period", DEFAULT_MIN_SYNC_PERIOD)
        object.__setattr__(self, "min_sync_period", min(self.min_sync_period, self.sync_period))


class Daemon:
    def __init__(self, cfg: Config, families: list[FamilyProxier], clock: Clock | None = None,
                 wall: Callable[[], float] = time.time,
                 addresses: Callable[[int], Awaitable[tuple[str, ...]]] | None = None) -> None:
        self.cfg = cfg
        self.addresses = addresses
        """Local addresses of one family, re-read every sync period (None: never)."""
        self.clock = clock or MonotonicClock()
        self.proxier = Proxier(families, wall)
        self.pacer = Pacer(cfg.min_sync_period, cfg.sync_period, cfg.sync_period)
        self.runner = SyncRunner(self.sync_once, self.pacer, self.clock)
        self.health = ProxyHealth(2 * cfg.sync_period, wall, tuple(f.label for f in families))
        self.service_health = ServiceHealthServers(self.health)
        self.proxier.on_change = self._on_change
        self._health_map: dict[str, tuple[int, int]] = {}
        self.proxier.on_synced = lambda reports, health: self._health_map.update(health) or None
        self.health_server: HealthServer | None = None
        self._metrics: HttpEndpoint | None = None
        self.metrics_port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self.informers: list[Any] = []
        self.after_first_sync: Callable[[], Awaitable[None]] | None = None
        """Run once, right after the first sync that succeeded (e.g. removing kube-proxy's rules)."""

    # -- informer wiring
    def attach(self, services: Any, slices: Any, nodes: Any | None = None) -> None:
        """Register handlers on informer-shaped objects (real or fake)."""
        p = self.proxier
        services.add_handler(
            on_add=lambda s: p.on_service(None, s),
            on_update=p.on_service,
            on_delete=lambda s: p.on_service(s, None),
            on_synced=p.on_services_synced,
        )
        slices.add_handler(
            on_add=lambda s: p.on_slice(None, s),
            on_update=p.on_slice,
            on_delete=lambda s: p.on_slice(s, None),
            on_synced=p.on_slices_synced,
        )
        if nodes is not None:
            node = self.cfg.hostname_override

            def node_changed(obj: Any) -> None:
                if obj.name == node:
                    self.health.node_deleting = False
                    self._set_zone(dict(obj.labels).get(ZONE_LABEL, ""))

            def node_deleted(obj: Any) -> None:
                self.health.node_deleting = obj.name == node
                if obj.name == node:
                    self._set_zone("")  # kube-proxy forgets the node's labels too

            nodes.add_handler(on_add=node_changed, on_update=lambda o, n: node_changed(n), on_delete=node_deleted)
        self.informers = [services, slices] + ([nodes] if nodes is not None else [])

    def _set_zone(self, zone: str) -> None:
        if self.proxier.set_zone(zone):
            self._on_change()

    def _on_change(self) -> None:
        self.health.queued()
        for fam in self.proxier.families:
            m.LAST_QUEUED.labels(fam.label).set(time.time())
        self.runner.request()

    async def sync_once(self) -> bool:
        """One sync of every family, then the health-check servers and (after the first good sync) the
        one-time hook; what the sync runner calls each time, and what tests drive. False when any family's
        sync failed (the runner retries)."""
        self._health_map = {}
        ok = await self.proxier.sync()
        for rep in self.proxier.last_reports:
            if rep.ok:
                self.health.updated(f"IPv{rep.family}")
        if self.proxier.ready:
            try:
                await self.service_health.sync(dict(self._health_map))
            except Exception:  # noqa: BLE001
                log.exception("health check servers")
        if ok and self.proxier.ready and self.after_first_sync is not None:
            hook, self.after_first_sync = self.after_first_sync, None
            try:
                await hook()
            except Exception:  # noqa: BLE001 - podnet's rules are in place; the hook is retried next sync
                log.exception("after the first sync")
                self.after_first_sync = hook
        return ok

    async def canary_loop(self) -> None:
        """Every sync period: node addresses changed? canary chains still there?"""
        while True:
            await self.clock.sleep(self.cfg.sync_period)
            for fam in self.proxier.families:
                try:
                    if self.addresses is not None and fam.update_node_ips(await self.addresses(fam.ctx.family)):
                        self.runner.request()
                    if not await fam.canary_ok():
                        self.runner.request()
                except Exception:  # noqa: BLE001
                    log.exception("canary check failed")

    # -- servers
    async def start_servers(self) -> None:
        if self.cfg.healthz_bind_address:
            self.health_server = HealthServer(self.health)
            await self.health_server.start(*listen_address(self.cfg.healthz_bind_address))
        if self.cfg.metrics_bind_address:
            async def metrics(_r: web.Request) -> web.Response:
                return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

            async def proxy_mode(_r: web.Request) -> web.Response:
                return web.Response(text=self.cfg.proxy_mode)

            async def healthz(_r: web.Request) -> web.Response:
                code, body = self.health.report(True)
                return web.json_response(body, status=code)

            self._metrics = HttpEndpoint({"/metrics": metrics, "/proxyMode": proxy_mode, "/healthz": healthz})
            self.metrics_port = await self._metrics.start(*listen_address(self.cfg.metrics_bind_address))

    async def stop_servers(self) -> None:
        if self.health_server:
            await self.health_server.stop()
        if self._metrics:
            await self._metrics.close()
        await self.service_health.stop()

    # -- run modes
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; rules stay in place afterwards."""
        await self.start_servers()
        try:
            self._tasks = [asyncio.create_task(i.run()) for i in self.informers]
            self._tasks.append(asyncio.create_task(self.runner.run()))
            self._tasks.append(asyncio.create_task(self.canary_loop()))
            await stop.wait()
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.stop_servers()

    async def once(self, timeout: float = 60.0) -> bool:
        """Sync once after both informers synced, then return (for tools and tests)."""
        tasks = [asyncio.create_task(i.run()) for i in self.informers]
        try:
            await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in self.informers[:2])), timeout)
            if len(self.informers) > 2:
                # The Node carries the zone label (topology hints); it is worth a short wait, never a failure.
                try:
                    await asyncio.wait_for(self.informers[2].wait_synced(), ONCE_NODE_WAIT)
                except asyncio.TimeoutError:
                    log.warning("one-shot sync: Node %s not listed within %.0f s; syncing without its zone",
                                self.cfg.hostname_override, ONCE_NODE_WAIT)
            return await self.sync_once()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def real_informers(client: Any, node_name: str) -> tuple[Any, Any, Any]:
    from podnet.kube.informer import Informer

    nodes = Informer(client, resources.NODES, field_selector=f"metadata.name={node_name}") if node_name else None
    return Informer(client, resources.SERVICES), Informer(client, resources.ENDPOINT_SLICES), nodes
