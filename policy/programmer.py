"""Applying rendered state to one node and family, in the order that never opens a gap.

One :meth:`Programmer.apply`:

1. every set whose contents changed (or that the kernel may lack) is written by one
   ``ipset restore``: created if missing, filled through its temporary twin and
   swapped in, so a set is never seen half-filled; except a ``hash:ip`` set this
   programmer last wrote, whose changed members are deleted, then added, over
   netlink (no exec: a peer pod's new address is one deletion and one addition);
2. when the chain text differs from what was applied, one ``iptables-restore
   --noflush`` rewrites our chains (and deletes stale ones) atomically: after a
   resync all of them, otherwise only the chains whose rules changed (with
   ``--noflush`` a chain the text does not declare keeps its rules);
3. on the first apply and every resync, the jumps from FORWARD and INPUT are ensured at
   position 1 (a foreign flush of FORWARD is repaired by the periodic resync);
4. only then are sets no rule references any more destroyed, and pending pods released.

:meth:`Programmer.prepare` (step 1) and :meth:`Programmer.commit` (steps 2-4) split an apply
for the CNI handshake: between them, the new pods it names sit in the pending sets
(:func:`podnet.policy.render.pending_sets`: dropped in the judged directions), so the handshake
can answer before the ``iptables-restore`` exec, with each new pod isolated, and its allow
rules follow. A failed commit leaves them pending (isolated) until a later apply writes
their chains.

When only the members of some pod address sets changed (the verdicts' shape is as
last applied), :meth:`Programmer.apply_members` writes just those members, without
rendering or touching a chain.

A failure at any step raises and leaves the previous rules in force; the
next apply starts from what the kernel holds (``resync``) instead of trusting
the memory of what was applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping

from podnet.policy import render as r
from podnet.policy.kernel import Kernel
from podnet.policy.model import AddressSet, PodVerdict

__all__ = ["Programmer", "Applied", "Staged", "cleanup"]

log = logging.getLogger("podnet.policy")


@dataclass(frozen=True, slots=True)
class Applied:
    rules: int
    sets_written: int
    chains_written: bool
    sets_destroyed: int


@dataclass(frozen=True, slots=True)
class Staged:
    """An apply between :meth:`Programmer.prepare` and :meth:`Programmer.commit`."""

    verdicts: Mapping[str, PodVerdict]
    out: r.Rendered
    stale_chains: tuple[str, ...]
    kernel_sets: set[str]
    sets_written: int
    write: bool
    """Whether the chain text differs from the kernel's."""
    isolated: bool
    """Whether every pod waiting for its chains is isolated now (False after a resync: whether the
    dispatch chain holding the pending-set rules is in force is not known until the commit)."""


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
        self._rule_count = 0
        self._pending: set[tuple[str, str]] = set()
        """(pending set, address) entries in the kernel, removed once the chains are written."""
        self.chain_pods: dict[str, str] = {}
        """Pod chain -> pod key, as of the last apply."""

    async def _resync(self) -> tuple[set[str], set[str]]:
        chains = {c for c in await self.kernel.filter_chains() if c.startswith(r.CHAIN_PREFIXES)}
        sets = {s for s in await self.kernel.ipset_names() if s.startswith(r.set_prefixes(self.family))}
        self._sets, self._text, self._rules = {}, None, None
        return chains, sets

    async def apply(self, verdicts: Mapping[str, PodVerdict]) -> Applied:
        return await self.commit(await self.prepare(verdicts))

    async def prepare(self, verdicts: Mapping[str, PodVerdict], pend: Collection[str] = ()) -> "Staged":
        """Step 1 of an apply (the sets), and the pods of ``pend`` whose dispatch rules this apply
        adds put in the pending sets: when it returns with ``isolated``, each such pod is isolated
        in the kernel in the directions its verdict judges, and its allow rules follow with
        :meth:`commit`."""
        kernel_chains: set[str] = set()
        kernel_sets: set[str] = set()
        try:
            resync = self._need_resync
            if resync:
                kernel_chains, kernel_sets = await self._resync()
            stale_chains = tuple(sorted(set(self._chains) | kernel_chains))
            out = r.render(verdicts, self.family, stale_chains, self.log_denied)
            changed = [s for name, s in sorted(out.sets.items()) if self._sets.get(name) != s]
            # after a resync, the pending sets hold exactly the pods still waiting for their rules
            pending = [r.SetSpec(name, "hash:ip", self.family, tuple(sorted(ip for n, ip in self._pending if n == name)))
                       for name in r.pending_sets(self.family)] if resync else []
            await self._write_sets(changed, pending)
            write = out.iptables != self._text or resync
            pended = self._pend(verdicts, pend) if write else []
            if pended:
                await self.kernel.ipset_update([], pended)
                self._pending.update(pended)
        except Exception:
            self._need_resync = True
            raise
        return Staged(verdicts, out, stale_chains, kernel_sets, len(changed), write, not (resync and pended))

    def _pend(self, verdicts: Mapping[str, PodVerdict], keys: Collection[str]) -> list[tuple[str, str]]:
        """(pending set, address) for each pod of ``keys`` whose dispatch rule the kernel lacks."""
        pend_i, pend_e = r.pending_sets(self.family)
        suffix = "/128" if self.family == 6 else "/32"
        dispatch = set(self._rules.get(r.FORWARD, ())) if self._rules is not None else set()
        out = []
        for key in keys:
            v = verdicts.get(key)
            if v is None:
                continue
            ich, ech = r.pod_chains(key)
            for ip in v.ips:
                if (":" in ip) != (self.family == 6):
                    continue
                if v.judges_ingress and f"-A {r.FORWARD} -d {ip}{suffix} -j {ich}" not in dispatch:
                    out.append((pend_i, ip))
                if v.judges_egress and f"-A {r.FORWARD} -s {ip}{suffix} -j {ech}" not in dispatch:
                    out.append((pend_e, ip))
        return [e for e in out if e not in self._pending]

    async def commit(self, staged: "Staged") -> Applied:
        """Steps 2-4 of an apply: chains, jumps, unused sets; then no pod is pending any more."""
        out, verdicts, stale_chains = staged.out, staged.verdicts, staged.stale_chains
        try:
            wrote = False
            if staged.write:
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
            gone = sorted((set(self._sets) | staged.kernel_sets) - set(out.sets) - set(r.pending_sets(self.family)))
            for name in gone:
                await self.kernel.ipset_destroy(name)
                self._sets.pop(name, None)
            if self._pending:
                await self.kernel.ipset_update(sorted(self._pending), [])
                self._pending.clear()
        except Exception:
            self._need_resync = True
            raise
        self._need_resync = False
        self._rule_count = out.rules
        return Applied(out.rules, staged.sets_written, wrote, len(gone))

    async def apply_members(self, sets: Iterable[AddressSet]) -> Applied | None:
        """Write new members of pod address sets that the last apply's rules already name (the rules
        themselves unchanged); None, writing nothing, when that is not the case here (a set this
        programmer has not written, or the kernel state is unknown): call :meth:`apply` instead."""
        if self._need_resync or self._text is None or self._pending:
            return None
        specs = [s for s in (r.address_set_spec(a, self.family) for a in sets) if s is not None]
        if any(s.name not in self._sets for s in specs):
            return None
        changed = [s for s in specs if self._sets[s.name] != s]
        try:
            await self._write_sets(changed)
        except Exception:
            self._need_resync = True
            raise
        return Applied(self._rule_count, len(changed), False, 0)

    async def _write_sets(self, changed: list[r.SetSpec], whole: list[r.SetSpec] | None = None) -> None:
        """``changed`` sets into the kernel (member deltas where possible) and ``whole`` swapped in as they are."""
        swapped, dels, adds = _set_changes(self._sets, changed)
        lines: list[str] = []
        for s in (whole or []) + swapped:
            lines += s.restore_lines()
        if lines:
            await self.kernel.ipset_restore("\n".join(lines) + "\n")
        if dels or adds:
            await self.kernel.ipset_update(dels, adds)
        for s in changed:
            self._sets[s.name] = s

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


def _set_changes(known: Mapping[str, r.SetSpec], changed: list[r.SetSpec]) -> tuple[
        list[r.SetSpec], list[tuple[str, str]], list[tuple[str, str]]]:
    """(sets to write whole, (set, member) deletions, (set, member) additions): member deltas for
    the ``hash:ip`` sets whose previous contents are ``known``, whole sets for the rest."""
    swapped: list[r.SetSpec] = []
    dels: list[tuple[str, str]] = []
    adds: list[tuple[str, str]] = []
    for s in changed:
        old = known.get(s.name)
        if old is None or s.kind != "hash:ip" or old.kind != s.kind or old.family != s.family:
            swapped.append(s)
            continue
        was, now = set(old.members), set(s.members)
        dels += [(s.name, m) for m in sorted(was - now)]
        adds += [(s.name, m) for m in sorted(now - was)]
    return swapped, dels, adds


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
