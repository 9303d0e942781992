"""A packet tracer over podnet's nftables table, for the same flow tables as trace.py.

Given the table as the kernel would hold it (``chains``: chain -> rule texts,
``elements``: map or set -> element texts ``key`` or ``key : verdict``, as
:class:`podnet.proxy.testing.FakeNft` keeps them) and a
:class:`podnet.proxy.trace.Packet`, :meth:`NftTracer.trace` follows the first
packet of a connection through podnet's base chains in hook and priority
order, the way the kernel does:

* arriving: prerouting (``nat-prerouting``: DNAT), then the routing decision
  on the translated destination picks input (``filter-input``) or forward
  (``filter-forward``), then postrouting (``nat-postrouting``) on the forward
  path;
* sent by the node: output (``filter-output`` at -110 sees the original
  destination, then ``nat-output`` at -100 translates it), then postrouting.

Semantics kept: ``accept`` (and falling off a base chain, policy accept) ends
that base chain only and the packet goes on to the next one; ``drop`` and
``reject`` are final; ``jump`` returns, ``goto`` does not; ``dnat`` and
``masquerade`` end their chain with accept; verdict maps (``vmap @m``) look up
the concatenated key and fall through when it is missing, and a set of such keys (``... th dport @s``)
matches when it holds the key. ``numgen random mod
N == 0`` forks the walk, so the result lists *every* endpoint a connection may
land on; ``ip saddr @aff-*`` matches only sets named in ``Packet.recent`` (the
client's affinity history) and ``update @aff-*`` is reported in
``Result.recent_set``. Connection tracking is that of a first packet: state
new, never established, related or invalid; ``ct status dnat`` once a DNAT
happened. Only the expressions podnet writes are understood; anything else
raises ValueError, so a rule the tracer does not understand cannot silently
pass a test.

The result is a :class:`podnet.proxy.trace.Result`, so one flow table checks
both modes with the same expected outcomes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from podnet.host.addr import split_hostport
from podnet.proxy.nft_rules import BASE_CHAINS
from podnet.proxy.trace import Packet, Result

PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
"""nft's named priorities for the ip and ip6 families."""

_DECL = re.compile(r"type (filter|nat) hook (\w+) priority (-?\d+|[a-z]+) ;")


