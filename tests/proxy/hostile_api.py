"""A list+watch API server that serves whatever it is given, unvalidated.

No real API server would serve these objects (kube-apiserver and the lab server
answer 422); this one exists so that the proxy's own boundary is what a test
exercises. It speaks just enough of kube-apiserver's protocol for
podnet.kube's informers: ``GET <collection>`` lists (``metadata.resourceVersion``),
``GET <collection>?watch=1&resourceVersion=N`` streams every later event as
JSON lines. Objects are stored as raw dicts, keyed by (plural, namespace, name).
Bounded: in-process, 127.0.0.1 only, stopped by the test.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from aiohttp import web

KINDS = {
    "services": ("/api/v1", "Service", "v1"),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "EndpointSlice", "discovery.k8s.io/v1"),
    "nodes": ("/api/v1", "Node", "v1"),
}


class HostileApi:
    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        """(resourceVersion, plural, type, object), in order."""
        self._changed = asyncio.Condition()
        self.delivered: dict[str, int] = {}
        """plural -> highest resourceVersion written to every open watch of it."""
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "HostileApi":
        app = web.Application()
        for plural, (prefix, _, _) in KINDS.items():
            app.router.add_get(f"{prefix}/{plural}", self._handler(plural))
            app.router.add_get(f"{prefix}/namespaces/{{ns}}/{plural}", self._handler(plural))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def put(self, plural: str, obj: dict[str, Any]) -> int:
        """Create or replace ``obj`` as is (only metadata.resourceVersion is set)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        key = (plural, meta.get("namespace", ""), meta.get("name", ""))
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{self.rv}")
        _, kind, api_version = KINDS[plural]
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        etype = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self.events.append((self.rv, plural, etype, obj))
        async with self._changed:
            self._changed.notify_all()
        return self.rv

    async def delete(self, plural: str, namespace: str, name: str) -> int:
        obj = self.objects.pop((plural, namespace, name))
        self.rv += 1
        self.events.append((self.rv, plural, "DELETED", obj))
        async with self._changed:
            self._changed.notify_all()
        return self.rv

    async def wait_delivered(self, plural: str, rv: int, polls: int = 200) -> bool:
        """Until every open watch of ``plural`` was written event ``rv`` (bounded)."""
        for _ in range(polls):
            if self.delivered.get(plural, 0) >= rv:
                return True
            await asyncio.sleep(0.02)
        return False

    def _handler(self, plural: str):
        async def handle(request: web.Request) -> web.StreamResponse:
            ns = request.match_info.get("ns")
            if request.query.get("watch") in ("1", "true"):
                return await self._watch(request, plural, ns)
            items = [o for (p, n, _), o in self.objects.items() if p == plural and (ns is None or n == ns)]
            _, kind, api_version = KINDS[plural]
            return web.json_response({"kind": f"{kind}List", "apiVersion": api_version,
                                      "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        return handle

    async def _watch(self, request: web.Request, plural: str, ns: str | None) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = since
        try:
            while loop.time() < deadline:
                for rv, p, etype, obj in list(self.events):
                    if rv <= sent:
                        continue
                    sent = rv
                    if p == plural and (ns is None or obj.get("metadata", {}).get("namespace") == ns):
                        await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
                self.delivered[plural] = max(self.delivered.get(plural, 0), sent)
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), min(1.0, max(0.01, deadline - loop.time())))
                    except asyncio.TimeoutError:
                        pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp
