"""DNS wire format: a small encoder with controlled compression, a strict query parser, and an RR walker.

Only what podnet-dns needs, written for predictability on hostile input:

* :class:`Encoder` writes resource records after a known question, compressing owner names (and the
  names inside CNAME/PTR/NS/SOA rdata) against the question and earlier records. Because the
  question is copied from each query, a compression pointer into it makes answers echo the query's
  letter case for free. SRV targets are never compressed (RFC 2782).
* :func:`parse_query` validates a query completely (labels, no pointers in the question, counts,
  EDNS OPT) and raises :class:`FormErr` on anything malformed; it never loops (bounded by length).
* :func:`walk_rrs` / :func:`read_name` read upstream replies with a hop limit on compression
  pointers, so pointer loops end in :class:`FormErr` instead of hanging.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

from podnet.dns import names

__all__ = [
    "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "OPT", "AXFR", "IXFR", "ANY",
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS",
    "RR", "Encoder", "FormErr", "Query", "parse_query", "read_name", "read_wire_name", "walk_rrs", "header_only", "opt_rr",
    "TYPE_NAMES",
]

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
HINFO, IXFR, AXFR, ANY = 13, 251, 252, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
TYPE_NAMES = {
    A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", MX: "MX", TXT: "TXT", AAAA: "AAAA",
    SRV: "SRV", 43: "DS", 48: "DNSKEY", 46: "RRSIG", 47: "NSEC", 50: "NSEC3", 65: "HTTPS",
    IXFR: "IXFR", AXFR: "AXFR", ANY: "ANY",
}
# Names whose rdata may be compressed (RFC 1035 types) when we write them.
_COMPRESSIBLE_RDATA = {CNAME, PTR, NS}
_ODD_BYTE = re.compile(rb"[\x00-\x20\x7f-\xff]")
"""Bytes no host name holds: controls, space, DEL and 8-bit (IDNs travel as punycode)."""
MAX_POINTER = 0x3FFF
MAX_POINTER_HOPS = 64


class RR(NamedTuple):
    """One record as data. ``rdata`` by type: A/AAAA ip str; CNAME/PTR/NS target name; TXT tuple of
    strings; SRV (priority, weight, port, target); SOA (mname, rname, serial, refresh, retry, expire, minimum)."""

    name: str
    rtype: int
    ttl: int
    rdata: object


class FormErr(ValueError):
    """A packet that cannot be parsed; ``header_ok`` says whether a FORMERR reply can be built."""


class Encoder:
    """Appends records to a message body that follows a question for ``qname`` (lower-case text).

    ``body`` holds only the bytes after the question; offsets are message offsets. ``ends`` records
    where each record ends so a caller can truncate at a record boundary (pointers only go backwards,
    so every prefix stays valid).
    """

    def __init__(self, qname: str) -> None:
        self.body = bytearray()
        self.ends: list[int] = []
        self._base = 12 + len(names.to_wire(qname)) + 4
        self._offsets: dict[str, int] = {}
        off = 12
        rest = qname
        while rest:
            self._offsets.setdefault(rest, off)
            label, _, rest = rest.partition(".")
            off += 1 + len(label)

    def name(self, name: str, compress: bool = True) -> None:
        """Append ``name``; ValueError (nothing appended) unless it is :func:`names.safe_name`."""
        rest = names.check_name(name.rstrip(".")).lower()
        while rest:
            if compress and rest in self._offsets:
                self.body += struct.pack("!H", 0xC000 | self._offsets[rest])
                return
            here = self._base + len(self.body)
            if compress and here <= MAX_POINTER:
                self._offsets[rest] = here
            label, _, rest = rest.partition(".")
            raw = label.encode("ascii")
            if not 0 < len(raw) <= 63:
                raise ValueError(f"bad label in {name!r}")
            self.body.append(len(raw))
            self.body += raw
        self.body.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.body += struct.pack("!HHI", rr.rtype, CLASS_IN, rr.ttl)
        at = len(self.body)
        self.body += b"\0\0"
        t, d = rr.rtype, rr.rdata
        if t == A or t == AAAA:
            self.body += ipaddress.ip_address(d).packed
        elif t in _COMPRESSIBLE_RDATA:
            self.name(d)
        elif t == SRV:
            prio, weight, port, target = d
            self.body += struct.pack("!HHH", prio, weight, port)
            self.name(target, compress=False)
        elif t == TXT:
            for s in d:
                raw = s.encode()
                self.body.append(len(raw))
                self.body += raw
        elif t == SOA:
            mname, rname, *nums = d
            self.name(mname)
            self.name(rname)
            self.body += struct.pack("!IIIII", *nums)
        else:
            raise ValueError(f"cannot encode type {t}")
        struct.pack_into("!H", self.body, at, len(self.body) - at - 2)
        self.ends.append(len(self.body))


def opt_rr(udp_size: int, do: bool, ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-record (EDNS version 0) with no options."""
    return struct.pack("!BHHBBHH", 0, OPT, udp_size, ext_rcode, 0, 0x8000 if do else 0, 0)


