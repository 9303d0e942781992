"""Step-by-step progress for long lab operations, for a terminal and for a log alike.

Three kinds of output:

- :meth:`Progress.step` opens a numbered step ``[ n] what ...`` and closes it with
  ``done (1.2 s)`` or ``FAILED (1.2 s)``;
- :meth:`Progress.note` is a permanent line under the open step (a host built, an address);
- :meth:`Progress.status` is a transient state of the open step ("3/5 pods ready") that the
  next status replaces.

On a terminal (the stream's ``isatty()``) the open step is one line at the bottom that is
rewritten in place (carriage return + erase-line, cut to the terminal's width so it never
wraps): notes scroll above it, a status is shown at its end, ``done`` ends it. Anywhere else
(a pipe, a file, CI) every line is plain text ending in a newline with no control characters,
and a status is printed only when it changed, so a log shows ``0/5``, ``3/5``, ``5/5`` once each.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

__all__ = ["Progress", "quiet_api_discovery"]

CLEAR = "\r\x1b[K"   # carriage return, erase to the end of the line
INDENT = "      "


class Progress:
    def __init__(self, out: TextIO = sys.stdout, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, width: Callable[[], int] | None = None) -> None:
        self.out, self.clock, self.n = out, clock, 0
        self.t0 = clock()
        self.tty = getattr(out, "isatty", lambda: False)() if tty is None else tty
        self._width = width or (lambda: shutil.get_terminal_size((100, 24)).columns)
        self._header = ""      # the open step's line, "" outside a step
        self._status = ""

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _bottom(self, tail: str = "") -> str:
        """The open step's line as the terminal shows it (cut so it never wraps)."""
        tail = tail or self._status
        line = self._header + (f" {tail}" if tail else "")
        w = max(20, self._width() - 1)
        return line if len(line) <= w else line[: w - 1] + "…"

    def note(self, msg: str) -> None:
        """A permanent line (under the open step)."""
        if self.tty and self._header:
            self._write(f"{CLEAR}{INDENT}{msg}\n{self._bottom()}")
        else:
            self._write(f"{INDENT}{msg}\n")

    def status(self, msg: str) -> None:
        """The open step's current state; replaces the previous one (printed once per change in a log)."""
        if msg == self._status:
            return
        self._status = msg
        if self.tty and self._header:
            self._write(CLEAR + self._bottom())
        else:
            self._write(f"{INDENT}{msg}\n")

    @contextmanager
    def step(self, what: str) -> Iterator["Progress"]:
        self.n += 1
        t = self.clock()
        self._header, self._status = f"[{self.n:2d}] {what} ...", ""
        self._write(self._bottom() if self.tty else self._header + "\n")
        try:
            yield self
        except BaseException:
            self._end(f"FAILED ({self.clock() - t:.1f} s)")
            raise
        self._end(f"done ({self.clock() - t:.1f} s)")

    def _end(self, outcome: str) -> None:
        if self.tty:
            self._write(f"{CLEAR}{self._bottom(outcome)}\n")
        else:
            self._write(f"{INDENT}{outcome}\n")
        self._header, self._status = "", ""

    @property
    def elapsed(self) -> float:
        return self.clock() - self.t0


def quiet_api_discovery(args: object) -> None:
    """Unless ``-v`` was given, drop the API client's INFO lines (where it found the API server):
    the lab verbs print that themselves, and on a terminal stray log lines would split the
    progress line."""
    if getattr(args, "v", None) is None:
        for name in ("podnet.kube.discovery", "podnet.kube.client"):
            logging.getLogger(name).setLevel(logging.WARNING)
