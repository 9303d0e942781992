"""The podnet-dns console script: flags -> the frozen :class:`podnet.dns.daemon.Options` ->
:func:`podnet.dns.daemon.run`, or ``-conf Corefile`` -> the Corefile's configuration -> daemon
(the binaries' one CLI shape). ``-v``, ``--logging-format`` and ``--version`` are
:mod:`podnet.kube.logsetup`'s; ``--lameduck`` takes a Kubernetes duration (``5s``) or a bare
number of seconds. Logs go to stderr; the ``log`` plugin's query log to stdout (as CoreDNS).

``-conf``/``--conf FILE`` takes CoreDNS's Corefile (:mod:`podnet.dns.coreconfig` lists the plugins);
with it, only ``--master``/``--kubeconfig`` (which win over the kubernetes plugin's ``endpoint`` and
``kubeconfig``), ``-dns.port`` (CoreDNS's: the port of server blocks that name none),
``--dns-port`` (podnet's: the port of every server block) and the logging flags may be given.
A Corefile that cannot be used is one line naming the file and line, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from podnet.dns.corefile import CorefileError
from podnet.dns.daemon import Options, default_workers, run
from podnet.dns.forward import parse_upstream
from podnet.kube import logsetup
from podnet.kube.durations import duration_flag
from podnet.kube.errors import ConfigError

__all__ = ["main", "parse_args"]


COREFILE_EXCLUSIVE = ("zone", "listen", "upstream", "resolv_conf", "ttl", "health_listen", "ready_listen",
                      "metrics_listen", "lameduck", "max_concurrent", "cache_max_ttl", "dns_service")
"""Flags whose setting a Corefile makes (refused together with -conf)."""


def _parser() -> argparse.ArgumentParser:
    p = logsetup.OneLineParser(prog="podnet-dns", description="Cluster DNS for Kubernetes (CoreDNS-compatible answers).")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--master", help="API server URL, e.g. http://127.0.0.1:6443 (overrides the kubeconfig server)")
    p.add_argument("--zone", default="cluster.local", help="cluster domain (default cluster.local)")
    p.add_argument("--listen", default="0.0.0.0:53", help="UDP+TCP address (default 0.0.0.0:53)")
    p.add_argument("--upstream", action="append", default=[], metavar="IP[:PORT]",
                   help="upstream resolver, repeatable (default: nameservers in /etc/resolv.conf)")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf", help="where to read upstreams when --upstream is not given")
    p.add_argument("--ttl", type=int, default=30, help="TTL of cluster records and the SOA MINIMUM (0-3600, default 30)")
    p.add_argument("--health-listen", default="0.0.0.0:8080", help="/health address ('' disables)")
    p.add_argument("--ready-listen", default="0.0.0.0:8181", help="/ready address ('' disables)")
    p.add_argument("--metrics-listen", default="0.0.0.0:9153", help="/metrics address ('' disables)")
    p.add_argument("--lameduck", type=duration_flag, default=5.0,
                   help="how long to keep serving after SIGTERM (e.g. 5s; a bare number is seconds; default 5s)")
    p.add_argument("--max-concurrent", type=int, default=1000, help="forwarded queries in flight before REFUSED")
    p.add_argument("--cache-max-ttl", type=int, default=30, help="cap on cached upstream TTLs (default 30, as 'cache 30')")
    p.add_argument("--dns-service", default="kube-system/kube-dns", help="our own Service, for ns.dns.<zone>")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="DNS worker processes sharing the port (SO_REUSEPORT); 1 = one process (default), 0 = one per CPU; "
                        "-conf always runs one process")
    p.add_argument("-conf", "--conf", dest="conf", metavar="FILE", help="CoreDNS Corefile (replaces the flags above)")
    p.add_argument("-dns.port", dest="default_port", type=_port, default=53, metavar="PORT",
                   help="with -conf: port of server blocks that name none (default 53)")
    p.add_argument("--dns-port", dest="port_override", type=_port, default=None, metavar="PORT",
                   help="with -conf: listen on PORT whatever the server blocks say (tests, unprivileged runs)")
    logsetup.add_flags(p, "dns")
    return p


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> Options:
    p = _parser()
    return _options(p, p.parse_args(argv))


def _options(p: argparse.ArgumentParser, a: argparse.Namespace) -> Options:
    if not 0 <= a.ttl <= 3600:
        p.error("--ttl must be within 0..3600")
    if a.workers < 0:
        p.error("--workers must be 0 (one per CPU) or more")
    try:
        ups = [parse_upstream(u) for u in a.upstream]
    except ValueError as e:
        p.error(f"--upstream: {e}")
    logsetup.setup_from_args(a)
    return Options(
        master=a.master, kubeconfig=a.kubeconfig, zone=a.zone, listen=a.listen, upstreams=tuple(ups),
        resolv_conf=a.resolv_conf, ttl=a.ttl, health_listen=a.health_listen or None, ready_listen=a.ready_listen or None,
        metrics_listen=a.metrics_listen or None, lameduck=a.lameduck, max_concurrent=a.max_concurrent,
        cache_max_ttl=a.cache_max_ttl, dns_service=a.dns_service, workers=a.workers or default_workers(),
    )


def _corefile(p: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    from podnet.dns import coreconfig
    from podnet.dns.coredaemon import run_corefile

    given = [d for d in COREFILE_EXCLUSIVE if getattr(a, d) != p.get_default(d)]
    if given:
        p.error(f"--{given[0].replace('_', '-')} cannot be combined with -conf (set it in the Corefile)")
    logsetup.setup_from_args(a)

    def source() -> tuple[str, coreconfig.ServerConfig]:
        with open(a.conf, encoding="utf-8") as f:
            text = f.read()
        return text, coreconfig.load(text, a.conf, os.environ, default_port=a.default_port, port_override=a.port_override)

    try:
        text, cfg = source()
    except (OSError, UnicodeDecodeError) as e:
        return logsetup.config_error("dns", f"cannot read the Corefile {a.conf}: {e}")
    except CorefileError as e:
        return logsetup.config_error("dns", e)
    try:
        return run_corefile(cfg, a.master, a.kubeconfig, source=source, text=text)
    except ConfigError as e:
        return logsetup.config_error("dns", e)
    except OSError as e:
        logging.getLogger("podnet.dns").error("cannot start: %s", e)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.conf is not None:
        return _corefile(p, a)
    opts = _options(p, a)
    try:
        return run(opts)
    except ConfigError as e:
        return logsetup.config_error("dns", e)
    except OSError as e:  # e.g. the listen address is taken or not ours
        logging.getLogger("podnet.dns").error("cannot start: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
