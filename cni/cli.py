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

from podnet.kube import logsetup
from podnet.kube.errors import ConfigError


def _run_daemon(args: argparse.Namespace) -> int:
    from podnet.cni import daemon
    try:
        opts = daemon.options_from(args)
    except ConfigError as e:
        return logsetup.config_error("cni", e)
    return daemon.run(opts)


def _run_install(args: argparse.Namespace) -> int:
    from podnet.cni import install
    return install.run(install.install_options_from(args))


def _daemon_flags(p: argparse.ArgumentParser) -> None:
    from podnet.cni import daemon
    daemon.add_arguments(p)


def _install_flags(p: argparse.ArgumentParser) -> None:
    from podnet.cni import install
    install.add_arguments(p)


_COMMANDS = {
    "daemon": ("run the per-node daemon the plugin forwards to", _daemon_flags, _run_daemon),
    "install": ("write the plugin binary and a conflist", _install_flags, _run_install),
}


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; ``only``: the one subcommand whose flags are defined (the others take none), so
    ``install`` (an init container) never imports the daemon's modules."""
    p = logsetup.OneLineParser(prog="podnet-cni", description="podnet CNI plugin: node daemon and installer. "
                               "Run with no arguments (and CNI_COMMAND set) as the CNI plugin.")
    p.add_argument("--version", action="version", version=logsetup.version("cni"))
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=logsetup.OneLineParser)
    for name, (help_, flags, run) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        if only in (None, name):
            flags(sp)
            logsetup.add_flags(sp, "cni", with_version=False)
        sp.set_defaults(_run=run)
    return p


def main(argv: list[str]) -> int:
    args = parser(argv[0] if argv and argv[0] in _COMMANDS else None).parse_args(argv)
    logsetup.setup_from_args(args)
    return args._run(args)
