"""Shared helpers for tests/kube: an event recorder and a failure-injecting client.

Imported by the test modules as a plain module (pytest's importlib mode puts
this folder's files under unique names, so import it via ``load_helpers``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from podnet.kube.client import ApiClient


class Recorder:
    """Collects informer callbacks as tuples, and replays them into a dict."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def handlers(self) -> dict[str, Any]:
        return dict(
            on_add=lambda o: self.events.append(("add", o.key, o)),
            on_update=lambda old, new: self.events.append(("update", new.key, old, new)),
            on_delete=lambda o: self.events.append(("delete", o.key, o)),
            on_synced=lambda: self.events.append(("synced",)),
        )

    def replay(self) -> dict[str, Any]:
        """The store implied by the callbacks; asserts they are coherent."""
        state: dict[str, Any] = {}
        for ev in self.events:
            if ev[0] == "add":
                assert ev[1] not in state, f"duplicate add for {ev[1]}"
                state[ev[1]] = ev[2]
            elif ev[0] == "update":
                assert state.get(ev[1]) == ev[2], f"update for {ev[1]} from a value handlers never saw"
                assert ev[2] != ev[3], "no-op update delivered"
                state[ev[1]] = ev[3]
            elif ev[0] == "delete":
                assert ev[1] in state, f"delete for unknown {ev[1]}"
                del state[ev[1]]
        return state

    def kinds(self, key: str) -> list[str]:
        return [e[0] for e in self.events if len(e) > 1 and e[1] == key]


class FlakyClient(ApiClient):
    """A real client whose connection can be cut and refused on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down = False
        self.watch_rvs: list[str | None] = []
        self.lists = 0

    async def cut(self, *, stay_down: bool = True) -> None:
        """Break every open connection (watch streams included); refuse new requests while ``stay_down``."""
        self.down = stay_down
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        if self.down:
            raise aiohttp.ClientConnectionError("connection refused (test)")
        if method == "GET":
            self.lists += 1
        return await super().request(method, path, **kw)

    async def stream_lines(self, path: str, params: Any, *, inactivity_timeout: float | None):
        if self.down:
            raise aiohttp.ClientConnectionError("connection refused (test)")
        self.watch_rvs.append(params.get("resourceVersion"))
        async for line in super().stream_lines(path, params, inactivity_timeout=inactivity_timeout):
            yield line


async def wait_for(cond, timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def svc(name: str, port: int = 80, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}], **spec}}


class AuthServer:
    """A small HTTP(S) API server that checks bearer tokens: ``async with AuthServer(...) as srv``.

    ``GET /api/v1/services`` answers an empty ServiceList when the token is in
    ``accept`` (any token when ``accept`` is None), else 401 with a Status.
    Records every request's Authorization header and, over mutual TLS, the
    client certificate's CN. ``watch=1`` answers one ADDED event and ends.
    """

    def __init__(self, accept: set[str] | None = None, pki: Path | None = None, require_client_cert: bool = False):
        self.accept = accept
        self.pki = pki
        self.require_client_cert = require_client_cert
        self.seen: list[tuple[str | None, str | None]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
        self.seen.append((auth, cn))
        token = auth.removeprefix("Bearer ") if auth else None
        if self.accept is not None and token not in self.accept:
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": "Unauthorized", "message": "Unauthorized", "code": 401}, status=401)
        if request.query.get("watch"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b'{"type":"BOOKMARK","object":{"kind":"Service","metadata":{"resourceVersion":"8"}}}\n')
            return resp
        return web.json_response({"kind": "ServiceList", "metadata": {"resourceVersion": "7"}, "items": []})

    async def __aenter__(self) -> "AuthServer":
        ctx = None
        if self.pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(self.pki / "server.crt", self.pki / "server.key")
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        app = web.Application()
        app.router.add_get("/api/v1/services", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port
        self.url = f"{'https' if ctx else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def tokens(self) -> list[str | None]:
        return [a.removeprefix("Bearer ") if a else None for a, _ in self.seen]

    def cns(self) -> list[str | None]:
        return [cn for _, cn in self.seen]
