"""``podnet-proxy``: kube-proxy's flags and --config, --once, --cleanup, --cleanup-kube-proxy.

The binaries' one CLI shape: flags (:func:`parser`) -> the frozen
:class:`podnet.proxy.daemon.Config` (:func:`build_config`) -> run. ``--node-name`` names the node,
with kube-proxy's ``--hostname-override`` as an alias; ``-v``, ``--logging-format`` and
``--version`` are :mod:`podnet.kube.logsetup`'s; duration flags take Go's notation (``30s``,
``1m30s``), as kube-proxy's do.

The settings are one KubeProxyConfiguration (proxy/config.py): the --config file,
decoded strictly, with every flag given on the command line laid over the field it
names, then kube-proxy's defaults and validation. (kube-proxy itself ignores most
flags when --config is given; here a given flag is never silently ignored.) Guarantees:

* a configuration error (bad flag, unreadable file, unknown key, bad value,
  unsupported mode, no privilege to program iptables) is one line naming it and exit
  status 2 (logsetup.EXIT_CONFIG), before anything is changed on the node; a run-time
  failure exits 1;
* logs are klog text on stderr by default, ``--logging-format json`` as Kubernetes
  components; ``-v/--v`` and ``--logging-format`` win over the file's ``logging``;
* SIGTERM/SIGINT stop the daemon within seconds and leave the rules in place;
* ``--cleanup-kube-proxy`` removes kube-proxy's iptables rules once podnet's own
  first sync has succeeded (never before, so Services stay routed throughout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from podnet.host import loop
from podnet.kube import logsetup
from podnet.kube.durations import parse_duration
from podnet.kube.errors import ConfigError
from podnet.proxy import config as kpc
from podnet.proxy.daemon import Config, Daemon, real_informers

log = logging.getLogger("podnet.proxy")

__all__ = ["main", "parser", "build_config", "parse_duration", "ConfigError"]


def _duration(text: str) -> str:
    """A Go duration, checked here so the error names the flag; kept as text for the overlay."""
    try:
        parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _go_bool(text: str) -> bool:
    try:
        return kpc.parse_bool(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _gates(text: str) -> dict[str, bool]:
    try:
        return kpc.parse_feature_gates(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = logsetup.OneLineParser(prog="podnet-proxy",
                               description="podnet's iptables service proxy (kube-proxy's flags and config file)")
    a = p.add_argument
    a("--config", help="KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON); "
      "flags given on the command line override its fields")
    a("--kubeconfig")
    a("--master", help="API server URL (overrides the kubeconfig server)")
    a("--hostname-override", "--node-name", dest="hostname_override",
      help="this node's name (default: hostname); --node-name is every podnet binary's name for it")
    a("--bind-address", help="kube-proxy's node-IP override; accepted and validated, podnet reads the node's addresses")
    a("--proxy-mode", help="iptables (the default; also when blank) or nftables (ipvs, kernelspace are refused)")
    a("--cluster-cidr", help="pod CIDR(s), comma separated; traffic from outside is masqueraded")
    a("--detect-local-mode", help="ClusterCIDR or blank")
    a("--masquerade-all", nargs="?", const=True, default=None, type=_go_bool)
    a("--nodeport-addresses", type=_list, help="CIDRs whose local addresses accept NodePorts, and/or the keywords "
      "primary (the node's primary IPs per its Node object), localhost, all (default: every local address)")
    a("--iptables-sync-period", type=_duration, help="e.g. 30s, 1m30s; 0 means the default (30s)")
    a("--iptables-min-sync-period", type=_duration, help="e.g. 1s, 100ms; 0 means the default (1s)")
    a("--iptables-masquerade-bit", type=int)
    a("--iptables-localhost-nodeports", nargs="?", const=True, default=None, type=_go_bool)
    a("--healthz-bind-address", help="IP:port ('' disables; default 0.0.0.0:10256)")
    a("--metrics-bind-address", help="IP:port ('' disables; default 127.0.0.1:10249)")
    a("--conntrack-max-per-core", type=int)
    a("--conntrack-min", type=int)
    a("--conntrack-tcp-timeout-established", type=_duration)
    a("--conntrack-tcp-timeout-close-wait", type=_duration)
    a("--conntrack-tcp-be-liberal", nargs="?", const=True, default=None, type=_go_bool)
    a("--conntrack-udp-timeout", type=_duration)
    a("--conntrack-udp-timeout-stream", type=_duration)
    a("--config-sync-period", type=_duration, help="accepted; podnet's informers watch continuously")
    a("--oom-score-adj", type=int)
    a("--feature-gates", type=_gates, help="key=bool pairs; accepted and logged (podnet has no feature gates)")
    a("--ip-families", help="4, 6 or 4,6 (default: IPv4, plus IPv6 when ip6tables works)")
    a("--max-endpoints-per-service-port", type=int, help="keep at most N endpoints per service port "
      "(0, the default: no bound, as in kube-proxy); each cut is a warning and podnet_proxy_endpoints_truncated_total")
    a("--cleanup", action="store_true", help="remove podnet's rules and chains, then exit")
    a("--cleanup-kube-proxy", action="store_true",
      help="after podnet's first successful sync, remove kube-proxy's iptables rules (migration)")
    a("--once", action="store_true", help="sync once after the informers synced, then exit")
    logsetup.add_flags(p, "proxy")
    return p


_FILE_FLAGS = tuple(kpc.FLAG_PATHS)


def read_config_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read: {e.strerror or e}") from None
    return kpc.decode(text, f"--config {path}")


def resolve_args(args: argparse.Namespace) -> kpc.ProxySettings:
    """The file (if any) with the given flags laid over it, defaulted and validated."""
    doc = read_config_file(args.config) if args.config else None
    flags = {k: getattr(args, k, None) for k in _FILE_FLAGS}
    # '' on the command line disables that server (kube-proxy's flag help); build_config applies it
    # after defaulting, where an empty file field means the default address.
    for k in ("healthz_bind_address", "metrics_bind_address"):
        if flags[k] == "":
            flags[k] = None
    return kpc.resolve(doc, flags)


def build_config(args: argparse.Namespace, settings: kpc.ProxySettings | None = None) -> Config:
    if args.hostname_override is not None and args.hostname_override and not args.hostname_override.strip():
        raise ConfigError("empty --hostname-override is invalid")
    s = settings or resolve_args(args)
    ip_families: tuple[int, ...] = ()
    if args.ip_families:
        try:
            ip_families = tuple(int(x) for x in args.ip_families.split(","))
        except ValueError:
            raise ConfigError(f"--ip-families {args.ip_families!r}: want 4, 6 or 4,6") from None
        if not set(ip_families) <= {4, 6}:
            raise ConfigError(f"--ip-families {args.ip_families!r}: want 4, 6 or 4,6")
    max_endpoints = 0
    if args.max_endpoints_per_service_port is not None:
        if args.max_endpoints_per_service_port < 0:
            raise ConfigError("--max-endpoints-per-service-port must be 0 (no bound) or more")
        max_endpoints = args.max_endpoints_per_service_port
    return Config(
        master=args.master,
        kubeconfig=s.kubeconfig or None,
        hostname_override=s.hostname_override or socket.gethostname().strip().lower(),
        cluster_cidr=s.cluster_cidrs,
        masquerade_all=s.masquerade_all,
        nodeport_addresses=s.nodeport_addresses,
        sync_period=s.sync_period,
        min_sync_period=s.min_sync_period,
        healthz_bind_address="" if args.healthz_bind_address == "" else s.healthz_bind_address,
        metrics_bind_address="" if args.metrics_bind_address == "" else s.metrics_bind_address,
        masquerade_bit=s.masquerade_bit,
        proxy_mode=s.mode,
        localhost_nodeports=s.localhost_nodeports,
        conntrack=s.conntrack,
        ip_families=ip_families,
        max_endpoints_per_service_port=max_endpoints,
    )


def apply_conntrack(ct: kpc.Conntrack, root: Path = Path("/proc/sys")) -> None:
    """kube-proxy's conntrack sysctls, in the namespace the proxy runs in; a value the
    kernel will not take (e.g. nf_conntrack_max outside the initial namespace) is logged."""
    for name, value in kpc.conntrack_sysctls(ct, os.cpu_count() or 1).items():
        p = root / name
        try:
            if p.read_text().strip() != str(value):
                p.write_text(f"{value}\n")
                log.info("set %s to %d", name.replace("/", "."), value)
        except OSError as e:
            log.warning("cannot set %s to %d (%s); leaving the kernel's value", name.replace("/", "."), value,
                        e.strerror or e)


def apply_oom_score_adj(value: int, path: Path = Path("/proc/self/oom_score_adj")) -> None:
    """kube-proxy's oomScoreAdj for this process; refused (no CAP_SYS_RESOURCE) is logged."""
    try:
        if path.read_text().strip() != str(value):
            path.write_text(f"{value}\n")
    except OSError as e:
        log.warning("cannot set oom_score_adj to %d (%s)", value, e.strerror or e)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logsetup.setup_from_args(args)
    try:
        settings = resolve_args(args)
        cfg = build_config(args, settings)
    except ConfigError as e:
        return logsetup.config_error("proxy", e)
    logsetup.setup_from_args(args, settings.logging_format, settings.verbosity)
    for note in settings.ignored:
        log.info("accepted, not acted on: %s", note)
    from podnet.proxy import node

    try:
        if args.cleanup:
            return loop.run(node.cleanup_all(cfg))
        return loop.run(_serve(cfg, once=args.once, cleanup_kube_proxy=args.cleanup_kube_proxy,
                               oom_score_adj=settings.oom_score_adj))
    except ConfigError as e:
        return logsetup.config_error("proxy", e)


