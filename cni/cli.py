"""Management commands of ``podnet-cni``: ``daemon`` and ``install``.

The binaries' one CLI shape: flags -> options -> run. ``daemon`` parses its flags into the frozen
:class:`podnet.cni.daemon.Options` (:func:`podnet.cni.daemon.options_from`) and runs
:func:`podnet.cni.daemon.run`; ``install`` parses its flags into the frozen :class:`podnet.cni.install.InstallOptions`
and runs :func:`podnet.cni.install.run` once.
Both take ``-v``, ``--logging-format`` (:mod:`podnet.kube.logsetup`); ``podnet-cni --version``
prints the version. A configuration error is one line and exit status 2.

Plugin mode (no arguments, CNI_COMMAND in the environment) never gets here;
see :mod:`podnet.cni.shim`.
"""

from __future__ import annotations

import argparse

from podnet.cni import daemon, install
from podnet.kube import logsetup
from podnet.kube.errors import ConfigError


def _run_daemon(args: argparse.Namespace) -> int:
    try:
        opts = daemon.options_from(args)
    except ConfigError as e:
        return logsetup.config_error("cni", e)
    return daemon.run(opts)


def parser() -> argparse.ArgumentParser:
    p = logsetup.OneLineParser(prog="podnet-cni", description="podnet CNI plugin: node daemon and installer. "
                               "Run with no arguments (and CNI_COMMAND set) as the CNI plugin.")
    p.add_argument("--version", action="version", version=logsetup.version("cni"))
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=logsetup.OneLineParser)
    d = sub.add_parser("daemon", help="run the per-node daemon the plugin forwards to")
    daemon.add_arguments(d)
    logsetup.add_flags(d, "cni", with_version=False)
    d.set_defaults(_run=_run_daemon)
    i = sub.add_parser("install", help="write the plugin binary and a conflist")
    install.add_arguments(i)
    logsetup.add_flags(i, "cni", with_version=False)
    i.set_defaults(_run=lambda args: install.run(install.install_options_from(args)))
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logsetup.setup_from_args(args)
    return args._run(args)
