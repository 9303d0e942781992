"""The iptables side effect: one protocol, a real runner, backend detection.

:class:`Iptables` is everything the daemon asks of the kernel's rules; the
real :class:`IptablesRunner` and :class:`podnet.proxy.testing.FakeIptables`
both implement it. The runner execs the backend's binaries directly
(``iptables-nft-restore`` or ``iptables-legacy-restore``, never both), with
``--wait`` so it queues behind other xtables users instead of failing.

Concurrency: all writers in the process share one asyncio lock, so two
restores (or a restore and an ensure) never overlap; a restore is atomic
per table, so a failed restore leaves the kernel's previous rules in place.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, Sequence

from podnet.host.tools import run_tool
from podnet.proxy.feeder import stream_to_child

log = logging.getLogger("podnet.proxy")

_WRITE_LOCK = asyncio.Lock()


class RestoreError(RuntimeError):
    """iptables-restore failed; ``line`` is the 1-based failing line when known."""

    def __init__(self, message: str, text: str, line: int | None) -> None:
        super().__init__(message)
        self.text = text
        self.line = line

    def context(self, around: int = 2) -> str:
        """The offending lines of the restore input, numbered."""
        lines = self.text.splitlines()
        if self.line is None or not lines:
            return "\n".join(lines[:3])
        lo, hi = max(0, self.line - 1 - around), min(len(lines), self.line + around)
        return "\n".join(f"{i + 1:>6} {lines[i]}" for i in range(lo, hi))


@dataclass(frozen=True)
class Saved:
    """What a full sync needs from ``iptables-save``: chains, and jumps from built-in chains."""

    chains: dict[str, set[str]]
    jumps: set[tuple[str, str, str]]
    """(table, built-in chain, target chain) for every ``-j PODNET-*`` rule in a built-in chain."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """table -> chain -> number of rules, for every chain that has rules."""


BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


def parse_save(text: str) -> Saved:
    chains: dict[str, set[str]] = {}
    jumps: set[tuple[str, str, str]] = set()
    counts: dict[str, dict[str, int]] = {}
    table = ""
    per: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains.setdefault(table, set())
            per = counts.setdefault(table, {})
        elif line.startswith(":"):
            chains.setdefault(table, set()).add(line[1:].split()[0])
        elif line.startswith("-A "):
            chain = line[3:].split(" ", 1)[0]
            per[chain] = per.get(chain, 0) + 1
            if " -j PODNET-" in line and chain in BUILTIN_CHAINS:
                jumps.add((table, chain, line.rsplit(" -j ", 1)[1].split()[0]))
    return Saved(chains, jumps, counts)


def jump_target(rule: str) -> str | None:
    """The chain or target a rule jumps or goes to (``-j``/``-g``), None when it has none."""
    toks = rule.split()
    for flag in ("-j", "-g"):
        if flag in toks:
            i = toks.index(flag)
            if i + 1 < len(toks):
                return toks[i + 1]
    return None


def drift(applied: dict[str, dict[str, tuple[str, ...]]], saved: Saved,
          jumps: tuple[tuple[str, str, str], ...]) -> list[tuple[str, str, str]]:
    """How the kernel differs from what podnet applied: (table, kind, chain) for every
    applied chain that is missing ('chain-missing') or holds another number of rules
    ('rules-changed': a flush, a deleted or an added rule), and every jump from a
    built-in chain that is gone ('jump-missing'). Pure; empty when nothing drifted."""
    out: list[tuple[str, str, str]] = []
    for table, chains in applied.items():
        present = saved.chains.get(table, set())
        counts = saved.counts.get(table, {})
        for chain, rules in chains.items():
            if chain not in present:
                out.append((table, "chain-missing", chain))
            elif counts.get(chain, 0) != len(rules):
                out.append((table, "rules-changed", chain))
    for table, chain, rule in jumps:
        target = jump_target(rule)
        if table in applied and (table, chain, target) not in saved.jumps:
            out.append((table, "jump-missing", f"{chain} -> {target}"))
    return out


class Iptables(Protocol):
    family: int

    async def restore(self, text: str) -> None: ...
    async def restore_stream(self, chunks: AsyncIterator[str]) -> None: ...
    async def save(self) -> str: ...
    async def ensure_jump(self, table: str, chain: str, rule: str) -> bool: ...
    async def delete_jump(self, table: str, chain: str, rule: str) -> None: ...
    async def chains(self, table: str) -> set[str]: ...
    async def has_chain(self, table: str, chain: str) -> bool: ...
    async def chain_rules(self, table: str, chain: str) -> list[str] | None: ...


class IptablesRunner:
    """Real iptables for one family and backend; ``prefix`` e.g. ['ip','netns','exec',NS]."""

    def __init__(self, family: int = 4, mode: str = "nft", prefix: Sequence[str] = ()) -> None:
        self.family = family
        self.mode = mode
        self.prefix = list(prefix)
        base = "iptables" if family == 4 else "ip6tables"
        self._iptables = f"{base}-{mode}"
        self._restore = f"{base}-{mode}-restore"
        self._save = f"{base}-{mode}-save"

    async def restore(self, text: str) -> None:
        async with _WRITE_LOCK:
            rc, _, err = await run_tool([*self.prefix, self._restore, "--noflush", "--wait"], stdin=text)
        if rc != 0:
            m = re.search(r"line:? (\d+)", err)
            raise RestoreError(f"{self._restore}: exit {rc}: {err.strip()[:500]}", text, int(m.group(1)) if m else None)

    async def restore_stream(self, chunks: AsyncIterator[str]) -> None:
        """Like :meth:`restore`, but the text is written while it is still being
        produced, so computing rules (this process) and parsing them
        (iptables-restore) overlap on two cores. Still one atomic restore.

        Writes make the producer wait only once it is ``RUN_AHEAD`` (4 MiB)
        ahead (:class:`PipeFeeder`: the loop's pipe transport over an enlarged
        pipe), so iptables-restore has input queued whenever the producer
        computes, and memory stays bounded. If the
        producer raises, the child is killed before it reads end-of-file, so a
        half-written input is never committed.
        """
        async with _WRITE_LOCK:
            rc, err, sent = await stream_to_child([*self.prefix, self._restore, "--noflush", "--wait"], chunks,
                                                  "iptables-restore")
        if rc != 0:
            m = re.search(r"line:? (\d+)", err)
            text = sent.decode(errors="replace")
            raise RestoreError(f"{self._restore}: exit {rc}: {err.strip()[:500]}", text, int(m.group(1)) if m else None)

    async def save(self) -> str:
        rc, out, _ = await run_tool([*self.prefix, self._save])
        return out if rc == 0 else ""

    async def _iptables_cmd(self, *args: str) -> tuple[int, str, str]:
        return await run_tool([*self.prefix, self._iptables, "--wait", *args], timeout=60)

    async def ensure_jump(self, table: str, chain: str, rule: str) -> bool:
        import shlex

        args = shlex.split(rule)
        rc, _, _ = await self._iptables_cmd("-t", table, "-C", chain, *args)
        if rc == 0:
            return False
        async with _WRITE_LOCK:
            rc, _, err = await self._iptables_cmd("-t", table, "-I", chain, "1", *args)
        if rc != 0:
            raise RestoreError(f"{self._iptables} -I {chain}: {err.strip()}", rule, None)
        return True

    async def delete_jump(self, table: str, chain: str, rule: str) -> None:
        import shlex

        args = shlex.split(rule)
        async with _WRITE_LOCK:
            for _ in range(100):
                rc, _, _ = await self._iptables_cmd("-t", table, "-D", chain, *args)
                if rc != 0:
                    break

    async def chains(self, table: str) -> set[str]:
        rc, out, _ = await run_tool([*self.prefix, self._save, "-t", table])
        if rc != 0:
            return set()
        return {ln[1:].split()[0] for ln in out.splitlines() if ln.startswith(":")}

    async def has_chain(self, table: str, chain: str) -> bool:
        rc, _, _ = await self._iptables_cmd("-t", table, "-S", chain)
        return rc == 0

    async def chain_rules(self, table: str, chain: str) -> list[str] | None:
        """The rules of one chain as ``-S`` prints them (after ``-A CHAIN``); None when it is missing."""
        rc, out, _ = await self._iptables_cmd("-t", table, "-S", chain)
        if rc != 0:
            return None
        prefix = f"-A {chain} "
        return [ln[len(prefix):] for ln in out.splitlines() if ln.startswith(prefix)]

