"""``podnet lab check``: the end-to-end check table against a running lab (exit 1 if any row fails)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from podnet.netlab.lab import labstate

__all__ = ["add_arguments", "run", "check"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="lab", help="lab name (default lab)")
    p.add_argument("--keep", action="store_true", help="keep the check's Services and pods afterwards")
    p.add_argument("--wide", action="store_true", help="do not clip the table's cells")


def check(name: str, out=None, keep: bool = False, progress=None, wide: bool = False) -> int:
    from podnet.netlab.check.checkkit import render_table
    from podnet.netlab.check.checks import run_checks
    from podnet.netlab.lab.progress import Progress

    out = out or sys.stdout
    st = labstate.load(name)
    if st is None or not st.api_port:
        print(f"podnet lab check: no running lab {name!r} (start one with `podnet lab up --name {name}`)",
              file=sys.stderr)
        return 2
    plan = st.plan()
    progress = progress or Progress(out)
    try:
        with progress.step(f"end-to-end checks against lab {name!r}"):
            rows = asyncio.run(run_checks(plan, st, keep=keep, progress=progress))
    except Exception as e:  # noqa: BLE001 - e.g. the API server is gone: one line, not a traceback
        print(f"podnet lab check: cannot run against lab {name!r}: {type(e).__name__}: {e}\n"
              f"  logs: {plan.run_dir / 'logs'}", file=sys.stderr)
        return 2
    out.write("\n" + render_table(rows, None if wide else (32, 44, 58)))
    for row in rows:
        if row.ok is False:
            out.write(f"FAILED {row.check}: expected {row.expected}; observed {row.observed}\n")
    for part, how in sorted(st.parts.items()):
        if not how.startswith("podnet"):
            out.write(f"note: {part}: {how}\n")
    return 0 if rows and all(r.ok is not False for r in rows) else 1


def run(a: argparse.Namespace) -> int:
    return check(a.name, keep=a.keep, wide=a.wide)
