"""HTTP endpoints: /health (liveness, lameduck), /ready (503 until synced), /metrics (Prometheus).

As CoreDNS's ``health``, ``ready`` and ``prometheus`` plugins: /health answers 200 "OK" for as
long as the process serves, including the lameduck period after SIGTERM; /ready answers 200 "OK"
once the zone has synced and while its rebuilds succeed, and 503 with the list of not-ready parts
otherwise (a stale table, and also during lameduck, so endpoints are withdrawn first). Each
endpoint may get its own listen address; an address given twice serves every path on one socket.
Each socket is a :class:`podnet.host.serving.HttpEndpoint`; addresses are parsed by
:func:`podnet.host.addr.listen_address` (an empty host: every IPv4 address; port 0: ephemeral,
the bound port is in :attr:`HttpEndpoints.ports`).
"""

from __future__ import annotations

import logging
from typing import Callable

from aiohttp import web

from podnet.host.addr import listen_address
from podnet.host.serving import Handler, HttpEndpoint

__all__ = ["HttpEndpoints"]

log = logging.getLogger("podnet.dns.health")


class HttpEndpoints:
    def __init__(self, ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self.ready = ready
        self.metrics = metrics
        self.lameduck = False
        self._endpoints: list[HttpEndpoint] = []
        self.ports: dict[str, int] = {}

    async def _health(self, _req: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _ready(self, _req: web.Request) -> web.Response:
        if self.lameduck:
            return web.Response(status=503, text="lameduck")
        if not self.ready():
            return web.Response(status=503, text="kubernetes")
        return web.Response(text="OK")

    async def _metrics(self, _req: web.Request) -> web.Response:
        return web.Response(body=self.metrics(), content_type="text/plain", charset="utf-8")

    async def start(self, health: str | None, ready: str | None, metrics: str | None) -> None:
        """Listen on each given 'host:port' (port 0 = ephemeral; see ``ports``)."""
        routes: dict[str, dict[str, Handler]] = {}
        for listen, path, fn in ((health, "/health", self._health), (ready, "/ready", self._ready),
                                 (metrics, "/metrics", self._metrics)):
            if listen:
                routes.setdefault(listen, {})[path] = fn
        for listen, paths in routes.items():
            host, port = listen_address(listen, 0)
            endpoint = HttpEndpoint(paths)
            bound = await endpoint.start(host, port)
            for path in paths:
                self.ports[path] = bound
            self._endpoints.append(endpoint)
            log.info("http %s on %s:%d", ",".join(paths), host, bound)

    async def stop(self) -> None:
        for e in self._endpoints:
            await e.close()
        self._endpoints.clear()
