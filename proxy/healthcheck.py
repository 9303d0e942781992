"""kube-proxy's health surfaces: /healthz and /livez, and per-service health ports.

:class:`ProxyHealth` is pure state: a sync that is queued and not done within
``timeout`` (2 x --iptables-sync-period, as kube-proxy) makes the proxy
unhealthy. /healthz additionally reports the node ineligible (503) while the
Node is being deleted. :class:`HealthServer` serves both paths as JSON on
--healthz-bind-address. :class:`ServiceHealthServers` keeps one HTTP
listener per healthCheckNodePort of an eTP=Local LoadBalancer service and
answers 200 with ``localEndpoints`` > 0 and the proxy healthy, else 503, plus
the ``X-Load-Balancing-Endpoint-Weight`` header; listeners are started and
stopped to follow the services after every sync.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from podnet.host.serving import HttpEndpoint
from podnet.proxy import metrics as m

log = logging.getLogger("podnet.proxy")


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class ProxyHealth:
    timeout: float
    clock: Callable[[], float] = time.time
    families: tuple[str, ...] = ("IPv4",)
    last_updated: dict[str, float] = field(default_factory=dict)
    queued_at: float | None = None
    node_deleting: bool = False

    def queued(self) -> None:
        if self.queued_at is None:
            self.queued_at = self.clock()

    def updated(self, family: str) -> None:
        self.last_updated[family] = self.clock()
        if all(f in self.last_updated and self.last_updated[f] >= (self.queued_at or 0) for f in self.families):
            self.queued_at = None

    def healthy(self) -> bool:
        return self.queued_at is None or self.clock() - self.queued_at <= self.timeout

    def report(self, for_healthz: bool) -> tuple[int, dict]:
        now = self.clock()
        healthy = self.healthy()
        body: dict = {
            "lastUpdated": _rfc3339(max(self.last_updated.values(), default=0)),
            "currentTime": _rfc3339(now),
            "healthy": healthy,
            "status": {
                f: {"lastUpdated": _rfc3339(self.last_updated.get(f, 0)), "healthy": healthy} for f in self.families
            },
        }
        ok = healthy
        if for_healthz:
            body["nodeEligible"] = not self.node_deleting
            ok = ok and not self.node_deleting
        return (200 if ok else 503), body


class HealthServer:
    """kube-proxy's /healthz and /livez on --healthz-bind-address (:class:`podnet.host.serving.HttpEndpoint`)."""

    def __init__(self, health: ProxyHealth) -> None:
        self.health = health
        self._endpoint = HttpEndpoint({"/healthz": self._healthz, "/livez": self._livez})
        self.port: int | None = None

    async def _healthz(self, _req: web.Request) -> web.Response:
        code, body = self.health.report(True)
        m.HEALTHZ.labels(str(code)).inc()
        return web.json_response(body, status=code)

    async def _livez(self, _req: web.Request) -> web.Response:
        code, body = self.health.report(False)
        m.LIVEZ.labels(str(code)).inc()
        return web.json_response(body, status=code)

    async def start(self, host: str, port: int) -> None:
        self.port = await self._endpoint.start(host, port)

    async def stop(self) -> None:
        await self._endpoint.close()


class ServiceHealthServers:
    """healthCheckNodePort listeners: ``sync({ns/name: (port, local endpoints)})``."""

    def __init__(self, health: ProxyHealth, host: str = "0.0.0.0") -> None:
        self.health = health
        self.host = host
        self.state: dict[str, tuple[int, int]] = {}
        self._runners: dict[int, web.ServerRunner] = {}
        self._port_owner: dict[int, str] = {}

    def _handler(self, port: int):
        async def handle(_req: web.BaseRequest) -> web.Response:
            key = self._port_owner.get(port, "")
            ns, _, name = key.partition("/")
            local = self.state.get(key, (port, 0))[1]
            healthy = self.health.healthy()
            body = {"service": {"namespace": ns, "name": name}, "localEndpoints": local, "serviceProxyHealthy": healthy}
            return web.Response(
                text=json.dumps(body),
                content_type="application/json",
                status=200 if local > 0 and healthy else 503,
                headers={"X-Load-Balancing-Endpoint-Weight": str(local)},
            )

        return handle

    async def sync(self, wanted: dict[str, tuple[int, int]]) -> None:
        self.state = dict(wanted)
        want_ports = {port: key for key, (port, _) in wanted.items()}
        for port in list(self._runners):
            if port not in want_ports:
                await self._runners.pop(port).cleanup()
                self._port_owner.pop(port, None)
        for port, key in want_ports.items():
            self._port_owner[port] = key
            if port in self._runners:
                continue
            runner = web.ServerRunner(web.Server(self._handler(port)), access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, port, reuse_address=True).start()
            except OSError as e:
                log.warning("FailedToStartServiceHealthcheck %s on port %d: %s", key, port, e)
                await runner.cleanup()
                continue
            self._runners[port] = runner

    async def stop(self) -> None:
        await self.sync({})
