"""Fakes for podnet.kube shared by every package's tests and benchmarks: one informer, one clock.

Pure and in memory; product code never imports this module (tests/test_fakes_protocols.py checks it).

* :class:`FakeInformer` shares the read and handler surface of :class:`podnet.kube.informer.Informer`
  (both are :class:`~podnet.kube.informer.StoreReader`: ``add_handler``, ``get``, ``list``, ``keys``,
  ``len``; plus ``has_synced``, ``wait_synced``, ``run``) and is driven by hand: :meth:`FakeInformer.set` and :meth:`FakeInformer.delete` deliver one event at
  once; :meth:`FakeInformer.synced` delivers the objects given to the constructor as adds (the first
  list), then ``on_synced``, exactly once, as the real informer does.
* :class:`FakeClock` is both clock shapes podnet injects: a callable returning seconds (``clock()``,
  as dns takes ``time.monotonic``) and an object with ``now()`` and ``async sleep(seconds)`` (as the
  proxy's pacing takes). Time moves only through :meth:`FakeClock.advance`, :meth:`FakeClock.sleep`
  or by assigning ``t``.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Iterable

from podnet.kube.informer import StoreReader

__all__ = ["FakeInformer", "FakeClock"]


class FakeInformer(StoreReader):
    """An :class:`~podnet.kube.informer.Informer` driven by the test.

    Events are delivered synchronously to every handler in the order they were added; a handler
    that returns an awaitable has it scheduled on the running loop, as the real informer does for
    replays; a handler that raises fails the test (the real informer logs and counts it).
    ``on_update`` is never called with ``old == new``; ``on_delete`` gets the stored value.
    """

    def __init__(self, objects: Iterable[Any] = ()) -> None:
        self._store = {o.key: o for o in objects}
        self._handlers = []
        self._pending: list[str] = list(self._store)
        self._synced = False
        self._synced_event: asyncio.Event | None = None

    @property
    def store(self) -> dict[str, Any]:
        """The stored objects by key (tests read it directly)."""
        return self._store

    @property
    def has_synced(self) -> bool:
        return self._synced

    async def wait_synced(self) -> None:
        if self._synced:
            return
        if self._synced_event is None:
            self._synced_event = asyncio.Event()
        await self._synced_event.wait()

    def _call_sync(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        _call(fn, *args)

    async def run(self) -> None:
        """Never returns (until cancelled): events come only from the test."""
        await asyncio.Event().wait()

    # -- driving it
    def set(self, obj: Any) -> None:
        """Add or update ``obj`` under ``obj.key`` and notify (nothing when the value is unchanged)."""
        old = self._store.get(obj.key)
        self._store[obj.key] = obj
        if obj.key in self._pending:
            return
        if old is None:
            self._emit("on_add", obj)
        elif old != obj:
            self._emit("on_update", old, obj)

    def delete(self, key: str) -> None:
        old = self._store.pop(key, None)
        if key in self._pending:
            self._pending.remove(key)
            return
        if old is not None:
            self._emit("on_delete", old)

    def synced(self) -> None:
        """Deliver the first list (the constructor's objects, current values) as adds, then ``on_synced``.
        A second call does nothing, as ``on_synced`` fires once."""
        if self._synced:
            return
        pending, self._pending = self._pending, []
        for key in pending:
            if key in self._store:
                self._emit("on_add", self._store[key])
        self._synced = True
        if self._synced_event is not None:
            self._synced_event.set()
        self._emit("on_synced")

    def _emit(self, attr: str, *args: Any) -> None:
        for h in list(self._handlers):
            _call(getattr(h, attr), *args)


def _call(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    result = fn(*args)
    if inspect.isawaitable(result):
        asyncio.ensure_future(result)


class FakeClock:
    """Seconds that move only when the test moves them; ``sleeps`` records every :meth:`sleep`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once, then yield to the loop once."""
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)