@dataclass(frozen=True, slots=True)
class Query:
    """A validated query. ``question`` is the raw question section (original case)."""

    id: bytes
    flags: int
    qname: str
    """Lower-case text, escaped per RFC 1035 if it holds odd bytes."""
    key: bytes
    """Lower-cased wire name + 2-byte qtype: the answer table key."""
    qtype: int
    qclass: int
    question: bytes
    edns: tuple[int, int, bool] | None
    """(udp_size, version, do) when the query carried an OPT record."""
    odd: bool = False
    """The name holds a control byte, whitespace, DEL or a byte above 0x7E (refused by the handler)."""

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply with no sections (for packets whose question cannot be trusted): ID, opcode, RD kept."""
    flags = struct.unpack_from("!H", data, 2)[0]
    out = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xF)
    return data[:2] + struct.pack("!HHHHH", out, 0, 0, 0, 0)


def parse_query(data: bytes) -> Query:
    """Parse and validate a query; raise FormErr for anything malformed (caller checks QR/opcode first)."""
    if len(data) < 12:
        raise FormErr("short header")
    _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data, 0)
    if qd != 1:
        raise FormErr(f"qdcount {qd}")
    pos = 12
    labels: list[bytes] = []
    total = 1
    while True:
        if pos >= len(data):
            raise FormErr("question name runs past the end")
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            raise FormErr("compression or extended label in question")
        total += n + 1
        if total > names.MAX_NAME or pos + 1 + n > len(data):
            raise FormErr("question name too long or truncated")
        labels.append(data[pos + 1 : pos + 1 + n])
        pos += 1 + n
    if pos + 4 > len(data):
        raise FormErr("question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    qend = pos + 4
    if an or ns:
        raise FormErr("answer/authority records in a query")
    edns = None
    p = qend
    for _ in range(ar):
        name_start = p
        name_end = _skip_name(data, p)
        if name_end + 10 > len(data):
            raise FormErr("additional record truncated")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, name_end)
        p = name_end + 10 + rdlen
        if p > len(data):
            raise FormErr("additional rdata truncated")
        if rtype == OPT:
            if edns is not None or name_end != name_start + 1:
                raise FormErr("OPT with a name, or more than one OPT")
            edns = (rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
    qname_lower = names.from_wire_labels([label.lower() for label in labels])
    key = data[12:pos].lower() + data[pos : pos + 2]
    odd = _ODD_BYTE.search(b"".join(labels)) is not None
    return Query(data[:2], flags, qname_lower, key, qtype, qclass, data[12:qend], edns, odd)


def _skip_name(data: bytes, pos: int) -> int:
    """Position after the (possibly compressed) name at ``pos``."""
    hops = 0
    while True:
        if pos >= len(data):
            raise FormErr("name runs past the end")
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            if pos + 2 > len(data):
                raise FormErr("truncated pointer")
            return pos + 2
        if n & 0xC0:
            raise FormErr("extended label type")
        pos += 1 + n
        hops += 1
        if hops > 128:
            raise FormErr("too many labels")


def read_wire_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """(uncompressed wire name as sent, position after it) following compression pointers, loop-safe."""
    out = bytearray()
    end = -1
    hops = 0
    while True:
        if pos >= len(data):
            raise FormErr("name runs past the end")
        n = data[pos]
        if n == 0:
            if end < 0:
                end = pos + 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 2 > len(data):
                raise FormErr("truncated pointer")
            if end < 0:
                end = pos + 2
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise FormErr("compression loop")
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            continue
        if n & 0xC0:
            raise FormErr("extended label type")
        if len(out) + n + 2 > names.MAX_NAME or pos + 1 + n > len(data):
            raise FormErr("name too long or truncated")
        out += data[pos : pos + 1 + n]
        pos += 1 + n
    out.append(0)
    return bytes(out), end


def wire_labels(wire: bytes) -> list[bytes]:
    labels, pos = [], 0
    while wire[pos]:
        labels.append(wire[pos + 1 : pos + 1 + wire[pos]])
        pos += 1 + wire[pos]
    return labels


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """(lower-case text name, position after it) following compression pointers, loop-safe."""
    wire, end = read_wire_name(data, pos)
    return names.from_wire_labels([label.lower() for label in wire_labels(wire)]), end


class WireRR(NamedTuple):
    """A record read from a message: owner (uncompressed wire form, case as sent), type, class, ttl,
    and self-contained rdata (names inside expanded), so it can be copied into any message."""

    name: bytes
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes


def walk_rrs(data: bytes, pos: int, count: int) -> tuple[list[WireRR], int]:
    """Read ``count`` records from ``pos``; names inside known rdata types are decompressed."""
    out = []
    for _ in range(count):
        name, pos = read_wire_name(data, pos)
        if pos + 10 > len(data):
            raise FormErr("record truncated")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        end = pos + rdlen
        if end > len(data):
            raise FormErr("rdata truncated")
        out.append(WireRR(name, rtype, rclass, ttl, _expand_rdata(data, pos, end, rtype)))
        pos = end
    return out, pos


def _expand_rdata(data: bytes, pos: int, end: int, rtype: int) -> bytes:
    if rtype in (CNAME, PTR, NS, 39):  # 39 = DNAME
        name, after = read_wire_name(data, pos)
        return name if after == end else _bad()
    if rtype == MX:
        name, after = read_wire_name(data, pos + 2)
        return data[pos : pos + 2] + name if after == end else _bad()
    if rtype == SOA:
        mname, p = read_wire_name(data, pos)
        rname, p = read_wire_name(data, p)
        if p + 20 != end:
            _bad()
        return mname + rname + data[p:end]
    if rtype == SRV:
        name, after = read_wire_name(data, pos + 6)
        return data[pos : pos + 6] + name if after == end else _bad()
    return data[pos:end]


def _bad() -> bytes:
    raise FormErr("rdata length does not match its names")


def encode_wire_rr(rr: WireRR, ttl: int) -> bytes:
    """An uncompressed record (owner + fixed fields + rdata) with the given TTL."""
    return rr.name + struct.pack("!HHIH", rr.rtype, rr.rclass, ttl, len(rr.rdata)) + rr.rdata
