"""The proxy's fakes and builders, shared by its tests, benchmarks and labs (product code never imports this).

* Builders: :func:`svc`, :func:`ep`, :func:`slice_` (through podnet.kube's real parsers), :func:`ctx`,
  and :func:`program` (rules rendered into a :class:`FakeIptables` plus a :class:`~podnet.proxy.trace.Tracer`).
* :class:`FakeIptables` implements :class:`podnet.proxy.iptables.Iptables` (``iptables-restore --noflush``
  semantics); :class:`FakeNft` implements :class:`podnet.proxy.nft_run.Nft`; :class:`FakeConntrack`
  implements :class:`podnet.proxy.conntrack.Conntrack`. The informer and clock fakes are
  :mod:`podnet.kube.testing`'s.

Pure apart from building in-memory objects; nothing here touches the kernel.
"""

from __future__ import annotations

import copy
import itertools
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

from podnet.kube.objects import parse_endpoint_slice, parse_service
from podnet.proxy.conntrack import Flow
from podnet.proxy.iptables import RestoreError, jump_target
from podnet.proxy.nft_run import Census, NftError
from podnet.proxy.render import render_full
from podnet.proxy.rules import JUMPS, NodeContext
from podnet.proxy.snapshot import build
from podnet.proxy.trace import Tracer

NODE = "node-a"
NODE_IP = "192.168.0.2"
CLUSTER_CIDR = "10.0.0.0/16"
_names = itertools.count()


def svc(name: str = "svc", ns: str = "ns", cluster_ip: str = "172.30.0.41", ports=((80, "TCP", "p80"),),
        annotations: dict[str, str] | None = None, **spec: Any):
    """A Service; ``ports`` entries are (port, protocol, name[, nodePort])."""
    raw_ports = []
    for p in ports:
        d = {"port": p[0], "protocol": p[1], "name": p[2], "targetPort": p[0]}
        if len(p) > 3:
            d["nodePort"] = p[3]
        raw_ports.append(d)
    status = spec.pop("status", {})
    ips = cluster_ip if isinstance(cluster_ip, (list, tuple)) else [cluster_ip]
    return parse_service(
        {
            "metadata": {"name": name, "namespace": ns, **({"annotations": annotations} if annotations else {})},
            "spec": {"clusterIPs": list(ips), "ports": raw_ports, **spec},
            "status": status,
        }
    )


def ep(ip: str, node: str = "node-b", ready: bool = True, serving: bool | None = None, terminating: bool = False,
       zones: tuple[str, ...] | None = None):
    """One raw endpoint; ``zones`` become hints.forZones (None: no hints field at all)."""
    cond = {"ready": ready, "terminating": terminating}
    if serving is not None:
        cond["serving"] = serving
    raw: dict[str, Any] = {"addresses": [ip], "nodeName": node, "conditions": cond}
    if zones is not None:
        raw["hints"] = {"forZones": [{"name": z} for z in zones]}
    return raw


def slice_(service: str = "svc", ns: str = "ns", endpoints=(), ports=((80, "TCP", "p80"),), family: str = "IPv4", name: str | None = None):
    return parse_endpoint_slice(
        {
            "metadata": {
                "name": name or f"{service}-{next(_names)}",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": family,
            "endpoints": list(endpoints),
            "ports": [{"port": p[0], "protocol": p[1], "name": p[2]} for p in ports],
        }
    )


def ctx(**kw: Any) -> NodeContext:
    base = dict(family=4, cluster_cidrs=(CLUSTER_CIDR,), node_ips=(NODE_IP,))
    base.update(kw)
    return NodeContext(**base)


def program(services, slices, context: NodeContext | None = None, node: str = NODE) -> tuple[FakeIptables, Tracer, str]:
    context = context or ctx()
    fake = FakeIptables(context.family)
    tables = build(services, slices, context, node)
    text = render_full(tables)
    fake.tables = FakeIptables.parse(text, fake.tables)
    for table, chain, rule in JUMPS:
        fake.tables[table][chain].insert(0, rule)
    return fake, Tracer(fake.tables, context.node_ips), text


# ---------------------------------------------------------------------------------------------- iptables
# An in-memory iptables for one IP family, fed with real restore text, following
# ``iptables-restore --noflush`` closely enough to catch podnet's own mistakes: a restore is
# all-or-nothing (parsed and applied to a copy, swapped in at the end); ``:CHAIN`` creates or
# flushes; ``-A`` to a missing chain, a jump to a missing chain and ``-X`` of a chain that is
# referenced or not empty all fail with the line number, like the real tool. The parsed state
# (``tables``) is what trace.py walks.

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}
TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "MARK", "LOG"}



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


