"""Management commands of ``podnet-cni``: ``daemon`` and ``install``.

Plugin mode (no arguments, CNI_COMMAND in the environment) never gets here;
see :mod:`podnet.cni.shim`.
"""

from __future__ import annotations

import argparse

from podnet.cni import daemon, install
from podnet.kube import logsetup


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="podnet-cni", description="podnet CNI plugin: node daemon and installer. "
                                "Run with no arguments (and CNI_COMMAND set) as the CNI plugin.")
    p.add_argument("--version", action="version", version=logsetup.version("cni"))
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("daemon", help="run the per-node daemon the plugin forwards to")
    daemon.add_arguments(d)
    logsetup.add_flags(d, "cni", with_version=False)
    d.set_defaults(_run=daemon.run)
    i = sub.add_parser("install", help="write the plugin binary and a conflist")
    install.add_arguments(i)
    logsetup.add_flags(i, "cni", with_version=False)
    i.set_defaults(_run=install.run)
    args = p.parse_args(argv)
    logsetup.setup_from_args(args)
    return args._run(args)
