"""``podnet-proxy``: flags with kube-proxy's names, --config, --once, --cleanup.

Flags given on the command line override the --config file (YAML or JSON,
kube-proxy's KubeProxyConfiguration field names; YAML needs PyYAML). Logs go
to stderr. SIGTERM/SIGINT stop the daemon and leave the rules in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from podnet.proxy.daemon import Config, Daemon, real_informers

log = logging.getLogger("podnet.proxy")


def parse_duration(text: str | float | int) -> float:
    """'30s', '1m', '500ms', '1h30m' or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad duration {text!r}") from None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(a) * scale[b] for a, b in parts)


def _cidrs(text: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for c in text.split(","):
        c = c.strip()
        if not c:
            continue
        out.append(str(ipaddress.ip_network(c, strict=False)))
    return tuple(out)


def _nodeport_addresses(entries: Sequence[str]) -> tuple[str, ...]:
    """CIDRs and the keywords primary, localhost, all (resolved at start-up, node.py)."""
    from podnet.proxy import nodeports

    try:
        return nodeports.parse(e for entry in entries for e in str(entry).split(","))
    except ValueError as e:
        raise SystemExit(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podnet-proxy", description="podnet's iptables service proxy (kube-proxy compatible flags)")
    a = p.add_argument
    a("--config", help="KubeProxyConfiguration file (YAML needs PyYAML, or JSON)")
    a("--kubeconfig")
    a("--master", help="API server URL (overrides the kubeconfig server)")
    a("--hostname-override", help="this node's name (default: hostname)")
    a("--cluster-cidr", help="pod CIDR(s), comma separated; traffic from outside is masqueraded")
    a("--masquerade-all", action="store_true", default=None)
    a("--nodeport-addresses", help="CIDRs whose local addresses accept NodePorts, and/or the keywords primary "
      "(the node's primary IPs per its Node object), localhost, all (default: every local address)")
    a("--iptables-sync-period", type=parse_duration)
    a("--iptables-min-sync-period", type=parse_duration)
    a("--iptables-masquerade-bit", type=int)
    a("--iptables-localhost-nodeports", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    a("--healthz-bind-address")
    a("--metrics-bind-address")
    a("--ip-families", help="4, 6 or 4,6 (default: IPv4, plus IPv6 when ip6tables works)")
    a("--max-endpoints-per-service-port", type=int)
    a("--cleanup", action="store_true", help="remove podnet's rules and chains, then exit")
    a("--once", action="store_true", help="sync once after the informers synced, then exit")
    a("-v", "--v", dest="verbosity", type=int, nargs="?", const=4, default=0)
    return p


def load_config_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(f"{path}: not JSON, and reading YAML needs PyYAML (pip install pyyaml)") from None
    return yaml.safe_load(text) or {}


def build_config(args: argparse.Namespace) -> Config:
    cfg = Config(hostname_override=socket.gethostname().lower())
    if args.config:
        f = load_config_file(args.config)
        ipt = f.get("iptables") or {}
        cc = f.get("clientConnection") or {}
        cfg.kubeconfig = cc.get("kubeconfig") or None
        cfg.hostname_override = f.get("hostnameOverride") or cfg.hostname_override
        cfg.cluster_cidr = _cidrs(f.get("clusterCIDR") or "")
        cfg.masquerade_all = bool(ipt.get("masqueradeAll", False))
        cfg.nodeport_addresses = _nodeport_addresses(f.get("nodePortAddresses") or [])
        if ipt.get("syncPeriod"):
            cfg.sync_period = parse_duration(ipt["syncPeriod"])
        if ipt.get("minSyncPeriod"):
            cfg.min_sync_period = parse_duration(ipt["minSyncPeriod"])
        if ipt.get("masqueradeBit") is not None:
            cfg.masquerade_bit = int(ipt["masqueradeBit"])
        if ipt.get("localhostNodePorts") is not None:
            cfg.localhost_nodeports = bool(ipt["localhostNodePorts"])
        cfg.healthz_bind_address = f.get("healthzBindAddress", cfg.healthz_bind_address)
        cfg.metrics_bind_address = f.get("metricsBindAddress", cfg.metrics_bind_address)
    if args.master:
        cfg.master = args.master
    if args.kubeconfig:
        cfg.kubeconfig = args.kubeconfig
    if args.hostname_override:
        cfg.hostname_override = args.hostname_override.strip().lower()
    if args.cluster_cidr:
        cfg.cluster_cidr = _cidrs(args.cluster_cidr)
    if args.masquerade_all is not None:
        cfg.masquerade_all = True
    if args.nodeport_addresses:
        cfg.nodeport_addresses = _nodeport_addresses([args.nodeport_addresses])
    if args.iptables_sync_period is not None:
        cfg.sync_period = args.iptables_sync_period
    if args.iptables_min_sync_period is not None:
        cfg.min_sync_period = args.iptables_min_sync_period
    if args.iptables_masquerade_bit is not None:
        cfg.masquerade_bit = args.iptables_masquerade_bit
    if args.iptables_localhost_nodeports is not None:
        cfg.localhost_nodeports = args.iptables_localhost_nodeports
    if args.healthz_bind_address is not None:
        cfg.healthz_bind_address = args.healthz_bind_address
    if args.metrics_bind_address is not None:
        cfg.metrics_bind_address = args.metrics_bind_address
    if args.ip_families:
        cfg.ip_families = tuple(int(x) for x in args.ip_families.split(","))
    if args.max_endpoints_per_service_port:
        cfg.max_endpoints_per_service_port = args.max_endpoints_per_service_port
    if not 0 <= cfg.masquerade_bit <= 31:
        raise SystemExit("--iptables-masquerade-bit must be in 0..31")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbosity >= 4 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = build_config(args)
    try:
        import uvloop  # noqa: F401

        runner = uvloop.run  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        runner = asyncio.run
    from podnet.proxy import node

    if args.cleanup:
        return runner(node.cleanup_all(cfg))
    return runner(_serve(cfg, once=args.once))


async def _serve(cfg: Config, once: bool) -> int:
    from podnet.kube.client import ApiClient
    from podnet.proxy import node

    client = ApiClient.from_flags(master=cfg.master, kubeconfig=cfg.kubeconfig)
    async with client:
        primary: tuple[str, ...] = ()
        if "primary" in cfg.nodeport_addresses:
            primary = await node.fetch_primary_ips(client, cfg.hostname_override)
        families = await node.family_proxiers(cfg, primary)
        daemon = Daemon(cfg, families, addresses=node.local_addresses)
        services, slices, nodes = real_informers(client, cfg.hostname_override)
        daemon.attach(services, slices, nodes)
        if once:
            try:
                ok = await daemon.once()
            except asyncio.TimeoutError:
                log.error("one-shot sync: Services/EndpointSlices did not sync within 60 s; nothing was written")
                return 1
            log.info("one-shot sync %s", "done" if ok else "FAILED")
            return 0 if ok else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("podnet-proxy starting on node %s (families %s)", cfg.hostname_override,
                 ",".join(f.label for f in families))
        await daemon.run(stop)
        log.info("stopped; rules left in place")
    return 0
