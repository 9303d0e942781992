"""Which iptables backend this host's rules live in: ``nft`` or ``legacy``.

The rule of Kubernetes' iptables-wrappers (and kube-proxy's image): a hint chain that kubelet or
kube-proxy creates decides (``KUBE-IPTABLES-HINT``, ``KUBE-KUBELET-CANARY``, podnet's
``PODNET-CANARY``); without one, the backend holding more rules wins; with none, nft. Every podnet
writer of iptables rules (the proxy, the policy engine) asks here, so they never split one node's
rules across two backends.
"""

from __future__ import annotations

from typing import Sequence

from podnet.host.tools import run_tool

__all__ = ["HINT_CHAINS", "choose_mode", "detect_mode"]

HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "PODNET-CANARY")


def choose_mode(nft_save: str, legacy_save: str) -> str:
    """iptables-wrappers' rule: a hint chain decides; else more rules wins; default nft."""
    for mode, text in (("nft", nft_save), ("legacy", legacy_save)):
        if any(f":{h} " in text or f":{h}\n" in text for h in HINT_CHAINS):
            return mode
    count = lambda t: sum(1 for ln in t.splitlines() if ln.startswith("-A"))  # noqa: E731
    return "legacy" if count(legacy_save) > count(nft_save) else "nft"


async def detect_mode(prefix: Sequence[str] = ()) -> str:
    """Which backend this node's rules live in: 'nft' or 'legacy'."""
    outs = []
    for argv in (["iptables-nft-save", "-t", "mangle"], ["ip6tables-nft-save", "-t", "mangle"], ["iptables-legacy-save"], ["ip6tables-legacy-save"]):
        try:
            rc, out, _ = await run_tool([*prefix, *argv], timeout=30)
        except FileNotFoundError:
            rc, out = 1, ""
        outs.append(out if rc == 0 else "")
    return choose_mode(outs[0] + outs[1], outs[2] + outs[3])
