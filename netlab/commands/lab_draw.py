"""``podnet lab draw``: a picture (SVG) of any running lab, as it is now.

It shows the Services and the pods backing each (ready or not), every node with its pods,
their IPs and network namespaces, the backend (host-gw or VXLAN) each node's CNI daemon
reports using to every other node, and the underlay layout (see podnet.netlab.picture).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "default_path"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", "--name", dest="lab", default="lab", help="lab name (default lab)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the SVG ('-' for stdout; default "
                   "/tmp/podnet-lab-<name>-topology.svg)")


def default_path(lab: str) -> Path:
    return Path(f"/tmp/podnet-lab-{lab}-topology.svg")


async def _draw(lab: str, args: argparse.Namespace) -> str:
    from podnet.netlab.commands.running import running_lab
    from podnet.netlab.picture import svg
    from podnet.netlab.picture.snapshot import collect

    async with running_lab(lab, args) as (st, plan, client):
        return svg.render(await collect(plan, st, client))


def run(a: argparse.Namespace) -> int:
    try:
        text = asyncio.run(_draw(a.lab, a))
    except LookupError as e:
        print(f"podnet lab draw: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        print(f"podnet lab draw: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if a.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(a.output) if a.output else default_path(a.lab)
    path.write_text(text)
    print(f"topology picture: {path}")
    return 0
