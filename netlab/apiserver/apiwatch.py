"""Watch streams of the lab API server: newline-delimited JSON events.

- ``resourceVersion`` unset or "0": synthetic ADDED for the current objects,
  then live events; a number N: every event after N, then live; a compacted
  (or future) N: one ERROR event with a 410 Status, then the stream ends;
- BOOKMARKs (with ``allowWatchBookmarks=true``) every ``bookmark_interval``
  seconds while the stream is idle; each carries a version up to which the
  watcher has received everything (events are queued synchronously at
  commit, so an empty queue means nothing is outstanding);
- the stream ends cleanly after ``timeoutSeconds``, when the server stops,
  or when the watcher falls too far behind (the client resumes or relists);
- queued events are written in batches (up to 1000 per write);
- an event is encoded once for all its watchers (as kube-apiserver caches serializations): the
  store writes a new object dict on every change and never mutates a stored one, so the bytes of
  (type, object) stay true while the object lives; :class:`EventLines` holds the objects it
  caches, so an ``id`` cannot be reused while its entry is there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from podnet.netlab.apiserver.apikinds import Kind
from podnet.netlab.apiserver.apistore import Gone, StatusError, Store, Watcher
from podnet.netlab.apiserver.tables import table

__all__ = ["EventLines", "open_watcher", "stream_watch"]


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class EventLines:
    """The watch-stream line of (type, stored object), encoded once and shared by every watcher."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lines: OrderedDict[tuple[str, int], tuple[Any, bytes]] = OrderedDict()
        self.hits = 0

    def line(self, etype: str, obj: Any) -> bytes:
        key = (etype, id(obj))
        hit = self._lines.get(key)
        if hit is not None and hit[0] is obj:
            self._lines.move_to_end(key)
            self.hits += 1
            return hit[1]
        data = _line({"type": etype, "object": obj})
        self._lines[key] = (obj, data)
        if len(self._lines) > self.size:
            self._lines.popitem(last=False)
        return data


EVENT_LINES = EventLines()


def open_watcher(store: Store, w: Watcher, rv_param: str, *, initial_events_end: Kind | None = None
                 ) -> tuple[Watcher, Gone | None]:
    """Subscribe ``w`` from ``rv_param``; a compacted version is returned as the Gone to report.

    With ``initial_events_end`` (``sendInitialEvents=true`` and bookmarks), the synthetic ADDED
    events are followed by a BOOKMARK annotated ``k8s.io/initial-events-end`` (the watch-list protocol).
    """
    if rv_param in ("", "0"):
        for obj in store.items(w.plural, w.namespace):
            if w.matches(obj):
                w.queue.put_nowait(("ADDED", obj))
        if initial_events_end is not None:
            w.queue.put_nowait(("BOOKMARK", {
                "kind": initial_events_end.kind, "apiVersion": initial_events_end.api_version,
                "metadata": {"resourceVersion": str(store.rv), "annotations": {"k8s.io/initial-events-end": "true"}}}))
        store.subscribe(w, store.rv)
        return w, None
    try:
        since = int(rv_param)
    except ValueError:
        raise StatusError(400, "BadRequest", f"invalid resource version {rv_param!r}") from None
    try:
        store.subscribe(w, since)
    except Gone as e:
        return w, e
    return w, None


async def stream_watch(request: web.Request, store: Store, kind: Kind, w: Watcher, gone: Gone | None, *,
                       timeout: float, bookmark_interval: float | None, as_table: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    if gone is not None:
        await resp.write(_line({"type": "ERROR", "object": gone.status()}))
        return resp
    deadline = time.monotonic() + timeout
    try:
        while not w.closed:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            if bookmark_interval is not None:
                wait = min(wait, bookmark_interval)
            try:
                item = await asyncio.wait_for(w.queue.get(), wait)
            except asyncio.TimeoutError:
                if bookmark_interval is not None and time.monotonic() < deadline:
                    await resp.write(_line({"type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": kind.api_version,
                        "metadata": {"resourceVersion": str(store.rv)}}}))
                continue
            if item is None:
                break
            batch = [item]
            while not w.queue.empty() and len(batch) < 1000:
                nxt = w.queue.get_nowait()
                if nxt is None:
                    w.closed = True
                    break
                batch.append(nxt)
            if as_table:
                now = time.time()
                batch = [(t, o if t == "BOOKMARK" else
                          table(kind.plural, [o], now, {"resourceVersion": o["metadata"]["resourceVersion"]}))
                         for t, o in batch]
            if as_table:
                await resp.write(b"".join(_line({"type": t, "object": o}) for t, o in batch))
            else:
                await resp.write(b"".join(EVENT_LINES.line(t, o) for t, o in batch))
    except ConnectionError:
        pass  # the client went away
    return resp
