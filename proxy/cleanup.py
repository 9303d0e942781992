"""Removing rules: podnet's own (``--cleanup``) or kube-proxy's (``--cleanup-kube-proxy``).

:func:`cleanup`: jumps from the built-in chains are deleted rule by rule (exact
text podnet inserts), then every ``PODNET-`` chain in mangle, filter and nat is
flushed and deleted in one restore per family. Other chains, including
kube-proxy's ``KUBE-*``, are never named, so they cannot be touched. Idempotent.

:func:`cleanup_kube_proxy`: the migration step. kube-proxy's iptables-mode
chains (and only those: never ``PODNET-*``, never kubelet's ``KUBE-*`` chains)
are unlinked from every chain that jumps to them, then flushed and deleted in
one restore per family. Idempotent.
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


# kube-proxy's iptables-mode chains (pkg/proxy/iptables/proxier.go: iptablesJumpChains, the
# chains its CleanupLeftovers flushes and deletes, and the canary of its iptables monitor).
# kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-MARK-DROP, KUBE-IPTABLES-HINT)
# are not kube-proxy's: kube-proxy's cleanup leaves them and so does this.
KUBE_PROXY_CHAINS = frozenset({
    "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
    "KUBE-FORWARD", "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY",
})
KUBE_PROXY_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")


def _target(spec: str) -> str | None:
    toks = spec.split()
    for i, t in enumerate(toks[:-1]):
        if t in ("-j", "-g", "--jump", "--goto"):
            return toks[i + 1]
    return None


def is_kube_proxy_chain(chain: str) -> bool:
    return chain in KUBE_PROXY_CHAINS or chain.startswith(KUBE_PROXY_PREFIXES)


def kube_proxy_removal(save_text: str) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """From ``iptables-save`` text: the rules outside kube-proxy's chains that jump into them
    ((table, chain, rule spec)), and kube-proxy's chains per table. Pure."""
    jumps: list[tuple[str, str, str]] = []
    chains: dict[str, list[str]] = {}
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if is_kube_proxy_chain(name):
                chains.setdefault(table, []).append(name)
        elif line.startswith("-A "):
            _, chain, spec = line.split(" ", 2)
            target = _target(spec)
            if not is_kube_proxy_chain(chain) and target is not None and is_kube_proxy_chain(target):
                jumps.append((table, chain, spec))
    return jumps, {t: sorted(c) for t, c in chains.items()}


async def cleanup_kube_proxy(ipt: Iptables) -> int:
    """Remove kube-proxy's iptables-mode rules as ``kube-proxy --cleanup`` does: unlink every
    jump into its chains, then flush and delete the chains in one restore. Established
    connections are untouched (their NAT lives in conntrack, not in rules). Idempotent;
    returns the number of chains removed."""
    jumps, chains = kube_proxy_removal(await ipt.save())
    for table, chain, spec in jumps:
        await ipt.delete_jump(table, chain, spec)
    out, removed = [], 0
    for table, names_ in chains.items():
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in names_]
        out += [f"-X {c}" for c in names_]
        out.append("COMMIT")
        removed += len(names_)
    if out:
        await ipt.restore("\n".join(out) + "\n")
    return removed
