"""Informer: a keyed store of frozen objects kept in step with the API server.

:meth:`Informer.run` lists, then watches from the list's resourceVersion
(with bookmarks), forever:

- a stream that ends (server ``timeoutSeconds``, client inactivity timeout,
  broken connection) is resumed from the last resourceVersion seen;
- 410 Gone (HTTP status or ERROR event) relists; the new list *replaces* the
  store and handlers see exactly the difference: deletes for keys that
  vanished, adds for new keys, updates for changed values, nothing for
  unchanged ones. Nothing is lost or duplicated across relists;
- errors back off with :mod:`podnet.kube.backoff` (jittered, never zero, so a
  down server is never hammered in a busy loop).

Guarantees for handlers:

- all handlers run in the event loop, one event at a time, in stream order;
  a handler may return an awaitable, which is awaited before the next event;
- ``on_update(old, new)`` is never called with ``old == new`` (no-op updates,
  such as a resourceVersion-only change, are dropped); ``on_delete`` gets the
  last value handlers saw;
- ``on_synced()`` fires once, after the first complete list has been
  delivered as adds; :attr:`has_synced` turns true at the same moment;
- a handler that raises is logged and counted, and the informer goes on;
- objects that fail validation are logged and counted by
  :func:`podnet.kube.resources.convert` and skipped; if a stored object turns
  invalid, handlers see it deleted (podnet never acts on unchecked data).

Handlers added after the informer has synced are first replayed the current
store as adds, then ``on_synced``.

Memory: a list is read in ``limit``/``continue`` pages and each page is
converted before the next is read, so at most one page of raw JSON objects is
alive at a time; the store never keeps raw JSON. A ``transform`` (client-go's
``SetTransform``) is applied to every converted object before it is stored,
so a consumer can keep only the fields it reads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from prometheus_client import Counter

from podnet.kube.backoff import DEFAULT, Backoff, decide
from podnet.kube.client import TRANSPORT_ERRORS, ApiClient, ApiError, list_pages
from podnet.kube.objects import object_key
from podnet.kube.resources import Resource, convert
from podnet.kube.watch import WatchEvent, WatchExpired, watch_events, watch_timeout_seconds

__all__ = ["Informer", "StoreReader", "Handler", "raw_key"]

REPLACE_CHUNK = 256
"""Objects converted or delivered between two yields to the event loop in :meth:`Informer.replace`."""

log = logging.getLogger("podnet.kube.informer")

RELISTS = Counter("podnet_kube_relists_total", "Full lists done by informers (first list included).", ["resource"])
WATCH_EVENTS = Counter("podnet_kube_watch_events_total", "Watch events received.", ["resource", "type"])
HANDLER_ERRORS = Counter("podnet_kube_handler_errors_total", "Informer handler calls that raised.", ["resource"])
WATCH_ERRORS = Counter("podnet_kube_watch_errors_total", "List/watch failures before a retry.", ["resource", "reason"])


@dataclass(frozen=True, slots=True)
class Handler:
    on_add: Callable[[Any], Any] | None = None
    on_update: Callable[[Any, Any], Any] | None = None
    on_delete: Callable[[Any], Any] | None = None
    on_synced: Callable[[], Any] | None = None


def raw_key(raw: dict[str, Any], namespaced: bool) -> str | None:
    """The store key of a raw object (None when its metadata is unusable)."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, ns = meta.get("name"), meta.get("namespace") or ""
    if not isinstance(name, str) or not name or not isinstance(ns, str):
        return None
    return object_key(ns if namespaced else "", name)


