"""Ctrl-C and SIGTERM as one exception, so a long verb can roll back what it built.

Inside :func:`signals_raise`, SIGINT and SIGTERM raise :class:`Interrupted` in the main
thread (a ``BaseException``: ``except Exception`` blocks on the way do not swallow it, and
``asyncio.run`` cancels its tasks and re-raises it). :func:`shielded` ignores both while a
rollback runs, so a second Ctrl-C cannot leave it half done. The previous handlers are
restored on exit. Main thread only (Python delivers signals there).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

__all__ = ["Interrupted", "signals_raise", "shielded", "SIGNALS"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT or SIGTERM arrived; ``signum`` says which (exit status 128 + signum, as a shell reports)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def _handlers(handler) -> Iterator[None]:
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def signals_raise():
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block."""
    return _handlers(_raise)


def shielded():
    """SIGINT and SIGTERM are ignored inside the block (for a rollback)."""
    return _handlers(signal.SIG_IGN)
