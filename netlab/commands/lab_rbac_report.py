"""``podnet lab rbac-report``: which RBAC permissions a running lab's subjects were granted and never used.

It reads ``GET /debug/podnet/rbac-usage`` from the lab API server with the lab's admin kubeconfig (the
report and its meaning: :mod:`podnet.netlab.apiserver.rbacusage`) and prints one row per granted item
(apiGroup x resource x verb of each rule of each binding's role) with its number of uses since the API
server started. By default only ServiceAccount subjects are shown (podnet's daemons, as deploy/
binds them); ``--all`` adds users and groups (the bootstrap roles), ``--unused`` keeps never-used rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", "--name", dest="lab", default="lab", help="lab name (default lab)")
    p.add_argument("--unused", action="store_true", help="only the items no request used")
    p.add_argument("--all", action="store_true", help="every subject, not only ServiceAccounts")


async def _fetch(lab: str, args: argparse.Namespace) -> dict:
    from podnet.netlab.apiserver.rbacusage import PATH
    from podnet.netlab.commands.running import running_lab

    async with running_lab(lab, args) as (_, _, client):
        return await client.request("GET", PATH)


def run(a: argparse.Namespace) -> int:
    from podnet.kube.client import ApiError
    from podnet.netlab.apiserver.rbacusage import render, rows_from_document

    try:
        doc = asyncio.run(_fetch(a.lab, a))
    except LookupError as e:
        print(f"podnet lab rbac-report: {e}", file=sys.stderr)
        return 1
    except ApiError as e:
        hint = " (the lab API server runs without RBAC)" if e.code == 404 else ""
        print(f"podnet lab rbac-report: FAILED: {e}{hint}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        print(f"podnet lab rbac-report: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    rows = [r for r in rows_from_document(doc) if a.all or r.subject.startswith("ServiceAccount:")]
    sys.stdout.write(render(rows, unused_only=a.unused))
    unused = sum(1 for r in rows if not r.used)
    print(f"{unused} of {len(rows)} granted items never used"
          + (f"; {doc['droppedRequests']} requests not recorded (log full)" if doc.get("droppedRequests") else ""))
    return 0
