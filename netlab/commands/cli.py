"""The ``podnet`` command: ``podnet lab <verb>`` and small tools.

Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; this file only maps verbs
to modules. Every verb's module is imported when the parser is built (its
``add_arguments`` declares the verb's flags); a verb whose module is absent from
the build is still listed and answers that it is not available.
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
}
TOOLS = {
    "watch": ("podnet.kube.watchcli", "list+watch a resource and print changes as they happen"),
}


def _add(sub: argparse._SubParsersAction, verbs: dict[str, tuple[str, str]]) -> None:
    for verb, (module, help_) in verbs.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        p.set_defaults(_module=module, _verb=verb)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podnet", description="podnet: a Kubernetes service-networking data plane")
    logsetup.add_flags(parser, "")
    top = parser.add_subparsers(dest="cmd", required=True)
    lab = top.add_parser("lab", help="network-namespace labs").add_subparsers(dest="verb", required=True)
    _add(lab, LAB_VERBS)
    _add(top, TOOLS)
    args = parser.parse_args(argv)
    logsetup.setup_from_args(args)
    if getattr(args, "_missing", False):
        print(f"podnet: '{args._verb}' is not available in this build", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
