"""The ``podnet`` command: ``podnet lab <verb>`` and small tools.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only maps verbs to modules. Every verb's module is imported
when the parser is built (its ``add_arguments`` declares the verb's flags), so ``podnet lab up``
loads the other verbs' modules too; they all ship in the same wheel.

The binaries' one CLI shape (flags -> options -> run) holds per verb; ``-v``,
``--logging-format`` and ``--version`` (``podnet vX.Y.Z``) come from
:mod:`podnet.kube.logsetup` and are given before the verb; an unknown flag or a bad value is
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from podnet.kube import logsetup

# verb -> (module, help).
LAB_VERBS = {
    "apiserver": ("podnet.netlab.apiserver.server", "run the lab API server (kube-apiserver wire protocol)"),
    "up": ("podnet.netlab.lab.lab_up", "build a lab cluster in network namespaces"),
    "check": ("podnet.netlab.check.lab_check", "run the end-to-end check table against the running lab"),
    "down": ("podnet.netlab.lab.lab_down", "remove everything a lab created (works after a crash)"),
    "demo": ("podnet.netlab.commands.lab_demo", "up + sample app + check + topology picture + down"),
    "draw": ("podnet.netlab.commands.lab_draw", "draw a running lab as an SVG picture"),
    "rbac-report": ("podnet.netlab.commands.lab_rbac_report",
                    "RBAC permissions granted to a running lab's subjects and never used"),
}
TOOLS = {
    "watch": ("podnet.kube.watchcli", "list+watch a resource and print changes as they happen"),
}


def _add(sub: argparse._SubParsersAction, verbs: dict[str, tuple[str, str]], only: str | None) -> None:
    for verb, (module, help_) in verbs.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        p.set_defaults(_module=module)
        if only in (None, module):
            importlib.import_module(module).add_arguments(p)


def chosen(argv: list[str]) -> str | None:
    """The module of the verb ``argv`` names (``lab <verb>`` or a tool), None when it is unclear."""
    if "lab" in argv:
        i = argv.index("lab")
        return LAB_VERBS[argv[i + 1]][0] if i + 1 < len(argv) and argv[i + 1] in LAB_VERBS else None
    return next((TOOLS[a][0] for a in argv if a in TOOLS), None)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; ``only``: the one verb module whose flags are defined (the others take none), so a
    command imports only its own verb's modules."""
    p = logsetup.OneLineParser(prog="podnet", description="podnet: a Kubernetes service-networking data plane")
    logsetup.add_flags(p, "")
    top = p.add_subparsers(dest="cmd", required=True, parser_class=logsetup.OneLineParser)
    lab = top.add_parser("lab", help="network-namespace labs").add_subparsers(
        dest="verb", required=True, parser_class=logsetup.OneLineParser)
    _add(lab, LAB_VERBS, only)
    _add(top, TOOLS, only)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(chosen(argv)).parse_args(argv)
    logsetup.setup_from_args(args)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
