"""A positive and negative cache for forwarded answers, with TTLs that count down.

Stored TTLs are capped at the entry's lifetime, so a cached answer never claims more time than the
cache will keep it (as CoreDNS's ``cache 30``).

Entries are :class:`Upstream` answers keyed by the lower-cased question (wire name, type, class) and
the DO bit. The lifetime is the smallest TTL in the answer (positive) or the SOA's
min(TTL, MINIMUM) from the authority section (NXDOMAIN/NODATA, RFC 2308), clamped to
[min_ttl, max_ttl] / [min_ttl, max_denial_ttl] like CoreDNS's ``cache`` plugin. Truncated,
SERVFAIL and other error answers are never stored. When full, the oldest entry is evicted.

``zones`` limits caching to names in those zones ('' is the root: everything), and
``disable_success`` / ``disable_denial`` exclude zones from positive / negative caching, as the
``cache`` plugin's ZONES argument and ``disable`` option.

Time comes from an injected ``clock`` (seconds, monotonic) so tests can move it; served TTLs are
the stored TTL minus the age, never below zero. Not thread-safe: used from the event loop only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from podnet.dns.wire import NOERROR, NXDOMAIN, SOA, WireRR, read_name

__all__ = ["Upstream", "Cache", "CacheStats"]


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream answer, sections without OPT; ``received`` is the clock time it arrived."""

    rcode: int
    answer: tuple[WireRR, ...]
    authority: tuple[WireRR, ...]
    additional: tuple[WireRR, ...]
    tc: bool
    received: float

    @property
    def negative(self) -> bool:
        return self.rcode == NXDOMAIN or (self.rcode == NOERROR and not self.answer)

    def age(self, now: float) -> int:
        return max(0, int(now - self.received))


@dataclass
class CacheStats:
    hits_success: int = 0
    hits_denial: int = 0
    misses: int = 0
    requests: int = 0
    evictions: int = 0
    evictions_denial: int = 0
    """The part of ``evictions`` that were negative (denial) entries."""


class Cache:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 9984,
        max_ttl: int = 30,
        max_denial_ttl: int = 30,
        min_ttl: int = 5,
        *,
        zones: tuple[str, ...] = ("",),
        disable_success: tuple[str, ...] = (),
        disable_denial: tuple[str, ...] = (),
    ) -> None:
        self.clock = clock
        self.zones = zones
        self.disable_success = disable_success
        self.disable_denial = disable_denial
        self._restricted = zones != ("",) or bool(disable_success or disable_denial)
        self.capacity = capacity
        self.max_ttl = max_ttl
        self.max_denial_ttl = max_denial_ttl
        self.min_ttl = min_ttl
        self._items: dict[bytes, tuple[float, Upstream]] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._items)

    def counts(self) -> tuple[int, int]:
        """(success entries, denial entries)."""
        neg = sum(1 for _, a in self._items.values() if a.negative)
        return len(self._items) - neg, neg

    def lifetime(self, ans: Upstream) -> int | None:
        """How long ``ans`` may be cached, or None when it must not be."""
        if ans.tc or ans.rcode not in (NOERROR, NXDOMAIN):
            return None
        if ans.negative:
            soas = [rr for rr in ans.authority if rr.rtype == SOA and len(rr.rdata) >= 20]
            if not soas:
                return None
            minimum = int.from_bytes(soas[0].rdata[-4:], "big")
            return max(self.min_ttl, min(soas[0].ttl, minimum, self.max_denial_ttl))
        ttls = [rr.ttl for rr in ans.answer]
        return max(self.min_ttl, min(min(ttls), self.max_ttl))

    def allows(self, key: bytes, negative: bool) -> bool:
        """May an answer to ``key`` (wire question + DO byte) be cached, given the zone options?"""
        if not self._restricted:
            return True
        name = read_name(key, 0)[0]
        if not any(_in_zone(name, z) for z in self.zones):
            return False
        disabled = self.disable_denial if negative else self.disable_success
        return not any(_in_zone(name, z) for z in disabled)

    def put(self, key: bytes, ans: Upstream) -> None:
        life = self.lifetime(ans)
        if life is None or not self.allows(key, ans.negative):
            return
        ans = replace(
            ans,
            answer=_cap(ans.answer, life),
            authority=_cap(ans.authority, life),
            additional=_cap(ans.additional, life),
        )
        if key not in self._items and len(self._items) >= self.capacity:
            _, evicted = self._items.pop(next(iter(self._items)))
            self.stats.evictions += 1
            if evicted.negative:
                self.stats.evictions_denial += 1
        self._items[key] = (ans.received + life, ans)

    def get(self, key: bytes) -> Upstream | None:
        self.stats.requests += 1
        item = self._items.get(key)
        if item is not None:
            if self.clock() < item[0]:
                if item[1].negative:
                    self.stats.hits_denial += 1
                else:
                    self.stats.hits_success += 1
                return item[1]
            del self._items[key]
        self.stats.misses += 1
        return None

    def clear(self) -> None:
        self._items.clear()


def _in_zone(name: str, zone: str) -> bool:
    return not zone or name == zone or name.endswith("." + zone)


def _cap(rrs: tuple[WireRR, ...], ttl: int) -> tuple[WireRR, ...]:
    """Records with TTLs no higher than the cache lifetime, as served from the cache."""
    return tuple(rr if rr.ttl <= ttl else rr._replace(ttl=ttl) for rr in rrs)
