"""Applying rendered state to one node and family, in the order that never opens a gap.

One :meth:`Programmer.apply`:

1. every set whose contents changed (or that the kernel may lack) is written by one
   ``ipset restore``: created if missing, filled through its temporary twin and
   swapped in, so a set is never seen half-filled;
2. when the chain text differs from what was applied, one ``iptables-restore
   --noflush`` rewrites our chains (and deletes stale ones) atomically: after a
   resync all of them, otherwise only the chains whose rules changed (with
   ``--noflush`` a chain the text does not declare keeps its rules);
3. on the first apply and every resync, the jumps from FORWARD and INPUT are ensured at
   position 1 (a foreign flush of FORWARD is repaired by the periodic resync);
4. only then are sets no rule references any more destroyed.

A failure at any step raises and leaves the previous rules in force; the
next apply starts from what the kernel holds (``resync``) instead of trusting
the memory of what was applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from podnet.policy import render as r
from podnet.policy.kernel import Kernel
from podnet.policy.model import PodVerdict

__all__ = ["Programmer", "Applied", "cleanup"]

log = logging.getLogger("podnet.policy")


@dataclass(frozen=True, slots=True)
class Applied:
    rules: int
    sets_written: int
    chains_written: bool
    sets_destroyed: int


class Programmer:
    def __init__(self, kernel: Kernel, log_denied: bool = False) -> None:
        self.kernel = kernel
        self.log_denied = log_denied
        self.family = kernel.family
        self._sets: dict[str, r.SetSpec] = {}
        self._text: str | None = None
        self._chains: tuple[str, ...] = ()
        self._rules: dict[str, list[str]] | None = None
        """Chain -> its rule lines, as the kernel holds them after the last apply (None: unknown)."""
        self._need_resync = True
        self.chain_pods: dict[str, str] = {}
        """Pod chain -> pod key, as of the last apply."""

    async def _resync(self) -> tuple[set[str], set[str]]:
        chains = {c for c in await self.kernel.filter_chains() if c.startswith(r.CHAIN_PREFIXES)}
        sets = {s for s in await self.kernel.ipset_names() if s.startswith(r.set_prefixes(self.family))}
        self._sets, self._text, self._rules = {}, None, None
        return chains, sets

    async def apply(self, verdicts: Mapping[str, PodVerdict]) -> Applied:
        kernel_chains: set[str] = set()
        kernel_sets: set[str] = set()
        if self._need_resync:
            kernel_chains, kernel_sets = await self._resync()
        stale_chains = tuple(sorted(set(self._chains) | kernel_chains))
        out = r.render(verdicts, self.family, stale_chains, self.log_denied)
        changed = [s for name, s in sorted(out.sets.items()) if self._sets.get(name) != s]
        try:
            if changed:
                lines: list[str] = []
                for s in changed:
                    lines += s.restore_lines()
                await self.kernel.ipset_restore("\n".join(lines) + "\n")
                for s in changed:
                    self._sets[s.name] = s
            wrote = False
            if out.iptables != self._text or self._need_resync:
                rules = _rules_by_chain(out.iptables, out.chains)
                full = self._need_resync or self._rules is None
                await self.kernel.iptables_restore(out.iptables if full else _delta(self._rules, rules, stale_chains))
                text = out.iptables
                if set(stale_chains) - set(out.chains):  # remember the text without the deletions just done
                    text = r.render(verdicts, self.family, out.chains, self.log_denied).iptables
                self._text, self._chains, self._rules, wrote = text, out.chains, rules, True
                self.chain_pods = {c: key for key in verdicts for c in (*r.pod_chains(key), *r.stage_chains(key))}
            if self._need_resync:
                for table, chain, rule in r.JUMPS:
                    await self.kernel.ensure_first(table, chain, rule)
            gone = sorted((set(self._sets) | kernel_sets) - set(out.sets))
            for name in gone:
                await self.kernel.ipset_destroy(name)
                self._sets.pop(name, None)
        except Exception:
            self._need_resync = True
            raise
        self._need_resync = False
        return Applied(out.rules, len(changed), wrote, len(gone))

    async def denied(self) -> dict[str, int]:
        """Packets each pod's chains dropped so far, by pod key (DROP rule counters)."""
        out: dict[str, int] = {}
        for line in (await self.kernel.filter_counters()).splitlines():
            if not line.startswith("[") or not line.endswith(" -j DROP"):
                continue
            counts, _, rest = line.partition("] -A ")
            key = self.chain_pods.get(rest.split(" ", 1)[0])
            if key is not None:
                out[key] = out.get(key, 0) + int(counts[1:].split(":")[0])
        return out

    def force_resync(self) -> None:
        """The next apply re-reads the kernel and rewrites everything (a periodic full sync)."""
        self._need_resync = True


def _rules_by_chain(text: str, chains: tuple[str, ...]) -> dict[str, list[str]]:
    """Chain -> its ``-A`` lines, in order, for every chain the text declares (empty chains included)."""
    out: dict[str, list[str]] = {c: [] for c in chains}
    for line in text.splitlines():
        if line.startswith("-A "):
            out.setdefault(line.split(" ", 2)[1], []).append(line)
    return out


def _delta(old: dict[str, list[str]], new: dict[str, list[str]], stale: tuple[str, ...]) -> str:
    """Restore text rewriting only the chains whose rules changed and deleting the chains gone.

    A deleted chain's referrers were rules of chains that changed (their text named it), so they are
    rewritten in the same transaction, before the deletion."""
    changed = [c for c, lines in new.items() if old.get(c) != lines]
    gone = sorted((set(old) | set(stale)) - set(new))
    lines = ["*filter"] + [f":{c} - [0:0]" for c in changed + gone]
    for c in changed:
        lines += new[c]
    lines += [f"-X {c}" for c in gone]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


async def cleanup(kernel: Kernel) -> int:
    """Remove every policy chain, jump and set from the node; returns chains + sets removed."""
    for table, chain, rule in r.JUMPS:
        await kernel.delete_rule(table, chain, rule)
    chains = sorted(c for c in await kernel.filter_chains() if c.startswith(r.CHAIN_PREFIXES))
    if chains:
        text = "*filter\n" + "".join(f":{c} - [0:0]\n" for c in chains) + "".join(f"-X {c}\n" for c in chains) + "COMMIT\n"
        await kernel.iptables_restore(text)
    sets = sorted(s for s in await kernel.ipset_names() if s.startswith(r.set_prefixes(kernel.family)))
    for s in sets:
        await kernel.ipset_destroy(s)
    return len(chains) + len(sets)
