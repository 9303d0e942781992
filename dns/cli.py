"""The podnet-dns console script: flags -> Options -> daemon. Logs go to stderr."""

from __future__ import annotations

import argparse
import logging
import sys

from podnet.dns.daemon import Options, run
from podnet.dns.forward import parse_upstream
from podnet.kube.kubeconfig import ConfigError

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="podnet-dns", description="Cluster DNS for Kubernetes (CoreDNS-compatible answers).")
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
    p.add_argument("--lameduck", type=float, default=5.0, help="seconds to keep serving after SIGTERM (default 5)")
    p.add_argument("--max-concurrent", type=int, default=1000, help="forwarded queries in flight before REFUSED")
    p.add_argument("--cache-max-ttl", type=int, default=30, help="cap on cached upstream TTLs (default 30, as 'cache 30')")
    p.add_argument("--dns-service", default="kube-system/kube-dns", help="our own Service, for ns.dns.<zone>")
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    if not 0 <= a.ttl <= 3600:
        p.error("--ttl must be within 0..3600")
    try:
        ups = [parse_upstream(u) for u in a.upstream]
    except ValueError as e:
        p.error(f"--upstream: {e}")
    level = logging.DEBUG if a.verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Options(
        master=a.master, kubeconfig=a.kubeconfig, zone=a.zone, listen=a.listen, upstreams=ups,
        resolv_conf=a.resolv_conf, ttl=a.ttl, health_listen=a.health_listen or None, ready_listen=a.ready_listen or None,
        metrics_listen=a.metrics_listen or None, lameduck=a.lameduck, max_concurrent=a.max_concurrent,
        cache_max_ttl=a.cache_max_ttl, dns_service=a.dns_service,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(opts)
    except ConfigError as e:
        logging.getLogger("podnet.dns").error("%s", e)
        return 2
    except OSError as e:  # e.g. the listen address is taken or not ours
        logging.getLogger("podnet.dns").error("cannot start: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
