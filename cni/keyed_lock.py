"""One asyncio lock per key, for serialising everything done to one CNI attachment.

Guarantees: at most one holder per key at a time; waiters get the lock in
arrival order (asyncio.Lock is FIFO); a key's lock exists only while someone
holds it or waits for it, so the table never grows with the number of
attachments ever seen. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Hashable


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys currently held or waited for."""
        return len(self._locks)
