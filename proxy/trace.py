"""A packet tracer over parsed iptables state, for table-driven flow tests.

Given ``{table: {chain: [rule text]}}`` (FakeIptables.tables) and a packet,
it follows what the kernel would do for the first packet of a connection:
nat PREROUTING (or OUTPUT for locally sent packets), then filter INPUT /
FORWARD / OUTPUT with the translated destination, then nat POSTROUTING. A
``-m statistic`` rule forks the walk, so the result lists *every* endpoint a
connection may land on. ``-m recent --rcheck`` matches only lists named in
``Packet.recent`` (the client's affinity history). Only the matches podnet
emits are understood; anything else raises, so a rule the tracer does not
understand cannot silently pass a test.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from podnet.host.addr import split_hostport

ONE_ARG = {
    "-s", "-d", "-p", "-m", "-j", "-g", "--dport", "--comment", "--dst-type", "--src-type", "--ctstate", "--mark",
    "--mode", "--probability", "--name", "--seconds", "--to-destination", "--or-mark", "--xor-mark", "--reject-with",
    "--mask",
}
NO_ARG = {"--rcheck", "--reap", "--set", "--rsource", "--random-fully"}


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    dport: int
    protocol: str = "tcp"
    local_origin: bool = False
    """Sent by a process on the node itself (nat OUTPUT) rather than arriving."""
    recent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Result:
    verdict: str
    """ACCEPT, DROP or REJECT (several joined by '|' if branches disagree)."""
    endpoints: tuple[str, ...] = ()
    masq: bool = False
    recent_set: tuple[str, ...] = ()


@dataclass
class _State:
    mark: int = 0
    dnat: str | None = None
    recent_set: list[str] = field(default_factory=list)
    masq: bool = False

    def fork(self) -> "_State":
        return _State(self.mark, self.dnat, list(self.recent_set), self.masq)


def _parse(rule: str) -> list[tuple[bool, str, str | None]]:
    toks = shlex.split(rule)
    out, neg, i = [], False, 0
    while i < len(toks):
        t = toks[i]
        if t == "!":
            neg = True
            i += 1
            continue
        if t in ONE_ARG:
            out.append((neg, t, toks[i + 1]))
            i += 2
        elif t in NO_ARG:
            out.append((neg, t, None))
            i += 1
        else:
            raise ValueError(f"tracer does not understand {t!r} in {rule!r}")
        neg = False
    return out


class Tracer:
    def __init__(self, tables: dict[str, dict[str, list[str]]], local_ips: tuple[str, ...]) -> None:
        self.tables = tables
        self.local_ips = {ipaddress.ip_address(ip) for ip in local_ips}

    def _is_local(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return a in self.local_ips or a.is_loopback

    def trace(self, pkt: Packet) -> Result:
        outcomes: list[tuple[str, _State]] = []
        nat_chain = "OUTPUT" if pkt.local_origin else "PREROUTING"
        for _, st in self._walk("nat", nat_chain, pkt, _State(), 0):
            dst = pkt
            if st.dnat:
                ip, port = split_hostport(st.dnat)
                dst = Packet(pkt.src, ip, port, pkt.protocol, pkt.local_origin, pkt.recent)
            fchain = "OUTPUT" if pkt.local_origin else ("INPUT" if self._is_local(dst.dst) else "FORWARD")
            for verdict, st2 in self._walk("filter", fchain, dst, st, 0):
                verdict = "ACCEPT" if verdict in ("RETURN", "ACCEPT") else verdict
                if verdict == "ACCEPT":
                    st2.masq = any(v == "MASQUERADE" for v, _ in self._walk("nat", "POSTROUTING", dst, st2.fork(), 0))
                outcomes.append((verdict, st2))
        verdicts = sorted({v for v, _ in outcomes})
        eps = sorted({s.dnat for v, s in outcomes if s.dnat and v == "ACCEPT"})
        masq = any(s.masq for _, s in outcomes)
        recent = sorted({r for _, s in outcomes for r in s.recent_set})
        return Result("|".join(verdicts), tuple(eps), masq, tuple(recent))

    def _walk(self, table: str, chain: str, pkt: Packet, st: _State, depth: int):
        """Yield (verdict, state) per branch; verdict RETURN means fell off the chain."""
        if depth > 50:
            raise RuntimeError("chain loop")
        rules = self.tables[table][chain]
        yield from self._from(table, chain, rules, 0, pkt, st, depth)

    def _from(self, table, chain, rules, start, pkt, st, depth):
        for idx in range(start, len(rules)):
            opts = _parse(rules[idx])
            m = self._matches(opts, pkt, st)
            if m is False:
                continue
            if m == "fork":
                # not taken: continue with the next rule
                yield from self._from(table, chain, rules, idx + 1, pkt, st.fork(), depth)
            target = next((v for _, k, v in opts if k == "-j"), None)
            if target is None:
                continue
            if target == "DNAT":
                st = st.fork()
                st.dnat = next(v for _, k, v in opts if k == "--to-destination")
                if any(k == "--set" for _, k, _ in opts):
                    st.recent_set.append(next(v for _, k, v in opts if k == "--name"))
                yield "ACCEPT", st
                return
            if target == "MARK":
                st = st.fork()
                for _, k, v in opts:
                    if k == "--or-mark":
                        st.mark |= int(v, 0)
                    elif k == "--xor-mark":
                        st.mark ^= int(v, 0)
                continue
            if target in ("ACCEPT", "DROP", "REJECT", "MASQUERADE"):
                yield target, st
                return
            if target == "RETURN":
                yield "RETURN", st
                return
            # a jump to a user chain: continue after it for branches that return
            for verdict, sub in self._walk(table, target, pkt, st.fork(), depth + 1):
                if verdict == "RETURN":
                    yield from self._from(table, chain, rules, idx + 1, pkt, sub, depth)
                else:
                    yield verdict, sub
            return
        yield "RETURN", st

    def _matches(self, opts, pkt: Packet, st: _State):
        result: bool | str = True
        for neg, k, v in opts:
            if k in ("-s", "-d"):
                addr = pkt.src if k == "-s" else pkt.dst
                ok = ipaddress.ip_address(addr) in ipaddress.ip_network(v, strict=False)
            elif k == "-p":
                ok = pkt.protocol == v
            elif k == "--dport":
                ok = pkt.dport == int(v)
            elif k == "--dst-type":
                ok = self._is_local(pkt.dst) if v == "LOCAL" else False
            elif k == "--src-type":
                ok = (pkt.local_origin or self._is_local(pkt.src)) if v == "LOCAL" else False
            elif k == "--ctstate":
                states = {"NEW"} | ({"DNAT"} if st.dnat else set())
                ok = bool(states & set(v.split(",")))
            elif k == "--mark":
                val, _, mask = v.partition("/")
                ok = (st.mark & int(mask or "0xffffffff", 0)) == int(val, 0)
            elif k == "--rcheck":
                name = next(val for _, kk, val in opts if kk == "--name")
                ok = name in pkt.recent
            elif k == "--probability":
                result = "fork"
                continue
            else:
                continue
            if ok == neg:
                return False
        return result
