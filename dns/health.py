"""HTTP endpoints: /health (liveness, lameduck), /ready (503 until synced), /metrics (Prometheus).

As CoreDNS's ``health``, ``ready`` and ``prometheus`` plugins: /health answers 200 "OK" for as
long as the process serves, including the lameduck period after SIGTERM; /ready answers 200 "OK"
once the zone has synced and while its rebuilds succeed, and 503 with the list of not-ready parts
otherwise (a stale table, and also during lameduck, so endpoints are withdrawn first). Each endpoint may get its own listen address; an
address given twice serves every path on one socket.
"""

from __future__ import annotations

import logging
from typing import Callable

from aiohttp import web

from podnet.dns.server import split_hostport

__all__ = ["HttpEndpoints"]

log = logging.getLogger("podnet.dns.health")


class HttpEndpoints:
    def __init__(self, ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self.ready = ready
        self.metrics = metrics
        self.lameduck = False
        self._runners: list[web.AppRunner] = []
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
        routes: dict[str, list[tuple[str, object]]] = {}
        for listen, path, fn in ((health, "/health", self._health), (ready, "/ready", self._ready), (metrics, "/metrics", self._metrics)):
            if listen:
                routes.setdefault(listen, []).append((path, fn))
        for listen, paths in routes.items():
            app = web.Application()
            for path, fn in paths:
                app.router.add_get(path, fn)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            host, port = split_hostport(listen, 0)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            for path, _ in paths:
                self.ports[path] = bound
            self._runners.append(runner)
            log.info("http %s on %s:%d", ",".join(p for p, _ in paths), host, bound)

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