class StoreReader:
    """The read and handler surface every informer shape shares: a keyed store and handlers that, when
    added after the first sync, get the store replayed as adds and then ``on_synced``.

    Subclasses own how events arrive; they provide ``has_synced`` and ``_call_sync`` (how one handler
    call is made and what happens when it raises)."""

    _store: dict[str, Any]
    _handlers: list[Handler]

    @property
    def has_synced(self) -> bool:
        raise NotImplementedError

    def get(self, key: str) -> Any | None:
        """The object with key ``namespace/name`` (or ``name`` when cluster-scoped)."""
        return self._store.get(key)

    def list(self) -> list[Any]:
        return list(self._store.values())

    def keys(self) -> list[str]:
        return list(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def add_handler(
        self,
        on_add: Callable[[Any], Any] | None = None,
        on_update: Callable[[Any, Any], Any] | None = None,
        on_delete: Callable[[Any], Any] | None = None,
        on_synced: Callable[[], Any] | None = None,
    ) -> Handler:
        h = Handler(on_add, on_update, on_delete, on_synced)
        self._handlers.append(h)
        if self.has_synced:
            # Late handler: replay the store so it starts from the same picture.
            for obj in list(self._store.values()):
                self._call_sync(h.on_add, obj)
            self._call_sync(h.on_synced)
        return h

    def _call_sync(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        raise NotImplementedError


class Informer(StoreReader):
    def __init__(
        self,
        client: ApiClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        backoff: Backoff = DEFAULT,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        min_watch_timeout: int = 300,
        inactivity_timeout: float | None = 150.0,
        list_limit: int | None = 500,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._backoff = backoff
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._min_watch_timeout = min_watch_timeout
        self._inactivity_timeout = inactivity_timeout
        self._list_limit = list_limit
        self._transform = transform
        """Applied to every converted object before it is stored (client-go's SetTransform): a consumer
        that reads only some fields stores only those. It must keep the object's key."""
        self._store: dict[str, Any] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._rv = ""
        self._progress = False
        self._event_counters: dict[str, Any] = {}
        self.relists = 0
        """Number of complete lists applied (1 after the first sync)."""

    # ------------------------------------------------------------------ public read side

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._rv

    # ------------------------------------------------------------------ handlers

    def _call_sync(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            HANDLER_ERRORS.labels(self.resource.plural).inc()
            log.exception("%s: handler %r raised", self.resource.plural, fn)

    async def _call(self, attr: str, *args: Any) -> None:
        for h in self._handlers:
            fn = getattr(h, attr)
            if fn is None:
                continue
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                HANDLER_ERRORS.labels(self.resource.plural).inc()
                log.exception("%s: %s handler raised", self.resource.plural, attr)

    # ------------------------------------------------------------------ store mutation

    async def _set(self, key: str, new: Any | None) -> None:
        """Make the store hold ``new`` at ``key`` (None deletes) and notify."""
        old = self._store.get(key)
        if new is None:
            if old is not None:
                del self._store[key]
                await self._call("on_delete", old)
            return
        self._store[key] = new
        if old is None:
            await self._call("on_add", new)
        elif old != new:
            await self._call("on_update", old, new)

    async def replace(self, raw_items: Iterable[dict[str, Any]], resource_version: str) -> None:
        """Apply one complete list: the store becomes exactly these objects.

        Yields to the event loop every :data:`REPLACE_CHUNK` objects (while
        converting and while notifying), so a list of 10k objects never stalls
        the loop's other work (DNS queries, health checks) for its whole length.
        Handlers still see the events one at a time, in order.
        """
        fresh: dict[str, Any] = {}
        await self._convert_into(fresh, raw_items)
        await self._apply_list(fresh, resource_version)

    async def _convert_into(self, fresh: dict[str, Any], raw_items: Iterable[dict[str, Any]]) -> None:
        """Convert ``raw_items`` into ``fresh`` (key -> object), yielding every :data:`REPLACE_CHUNK` items."""
        transform = self._transform
        for n, raw in enumerate(raw_items, 1):
            obj = convert(self.resource, raw)
            if obj is not None:
                if transform is not None:
                    obj = transform(obj)
                fresh[obj.key] = obj
            if n % REPLACE_CHUNK == 0:
                await asyncio.sleep(0)

    async def _apply_list(self, fresh: dict[str, Any], resource_version: str) -> None:
        """Make the store exactly ``fresh`` (converted objects), telling handlers the difference."""
        for n, key in enumerate([k for k in self._store if k not in fresh], 1):
            await self._set(key, None)
            if n % REPLACE_CHUNK == 0:
                await asyncio.sleep(0)
        for n, (key, obj) in enumerate(fresh.items(), 1):
            await self._set(key, obj)
            if n % REPLACE_CHUNK == 0:
                await asyncio.sleep(0)
        self._rv = resource_version
        self.relists += 1
        RELISTS.labels(self.resource.plural).inc()
        if not self._synced.is_set():
            self._synced.set()
            log.info("%s: synced %d objects at resourceVersion %s", self.resource.plural, len(self._store), self._rv)
            await self._call("on_synced")

    async def apply_event(self, event: WatchEvent) -> None:
        """Apply one watch event (ADDED/MODIFIED/DELETED/BOOKMARK) to the store."""
        counter = self._event_counters.get(event.type)
        if counter is None:
            counter = self._event_counters[event.type] = WATCH_EVENTS.labels(self.resource.plural, event.type)
        counter.inc()
        if event.resource_version:
            self._rv = event.resource_version
        if event.type == "BOOKMARK":
            return
        key = raw_key(event.object, self.resource.namespaced)
        if key is None:
            log.warning("%s: %s event without usable metadata; skipped", self.resource.plural, event.type)
            return
        if event.type == "DELETED":
            await self._set(key, None)
            return
        obj = convert(self.resource, event.object)
        if obj is not None and self._transform is not None:
            obj = self._transform(obj)
        if obj is not None and obj.key != key:  # pragma: no cover - parse keeps name/namespace
            obj = None
        await self._set(key, obj)

    # ------------------------------------------------------------------ the loop

    async def _list(self) -> None:
        """One complete list, read in ``limit``/``continue`` pages and converted page by page.

        Only one page of decoded JSON is alive at a time (the store keeps the converted objects,
        never the raw ones), so a list of 10k objects does not peak at 10k raw dicts. The store is
        replaced once the last page is in: one consistent snapshot, as with an unpaged list; a
        continue token that expires mid-way (410) restarts the list without pages.
        """
        res = self.resource
        fresh: dict[str, Any] = {}
        async for page in list_pages(self.client, res, self.namespace if res.namespaced else None,
                                     self.label_selector, self.field_selector, limit=self._list_limit):
            if page.restarted:
                fresh = {}
            await self._convert_into(fresh, page.items)
            if page.last:
                await self._apply_list(fresh, page.resource_version)
                return

    async def _watch_once(self) -> None:
        async for event in watch_events(
            self.client,
            self.resource,
            resource_version=self._rv,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=watch_timeout_seconds(self._rand(), self._min_watch_timeout),
            inactivity_timeout=self._inactivity_timeout,
        ):
            self._progress = True
            await self.apply_event(event)

    async def step(self, need_list: bool) -> tuple[bool, int | None | str]:
        """One list-if-needed plus one watch stream.

        Returns (need_list, outcome): outcome is "ok" for a stream that ended
        normally, "expired" for 410, an HTTP status for an API error, or None
        for a transport error.
        """
        try:
            if need_list:
                await self._list()
                need_list = False
            await self._watch_once()
            return need_list, "ok"
        except WatchExpired as e:
            log.info("%s: watch expired (%s); relisting", self.resource.plural, e)
            WATCH_ERRORS.labels(self.resource.plural, "expired").inc()
            return True, "expired"
        except ApiError as e:
            if e.is_gone:
                return True, "expired"
            log.warning("%s: API error: %s", self.resource.plural, e)
            WATCH_ERRORS.labels(self.resource.plural, f"http_{e.code}").inc()
            return need_list, e.code
        except TRANSPORT_ERRORS as e:
            log.warning("%s: %s: %s", self.resource.plural, type(e).__name__, e or "connection problem")
            WATCH_ERRORS.labels(self.resource.plural, "transport").inc()
            return need_list, None

    async def run(self) -> None:
        """List and watch forever (until cancelled)."""
        attempt = 0
        need_list = True
        while True:
            self._progress = False
            started = self._clock()
            try:
                need_list, outcome = await self.step(need_list)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the informer either
                log.exception("%s: unexpected error in list/watch", self.resource.plural)
                WATCH_ERRORS.labels(self.resource.plural, "internal").inc()
                outcome = 500
            progressed = self._progress or self._clock() - started >= 1.0
            if progressed and outcome in ("ok", "expired"):
                attempt = 0
                continue
            attempt = 1 if progressed else attempt + 1
            status = None if outcome in ("ok", "expired") else outcome
            action = decide(status if isinstance(status, int) else None, attempt, self._rand(), self._backoff)
            log.debug("%s: retry %d in %.2fs (%s)", self.resource.plural, attempt, action.delay, action.reason)
            await self._sleep(action.delay)
