"""The node-side setup the CLI needs: backend detection, families, addresses, sysctls.

Side effects only here (and in iptables.py / conntrack.py): everything runs
in the network namespace the process was started in, which for the lab is
the node's namespace (``ip netns exec <node> podnet-proxy ...``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from podnet.proxy import nodeports
from podnet.proxy.conntrack import ConntrackTool, Reconciler
from podnet.proxy.daemon import Config
from podnet.host.tools import run_tool
from podnet.host.xtables import detect_mode
from podnet.proxy.iptables import IptablesRunner
from podnet.proxy.model import cidr_family
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.rules import NodeContext

log = logging.getLogger("podnet.proxy")


def parse_ip_addr_json(text: str) -> tuple[str, ...]:
    """Addresses from ``ip -j addr show`` output, link-local left out, sorted."""
    addrs = {a.get("local") for link in json.loads(text or "[]") for a in link.get("addr_info", [])}
    return tuple(sorted(a for a in addrs if a and not ipaddress.ip_address(a).is_link_local))


async def local_addresses(family: int) -> tuple[str, ...]:
    """This namespace's addresses (loopback included) of one family."""
    rc, out, _ = await run_tool(["ip", "-j", f"-{family}", "addr", "show"], timeout=30)
    return parse_ip_addr_json(out) if rc == 0 else ()


def set_route_localnet() -> None:
    """net.ipv4.conf.all.route_localnet=1 in *this* namespace (localhost NodePorts)."""
    Path("/proc/sys/net/ipv4/conf/all/route_localnet").write_text("1\n")


async def _family_works(base: str, mode: str) -> bool:
    try:
        rc, _, _ = await run_tool([f"{base}-{mode}", "--wait", "-t", "nat", "-S", "POSTROUTING"], timeout=30)
    except FileNotFoundError:
        return False
    return rc == 0


def warn_bridge_netfilter() -> None:
    """Like kube-proxy: same-node pod -> Service -> pod over a Linux bridge needs br_netfilter."""
    p = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not p.exists() or p.read_text().strip() != "1":
        log.warning("br_netfilter is not loaded or bridge-nf-call-iptables is 0: with a bridge CNI, "
                    "replies between pods on one bridge bypass the service NAT (hairpin and same-node traffic)")


async def fetch_primary_ips(client: Any, node_name: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                            attempts: int = 6) -> tuple[str, ...]:
    """The node's primary IPs from its Node object, retried like kube-proxy's getNodeIPs
    (6 tries, 1 s doubling, ~31 s); () when the Node or its addresses cannot be had."""
    from podnet.kube import resources

    delay = 1.0
    for i in range(attempts):
        try:
            node = resources.convert(resources.NODES, await client.get(resources.NODES, node_name))
            ips = nodeports.primary_ips(node)
            if ips:
                log.info("node %s: primary IPs %s (--nodeport-addresses primary)", node_name, ", ".join(ips))
                return ips
            log.warning("node %s has no InternalIP/ExternalIP yet", node_name)
        except Exception as e:  # noqa: BLE001 - API away or Node missing: retry, then fall back
            log.warning("cannot read Node %s: %s", node_name, e)
        if i + 1 < attempts:
            await sleep(delay)
            delay *= 2
    return ()


def nodeport_cidrs(cfg: Config, primary: tuple[str, ...]) -> dict[int, tuple[str, ...]]:
    """NodeContext.nodeport_cidrs per family from --nodeport-addresses (keywords resolved)."""
    resolved = nodeports.resolve(cfg.nodeport_addresses, primary)
    if cfg.nodeport_addresses and not resolved:
        log.warning("--nodeport-addresses %s resolved to no address (no primary node IP); NodePorts are "
                    "accepted on every local address, as kube-proxy does", ",".join(cfg.nodeport_addresses))
    return {fam: nodeports.for_family(resolved, fam) for fam in (4, 6)}


async def family_proxiers(cfg: Config, primary: tuple[str, ...] = ()) -> list[Any]:
    """One proxier per family for ``cfg.proxy_mode``; the other mode's rules are removed first."""
    warn_bridge_netfilter()
    from podnet.proxy import nft_node

    if cfg.proxy_mode == "nftables":
        return await nft_node.family_proxiers(cfg, primary)
    await nft_node.remove_tables()
    mode = await detect_mode()
    log.info("iptables backend: %s (only this one is written)", mode)
    fams = cfg.ip_families or ((4, 6) if await _family_works("ip6tables", mode) else (4,))
    np_cidrs = nodeport_cidrs(cfg, primary)
    out = []
    for fam in fams:
        ctx = NodeContext(
            family=fam,
            cluster_cidrs=tuple(c for c in cfg.cluster_cidr if cidr_family(c) == fam),
            masquerade_all=cfg.masquerade_all,
            node_ips=await local_addresses(fam),
            nodeport_cidrs=np_cidrs[fam],
            localhost_nodeports=cfg.localhost_nodeports,
            masq_mark=1 << cfg.masquerade_bit,
        )
        out.append(
            FamilyProxier(
                IptablesRunner(fam, mode),
                ctx,
                cfg.hostname_override,
                cfg.max_endpoints_per_service_port,
                conntrack=Reconciler(ConntrackTool(), fam),
                before_first_write=set_route_localnet if ctx.localhost_nodeports_active else None,
            )
        )
    return out


async def cleanup_all(cfg: Config) -> int:
    from podnet.proxy.cleanup import cleanup

    mode = await detect_mode()
    for fam, base in ((4, "iptables"), (6, "ip6tables")):
        if fam == 6 and not await _family_works(base, mode):
            continue
        n = await cleanup(IptablesRunner(fam, mode))
        log.info("IPv%d (%s): removed %d podnet chains", fam, mode, n)
    from podnet.proxy.nft_node import remove_tables

    log.info("removed podnet's nftables table in %d families", await remove_tables())
    return 0
