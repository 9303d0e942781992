"""Shared copies of the small values API objects repeat, for the informers' stores.

An informer store holds tens of thousands of these values, and most of their
small strings and tuples repeat (namespaces, label pairs, "TCP", port names,
node names, whole port lists). A JSON decoder makes a fresh copy of each for
every object, so conversion hands out one shared copy instead. Equal values
are interchangeable (the types are immutable and compare by content), so
sharing changes nothing but memory.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["SHARE_LIMIT", "intern", "share", "share_items"]

intern = sys.intern
"""For short repeated strings. ``sys.intern`` strings are mortal (freed once nothing else uses
them), so interning a name that goes away costs nothing lasting."""

SHARE_LIMIT = 4096
"""Entries in the table of shared tuples/values; it is emptied when full, so it never holds more
than this many values alive, and values that keep recurring are shared again right after."""

_shared: dict[Any, Any] = {}


def share(value: Any) -> Any:
    """The shared copy of ``value`` (a tuple or frozen value of str/int/None/frozen values only,
    so ``==`` implies same types and content), adding it to the bounded table when new."""
    got = _shared.get(value)
    if got is not None:
        return got
    if len(_shared) >= SHARE_LIMIT:
        _shared.clear()
    _shared[value] = value
    return value


def share_items(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """A shared copy of the tuple ``items``; when the whole tuple is new, its items are shared one by one."""
    if not items:
        return ()
    got = _shared.get(items)
    if got is not None:
        return got
    return share(tuple(share(x) for x in items))
