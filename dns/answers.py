"""Wire answers compiled ahead of time from a Snapshot, and the response assembly they need.

An :class:`AnswerTable` maps ``lower-cased wire qname + 2-byte qtype`` to a precompiled
:class:`Entry`: the reply header (one per RD bit value) and the bytes after the question. The
question itself is copied from each query, and owner names point into it, so replies keep the
query's letter case. Negative replies are assembled per query from the zone's SOA (owner and
names inside pointing at the zone suffix of the question), which is why the table holds no
negative entries, only the set of existing names.

Compilation is memoised in a :class:`CompileMemo`: a service whose records did not change keeps
its compiled entries, so one watch event costs about one dict merge over all services.
Tables are immutable once built; the server swaps the reference atomically.

Names are checked once more where they become wire bytes (:func:`names.to_wire` and the Encoder
refuse anything but letters, digits, '-' and '_'): a service or name that cannot be encoded is left
out of the table and listed in :attr:`AnswerTable.rejected`, and everything else is compiled.

UDP size: a reply is cut (TC set) at :func:`udp_limit`: the client's EDNS size capped at
:data:`MAX_UDP` (512 without EDNS, as RFC 1035), and never more than :data:`MAX_AMPLIFICATION` times
the query's own length, so no query to podnet-dns is a lever for reflection.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import Mapping

from podnet.dns import names
from podnet.dns.snapshot import RRsets, ServiceRecords, Snapshot, ptr_records
from podnet.dns.wire import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A, Encoder

__all__ = [
    "Entry", "AnswerTable", "NameView", "COMPILED_TYPES", "CompileMemo", "compile_table", "make_entry", "fit", "soa_authority",
    "flags_for", "udp_limit", "PLAIN_UDP", "MAX_UDP", "MAX_AMPLIFICATION",
]

QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
PTR_KEY = struct.pack("!H", PTR)
PLAIN_UDP = 512
"""RFC 1035's UDP limit, also the floor for an EDNS size (RFC 6891 6.2.5)."""
MAX_UDP = 1232
"""The largest UDP reply (DNS Flag Day 2020; CoreDNS's bufsize plugin default): no IP fragmentation."""
MAX_AMPLIFICATION = 10
"""A UDP reply is at most this many times as long as the query it answers."""


def udp_limit(query_len: int, edns_size: int | None) -> int:
    """The largest UDP reply for a query of ``query_len`` bytes advertising ``edns_size`` (None: no EDNS)."""
    size = PLAIN_UDP if edns_size is None else min(max(edns_size, PLAIN_UDP), MAX_UDP)
    return min(size, MAX_AMPLIFICATION * query_len)


def flags_for(rcode: int, aa: bool = True, tc: bool = False) -> int:
    return QR | RA | (AA if aa else 0) | (TC if tc else 0) | (rcode & 0xF)


class Entry:
    """A precompiled reply. ``hdr[rd]`` is flags + counts; ``body`` follows the question.

    ``ends`` are body offsets where each record ends (for truncation at a record boundary) and
    ``counts`` the (answer, authority, additional) sizes; with ``rcode`` they form one interned
    ``shape`` tuple shared by every entry of the same shape (five slots per entry, not seven).
    ``fits_udp`` is precomputed for a plain query (no EDNS) for this entry's key, whose length the key
    fixes: the reply is within :func:`udp_limit` of that query.
    """

    __slots__ = ("hdr", "body", "shape", "fits_udp", "rot")

    def __init__(self, rcode: int, body: bytes, ends: tuple[int, ...], counts: tuple[int, int, int], qlen: int) -> None:
        self.body = body
        # Headers and shapes repeat across thousands of entries: share one object each.
        if len(_SHARED) > 100_000:
            _SHARED.clear()
        shape = (rcode, counts, ends)
        self.shape: tuple[int, tuple[int, int, int], tuple[int, ...]] = _SHARED.setdefault(shape, shape)
        hdr = _HEADERS.get((rcode, counts))
        if hdr is None:
            base = flags_for(rcode)
            hdr = _HEADERS[(rcode, counts)] = tuple(struct.pack("!HHHHH", base | rd, 1, *counts) for rd in (0, RD))
        self.hdr = hdr
        self.fits_udp = 12 + qlen + len(body) <= udp_limit(12 + qlen, None)
        self.rot: tuple[bytes, ...] = ()
        """Rotated bodies for address sets (round-robin load balancing); () when there is one order."""

    @property
    def rcode(self) -> int:
        return self.shape[0]

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.shape[1]

    @property
    def ends(self) -> tuple[int, ...]:
        return self.shape[2]