# ---------------------------------------------------------------------------------------------- nft
_DECL = re.compile(r"\s+(?:chain|map|set) (\S+) \{")
_ELEM = re.compile(r"(add|delete) element \S+ \S+ (\S+) \{ (.*) \}")


class FakeNft:
    """In-memory :class:`podnet.proxy.nft_run.Nft`: interprets the subset of nft syntax podnet writes (table
    add/delete and declaration, chain add/flush/delete, rules in chain blocks or ``add rule``, element
    add/delete) into ``chains`` and ``elements``; :meth:`flush_chain` and :meth:`delete_table` simulate
    foreign changes."""

    def __init__(self, family: int = 4, fail_next: int = 0) -> None:
        self.family = family
        self.texts: list[str] = []
        self.exists = False
        self.chains: dict[str, list[str]] = {}
        self.elements: dict[str, set[str]] = {}
        self.sets: set[str] = set()
        """Names in ``elements`` that are sets (the others are maps)."""
        self.fail_next = fail_next
        self.generation = 0
        """Bumped by every applied text and every simulated foreign change, as the kernel's ruleset generation."""

    async def apply(self, text: str) -> None:
        self.texts.append(text)
        if self.fail_next:
            self.fail_next -= 1
            raise NftError("fake failure", text)
        self.generation += 1
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

    async def apply_stream(self, chunks) -> None:
        await self.apply("".join([c async for c in chunks]))

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        if not self.exists:
            return set(), set()
        return set(self.chains), {n for n in self.elements if n in self.sets}

    async def census(self, table: str, known_gen: int | None, sets: list[str], chains: list[str],
                     digest: frozenset[str] = frozenset()) -> Census:
        if known_gen == self.generation:
            return Census(self.generation)
        digests = {c: "\n".join(self.chains[c]) if self.exists and c in self.chains else "" for c in chains if c in digest}
        if not self.exists:
            return Census(self.generation, {c: 0 for c in chains}, {s: None for s in sets}, digests)
        return Census(self.generation, {c: len(self.chains.get(c, ())) for c in chains},
                      {s: len(self.elements[s]) if s in self.elements else None for s in sets}, digests)

    # -- foreign changes
    def delete_table(self) -> None:
        self.generation += 1
        self.exists = False
        self.chains.clear()
        self.elements.clear()
        self.sets.clear()

    def flush_chain(self, chain: str) -> None:
        self.generation += 1
        self.chains[chain] = []

    def replace_rule(self, chain: str, index: int, rule: str) -> None:
        """One rule replaced by another: every count stays."""
        self.generation += 1
        self.chains[chain][index] = rule


# ---------------------------------------------------------------------------------------------- conntrack
@dataclass
class FakeConntrack:
    """In-memory :class:`podnet.proxy.conntrack.Conntrack`: UDP flows per family."""

    flows: dict[int, list[Flow]] = field(default_factory=lambda: {4: [], 6: []})

    async def list_udp(self, family: int) -> list[Flow]:
        return list(self.flows[family])

    async def delete(self, family: int, flows: Sequence[Flow]) -> int:
        gone = set(flows)
        before = len(self.flows[family])
        self.flows[family] = [f for f in self.flows[family] if f not in gone]
        return before - len(self.flows[family])
