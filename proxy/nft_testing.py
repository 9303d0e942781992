"""In-memory fake of :class:`podnet.proxy.nft_run.Nft` for tests (never imported by product code).

It interprets the subset of nft syntax podnet writes (table add/delete and
declaration, chain add/flush/delete, rules in chain blocks or ``add rule``,
element add/delete) into
``chains`` and ``elements``, so tests can look at the resulting table and
simulate foreign changes (:meth:`flush_chain`, :meth:`delete_table`).
"""

from __future__ import annotations

import re

from podnet.proxy.nft_run import NftError

_DECL = re.compile(r"\s+(?:chain|map|set) (\S+) \{")
_ELEM = re.compile(r"(add|delete) element \S+ \S+ (\S+) \{ (.*) \}")


class FakeNft:
    def __init__(self, family: int = 4, fail_next: int = 0) -> None:
        self.family = family
        self.texts: list[str] = []
        self.exists = False
        self.chains: dict[str, list[str]] = {}
        self.elements: dict[str, set[str]] = {}
        self.sets: set[str] = set()
        """Names in ``elements`` that are sets (the others are maps)."""
        self.fail_next = fail_next

    async def apply(self, text: str) -> None:
        self.texts.append(text)
        if self.fail_next:
            self.fail_next -= 1
            raise NftError("fake failure", text)
        current: str | None = None
        for line in text.splitlines():
            words = line.split()
            if not words:
                continue
            if current is not None:
                if line.strip() == "}":
                    current = None
                else:
                    self.chains[current].append(line.strip())
                continue
            if (m := _DECL.match(line)) and line.startswith("  chain ") and line.endswith("{"):
                if m.group(1) not in self.chains:
                    raise NftError(f"no chain {m.group(1)}", text)
                current = m.group(1)
                continue
            if line.startswith("add table"):
                self.exists = True
            elif line.startswith("delete table"):
                self.delete_table()
            elif line.startswith("table "):
                self.exists = True
            elif m := _DECL.match(line):
                if " chain " in line:
                    self.chains.setdefault(m.group(1), [])
                else:
                    self.elements.setdefault(m.group(1), set())
                    if " set " in line:
                        self.sets.add(m.group(1))
            elif words[:2] == ["add", "chain"]:
                self.chains.setdefault(words[4], [])
            elif words[:2] == ["add", "set"]:
                self.elements.setdefault(words[4], set())
                self.sets.add(words[4])
            elif words[:2] == ["flush", "table"]:
                for c in self.chains:
                    self.chains[c] = []
            elif words[:2] in (["flush", "map"], ["flush", "set"]):
                self.elements[words[4]] = set()
            elif words[:2] == ["flush", "chain"]:
                self.chains[words[4]] = []
            elif words[:2] == ["delete", "chain"]:
                self.chains.pop(words[4])
            elif words[:2] == ["delete", "set"]:
                self.elements.pop(words[4])
                self.sets.discard(words[4])
            elif words[:2] == ["add", "rule"]:
                if words[4] not in self.chains:
                    raise NftError(f"no chain {words[4]}", text)
                self.chains[words[4]].append(" ".join(words[5:]))
            elif m := _ELEM.match(line):
                items = set(m.group(3).split(", "))
                target = self.elements.setdefault(m.group(2), set())
                if m.group(1) == "add":
                    target |= items
                else:
                    keys = {i.split(" : ")[0] for i in items}
                    target -= {i for i in target if i.split(" : ")[0] in keys}
            elif line.strip() != "}":
                raise NftError(f"fake nft does not understand {line!r}", text)

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        if not self.exists:
            return set(), set()
        return set(self.chains), {n for n in self.elements if n in self.sets}

    async def count_rules(self, table: str, chains: list[str]) -> dict[str, int]:
        return {c: len(self.chains.get(c, ())) if self.exists else 0 for c in chains}

    # -- foreign changes
    def delete_table(self) -> None:
        self.exists = False
        self.chains.clear()
        self.elements.clear()
        self.sets.clear()

    def flush_chain(self, chain: str) -> None:
        self.chains[chain] = []
