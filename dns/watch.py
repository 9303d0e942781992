"""Keeps the served answer table in step with Service, EndpointSlice and Namespace informers.

Every informer event updates ZoneSync's own indexes (services by key, slices by service,
namespaces), records the affected service key, and schedules one rebuild with ``loop.call_soon``, so a
burst of events delivered in one loop iteration costs one rebuild, and a single event is served
as soon as the loop comes round (no timer). Until all three informers have synced nothing is
rebuilt: the initial table answers SERVFAIL for every cluster name it cannot find, and /ready is
503.

Two kinds of rebuild, both ended by ``handler.swap``, so no query ever sees a half-built table:

* **small** (at most ``chunk_size`` services to build: almost every watch event, or the first sync
  of a small cluster): one synchronous :func:`~podnet.dns.snapshot.update` +
  :func:`~podnet.dns.answers.compile_table` that patches the live table in place within one loop
  callback (no query can run in between), so a Service created a moment ago resolves on the next
  loop turn.
* **large** (more than ``chunk_size`` services to build: the first full sync of a big cluster, a
  retry from scratch after a failure, a large batch of changes such as after a relist): a task that
  builds ``chunk_size`` services at a time into staging dicts the handler does not see (fresh ones,
  or copies of the live ones), yielding to the event loop between chunks, so UDP/TCP queries,
  /health and /ready keep being answered during the build (SERVFAIL for cluster names until the
  first one completes); the finished table is swapped in at once. Events that arrive meanwhile are
  queued and applied by a follow-up rebuild right after the swap. Only one rebuild runs at a time.

Objects that cannot be served (see podnet.dns.snapshot and podnet.dns.answers) are left out one by
one, so they never fail a rebuild; each one newly left out is logged once and counted
(``podnet_dns_skipped_objects_total``). A rebuild that fails anyway keeps serving the previous table
(a large one never touched it; a small one may have patched part of it), logs, counts, marks the
sync as failing (``/ready`` 503: the table is stale) until a rebuild succeeds, drops the memos and
retries from scratch after ``RETRY_AFTER_FAILURE`` seconds even if no event comes.

Informers only need ``add_handler(on_add=, on_update=, on_delete=, on_synced=)`` and ``has_synced``
(handlers must see every object as an add before on_synced, as podnet.kube.informer.Informer
guarantees): the real Informer, or an in-memory fake in tests.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Callable, Iterable, Protocol

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler
from podnet.host.loop import gc_paused

__all__ = ["ZoneSync", "InformerLike", "initial_table", "CHUNK_SIZE"]

log = logging.getLogger("podnet.dns.watch")
RETRY_AFTER_FAILURE = 5.0
CHUNK_SIZE = 256
"""Services compiled per loop turn in a large rebuild (about 30 ms of work on the 2-core bench VM)."""


def _by_name(sl: Any) -> str:
    return sl.name


class InformerLike(Protocol):
    has_synced: bool

    def add_handler(self, on_add=None, on_update=None, on_delete=None, on_synced=None) -> Any: ...


def initial_table(cfg: snapshot.Config, serial: int = 1) -> answers.AnswerTable:
    """The table served before the first sync: apex, dns-version and ENTs only; misses SERVFAIL."""
    return answers.compile_table(snapshot.build([], [], [], cfg, serial=serial, synced=False))


class ZoneSync:
    def __init__(
        self,
        handler: Handler,
        services: InformerLike,
        slices: InformerLike,
        namespaces: InformerLike,
        cfg: snapshot.Config,
        *,
        wall_clock: Callable[[], float] = time.time,
        perf_clock: Callable[[], float] = time.perf_counter,
        chunk_size: int = CHUNK_SIZE,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        self.handler = handler
        self.informers = (services, slices, namespaces)
        self.cfg = cfg
        self.wall_clock = wall_clock
        self.perf_clock = perf_clock
        self.chunk_size = max(1, chunk_size)
        self.on_chunk = on_chunk
        """Called with the chunk number after each chunk of a large rebuild, before yielding (tests, tracing)."""
        self.synced = False
        self.failing = False
        """The last rebuild failed: the served table no longer follows the API (cleared by a successful one)."""
        self._rejected: dict[tuple[str, str], str] = {}
        self.rebuilds = 0
        self.chunks = 0
        """Chunks built by large rebuilds so far."""
        self.last_rebuild_seconds = 0.0
        self._dirty_since: float | None = None
        self._scheduled = False
        self._pending = False
        self._fresh = True
        """The memos are empty (start, or after a failure): the next rebuild builds every service."""
        self._memo = snapshot.Memo(cfg=cfg)
        self._cmemo = answers.CompileMemo(in_place=True)
        self._serial = 0
        self._services: dict[str, Any] = {}
        self._slices: dict[str, tuple[Any, ...]] = {}
        """service key -> its EndpointSlices sorted by name (a tuple, replaced on change: one small object per service)"""
        self._namespaces: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._build: asyncio.Task | None = None
        self.synced_event = asyncio.Event()

    @property
    def building(self) -> bool:
        """True while a large (chunked) rebuild is in progress."""
        return self._build is not None and not self._build.done()

    def attach(self) -> None:
        services, slices, namespaces = self.informers
        services.add_handler(
            on_add=self._service_set, on_update=lambda _old, new: self._service_set(new),
            on_delete=self._service_gone, on_synced=self.changed,
        )
        slices.add_handler(
            on_add=self._slice_set, on_update=self._slice_update, on_delete=self._slice_gone, on_synced=self.changed,
        )
        namespaces.add_handler(
            on_add=self._namespace_set, on_update=lambda _old, new: self._namespace_set(new),
            on_delete=self._namespace_gone, on_synced=self.changed,
        )

    async def close(self) -> None:
        """Cancel a large rebuild in progress (shutdown)."""
        if self._build is not None and not self._build.done():
            self._build.cancel()
            await asyncio.gather(self._build, return_exceptions=True)

    # Indexes kept from events, so a rebuild knows exactly which services changed.

    # Service keys are interned: the same string then keys every index and memo (one copy, not five).

    def _service_set(self, svc) -> None:
        key = sys.intern(svc.key)
        self._services[key] = svc
        self._dirty.add(key)
        self.changed()

    def _service_gone(self, svc) -> None:
        key = sys.intern(svc.key)
        self._services.pop(key, None)
        self._dirty.add(key)
        self.changed()

    def _slice_set(self, sl) -> None:
        if sl.service_name:
            key = sys.intern(sl.service_key)
            others = [g for g in self._slices.get(key, ()) if g.name != sl.name]
            self._slices[key] = tuple(sorted((*others, sl), key=_by_name))
            self._dirty.add(key)
        self.changed()

    def _slice_update(self, old, new) -> None:
        if old.service_key != new.service_key or not new.service_name:
            self._slice_gone(old)
        self._slice_set(new)

    def _slice_gone(self, sl) -> None:
        if sl.service_name:
            key = sys.intern(sl.service_key)
            rest = tuple(g for g in self._slices.get(key, ()) if g.name != sl.name)
            if rest:
                self._slices[key] = rest
            else:
                self._slices.pop(key, None)
            self._dirty.add(key)
        self.changed()

    def _namespace_set(self, ns) -> None:
        self._namespaces[ns.name] = ns
        self.changed()

    def _namespace_gone(self, ns) -> None:
        self._namespaces.pop(ns.name, None)
        self.changed()

    def changed(self) -> None:
        """Mark dirty and schedule one rebuild (coalesced)."""
        self._pending = True
        if self._dirty_since is None:
            self._dirty_since = self.perf_clock()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._rebuild_now)

    def _rebuild_now(self) -> None:
        self._scheduled = False
        if self.building or not self._pending:
            return  # a running large rebuild reschedules itself when it is done
        if not all(inf.has_synced for inf in self.informers):
            return
        pending = len(set(self._services) | set(self._slices)) if self._fresh else len(self._dirty)
        if pending > self.chunk_size:
            self._build = asyncio.get_running_loop().create_task(self._rebuild_in_chunks())
            return
        try:
            self.rebuild()
        except Exception:  # noqa: BLE001 - keep serving the previous table
            self._failed()

    @property
    def ready(self) -> bool:
        """Synced once, and the last rebuild succeeded."""
        return self.synced and not self.failing

    def _failed(self) -> None:
        log.exception("rebuilding the DNS table failed; still serving the previous one, not ready until a rebuild succeeds")
        self.failing = True
        self.handler.stats.rebuild_failures += 1
        # The memos may be half-updated: start from scratch, and retry soon even if no event comes,
        # so a half-patched table does not linger.
        self._memo, self._cmemo, self._fresh = snapshot.Memo(cfg=self.cfg), answers.CompileMemo(in_place=True), True
        asyncio.get_running_loop().call_later(RETRY_AFTER_FAILURE, self.changed)

    def _next_serial(self) -> int:
        self._serial = max(int(self.wall_clock()), self._serial + 1)
        return self._serial

    def _step(self, memo: snapshot.Memo, cmemo: answers.CompileMemo, dirty: Iterable[str], serial: int) -> answers.AnswerTable:
        """Apply ``dirty`` service keys to the memos; the cycle collector stays off while the table's
        (acyclic) objects are made, and they are frozen afterwards, so later collections skip them."""
        with gc_paused(freeze=True):
            snap = snapshot.update(
                self._services, self._slices, self._namespaces, self.cfg,
                serial=serial, synced=True, memo=memo, dirty=dirty,
            )
            return answers.compile_table(snap, cmemo)

    def rebuild(self) -> answers.AnswerTable:
        """A small rebuild: patch the live table in place with the queued changes and swap (synchronous)."""
        t0 = self.perf_clock()
        self._pending = False
        dirty, self._dirty = self._dirty, set()
        if self._fresh:
            dirty = set(self._services) | set(self._slices)
            self._fresh = False
        table = self._step(self._memo, self._cmemo, dirty, self._next_serial())
        return self._installed(table, t0, self._dirty_since)

    async def _rebuild_in_chunks(self) -> None:
        """A large rebuild into staging dicts, ``chunk_size`` services per loop turn, then one swap."""
        t0 = self.perf_clock()
        since, self._dirty_since = self._dirty_since, None
        self._pending = False
        dirty, self._dirty = self._dirty, set()
        try:
            if self._fresh:
                memo, cmemo = snapshot.Memo(cfg=self.cfg), answers.CompileMemo(in_place=True)
                keys = sorted(set(self._services) | set(self._slices))
            else:
                # The snapshot memo is never served; the compile memo's dicts are: patch copies of them.
                memo, cmemo = self._memo, self._cmemo
                cmemo.hot, cmemo.ents = dict(cmemo.hot), set(cmemo.ents)
                keys = sorted(dirty)
            serial = self._next_serial()
            table = None
            for n, start in enumerate(range(0, max(len(keys), 1), self.chunk_size)):
                table = self._step(memo, cmemo, keys[start : start + self.chunk_size], serial)
                self.chunks += 1
                if self.on_chunk is not None:
                    self.on_chunk(n)
                if start + self.chunk_size < len(keys):
                    # Twice: the first turn only re-queues us behind the I/O callbacks and timers that
                    # became ready during the chunk, so they all run before the next chunk starts.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            self._memo, self._cmemo, self._fresh = memo, cmemo, False
            self._installed(table, t0, since)
        except asyncio.CancelledError:
            self._build = None
            raise
        except Exception:  # noqa: BLE001 - keep serving the previous table
            self._failed()
        self._build = None
        if self._pending or self._dirty:
            self.changed()

    def _installed(self, table: answers.AnswerTable, t0: float, since: float | None) -> answers.AnswerTable:
        self.handler.swap(table)
        self._account(table.rejected)
        if self.failing:
            self.failing = False
            log.info("rebuilding the DNS table works again; ready")
        now = self.perf_clock()
        self.last_rebuild_seconds = now - t0
        self.rebuilds += 1
        if since is not None:
            self.handler.stats.programming.observe(now - since)
        if self._dirty_since is since:
            self._dirty_since = None
        if not self.synced:
            self.synced = True
            self.synced_event.set()
            log.info("synced: %d services, %d answers", len(table.snapshot.services), len(table.hot))
        return table

    def _account(self, rejected) -> None:
        """Log and count objects newly left out of the zone; publish how many are left out now."""
        stats = self.handler.stats
        before = self._rejected
        now: dict[tuple[str, str], int] = {}
        for (kind, key), reason in rejected.items():
            now[(kind, reason)] = now.get((kind, reason), 0) + 1
            if before.get((kind, key)) != reason:
                stats.skipped[(kind, reason)] += 1
                log.warning("%s %r left out of DNS: %s", kind, key[:120], reason)
        stats.skipped_now = now
        self._rejected = dict(rejected)
