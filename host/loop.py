"""Running a daemon's event loop: stop on SIGTERM/SIGINT, uvloop when installed, GC pauses.

* :func:`stop_on_signals` installs the one signal-then-stop shape every podnet daemon uses:
  SIGTERM and SIGINT call ``on_signal`` (default: set the returned event), from the running loop;
* :func:`run` runs a coroutine to completion on uvloop when it is importable (a declared runtime
  dependency on Linux), else on asyncio's default loop; its result is returned;
* :func:`gc_paused` keeps the cyclic garbage collector off inside a block (restored afterwards,
  also on error) and, with ``freeze=True``, moves what survives into the permanent generation so
  later collections skip it: for code that allocates many acyclic objects at once (a full rule
  sync, an answer-table rebuild), where reference counting frees everything anyway.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from contextlib import contextmanager
from typing import Any, Callable, Coroutine, Iterator, TypeVar

__all__ = ["stop_on_signals", "run", "gc_paused", "STOP_SIGNALS"]

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(on_signal: Callable[[], object] | None = None,
                    signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> asyncio.Event:
    """An event set when one of ``signals`` arrives (or ``on_signal`` called instead); must be
    called inside the running loop that should receive them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, on_signal or stop.set)
    return stop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``main`` to completion on uvloop when installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """No cyclic collection inside the block; ``freeze``: gc.freeze() what survives it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        if freeze:
            gc.freeze()
