"""Sync pacing: kube-proxy's BoundedFrequencyRunner, as a pure pacer plus a thin loop.

:class:`Pacer` is pure arithmetic over an injected clock's readings:

* requests coalesce: any number of :meth:`request` calls before a run cause
  one run;
* at least ``min_interval`` passes between the end of one run and the start
  of the next (--iptables-min-sync-period, 1 s);
* a run happens at least every ``max_interval`` even without requests
  (--iptables-sync-period, 30 s), and a failed run is retried after
  ``retry_interval``.

:class:`SyncRunner` runs one coroutine under a pacer: never two at once, and
a request that arrives during a run schedules exactly one more. Time comes
from an injected :class:`Clock`, so tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

log = logging.getLogger("podnet.proxy")


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Pacer:
    def __init__(self, min_interval: float, max_interval: float, retry_interval: float) -> None:
        if max_interval <= 0 or retry_interval <= 0 or min_interval < 0:
            raise ValueError("sync intervals must be > 0 (min_interval >= 0): a zero period would spin")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self.last_end: float | None = None
        self.requested_at: float | None = None
        self.retry_at: float | None = None

    def request(self, now: float) -> None:
        if self.requested_at is None:
            self.requested_at = now

    def next_run(self, now: float) -> float:
        """The earliest time the next run may start (may be <= now: run now)."""
        if self.last_end is None:
            return now if self.requested_at is not None else float("inf")
        earliest = self.last_end + self.min_interval
        due = self.last_end + self.max_interval
        if self.requested_at is not None:
            due = min(due, max(earliest, self.requested_at))
        if self.retry_at is not None:
            due = min(due, max(earliest, self.retry_at))
        return due

    def started(self, now: float) -> None:
        self.requested_at = None

    def finished(self, now: float, ok: bool) -> None:
        self.last_end = now
        self.retry_at = None if ok else now + self.retry_interval

    def overdue(self, now: float, limit: float) -> bool:
        """A queued request has waited longer than ``limit`` (for /healthz)."""
        return self.requested_at is not None and now - self.requested_at > limit


class SyncRunner:
    def __init__(self, fn: Callable[[], Awaitable[bool]], pacer: Pacer, clock: Clock | None = None) -> None:
        self.fn = fn
        self.pacer = pacer
        self.clock = clock or MonotonicClock()
        self._wake = asyncio.Event()
        self.runs = 0

    def request(self) -> None:
        """Non-blocking; coalesces with any request already queued."""
        self.pacer.request(self.clock.now())
        self._wake.set()

    async def step(self) -> bool:
        """Run once if due; returns whether it ran. The finite unit that tests drive."""
        now = self.clock.now()
        if self.pacer.next_run(now) > now:
            return False
        self.pacer.started(now)
        ok = False
        try:
            ok = await self.fn()
        except Exception:  # noqa: BLE001 - a sync bug must not kill the loop; retry later
            log.exception("sync failed")
        self.runs += 1
        self.pacer.finished(self.clock.now(), ok)
        return True

    async def run(self) -> None:
        """Forever: sleep until the next run is due or a request arrives."""
        while True:
            await self.step()
            now = self.clock.now()
            delay = self.pacer.next_run(now) - now
            if delay <= 0:
                await asyncio.sleep(0)  # back-to-back runs still let signals and other tasks in
                continue
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep(min(delay, 3600)))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