def hooks(declarations: dict[str, str] = BASE_CHAINS) -> dict[str, list[str]]:
    """hook -> base chains on it, in priority order (lowest first), from their declarations."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name, decl in declarations.items():
        m = _DECL.match(decl)
        if not m:
            raise ValueError(f"tracer does not understand the declaration of {name}: {decl!r}")
        prio = m.group(3)
        out.setdefault(m.group(2), []).append((int(prio) if prio.lstrip("-").isdigit() else PRIORITY_NAMES[prio], name))
    return {hook: [n for _, n in sorted(chains)] for hook, chains in out.items()}


@dataclass
class _State:
    dst: str
    dport: int
    mark: int = 0
    dnat: str | None = None
    masq: bool = False
    recent_set: list[str] = field(default_factory=list)

    def fork(self) -> "_State":
        return _State(self.dst, self.dport, self.mark, self.dnat, self.masq, list(self.recent_set))


Op = tuple
"""One step of a rule: (kind, *args), built by _GRAMMAR (see parse_rule)."""
_FAM = r"(ip6?)"


def _addr_match(neg: bool, value: str) -> Callable[[str], bool]:
    net = ipaddress.ip_network(value, strict=False)
    return lambda a: (ipaddress.ip_address(a) in net) != neg


# (pattern, builder): the builder turns the match into one op. Tried in order at the rule's current position.
_GRAMMAR: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Op]]] = [
    (re.compile(_FAM + r" (saddr|daddr) \. meta l4proto \. th dport vmap @([\w-]+)"), lambda m: ("vmap", m.group(3), m.group(2))),
    (re.compile(r"meta l4proto \. th dport vmap @([\w-]+)"), lambda m: ("vmap", m.group(1), None)),
    (re.compile(_FAM + r" (saddr|daddr) \. meta l4proto \. th dport @([\w-]+)"), lambda m: ("key-set", m.group(3), m.group(2))),
    (re.compile(_FAM + r" saddr \. \1 daddr @([\w-]+)"), lambda m: ("pair", m.group(2))),
    (re.compile(_FAM + r" saddr @([\w-]+)"), lambda m: ("recent", m.group(2))),
    (re.compile(_FAM + r" (saddr|daddr) (!= )?([0-9a-f:.]+(?:/\d+)?)"),
     lambda m: ("addr", m.group(2), _addr_match(bool(m.group(3)), m.group(4)))),
    (re.compile(r"fib (saddr|daddr) type local"), lambda m: ("fib", m.group(1))),
    (re.compile(r"numgen random mod (\d+) == 0"), lambda m: ("fork", int(m.group(1)))),
    (re.compile(r"update @([\w-]+) \{ ip6? saddr \}"), lambda m: ("update", m.group(1))),
    (re.compile(r"meta l4proto (tcp|udp|sctp)"), lambda m: ("proto", m.group(1))),
    (re.compile(r"(tcp|udp|sctp) dport (\d+)"), lambda m: ("dport", m.group(1), int(m.group(2)))),
    (re.compile(r"(tcp|udp|sctp) dport @([\w-]+)"), lambda m: ("dport-set", m.group(1), m.group(2))),
    (re.compile(r"dnat to (\[[0-9a-f:]+\]:\d+|[0-9.]+:\d+)"), lambda m: ("dnat", m.group(1))),
    (re.compile(r"masquerade(?: fully-random)?"), lambda m: ("masquerade",)),
    (re.compile(r"meta mark set meta mark ([|^]) (0x[0-9a-f]+)"), lambda m: ("mark", m.group(1), int(m.group(2), 16))),
    (re.compile(r"meta mark & (0x[0-9a-f]+) (==|!=) (0x[0-9a-f]+|0)"),
     lambda m: ("mark-test", int(m.group(1), 16), m.group(2), int(m.group(3), 0))),
    (re.compile(r"ct state new"), lambda m: ("const", True)),
    (re.compile(r"ct state invalid"), lambda m: ("const", False)),
    (re.compile(r"ct state established,related"), lambda m: ("const", False)),
    (re.compile(r"ct state & \(established \| related\) == 0"), lambda m: ("const", True)),
    (re.compile(r"ct status & dnat == 0"), lambda m: ("no-dnat",)),
    (re.compile(r"(jump|goto) ([\w-]+)"), lambda m: ("verdict", m.group(1), m.group(2))),
    (re.compile(r"(accept|drop|reject|return)"), lambda m: ("verdict", m.group(1), None)),
]


def parse_rule(rule: str) -> list[Op]:
    """The ops of one rule, left to right; ValueError on anything outside the grammar."""
    ops: list[Op] = []
    pos = 0
    while pos < len(rule):
        for pattern, build in _GRAMMAR:
            m = pattern.match(rule, pos)
            if m and (m.end() == len(rule) or rule[m.end()] == " "):
                ops.append(build(m))
                pos = m.end() + 1
                break
        else:
            raise ValueError(f"tracer does not understand {rule[pos:]!r} in {rule!r}")
    return ops


def _parse_verdict(text: str) -> tuple[str, str | None]:
    kind, _, target = text.partition(" ")
    if kind not in ("jump", "goto", "accept", "drop", "reject", "return"):
        raise ValueError(f"tracer does not understand the verdict {text!r}")
    return kind, target or None


class NftTracer:
    """Walks one family's podnet table; ``local_ips`` are the node's addresses (loopback is always local)."""

    def __init__(self, chains: dict[str, list[str]], elements: dict[str, set[str]], local_ips: tuple[str, ...],
                 base_chains: dict[str, str] = BASE_CHAINS) -> None:
        self.rules = {c: [parse_rule(r) for r in rules] for c, rules in chains.items()}
        self.maps: dict[str, dict[str, str]] = {}
        self.sets: dict[str, set[str]] = {}
        for name, items in elements.items():
            for item in items:
                key, sep, verdict = item.partition(" : ")
                if sep:
                    self.maps.setdefault(name, {})[key] = verdict
                else:
                    self.sets.setdefault(name, set()).add(key)
        self.hooks = hooks(base_chains)
        self.local_ips = {ipaddress.ip_address(ip) for ip in local_ips}

    def _is_local(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return a in self.local_ips or a.is_loopback

    def trace(self, pkt: Packet) -> Result:
        outcomes: list[tuple[str, _State]] = []
        start = _State(pkt.dst, pkt.dport)
        if pkt.local_origin:
            for verdict, st in self._hook("output", pkt, start):
                if verdict == "accept":
                    for v2, st2 in self._hook("postrouting", pkt, st):
                        outcomes.append((v2, st2))
                else:
                    outcomes.append((verdict, st))
        else:
            for verdict, st in self._hook("prerouting", pkt, start):
                if verdict != "accept":
                    outcomes.append((verdict, st))
                    continue
                path = "input" if self._is_local(st.dst) else "forward"
                for v2, st2 in self._hook(path, pkt, st):
                    if v2 == "accept" and path == "forward":
                        outcomes.extend(self._hook("postrouting", pkt, st2))
                    else:
                        outcomes.append((v2, st2))
        verdicts = sorted({v.upper() for v, _ in outcomes})
        eps = sorted({s.dnat for v, s in outcomes if s.dnat and v == "accept"})
        masq = any(s.masq for _, s in outcomes)
        recent = sorted({r for _, s in outcomes for r in s.recent_set})
        return Result("|".join(verdicts), tuple(eps), masq, tuple(recent))

    def _hook(self, hook: str, pkt: Packet, st: _State) -> Iterator[tuple[str, _State]]:
        """(accept|drop|reject, state) per branch after every base chain on ``hook``."""
        branches = [st]
        for chain in self.hooks.get(hook, ()):
            if chain not in self.rules:
                continue
            nxt = []
            for b in branches:
                for verdict, b2 in self._rules(chain, 0, pkt, b, 0):
                    if verdict in ("continue", "accept"):
                        nxt.append(b2)
                    else:
                        yield verdict, b2
            branches = nxt
        for b in branches:
            yield "accept", b

    def _rules(self, chain: str, start: int, pkt: Packet, st: _State, depth: int) -> Iterator[tuple[str, _State]]:
        """(verdict, state) per branch; 'continue' means the chain was left by return or by falling off."""
        if depth > 50:
            raise RuntimeError("chain loop")
        rules = self.rules.get(chain)
        if rules is None:
            raise ValueError(f"jump to a missing chain {chain}")
        if start >= len(rules):
            yield "continue", st
            return
        for outcome, st2 in self._ops(rules[start], 0, pkt, st):
            kind, target = outcome
            if kind == "next":
                yield from self._rules(chain, start + 1, pkt, st2, depth)
            elif kind == "return":
                yield "continue", st2
            elif kind == "jump":
                for v, st3 in self._rules(target, 0, pkt, st2, depth + 1):
                    if v == "continue":
                        yield from self._rules(chain, start + 1, pkt, st3, depth)
                    else:
                        yield v, st3
            elif kind == "goto":
                yield from self._rules(target, 0, pkt, st2, depth + 1)
            else:
                yield kind, st2

    def _ops(self, ops: list[Op], i: int, pkt: Packet, st: _State) -> Iterator[tuple[tuple[str, str | None], _State]]:
        """Evaluate ``ops[i:]``: ((kind, chain), state) per branch, kind one of next, return, jump,
        goto, accept, drop, reject."""
        while i < len(ops):
            op = ops[i]
            kind = op[0]
            if kind == "fork":
                yield ("next", None), st.fork()  # not picked: on to the next rule
                st = st.fork()
            elif kind == "verdict":
                yield (op[1], op[2]), st
                return
            elif kind == "vmap":
                key = self._key(op[2], pkt, st)
                verdict = self.maps.get(op[1], {}).get(key)
                if verdict is None:
                    break
                yield _parse_verdict(verdict), st
                return
            elif kind == "dnat":
                st = st.fork()
                st.dnat = op[1]
                st.dst, st.dport = split_hostport(op[1])
                yield ("accept", None), st
                return
            elif kind == "masquerade":
                st = st.fork()
                st.masq = True
                yield ("accept", None), st
                return
            elif kind == "mark":
                st = st.fork()
                st.mark = st.mark | op[2] if op[1] == "|" else st.mark ^ op[2]
            elif kind == "update":
                st = st.fork()
                st.recent_set.append(op[1])
            elif not self._test(op, pkt, st):
                break
            i += 1
        yield ("next", None), st  # a match failed, or the rule has no verdict: on to the next rule

    def _key(self, addr: str | None, pkt: Packet, st: _State) -> str:
        proto_port = f"{pkt.protocol} . {st.dport}"
        if addr is None:
            return proto_port
        return f"{pkt.src if addr == 'saddr' else st.dst} . {proto_port}"

    def _test(self, op: Op, pkt: Packet, st: _State) -> bool:
        kind = op[0]
        if kind == "addr":
            return op[2](pkt.src if op[1] == "saddr" else st.dst)
        if kind == "key-set":
            return self._key(op[2], pkt, st) in self.sets.get(op[1], set())
        if kind == "pair":
            return f"{pkt.src} . {st.dst}" in self.sets.get(op[1], set())
        if kind == "recent":
            return op[1] in pkt.recent
        if kind == "fib":
            return (pkt.local_origin or self._is_local(pkt.src)) if op[1] == "saddr" else self._is_local(st.dst)
        if kind == "proto":
            return pkt.protocol == op[1]
        if kind == "dport":
            return pkt.protocol == op[1] and st.dport == op[2]
        if kind == "dport-set":
            return pkt.protocol == op[1] and str(st.dport) in self.sets.get(op[2], set())
        if kind == "mark-test":
            value = st.mark & op[1]
            return (value == op[3]) == (op[2] == "==")
        if kind == "const":
            return op[1]
        if kind == "no-dnat":
            return st.dnat is None
        raise ValueError(f"tracer cannot evaluate {op!r}")
