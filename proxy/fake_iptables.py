"""An in-memory iptables for one IP family, fed with real restore text.

It implements the same :class:`podnet.proxy.iptables.Iptables` protocol as
the real runner and follows ``iptables-restore --noflush`` semantics closely
enough to catch podnet's own mistakes: a restore is all-or-nothing (parsed
and applied to a copy, swapped in at the end); ``:CHAIN`` creates or flushes;
``-A`` to a missing chain, a jump to a missing chain and ``-X`` of a chain
that is referenced or not empty all fail with the line number, like the
real tool. The parsed state (``tables``) is what trace.py walks.
"""

from __future__ import annotations

import copy
import shlex

from podnet.proxy.iptables import RestoreError

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}
TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "MARK", "LOG"}


def jump_target(rule: str) -> str | None:
    toks = rule.split()
    for flag in ("-j", "-g"):
        if flag in toks:
            i = toks.index(flag)
            if i + 1 < len(toks):
                return toks[i + 1]
    return None


class FakeIptables:
    """Tables as ``{table: {chain: [rule text]}}``; built-in chains always exist."""

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self.tables: dict[str, dict[str, list[str]]] = {t: {c: [] for c in cs} for t, cs in BUILTIN.items()}
        self.restores: list[str] = []
        self.fail_next: str | None = None
        """When set, the next restore fails with this message (kernel unchanged)."""
        self.fail_table: str | None = None
        """While set, every restore that writes this table fails at that table's COMMIT line, as
        iptables-restore does: tables committed earlier in the same input stay applied."""

    # -- Iptables protocol
    async def restore(self, text: str) -> None:
        if self.fail_next is not None:
            msg, self.fail_next = self.fail_next, None
            raise RestoreError(msg, text, None)
        if self.fail_table is not None and f"*{self.fail_table}\n" in text:
            lines = text.splitlines()
            start = lines.index(f"*{self.fail_table}")
            commit = lines.index("COMMIT", start)
            self.tables = self.parse("\n".join(lines[:start]) + "\n", self.tables)
            raise RestoreError(f"iptables-restore: line {commit + 1} failed", text, commit + 1)
        self.tables = self.parse(text, self.tables)
        self.restores.append(text)

    async def restore_stream(self, chunks) -> None:
        await self.restore("".join([c async for c in chunks]))

    async def save(self) -> str:
        out = []
        for table, chains in self.tables.items():
            out.append(f"*{table}")
            out += [f":{c} {'ACCEPT' if c in BUILTIN.get(table, ()) else '-'} [0:0]" for c in chains]
            out += [f"-A {c} {r}" for c, rules in chains.items() for r in rules]
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    async def ensure_jump(self, table: str, chain: str, rule: str) -> bool:
        rules = self.tables[table][chain]
        if rule in rules:
            return False
        target = jump_target(rule)
        if target and target not in TARGETS and target not in self.tables[table]:
            raise RestoreError(f"jump to missing chain {target}", rule, None)
        rules.insert(0, rule)
        return True

    async def delete_jump(self, table: str, chain: str, rule: str) -> None:
        rules = self.tables[table][chain]
        while rule in rules:
            rules.remove(rule)

    async def chains(self, table: str) -> set[str]:
        return set(self.tables.get(table, {}))

    async def has_chain(self, table: str, chain: str) -> bool:
        return chain in self.tables.get(table, {})

    async def chain_rules(self, table: str, chain: str) -> list[str] | None:
        rules = self.tables.get(table, {}).get(chain)
        return None if rules is None else list(rules)

    # -- test helpers
    def flush_table(self, table: str) -> None:
        """What a firewall reload does: every rule and user chain gone."""
        self.tables[table] = {c: [] for c in BUILTIN[table]}

    def rules(self, table: str, chain: str) -> list[str]:
        return list(self.tables[table].get(chain, []))

    @staticmethod
    def parse(text: str, start: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        state = copy.deepcopy(start)
        table: dict[str, list[str]] | None = None
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("*"):
                    table = state.setdefault(line[1:], {})
                elif line == "COMMIT":
                    table = None
                elif table is None:
                    raise ValueError("rule outside a table")
                elif line.startswith(":"):
                    name = line[1:].split()[0]
                    table[name] = []
                else:
                    _apply(table, line)
            except (ValueError, KeyError, IndexError) as e:
                raise RestoreError(f"line {lineno} failed: {e}", text, lineno) from None
        return state


def _apply(table: dict[str, list[str]], line: str) -> None:
    op, _, rest = line.partition(" ")
    chain, _, rule = rest.partition(" ")
    shlex.split(rule)  # unbalanced quotes fail here, as they do in iptables
    if chain not in table:
        raise ValueError(f"no chain {chain}")
    pos = 1
    if op == "-I" and rule.split(" ", 1)[0].isdigit():
        num, _, rule = rule.partition(" ")
        pos = int(num)
    if op in ("-A", "-I"):
        target = jump_target(rule)
        if target and target not in TARGETS and target not in table:
            raise ValueError(f"jump to missing chain {target}")
        if op == "-A":
            table[chain].append(rule)
        else:
            table[chain].insert(pos - 1, rule)
    elif op == "-X":
        if table[chain]:
            raise ValueError(f"chain {chain} not empty")
        if any(jump_target(r) == chain for rules in table.values() for r in rules):
            raise ValueError(f"chain {chain} still referenced")
        del table[chain]
    elif op == "-F":
        table[chain] = []
    elif op == "-N":
        raise ValueError(f"chain {chain} exists")
    else:
        raise ValueError(f"unsupported {op}")