_HEADERS: dict[tuple[int, tuple[int, int, int]], tuple[bytes, bytes]] = {}
_SHARED: dict[tuple, tuple] = {}
"""Interning tables; bounded in practice (distinct record counts/offsets), capped below anyway."""


MAX_ROTATIONS = 16


def make_entry(qname: str, rcode: int, answer=(), authority=(), additional=()) -> Entry:
    enc = Encoder(qname)
    for rr in (*answer, *authority, *additional):
        enc.rr(rr)
    qlen = len(names.to_wire(qname)) + 4
    body = bytes(enc.body)
    entry = Entry(rcode, body, tuple(enc.ends), (len(answer), len(authority), len(additional)), qlen)
    n = len(answer)
    if n > 1 and not authority and not additional and all(rr.rtype in (A, AAAA) for rr in answer):
        # Address records are position independent (owner = pointer to the question, fixed-size
        # rdata), so rotating the byte chunks rotates the set, like CoreDNS's loadbalance plugin.
        cuts = (0, *enc.ends)
        chunks = [body[cuts[i] : cuts[i + 1]] for i in range(n)]
        k = min(n, MAX_ROTATIONS)
        entry.rot = tuple(b"".join(chunks[i * n // k :] + chunks[: i * n // k]) for i in range(k))
    return entry


def fit(hdr_flags: int, counts: tuple[int, int, int], body: bytes, ends: tuple[int, ...], room: int) -> tuple[int, tuple[int, int, int], bytes]:
    """Truncate ``body`` to at most ``room`` bytes at a record boundary.

    Returns (flags, counts, body); TC is set when an answer or authority record had to go
    (dropping only additional records does not set TC, as in miekg/dns)."""
    if len(body) <= room:
        return hdr_flags, counts, body
    k = 0
    while k < len(ends) and ends[k] <= room:
        k += 1
    an, ns, ar = counts
    kept_an = min(k, an)
    kept_ns = min(max(k - an, 0), ns)
    kept_ar = max(k - an - ns, 0)
    tc = kept_an < an or kept_ns < ns
    flags = hdr_flags | (TC if tc else 0)
    return flags, (kept_an, kept_ns, kept_ar), body[: ends[k - 1]] if k else b""


@functools.lru_cache(maxsize=512)
def soa_authority(zone_offset: int, soa: RR) -> bytes:
    """The SOA record for a negative reply, its names pointing at the zone suffix of the question
    (memoised: one per question length and serial in practice)."""
    ptr = struct.pack("!H", 0xC000 | zone_offset)
    mname, rname, *nums = soa.rdata
    zone = soa.name
    m_label = mname[: -len(zone) - 1] if zone else mname
    r_label = rname[: -len(zone) - 1] if zone else rname
    rdata = names.to_wire(m_label)[:-1] + ptr + names.to_wire(r_label)[:-1] + ptr + struct.pack("!IIIII", *nums)
    return ptr + struct.pack("!HHIH", SOA, 1, soa.ttl, len(rdata)) + rdata


COMPILED_TYPES = (A, SRV, AAAA, PTR, CNAME, TXT, NS, SOA)
"""Every record type a table entry can be compiled for (most frequent first)."""
_TYPE_KEYS = tuple(struct.pack("!H", t) for t in COMPILED_TYPES)


@dataclass(frozen=True, slots=True)
class AnswerTable:
    """Compiled answers for one Snapshot.

    A name (lower-cased wire form) exists iff it has an entry of one of :data:`COMPILED_TYPES` in
    ``hot`` or is in ``ents`` (empty non-terminals: names with no records of their own), so the
    names that own records are not stored a second time. :meth:`has_name` is that test."""

    snapshot: Snapshot
    hot: Mapping[bytes, Entry]
    ents: frozenset[bytes] | set[bytes]
    zone_wire: bytes
    rejected: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(kind, key) -> reason for every object or name left out: the snapshot's, plus services and names
    that could not be encoded (kind ``service`` or ``name``, reason ``unencodable``)."""

    def has_name(self, wname: bytes) -> bool:
        if wname in self.ents:
            return True
        hot = self.hot
        for t in _TYPE_KEYS:
            if wname + t in hot:
                return True
        return False

    @property
    def exists(self) -> "NameView":
        """Every existing name: supports ``in``, iteration and ``len`` (iteration and len walk the table)."""
        return NameView(self)


class NameView:
    __slots__ = ("table",)

    def __init__(self, table: AnswerTable) -> None:
        self.table = table

    def __contains__(self, wname: object) -> bool:
        return isinstance(wname, bytes) and self.table.has_name(wname)

    def __iter__(self):
        return iter(dict.fromkeys([*self.table.ents, *(k[:-2] for k in self.table.hot)]))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class CompileMemo:
    """The previous table and what each service / shared name / PTR name contributed to it, so the
    next compile patches a copy of the dicts instead of recompiling everything."""

    services: dict[str, tuple[ServiceRecords, tuple[bytes, ...], tuple[bytes, ...]]] = field(default_factory=dict)
    """service key -> (its records, the table keys and the empty non-terminals it contributed)"""
    shared: dict[str, tuple[dict, tuple[bytes, ...], tuple[bytes, ...]]] = field(default_factory=dict)
    """shared name -> (its record map, the table keys and the empty non-terminal it contributed)"""
    ptr: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """reverse name -> the PTR targets it was compiled from (its one table key is name + PTR)"""
    hot: dict[bytes, Entry] = field(default_factory=dict)
    ents: set[bytes] = field(default_factory=set)
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)
    """Services and names of the previous table that could not be encoded."""
    generation: int = -1
    in_place: bool = False
    """Patch the previous table's dicts instead of copies. Only for a caller that compiles and swaps
    synchronously in the event loop (ZoneSync): no query can run between the patch and the swap,
    so none sees a half-patched table. Saves the O(names) copies per rebuild."""


def _glue(rrsets: RRsets, targets: list[str]) -> list[RR]:
    out: list[RR] = []
    for t in dict.fromkeys(targets):
        types = rrsets.get(t, {})
        out.extend(types.get(A, ()))
        out.extend(types.get(AAAA, ()))
    return out


def _compile_name(name: str, types: dict[int, tuple[RR, ...]], glue_from: RRsets) -> dict[bytes, Entry]:
    wname = names.to_wire(name)
    out: dict[bytes, Entry] = {}
    for rtype, rrs in types.items():
        if rtype not in COMPILED_TYPES:
            raise ValueError(f"cannot compile type {rtype} (not in COMPILED_TYPES)")
        extra: list[RR] = []
        if rtype == SRV:
            extra = _glue(glue_from, [rr.rdata[3] for rr in rrs])
        elif rtype == NS:
            extra = _glue(glue_from, [rr.rdata for rr in rrs])
        out[wname + struct.pack("!H", rtype)] = make_entry(name, 0, rrs, (), extra)
    return out


def _compile_rrsets(rrsets: RRsets) -> tuple[dict[bytes, Entry], list[bytes]]:
    """(table entries, empty non-terminal names) of a record map."""
    hot: dict[bytes, Entry] = {}
    ents: list[bytes] = []
    for name, types in rrsets.items():
        if types:
            hot.update(_compile_name(name, types, rrsets))
        else:
            ents.append(names.to_wire(name))
    return hot, ents


def _drop(hot: dict[bytes, Entry], ents: set[bytes], part, ent_names) -> None:
    for k in part:
        hot.pop(k, None)
    for n in ent_names:
        ents.discard(n)


def compile_table(snap: Snapshot, memo: CompileMemo | None = None) -> AnswerTable:
    """Compile ``snap``. With a ``memo`` (updated in place) only what changed since the previous
    compile is recompiled; the previous table's dicts are copied, never mutated (unless
    ``memo.in_place``)."""
    memo = memo if memo is not None else CompileMemo()
    if memo.in_place:
        hot, ents = memo.hot, memo.ents
    else:
        hot, ents = dict(memo.hot), set(memo.ents)
    rejected = memo.rejected if memo.in_place else dict(memo.rejected)

    incremental = snap.changed is not None and memo.generation == snap.generation - 1
    if incremental:
        services = memo.services if memo.in_place else dict(memo.services)
        service_keys = snap.changed
    else:
        services = {}
        service_keys = set(snap.services) | set(memo.services)
        rejected.clear()
    for key in service_keys:
        recs = snap.services.get(key)
        prev = memo.services.get(key)
        if prev is not None and prev[0] is recs:
            services[key] = prev
            continue
        if prev is not None:
            _drop(hot, ents, prev[1], prev[2])
            services.pop(key, None)
        rejected.pop(("service", key), None)
        if recs is None:
            continue
        try:
            part, ent_names = _compile_rrsets(recs.rrsets)
        except Exception:  # noqa: BLE001 - this service is left out, every other one is compiled
            rejected[("service", key)] = "unencodable"
            services[key] = (recs, (), ())
            continue
        recs.release()  # the wire bytes are what is served; records are recomputed if ever asked for
        hot.update(part)
        ents.update(ent_names)
        services[key] = (recs, tuple(part), tuple(ent_names))

    if incremental:
        ptrs = memo.ptr if memo.in_place else dict(memo.ptr)
        ptr_names = snap.changed_ptrs
    else:
        ptrs = {}
        ptr_names = set(snap.ptr) | set(memo.ptr)
    ttl = snap.config.ttl
    for name in ptr_names:
        targets = snap.ptr.get(name)
        prev_p = memo.ptr.get(name)
        if prev_p is not None and prev_p is targets:
            ptrs[name] = prev_p
            continue
        if prev_p is not None:
            hot.pop(names.to_wire(name) + PTR_KEY, None)
            ptrs.pop(name, None)
        rejected.pop(("name", name), None)
        if targets is None:
            continue
        ptrs[name] = targets
        try:
            hot.update(_compile_name(name, {PTR: ptr_records(name, targets, ttl)}, {}))
        except Exception:  # noqa: BLE001
            rejected[("name", name)] = "unencodable"

    shared = {}
    for name, prev_s in memo.shared.items():
        if name not in snap.shared or name == snap.config.zone or prev_s[0] != snap.shared[name]:
            _drop(hot, ents, prev_s[1], prev_s[2])
    for name, types in snap.shared.items():
        prev_s = memo.shared.get(name)
        if prev_s is not None and name != snap.config.zone and prev_s[0] == types:
            shared[name] = prev_s
            continue
        rejected.pop(("name", name), None)
        try:
            part = _compile_name(name, types, snap.shared)
            ent = () if types else (names.to_wire(name),)
        except Exception:  # noqa: BLE001
            rejected[("name", name)] = "unencodable"
            continue
        hot.update(part)
        ents.update(ent)
        shared[name] = (types, tuple(part), ent)

    memo.services, memo.ptr, memo.shared, memo.hot, memo.ents, memo.rejected = services, ptrs, shared, hot, ents, rejected
    memo.generation = snap.generation
    everything = {**snap.rejected, **rejected} if rejected else snap.rejected
    return AnswerTable(snap, hot, ents, names.to_wire(snap.config.zone), everything)