async def _serve(cfg: Config, once: bool, cleanup_kube_proxy: bool = False, oom_score_adj: int | None = None) -> int:
    from podnet.kube.client import ApiClient
    from podnet.proxy import node

    stop = loop.stop_on_signals()
    if cfg.proxy_mode == "nftables":
        from podnet.proxy.nft_node import nft_problem

        problem = await nft_problem()
    else:
        problem = await iptables_problem()
    if problem:
        return logsetup.config_error("proxy", problem)
    if oom_score_adj is not None:
        apply_oom_score_adj(oom_score_adj)
    if cfg.conntrack is not None:
        apply_conntrack(cfg.conntrack)
    client = ApiClient.from_flags(master=cfg.master, kubeconfig=cfg.kubeconfig)
    async with client:
        primary: tuple[str, ...] = ()
        if "primary" in cfg.nodeport_addresses:
            primary = await _until_stopped(node.fetch_primary_ips(client, cfg.hostname_override), stop, ())
        families = await node.family_proxiers(cfg, primary)
        daemon = Daemon(cfg, families, addresses=node.local_addresses)
        if cleanup_kube_proxy:
            daemon.after_first_sync = _kube_proxy_cleaner(families)
        services, slices, nodes = real_informers(client, cfg.hostname_override)
        daemon.attach(services, slices, nodes)
        if once:
            try:
                ok = await _until_stopped(daemon.once(), stop, None)
            except asyncio.TimeoutError:
                log.error("one-shot sync: Services/EndpointSlices did not sync within 60 s; nothing was written")
                return 1
            if ok is None:
                log.info("stopped before the one-shot sync finished")
                return 1
            log.info("one-shot sync %s", "done" if ok else "FAILED")
            return 0 if ok else 1
        log.info("podnet-proxy starting on node %s (families %s)", cfg.hostname_override,
                 ",".join(f.label for f in families))
        if not stop.is_set():
            await daemon.run(stop)
        log.info("stopped; rules left in place")
    return 0


