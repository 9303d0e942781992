"""Answers one DNS message: the byte-level fast path, then the full slow path, then forwarding.

:meth:`Handler.answer` returns the reply bytes, ``None`` (drop: not a query, or unparseable
header), or an awaitable of bytes (forwarding / CNAME chasing). It never raises for bad input.

Fast path: a plain query (one question, no other records, class IN, exact length) whose
lower-cased name and type are in the compiled table and whose reply fits :func:`answers.udp_limit`
(512 bytes, and 10 times the query) is answered by concatenating the query's ID and question with
the precompiled header and body.

Negative replies (NXDOMAIN, NODATA) to plain UDP queries are remembered whole, up to
``MAX_DENIALS`` of them, for as long as the table they were made from is served: a repeat of the
query (any case, either RD bit) gets the same bytes and counts without the slow path; any table swap
(every rebuild makes a new table) forgets them all. Queries with EDNS or other records always take
the slow path.

Address sets with several records (headless services) are served in rotating order, one step per
reply, like the ``loadbalance`` plugin of the stock Corefile (round-robin instead of random).

Slow path, in order (RFC 1035/2308/6891/8020, CoreDNS's choices where the RFCs leave room):
responses and packets under 12 bytes are dropped; opcode != QUERY -> NOTIMP; a malformed packet,
qdcount != 1, answer/authority records or a bad OPT -> FORMERR; EDNS version > 0 -> BADVERS;
class != IN -> REFUSED; meta-types (0, OPT, TKEY, TSIG, 128-248) -> FORMERR; AXFR/IXFR -> REFUSED;
a name with a control byte, whitespace, DEL or an 8-bit byte -> REFUSED (never forwarded).
Then the cluster zone is answered authoritatively (AA, NODATA/NXDOMAIN with the SOA, SERVFAIL for
misses before the first sync), reverse names from the table with fallthrough to upstream, and the
rest is forwarded. UDP replies never exceed :func:`answers.udp_limit` (512 bytes without EDNS, the
client's EDNS size capped at 1232 with it, and never 10 times the query's length); TCP replies 65535:
records are dropped at a record boundary and TC is set, as CoreDNS's ``Scrub`` does.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Awaitable

from podnet.dns import names
from podnet.dns.answers import MAX_UDP, RD, AnswerTable, Entry, fit, flags_for, soa_authority, udp_limit
from podnet.dns.cache import Upstream
from podnet.dns.forward import Forwarder, Refused
from podnet.dns.metrics import Stats
from podnet.dns.wire import (
    AAAA, ANY, AXFR, BADVERS, CNAME, FORMERR, IXFR, NOERROR, NOTIMP, NXDOMAIN, OPT, REFUSED, SERVFAIL,
    RR, A, Encoder, FormErr, Query, encode_wire_rr, header_only, opt_rr, parse_query,
)

__all__ = ["Handler"]

CD = 0x0010
KUBERNETES = "kubernetes"
"""The ``plugin`` label of answers from the cluster zone and its reverse names (CoreDNS: the plugin
that wrote the reply; "" for replies made before any plugin: FORMERR, NOTIMP, REFUSED, BADVERS, SERVFAIL
without upstreams)."""
PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"
CNAME_KEY = struct.pack("!H", CNAME)
MAX_CHASE = 8
MAX_DENIALS = 10_000
_DENIAL_HEADERS: dict[int, tuple[bytes, bytes]] = {}
Reply = bytes | None | Awaitable[bytes | None]


class Handler:
    def __init__(self, table: AnswerTable, forwarder: Forwarder | None = None, stats: Stats | None = None) -> None:
        self.table = table
        self.forwarder = forwarder
        self.stats = stats if stats is not None else Stats()
        self._turn = 0
        """Round-robin position for address sets with several records."""
        self.qtype = b""
        """The 2-byte query type of the last message answered (b"" if it had no readable question);
        the server reads it right after each call to label the duration metric."""
        self._miss_key: bytes | None = None
        """The table key of the last plain UDP query the fast path looked up and did not find."""
        self._plain_key: bytes | None = None
        """While the slow path answers a plain UDP query: its table key (its negative reply may be remembered)."""
        self._denials: dict[bytes, tuple[tuple[bytes, bytes], bytes, int]] = {}
        """Plain-query key -> (header after the ID by RD bit, body, rcode) of the negative replies
        (NXDOMAIN, NODATA) made from ``_denials_of``, the table they are true for."""
        self._denials_of: AnswerTable | None = None

    def swap(self, table: AnswerTable) -> None:
        """Install a new table; queries already being answered keep the one they started with."""
        self.table = table

    # ------------------------------------------------------------------ entry points

    @property
    def fast_handler(self) -> "Handler":
        """The handler whose :meth:`fast_udp` a server may call before :meth:`answer_udp` (itself)."""
        return self

    def fast_udp(self, data: bytes) -> bytes | None:
        """The fast path alone: the reply (counted) for a plain query in the compiled table that fits
        UDP, else None (the caller then calls :meth:`answer_udp`, which answers everything else)."""
        parts = self.fast_parts(data, 0, len(data))
        if parts is None:
            return None
        qt = data[-4:-2]
        self.stats.fast[qt] += 1
        self.qtype = qt
        return data[:2] + parts[0] + data[12:] + parts[1]

    def fast_parts(self, buf, start: int, end: int) -> tuple[bytes, bytes] | None:
        """For a plain query at ``buf[start:end]`` (any buffer with bytes' slicing, indexing and
        ``find``) whose lower-cased name and type are in the table and whose reply fits UDP: (the
        reply's 10 header bytes after the ID, the bytes after the question); else None. The reply
        is the query's ID, these header bytes, the query's question as sent, then the body. Not
        counted (the caller counts what it sends)."""
        if end - start > 16 and buf[start + 4 : start + 12] == PLAIN_COUNTS and not buf[start + 2] & 0xF8 and not buf[start + 3] & 0x10:
            z = buf.find(b"\0", start + 12, end)
            if z + 5 == end and buf[z + 3] == 0 and buf[z + 4] == 1:
                if buf[z + 1] == 0 and not 0x41 <= buf[z + 2] <= 0x5A:
                    key = buf[start + 12 : end - 2].lower()  # the type's bytes are not letters: lower() keeps them
                else:
                    key = buf[start + 12 : z + 1].lower() + buf[z + 1 : z + 3]
                e = self.table.hot.get(key)
                if e is None:
                    self._miss_key = key
                elif e.fits_udp:
                    if e.rot:
                        self._turn += 1
                        return e.hdr[buf[start + 2] & 1], e.rot[self._turn % len(e.rot)]
                    return e.hdr[buf[start + 2] & 1], e.body
        return None

    def answer_udp(self, data: bytes) -> Reply:
        """UDP: the fast path, a negative reply already made for this plain query from this table, else
        the slow path with a 512-byte / EDNS limit."""
        self._miss_key = None
        reply = self.fast_udp(data)
        if reply is not None:
            return reply
        key = self._miss_key
        if key is not None and self._denials_of is self.table:
            denial = self._denials.get(key)
            if denial is not None:
                hdrs, body, rcode = denial
                qt = key[-2:]
                self.stats.count_request(int.from_bytes(qt, "big"), True)
                self.stats.count_response(rcode, KUBERNETES)
                self.qtype = qt
                return data[:2] + hdrs[data[2] & 1] + data[12:] + body
        self._plain_key = key
        try:
            return self.answer(data, udp=True)
        finally:
            self._plain_key = None

    def answer(self, data: bytes, udp: bool) -> Reply:
        st = self.stats
        self.qtype = b""
        if len(data) < 12 or data[2] & 0x80:
            st.dropped += 1
            return None
        opcode = (data[2] >> 3) & 0xF
        if opcode != 0:
            return self._count(header_only(data, NOTIMP))
        try:
            q = parse_query(data)
        except FormErr:
            return self._count(header_only(data, FORMERR))
        st.count_request(q.qtype, udp)
        self.qtype = q.key[-2:]
        if q.edns is not None and q.edns[2]:
            st.do += 1
        limit = udp_limit(len(data), q.edns[0] if q.edns else None) if udp else 65535
        if q.edns is not None and q.edns[1] > 0:
            return self._reply(q, BADVERS, limit)
        if q.qclass != 1:
            return self._reply(q, REFUSED, limit, aa=False)
        if q.odd:
            st.refused_names += 1
            return self._reply(q, REFUSED, limit, aa=False)
        qt = q.qtype
        if qt == 0 or qt == OPT or 128 <= qt <= 250:
            return self._reply(q, FORMERR, limit, aa=False)
        if qt == AXFR or qt == IXFR:
            return self._reply(q, REFUSED, limit, aa=False)
        table = self.table
        zone = table.snapshot.config.zone
        rel = names.relative_labels(q.qname, zone)
        if rel is not None:
            return self._authoritative(q, rel, table, limit)
        if names.is_reverse(q.qname):
            entry = table.hot.get(q.key)
            if entry is not None:
                return self._entry(q, entry, limit)
            if table.has_name(q.key[:-2]):
                return self._negative(q, NOERROR, table, limit, "ip6.arpa" if q.qname.endswith("ip6.arpa") else "in-addr.arpa")
        return self._forward(q, limit)

    # ------------------------------------------------------------------ authoritative

    def _authoritative(self, q: Query, rel: list[str], table: AnswerTable, limit: int) -> Reply:
        entry = table.hot.get(q.key)
        if entry is not None:
            return self._entry(q, entry, limit)
        snap = table.snapshot
        name = q.key[:-2]
        if table.has_name(name):
            # Only ANY and ExternalName names (those with a CNAME entry) need the records themselves;
            # everything else here is NODATA, decided from the compiled table alone.
            if q.qtype == ANY or name + CNAME_KEY in table.hot:
                types = snap.lookup(q.qname) or {}
                if CNAME in types:
                    return self._chase(q, types[CNAME][0], limit)
                if q.qtype == ANY and types:
                    rrs = [rr for rrs in types.values() for rr in rrs]
                    return self._records(q, rrs, limit)
            return self._negative(q, NOERROR, table, limit, zone=snap.config.zone)
        parsed = names.parse_cluster_name(rel)
        if parsed.kind == "pod" and parsed.namespace in snap.namespaces:
            want = AAAA if ":" in parsed.pod_ip else A
            if q.qtype in (want, ANY):
                return self._records(q, [RR(q.qname, want, snap.config.ttl, parsed.pod_ip)], limit)
            return self._negative(q, NOERROR, table, limit, zone=snap.config.zone)
        if not snap.synced:
            return self._negative(q, SERVFAIL, table, limit, zone=snap.config.zone)
        return self._negative(q, NXDOMAIN, table, limit, zone=snap.config.zone)

    def _records(self, q: Query, rrs: list[RR], limit: int) -> bytes:
        """An answer made from records now (slow path); encoding stops one record past ``limit``, so
        a large record set costs no more work than the reply can carry (the cut then sets TC)."""
        try:
            enc = Encoder(q.qname)
            for rr in rrs:
                enc.rr(rr)
                if len(enc.body) > limit:
                    break
        except ValueError:  # a name that cannot be written: never expected, never half-written
            self.stats.errors += 1
            return self._reply(q, SERVFAIL, limit, aa=False)
        n = len(enc.ends)
        return self._assemble(q, flags_for(NOERROR), (n, 0, 0), bytes(enc.body), tuple(enc.ends), limit, plugin=KUBERNETES)

    def _chase(self, q: Query, cname: RR, limit: int) -> Reply:
        """ExternalName: the CNAME, then the target's records (internal or through upstream)."""
        chain = [cname]
        snap = self.table.snapshot
        target = cname.rdata
        for _ in range(MAX_CHASE):
            if names.relative_labels(target, snap.config.zone) is None:
                break
            types = snap.lookup(target) or {}
            if CNAME in types:
                chain.append(types[CNAME][0])
                target = types[CNAME][0].rdata
                continue
            return self._records(q, chain + list(types.get(q.qtype, ())), limit)
        else:
            return self._records(q, chain, limit)
        if self.forwarder is None or not self.forwarder.usable:
            return self._records(q, chain, limit)
        return self._chase_upstream(q, chain, target, limit)

    async def _chase_upstream(self, q: Query, chain: list[RR], target: str, limit: int) -> bytes:
        enc = Encoder(q.qname)
        for rr in chain:
            enc.rr(rr)
        body, ends, tc = bytes(enc.body), list(enc.ends), False
        try:
            question = names.to_wire(target) + struct.pack("!HH", q.qtype, 1)
            ans = await self.forwarder.resolve(question, bool(q.edns and q.edns[2]))
        except (Refused, ValueError):
            ans = None
        n = len(chain)
        if ans is not None:
            age = ans.age(self.forwarder.clock())
            for rr in ans.answer:
                body += encode_wire_rr(rr, max(0, rr.ttl - age))
                ends.append(len(body))
            n += len(ans.answer)
            tc = ans.tc
        flags = flags_for(NOERROR, tc=tc)
        return self._assemble(q, flags, (n, 0, 0), body, tuple(ends), limit, plugin=KUBERNETES)

    # ------------------------------------------------------------------ forwarding

    def _forward(self, q: Query, limit: int) -> Reply:
        fwd = self.forwarder
        if fwd is not None and fwd.probing and fwd.seen_query(q.qname):
            return self._reply(q, SERVFAIL, limit, aa=False)
        if fwd is None or not fwd.usable:
            if fwd is not None:
                fwd.stats.healthcheck_broken += 1
            return self._reply(q, SERVFAIL, limit, aa=False)
        return self._forward_async(q, limit)

    async def _forward_async(self, q: Query, limit: int) -> bytes:
        fwd = self.forwarder
        question = q.key[:-2].lower() + q.question[-4:]
        asked = fwd.clock()
        try:
            ans = await fwd.resolve(question, bool(q.edns and q.edns[2]))
        except Refused:
            return self._reply(q, REFUSED, limit, aa=False)
        if ans is None:
            return self._reply(q, SERVFAIL, limit, aa=False)
        # An answer received before we asked came from the cache (CoreDNS's plugin label: cache vs forward).
        return self._from_upstream(q, ans, fwd.clock(), limit, "cache" if ans.received < asked else "forward")

    def _from_upstream(self, q: Query, ans: Upstream, now: float, limit: int, plugin: str = "forward") -> bytes:
        age = ans.age(now)
        body = bytearray()
        ends = []
        qname = q.key[:-2]
        for rr in (*ans.answer, *ans.authority, *ans.additional):
            wire = encode_wire_rr(rr, max(0, rr.ttl - age))
            if rr.name.lower() == qname:  # point at the question: keeps the query's case, saves bytes
                wire = b"\xc0\x0c" + wire[len(rr.name) :]
            body += wire
            ends.append(len(body))
        flags = flags_for(ans.rcode & 0xF, aa=False, tc=ans.tc)
        counts = (len(ans.answer), len(ans.authority), len(ans.additional))
        return self._assemble(q, flags, counts, bytes(body), tuple(ends), limit, plugin=plugin)

    # ------------------------------------------------------------------ assembly

    def _entry(self, q: Query, e: Entry, limit: int) -> bytes:
        body = e.body
        if e.rot:
            self._turn += 1
            body = e.rot[self._turn % len(e.rot)]
        rcode, counts, ends = e.shape
        return self._assemble(q, flags_for(rcode), counts, body, ends, limit, plugin=KUBERNETES)

    def _negative(self, q: Query, rcode: int, table: AnswerTable, limit: int, zone: str) -> bytes:
        zone_len = len(table.zone_wire) if zone == table.snapshot.config.zone else len(names.to_wire(zone))
        zone_offset = 12 + len(q.question) - 4 - zone_len
        soa = table.snapshot.soa
        if zone != soa.name:
            mname, rname, serial, *rest = soa.rdata
            soa = RR(zone, soa.rtype, soa.ttl, (names.join("ns.dns", zone), names.join("hostmaster", zone), serial, *rest))
        body = soa_authority(zone_offset, soa)
        reply = self._assemble(q, flags_for(rcode), (0, 1, 0), body, (len(body),), limit, plugin=KUBERNETES)
        if (rcode == NOERROR or rcode == NXDOMAIN) and q.key == self._plain_key and len(reply) == 12 + len(q.question) + len(body):
            self._remember_denial(q.key, table, rcode, body)
        return reply

    def _remember_denial(self, key: bytes, table: AnswerTable, rcode: int, body: bytes) -> None:
        """Keep a plain query's whole negative reply (it depends on the key and the table only) until
        the table is replaced; at most MAX_DENIALS of them (CoreDNS's denial cache holds 9,984)."""
        if self._denials_of is not table:
            self._denials, self._denials_of = {}, table
        elif len(self._denials) >= MAX_DENIALS:
            self._denials.clear()
        hdrs = _DENIAL_HEADERS.get(rcode)
        if hdrs is None:
            hdrs = _DENIAL_HEADERS[rcode] = tuple(struct.pack("!HHHHH", flags_for(rcode) | rd, 1, 0, 1, 0) for rd in (0, RD))
        self._denials[key] = (hdrs, body, rcode)

    def _reply(self, q: Query, rcode: int, limit: int, aa: bool = True) -> bytes:
        return self._assemble(q, flags_for(rcode, aa=aa), (0, 0, 0), b"", (), limit, ext_rcode=rcode >> 4)

    def _assemble(
        self, q: Query, flags: int, counts: tuple[int, int, int], body: bytes, ends: tuple[int, ...], limit: int,
        ext_rcode: int = 0, plugin: str = "",
    ) -> bytes:
        flags |= q.flags & (RD | CD)
        opt = b""
        if q.edns is not None:
            opt = opt_rr(max(512, min(q.edns[0], MAX_UDP)), q.edns[2], ext_rcode)
        room = limit - 12 - len(q.question) - len(opt)
        flags, (an, ns, ar), body = fit(flags, counts, body, ends, room)
        self.stats.count_response((flags & 0xF) | (ext_rcode << 4), plugin)
        return q.id + struct.pack("!HHHHH", flags, 1, an, ns, ar + (1 if opt else 0)) + q.question + body + opt

    def _count(self, reply: bytes) -> bytes:
        self.stats.count_response(reply[3] & 0xF)
        return reply


def run_sync(reply: Reply) -> bytes | None:
    """Resolve a Reply in a fresh event loop (tests and tools only)."""
    if reply is None or isinstance(reply, bytes):
        return reply
    return asyncio.run(_await(reply))


async def _await(aw):
    return await aw
