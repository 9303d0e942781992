"""Keeps the served answer table in step with Service, EndpointSlice and Namespace informers.

Every informer event updates ZoneSync's own indexes (services by key, slices by service,
namespaces), records the affected service key, and schedules one rebuild with ``loop.call_soon``, so a
burst of events delivered in one loop iteration costs one rebuild, and a single event is served
as soon as the loop comes round (no timer). Until all three informers have synced nothing is
rebuilt: the initial table answers SERVFAIL for every cluster name it cannot find, and /ready is
503. A rebuild is :func:`~podnet.dns.snapshot.update` + :func:`~podnet.dns.answers.compile_table`
with memos that recompute only the services named by events, run synchronously in the loop and
ended by ``handler.swap``, so no query ever sees a half-built table. A failed rebuild keeps the
previous answers, drops the memos and retries from scratch.

Informers only need ``add_handler(on_add=, on_update=, on_delete=, on_synced=)`` and ``has_synced``
(handlers must see every object as an add before on_synced, as podnet.kube.informer.Informer
guarantees): the real Informer, or an in-memory fake in tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any, Callable, Protocol

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler

__all__ = ["ZoneSync", "InformerLike", "initial_table"]

log = logging.getLogger("podnet.dns.watch")
RETRY_AFTER_FAILURE = 5.0


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
    ) -> None:
        self.handler = handler
        self.informers = (services, slices, namespaces)
        self.cfg = cfg
        self.wall_clock = wall_clock
        self.perf_clock = perf_clock
        self.synced = False
        self.rebuilds = 0
        self.last_rebuild_seconds = 0.0
        self._dirty_since: float | None = None
        self._scheduled = False
        self._memo = snapshot.Memo()
        self._cmemo = answers.CompileMemo(in_place=True)
        self._serial = 0
        self._services: dict[str, Any] = {}
        self._slices: dict[str, dict[str, Any]] = {}
        self._namespaces: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self.synced_event = asyncio.Event()

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

    # Indexes kept from events, so a rebuild knows exactly which services changed.

    def _service_set(self, svc) -> None:
        self._services[svc.key] = svc
        self._dirty.add(svc.key)
        self.changed()

    def _service_gone(self, svc) -> None:
        self._services.pop(svc.key, None)
        self._dirty.add(svc.key)
        self.changed()

    def _slice_set(self, sl) -> None:
        if sl.service_name:
            self._slices.setdefault(sl.service_key, {})[sl.key] = sl
            self._dirty.add(sl.service_key)
        self.changed()

    def _slice_update(self, old, new) -> None:
        if old.service_key != new.service_key or not new.service_name:
            self._slice_gone(old)
        self._slice_set(new)

    def _slice_gone(self, sl) -> None:
        if sl.service_name:
            group = self._slices.get(sl.service_key, {})
            group.pop(sl.key, None)
            if not group:
                self._slices.pop(sl.service_key, None)
            self._dirty.add(sl.service_key)
        self.changed()

    def _namespace_set(self, ns) -> None:
        self._namespaces[ns.name] = ns
        self.changed()

    def _namespace_gone(self, ns) -> None:
        self._namespaces.pop(ns.name, None)
        self.changed()

    def changed(self) -> None:
        """Mark dirty and schedule one rebuild (coalesced)."""
        if self._dirty_since is None:
            self._dirty_since = self.perf_clock()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._rebuild_now)

    def _rebuild_now(self) -> None:
        self._scheduled = False
        if not all(inf.has_synced for inf in self.informers):
            return
        try:
            self.rebuild()
        except Exception:  # noqa: BLE001 - keep serving the previous table
            log.exception("rebuilding the DNS table failed; still serving the previous one")
            # The memos (and, with in-place patching, the live table) may be half-updated: start from
            # scratch, and retry soon even if no event comes, so a half-patched table does not linger.
            self._memo, self._cmemo = snapshot.Memo(), answers.CompileMemo(in_place=True)
            asyncio.get_running_loop().call_later(RETRY_AFTER_FAILURE, self.changed)

    def rebuild(self) -> answers.AnswerTable:
        t0 = self.perf_clock()
        serial = max(int(self.wall_clock()), self._serial + 1)
        self._serial = serial
        # The table is hundreds of thousands of acyclic objects: keep the cycle collector from scanning
        # them during the build and after it (gc.freeze), so rebuilds stay incremental in cost.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            dirty = None if not self.synced else self._dirty
            self._dirty = set()
            snap = snapshot.update(
                self._services, {k: v.values() for k, v in self._slices.items()}, self._namespaces, self.cfg,
                serial=serial, synced=True, memo=self._memo, dirty=dirty,
            )
            table = answers.compile_table(snap, self._cmemo)
        finally:
            if gc_was_enabled:
                gc.enable()
        gc.freeze()
        self.handler.swap(table)
        now = self.perf_clock()
        self.last_rebuild_seconds = now - t0
        self.rebuilds += 1
        if self._dirty_since is not None:
            self.handler.stats.programming.observe(now - self._dirty_since)
            self._dirty_since = None
        if not self.synced:
            self.synced = True
            self.synced_event.set()
            log.info("synced: %d services, %d names", len(snap.services), len(table.exists))
        return table
