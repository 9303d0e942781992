"""Deterministic iptables-restore text, and the per-chain diff behind partial syncs.

Pure. :func:`plan` compares the desired tables with what podnet last
applied: a full sync writes every chain; a partial sync writes only chains
whose rules changed. Either way chains that are no longer wanted are flushed
and deleted (``-X``) in the same transaction. :func:`render` emits the text
for ``iptables-restore --noflush``: declaring ``:CHAIN - [0:0]`` flushes
(or creates) exactly that chain, chains not named are left alone, so one
restore is one atomic swap of exactly the chains podnet touches. Output
order is fixed (tables, then chains by name, rules in order), so equal
inputs give byte-identical text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podnet.proxy import names
from podnet.proxy.rules import TABLE_ORDER, Tables


@dataclass(frozen=True)
class Plan:
    write: dict[str, list[str]] = field(default_factory=dict)
    delete: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.write.values()) and not any(self.delete.values())

    def rule_count(self, desired: Tables) -> int:
        return sum(len(desired[t][c]) for t, chains in self.write.items() for c in chains)


def plan(desired: Tables, applied: Tables | None, full: bool, existing: dict[str, set[str]] | None = None) -> Plan:
    """What to write and delete; ``existing``: podnet chains found in the kernel (full syncs)."""
    write: dict[str, list[str]] = {}
    delete: dict[str, list[str]] = {}
    applied = applied or {}
    for table in TABLE_ORDER:
        want = desired.get(table, {})
        had = applied.get(table, {})
        if full:
            write[table] = sorted(want)
        elif want is had:
            write[table] = []
        else:
            write[table] = sorted(c for c, rules in want.items() if (was := had.get(c)) is not rules and was != rules)
        stale = (had.keys() | (existing or {}).get(table, set())) - want.keys()
        delete[table] = sorted(c for c in stale if names.is_ours(c))
    return Plan(write, delete)


def render_chains(chains: dict[str, tuple[str, ...]]) -> str:
    """Declarations (which create or flush), then rules, for some chains of one table."""
    out = [f":{c} - [0:0]" for c in chains]
    for c, rules in chains.items():
        prefix = f"-A {c} "
        out.extend(prefix + r for r in rules)
    out.append("")
    return "\n".join(out) if len(out) > 1 else ""


def render_rules(chains: dict[str, tuple[str, ...]]) -> str:
    """Only the ``-A`` lines of some chains (already declared)."""
    out = [f"-A {c} {r}\n" for c, rules in chains.items() for r in rules]
    return "".join(out)


def render(desired: Tables, p: Plan) -> str:
    out: list[str] = []
    for table in TABLE_ORDER:
        write, delete = p.write.get(table, []), p.delete.get(table, [])
        if not write and not delete:
            continue
        chains = desired.get(table, {})
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for c in write)
        out.extend(f":{c} - [0:0]" for c in delete)
        for c in write:
            prefix = f"-A {c} "
            out.extend(prefix + r for r in chains[c])
        out.extend(f"-X {c}" for c in delete)
        out.append("COMMIT")
    out.append("")
    return "\n".join(out)


def render_full(desired: Tables) -> str:
    """The whole desired state as one restore (golden tests, benchmarks)."""
    return render(desired, plan(desired, None, full=True))


def restore_outcome(text: str, line: int | None) -> tuple[list[str], str | None, list[str]]:
    """Which tables of a failed ``iptables-restore`` input were committed.

    iptables-restore commits each table at its ``COMMIT`` line, so when line
    ``line`` (1-based, as the tool reports it) fails, every table whose COMMIT
    came before it is in the kernel, the table holding ``line`` (its COMMIT
    included) is not, and neither is any later one. Returns (committed,
    failed table, not applied); with ``line`` unknown, (['?'], None, []).
    """
    if line is None:
        return ["?"], None, []
    committed: list[str] = []
    failed: str | None = None
    later: list[str] = []
    table = None
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.startswith("*"):
            table = ln[1:].strip()
            if failed is not None:
                later.append(table)
        elif ln.strip() == "COMMIT" and table is not None and i < line and failed is None:
            committed.append(table)
        if i == line and failed is None:
            failed = table or "?"
    if failed is None:
        return ["?"], None, []
    return committed, failed, later


def failing_chain(text: str, line: int | None) -> str | None:
    """The chain that line ``line`` of a restore input writes (``:C``, ``-A C``, ``-I C``,
    ``-X C``), or None (unknown line, ``COMMIT``, a table header)."""
    if line is None:
        return None
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    ln = lines[line - 1]
    if ln.startswith(":"):
        return ln[1:].split(" ", 1)[0]
    op, _, rest = ln.partition(" ")
    if op in ("-A", "-I", "-X") and rest:
        return rest.split(" ", 1)[0]
    return None