async def iptables_problem(prefix: Sequence[str] = ()) -> str | None:
    """None when this process can read the nat table with the backend it would write; else one
    line naming the problem (missing privileges, missing iptables)."""
    from podnet.host.xtables import detect_mode

    try:
        mode = await detect_mode(prefix)
        proc = await asyncio.create_subprocess_exec(*prefix, f"iptables-{mode}", "--wait", "-t", "nat", "-S",
                                                    "POSTROUTING", stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except FileNotFoundError as e:
        return f"cannot run iptables ({e.filename}): install iptables (legacy and nft) in the image"
    except asyncio.TimeoutError:
        return "iptables did not answer within 60 s (xtables lock held?)"
    if proc.returncode == 0:
        return None
    text = " ".join(err.decode(errors="replace").split())
    if "Permission denied" in text:
        return (f"iptables-{mode}: {text[:200]}: podnet-proxy needs CAP_NET_ADMIN and CAP_NET_RAW "
                "(and the host network namespace)")
    return f"iptables-{mode} -t nat -S POSTROUTING failed: {text[:300]}"


async def _until_stopped(coro: Any, stop: asyncio.Event, default: Any) -> Any:
    """Await ``coro`` unless ``stop`` is set first (then ``default``)."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task in done else default
    finally:
        for t in (task, waiter):
            t.cancel()


def _kube_proxy_cleaner(families: list[Any]):
    async def clean() -> None:
        from podnet.proxy.cleanup import cleanup_kube_proxy

        for fam in families:
            ipt = getattr(fam, "ipt", None)
            if ipt is None:  # nftables mode: kube-proxy's iptables chains are still iptables'
                from podnet.host.xtables import detect_mode
                from podnet.proxy.iptables import IptablesRunner

                ipt = IptablesRunner(fam.ctx.family, await detect_mode())
            n = await cleanup_kube_proxy(ipt)
            log.info("%s: removed %d kube-proxy chains (KUBE-*); kubelet's chains left alone", fam.label, n)
    return clean


if __name__ == "__main__":
    sys.exit(main())
