"""``podnet-proxy --cleanup``: remove every rule and chain podnet owns, nothing else.

Jumps from the built-in chains are deleted rule by rule (exact text podnet
inserts), then every ``PODNET-`` chain in mangle, filter and nat is flushed
and deleted in one restore per family. Other chains, including kube-proxy's
``KUBE-*``, are never named, so they cannot be touched. Idempotent.
"""

from __future__ import annotations

from podnet.proxy import names
from podnet.proxy.iptables import Iptables
from podnet.proxy.rules import JUMPS


async def cleanup(ipt: Iptables) -> int:
    """Returns the number of chains removed."""
    for table, chain, rule in JUMPS:
        await ipt.delete_jump(table, chain, rule)
    out, removed = [], 0
    for table in ("mangle", "filter", "nat"):
        ours = sorted(c for c in await ipt.chains(table) if names.is_ours(c))
        if not ours:
            continue
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in ours]
        out += [f"-X {c}" for c in ours]
        out.append("COMMIT")
        removed += len(ours)
    if out:
        await ipt.restore("\n".join(out) + "\n")
    return removed
