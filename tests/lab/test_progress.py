"""Progress output: one updating line on a terminal, plain lines without control characters in a log."""

from __future__ import annotations

import asyncio
import io
import re

import pytest

from podnet.netlab.lab.bringup import wait_pods_ready
from podnet.netlab.lab.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: carriage return, erase-to-end-of-line and newline applied."""
    lines, cur, col = [], [], 0
    for tok in re.findall(r"\x1b\[K|\r|\n|[^\r\n\x1b]", raw):
        if tok == "\r":
            col = 0
        elif tok == "\x1b[K":
            del cur[col:]
        elif tok == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = tok
            else:
                cur.append(tok)
            col += 1
    if cur:
        lines.append("".join(cur))
    return lines


def run_steps(p: Progress) -> None:
    with p.step("fabric"):
        p.note("host a")
        p.note("host b")
    with p.step("pods"):
        for k in range(4):
            p.status(f"{k}/3 pods ready")
        p.status("3/3 pods ready")  # unchanged: not printed again
    with pytest.raises(RuntimeError):
        with p.step("boom"):
            p.status("halfway")
            raise RuntimeError("x")


def test_log_output_is_plain_lines_and_each_status_once():
    out = io.StringIO()
    run_steps(Progress(out, Clock(), tty=False))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "[ 1] fabric ...", "      host a", "      host b", "      done (0.5 s)",
        "[ 2] pods ...", "      0/3 pods ready", "      1/3 pods ready", "      2/3 pods ready",
        "      3/3 pods ready", "      done (0.5 s)",
        "[ 3] boom ...", "      halfway", "      FAILED (0.5 s)",
    ]


def test_terminal_shows_one_updating_line_per_step():
    out = io.StringIO()
    run_steps(Progress(out, Clock(), tty=True, width=lambda: 80))
    assert screen(out.getvalue()) == [
        "      host a", "      host b", "[ 1] fabric ... done (0.5 s)",
        "[ 2] pods ... done (0.5 s)",
        "[ 3] boom ... FAILED (0.5 s)",
    ]


def test_terminal_status_is_shown_in_place_and_never_wraps():
    out = io.StringIO()
    p = Progress(out, Clock(), tty=True, width=lambda: 40)
    with p.step("pods: 3 per node through CNI ADD, readiness to the API"):
        p.status("2/6 pods ready")
        shown = screen(out.getvalue())
        assert len(shown) == 1 and len(shown[0]) <= 39 and shown[0].endswith("…")
    p2 = Progress(io.StringIO(), Clock(), tty=True, width=lambda: 80)
    with p2.step("pods"):
        p2.status("2/6 pods ready")
        assert screen(p2.out.getvalue()) == ["[ 1] pods ... 2/6 pods ready"]
        p2.status("6/6 pods ready")
        assert screen(p2.out.getvalue()) == ["[ 1] pods ... 6/6 pods ready"]


class PodLister:
    """Answers ``list`` with one more Ready pod per call (a stand-in for the API client)."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.calls = names, 0

    async def list(self, resource, namespace=None, **kw):
        ready = self.calls
        self.calls += 1
        items = [{"metadata": {"namespace": "default", "name": n},
                  "status": {"conditions": [{"type": "Ready", "status": "True" if i < ready else "False"}]}}
                 for i, n in enumerate(self.names)]
        return items, "1"


def test_pods_ready_count_updates_until_all_are_ready():
    out = io.StringIO()
    names = [f"p{i}" for i in range(5)]
    p = Progress(out, Clock(), tty=False)
    with p.step("pods"):
        got = asyncio.run(wait_pods_ready(PodLister(names), [("default", n) for n in names], 30, p))
    assert sorted(k[1] for k in got) == names
    counts = [line.strip() for line in out.getvalue().splitlines() if "pods ready" in line]
    assert counts == [f"{k}/5 pods ready" for k in range(6)]
