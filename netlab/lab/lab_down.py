"""``podnet lab down``: remove everything a lab created (works after a crash too)."""

from __future__ import annotations

import argparse
import re
import sys

from podnet.host.netns import list_netns
from podnet.netlab.lab import labstate
from podnet.netlab.lab.topology import PREFIX

__all__ = ["add_arguments", "run", "all_labs"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="lab", help="lab name (default lab)")
    p.add_argument("--all", action="store_true", help="remove every lab on this machine (any pnl- namespace)")


def all_labs() -> list[str]:
    """Labs known from run dirs or from leftover ``pnl-<lab>-`` namespaces."""
    names = set(labstate.list_labs())
    for n in list_netns():
        m = re.match(rf"^{PREFIX}([a-z][a-z0-9]{{0,9}})-", n)
        if m:
            names.add(m.group(1))
    return sorted(names)


def run(a: argparse.Namespace) -> int:
    from podnet.netlab.lab.teardown import down, leftovers
    labs = all_labs() if a.all else [a.name]
    rc = 0
    for lab in labs:
        gone = down(lab)
        left = leftovers(lab)
        print(f"lab {lab!r} down: removed {gone.summary()}")
        if left:
            rc = 1
            print(f"  still present: {', '.join(left)}", file=sys.stderr)
    if not labs:
        print("no labs found")
    return rc
