"""Change tracking between syncs: per key, (state before the first unsynced
change, state after the last one); a key whose two ends are equal is dropped.

Pure and synchronous; informer callbacks call :meth:`update` from the event
loop and the sync takes everything with :meth:`drain`. Because only the two
ends are kept, a burst of updates to one object costs one recomputation, and
an object that changed and changed back costs none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Change(Generic[V]):
    previous: V | None
    current: V | None


class ChangeTracker(Generic[K, V]):
    def __init__(self) -> None:
        self._changes: dict[K, Change[V]] = {}

    def update(self, key: K, previous: V | None, current: V | None) -> bool:
        """Record one change; True when something is now pending for ``key``."""
        old = self._changes.get(key)
        first = old.previous if old is not None else previous
        if first == current:
            self._changes.pop(key, None)
            return False
        self._changes[key] = Change(first, current)
        return True

    def pending(self) -> int:
        return len(self._changes)

    def drain(self) -> dict[K, Change[V]]:
        out, self._changes = self._changes, {}
        return out
