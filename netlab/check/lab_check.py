"""``podnet lab check``: the end-to-end check table against a running lab (exit 1 if any row fails).

``--suite netpol`` runs the upstream NetworkPolicy e2e model instead (:mod:`.netpol_suite`), then
the AdminNetworkPolicy/BaselineAdminNetworkPolicy conformance cases on the same model: each case's
truth table, expected against observed, and exit 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from podnet.netlab.lab import labstate

__all__ = ["add_arguments", "run", "check", "check_netpol"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="lab", help="lab name (default lab)")
    p.add_argument("--keep", action="store_true", help="keep the check's Services and pods afterwards")
    p.add_argument("--wide", action="store_true", help="do not clip the table's cells")
    p.add_argument("--suite", choices=("e2e", "netpol"), default="e2e",
                   help="e2e: the data-plane check table (default); netpol: the upstream NetworkPolicy model and the "
                        "AdminNetworkPolicy conformance cases")
    p.add_argument("--case", action="append", default=[], metavar="REGEX",
                   help="run only the rows (e2e) or cases (netpol) whose whole name or id matches (repeatable; "
                        "default all)")
    p.add_argument("--via", choices=("service", "pod"), default="service",
                   help="netpol: probe each pod through its Service's ClusterIP (default) or its pod IP")


def check(name: str, out=None, keep: bool = False, progress=None, wide: bool = False,
          patterns: list[str] | None = None) -> int:
    from podnet.netlab.check.checkkit import render_table
    from podnet.netlab.check.checks import row_filter, run_checks
    from podnet.netlab.lab.progress import Progress

    out = out or sys.stdout
    st = labstate.load(name)
    if st is None or not st.api_port:
        print(f"podnet lab check: no running lab {name!r} (start one with `podnet lab up --name {name}`)",
              file=sys.stderr)
        return 2
    try:
        row_filter(patterns or [])
    except re.error as e:
        print(f"podnet lab check: bad --case pattern: {e}", file=sys.stderr)
        return 2
    plan = st.plan()
    progress = progress or Progress(out)
    try:
        with progress.step(f"end-to-end checks against lab {name!r}"):
            rows = asyncio.run(run_checks(plan, st, keep=keep, progress=progress, rows=patterns or []))
    except Exception as e:  # noqa: BLE001 - e.g. the API server is gone: one line, not a traceback
        print(f"podnet lab check: cannot run against lab {name!r}: {type(e).__name__}: {e}\n"
              f"  logs: {plan.run_dir / 'logs'}", file=sys.stderr)
        return 2
    if not rows:
        print(f"podnet lab check: no check row matches {patterns}", file=sys.stderr)
        return 2
    out.write("\n" + render_table(rows, None if wide else (32, 44, 58)))
    for row in rows:
        if row.ok is False:
            out.write(f"FAILED {row.check}: expected {row.expected}; observed {row.observed}\n")
    for part, how in sorted(st.parts.items()):
        if not how.startswith("podnet"):
            out.write(f"note: {part}: {how}\n")
    return 0 if rows and all(r.ok is not False for r in rows) else 1


def check_netpol(name: str, out=None, keep: bool = False, patterns: list[str] | None = None,
                 via: str = "service", progress=None) -> int:
    from podnet.netlab.check.netpol_suite import render_case, run_suite, select_cases, unmatched_patterns
    from podnet.netlab.lab.progress import Progress

    out = out or sys.stdout
    st = labstate.load(name)
    if st is None or not st.api_port:
        print(f"podnet lab check: no running lab {name!r} (start one with `podnet lab up --name {name}`)",
              file=sys.stderr)
        return 2
    try:
        unmatched = unmatched_patterns(patterns or [])
    except re.error as e:
        print(f"podnet lab check: bad --case pattern: {e}", file=sys.stderr)
        return 2
    if unmatched:
        print(f"podnet lab check: no netpol case matches {unmatched}", file=sys.stderr)
        return 2
    cases = select_cases(patterns or [])
    if not st.parts.get("policy", "").startswith("podnet"):
        out.write(f"note: policy: {st.parts.get('policy', 'not started by this lab')}\n")
    plan = st.plan()
    progress = progress or Progress(out)

    def show(res) -> None:
        out.write("\n" + render_case(res))
        out.flush()

    try:
        with progress.step(f"NetworkPolicy and AdminNetworkPolicy cases against lab {name!r}: {len(cases)} cases, via {via}"):
            results = asyncio.run(run_suite(plan, st, cases, via=via, keep=keep, on_result=show, progress=progress))
    except Exception as e:  # noqa: BLE001 - e.g. the API server is gone: one line, not a traceback
        print(f"podnet lab check: cannot run the netpol suite against lab {name!r}: {type(e).__name__}: {e}\n"
              f"  logs: {plan.run_dir / 'logs'}", file=sys.stderr)
        return 2
    passed = sum(r.ok is True for r in results)
    skipped = [r.case.id for r in results if r.ok is None]
    failed = [r.case.id for r in results if r.ok is False]
    out.write(f"\n{passed}/{len(results) - len(skipped)} netpol cases passed"
              + (f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else "") + "\n")
    for f in failed:
        out.write(f"FAILED {f}\n")
    return 0 if results and not failed else 1


def run(a: argparse.Namespace) -> int:
    from podnet.netlab.lab.progress import quiet_api_discovery
    quiet_api_discovery(a)
    if a.suite == "netpol":
        return check_netpol(a.name, keep=a.keep, patterns=a.case, via=a.via)
    return check(a.name, keep=a.keep, wide=a.wide, patterns=a.case)
