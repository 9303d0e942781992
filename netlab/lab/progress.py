"""Step-by-step progress lines for long lab operations.

Each step prints ``[ n] what ... done (1.2 s)`` (or ``FAILED``) on one line
when the output is a terminal, two lines otherwise, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, out: TextIO = sys.stdout, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.clock, self.n = out, clock, 0
        self.t0 = clock()

    def note(self, msg: str) -> None:
        self.out.write(f"      {msg}\n")
        self.out.flush()

    @contextmanager
    def step(self, what: str) -> Iterator["Progress"]:
        self.n += 1
        t = self.clock()
        self.out.write(f"[{self.n:2d}] {what} ...")
        self.out.flush()
        tty = getattr(self.out, "isatty", lambda: False)()
        if not tty:
            self.out.write("\n")
        try:
            yield self
        except BaseException:
            self.out.write(f"{'' if tty else '     '} FAILED ({self.clock() - t:.1f} s)\n")
            self.out.flush()
            raise
        self.out.write(f"{'' if tty else '     '} done ({self.clock() - t:.1f} s)\n")
        self.out.flush()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.t0
