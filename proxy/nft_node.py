"""Node-side setup of the nftables mode: families, mode switching, cleanup.

Guarantees:

* :func:`family_proxiers` builds one :class:`NftFamilyProxier` per family
  and, before the first write, removes the iptables mode's ``PODNET-`` chains
  (switching iptables -> nftables leaves no stale rules behind);
* :func:`remove_tables` deletes podnet's ``table ip podnet`` / ``table ip6
  podnet`` and nothing else (``--cleanup``, and switching nftables ->
  iptables); a missing table or a missing ``nft`` binary is not an error.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Sequence

from podnet.proxy.conntrack import ConntrackTool, Reconciler
from podnet.proxy.daemon import Config
from podnet.proxy.model import cidr_family
from podnet.proxy.nft_proxier import NftFamilyProxier
from podnet.proxy.nft_render import render_delete
from podnet.proxy.nft_run import NftError, NftRunner
from podnet.proxy.rules import NodeContext

log = logging.getLogger("podnet.proxy")


def ipv6_available() -> bool:
    return os.path.exists("/proc/net/if_inet6")


async def nft_problem(prefix: Sequence[str] = ()) -> str | None:
    """None when ``nft`` can write here; otherwise one line saying why not."""
    if not prefix and shutil.which("nft") is None:
        return "nftables mode needs the nft binary (Debian package nftables)"
    try:
        await NftRunner(4, prefix).apply("add table ip podnet-probe\ndelete table ip podnet-probe\n")
    except (NftError, OSError) as e:
        return f"nft cannot write rules ({e}); podnet-proxy needs CAP_NET_ADMIN"
    return None


async def remove_tables(families: Sequence[int] = (4, 6), prefix: Sequence[str] = ()) -> int:
    """Delete podnet's nft tables; returns how many families were cleaned."""
    if not prefix and shutil.which("nft") is None:
        return 0
    done = 0
    for fam in families:
        if fam == 6 and not prefix and not ipv6_available():
            continue
        try:
            await NftRunner(fam, prefix).apply(render_delete(fam))
            done += 1
        except (NftError, OSError) as e:
            log.warning("IPv%d: cannot remove podnet's nft table: %s", fam, e)
    return done


async def remove_iptables_rules(prefix: Sequence[str] = ()) -> None:
    """The iptables mode's PODNET- chains, in whichever iptables backend has them."""
    from podnet.proxy.cleanup import cleanup
    from podnet.host.xtables import detect_mode
    from podnet.proxy.iptables import IptablesRunner

    try:
        mode = await detect_mode(prefix)
    except Exception as e:  # noqa: BLE001 - no iptables at all: nothing to clean
        log.info("no iptables backend found (%s); no iptables rules to clean", e)
        return
    for fam in (4, 6):
        try:
            n = await cleanup(IptablesRunner(fam, mode, prefix))
            if n:
                log.info("IPv%d: removed %d iptables-mode podnet chains (now in nftables mode)", fam, n)
        except Exception as e:  # noqa: BLE001 - best effort; e.g. no ip6tables
            log.info("IPv%d: iptables cleanup skipped: %s", fam, e)


async def family_proxiers(cfg: Config, primary: tuple[str, ...] = ()) -> list[NftFamilyProxier]:
    from podnet.proxy.node import local_addresses, nodeport_cidrs, set_route_localnet

    fams = cfg.ip_families or ((4, 6) if ipv6_available() else (4,))
    np_cidrs = nodeport_cidrs(cfg, primary)
    await remove_iptables_rules()
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
        out.append(NftFamilyProxier(
            NftRunner(fam), ctx, cfg.hostname_override, cfg.max_endpoints_per_service_port,
            conntrack=Reconciler(ConntrackTool(), fam),
            before_first_write=set_route_localnet if ctx.localhost_nodeports_active else None,
        ))
    return out
