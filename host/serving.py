"""Serving HTTP endpoints (health, readiness, metrics) with aiohttp, the bound port public.

:class:`HttpEndpoint` is the one way podnet's daemons serve their small HTTP surfaces
(``/healthz``, ``/livez``, ``/ready``, ``/metrics``, ...): a mapping of GET paths to handlers,
one listening socket, and :attr:`HttpEndpoint.port` read from aiohttp's public
``AppRunner.addresses`` after binding, so port 0 (an ephemeral port, in tests) reports the
port the kernel chose. Guarantees: :meth:`HttpEndpoint.start` either listens or raises (and
then holds nothing); :meth:`HttpEndpoint.close` is idempotent; no access log.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Mapping

from aiohttp import web

__all__ = ["HttpEndpoint", "Handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("podnet.host.serving")


class HttpEndpoint:
    """GET ``routes`` served on one host:port until :meth:`close`."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self.host = ""
        self.port: int | None = None
        """The bound port once started (the kernel's choice when asked for port 0)."""
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, *, reuse_address: bool = True) -> int:
        """Listen on host:port (an empty host: every address); returns the bound port."""
        app = web.Application()
        for path, handler in self.routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host or None, port, reuse_address=reuse_address).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = runner.addresses[0][1] if runner.addresses else port
        log.debug("serving %s on %s:%d", ",".join(self.routes), host or "*", self.port)
        return self.port

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
