"""The ``log`` plugin: one line per query on standard output, in CoreDNS's formats.

Common log format (CoreDNS's default, ``{common}``)::

    [INFO] {remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}

``{combined}`` appends `` "{>opcode}"``. Any other format is expanded placeholder by placeholder
(the ones above plus ``{>opcode}``, ``{local}``); unknown placeholders are written as ``-`` as
CoreDNS's replacer does for empty values. ``{name}`` is the lower-cased query name with its trailing
dot, ``{remote}`` an IPv6 address in brackets, ``{duration}`` seconds with an ``s``.

Classes (``class`` in the block): ``success`` NOERROR with answers, ``denial`` NXDOMAIN or NOERROR
without answers, ``error`` every other rcode, ``all``.
"""

from __future__ import annotations

import re
import struct
import sys
from decimal import Decimal
from typing import Callable

from podnet.dns.coreconfig import LogConfig, in_zone
from podnet.dns.wire import TYPE_NAMES, Query

__all__ = ["QueryLog", "COMMON", "COMBINED", "RCODE_NAMES", "classify", "flags_text", "go_seconds"]

COMMON = '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}'
COMBINED = COMMON + ' "{>opcode}"'
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}
CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_FLAGS = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010))


def classify(reply: bytes) -> str:
    rcode = reply[3] & 0xF
    ancount = struct.unpack_from("!H", reply, 6)[0]
    if rcode == 0:
        return "success" if ancount else "denial"
    return "denial" if rcode == 3 else "error"


def flags_text(flags: int) -> str:
    return ",".join(n for n, bit in _FLAGS if flags & bit)


def go_seconds(seconds: float) -> str:
    """Seconds as Go's strconv.FormatFloat(s, 'f', -1, 64) writes them, plus 's'."""
    return format(Decimal(repr(max(0.0, seconds))), "f") + "s"


def _type_name(qtype: int) -> str:
    return TYPE_NAMES.get(qtype) or f"TYPE{qtype}"


def _remote(peer) -> tuple[str, str]:
    if not peer:
        return "-", "-"
    host, port = peer[0], peer[1]
    return (f"[{host}]" if ":" in host else host), str(port)


_FIELDS = {
    "{remote}": lambda q, n, r, peer, proto, sec, loc: _remote(peer)[0],
    "{port}": lambda q, n, r, peer, proto, sec, loc: _remote(peer)[1],
    "{local}": lambda q, n, r, peer, proto, sec, loc: _remote(loc)[0],
    "{>id}": lambda q, n, r, peer, proto, sec, loc: str(struct.unpack("!H", q.id)[0]),
    "{type}": lambda q, n, r, peer, proto, sec, loc: _type_name(q.qtype),
    "{class}": lambda q, n, r, peer, proto, sec, loc: CLASS_NAMES.get(q.qclass, f"CLASS{q.qclass}"),
    "{name}": lambda q, n, r, peer, proto, sec, loc: (q.qname + ".") if q.qname else ".",
    "{proto}": lambda q, n, r, peer, proto, sec, loc: proto,
    "{size}": lambda q, n, r, peer, proto, sec, loc: str(n),
    "{>do}": lambda q, n, r, peer, proto, sec, loc: "true" if q.edns is not None and q.edns[2] else "false",
    "{>bufsize}": lambda q, n, r, peer, proto, sec, loc: str(q.edns[0] if q.edns is not None else 512),
    "{rcode}": lambda q, n, r, peer, proto, sec, loc: RCODE_NAMES.get(r[3] & 0xF, str(r[3] & 0xF)),
    "{>rflags}": lambda q, n, r, peer, proto, sec, loc: flags_text(struct.unpack_from("!H", r, 2)[0]),
    "{rsize}": lambda q, n, r, peer, proto, sec, loc: str(len(r)),
    "{duration}": lambda q, n, r, peer, proto, sec, loc: go_seconds(sec),
    "{>opcode}": lambda q, n, r, peer, proto, sec, loc: str((q.flags >> 11) & 0xF),
}


class QueryLog:
    def __init__(self, cfg: LogConfig, write: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.format = cfg.format.replace("{common}", COMMON).replace("{combined}", COMBINED)
        # The format split once: literal text at even positions, placeholders at odd ones.
        parts = re.split(r"(\{[^{}]*\})", self.format)
        self._parts = [(p, None) if i % 2 == 0 else (p, _FIELDS.get(p)) for i, p in enumerate(parts) if p]
        self._all = "all" in cfg.classes
        self._everywhere = "" in cfg.names
        self.write = write or _stdout

    def wants(self, qname: str, reply: bytes) -> bool:
        if not self._everywhere and not any(in_zone(qname, z) for z in self.cfg.names):
            return False
        return self._all or classify(reply) in self.cfg.classes

    def line(self, q: Query, request_len: int, reply: bytes, peer, proto: str, seconds: float, local=None) -> str:
        out = []
        for text, field in self._parts:
            if field is not None:
                out.append(field(q, request_len, reply, peer, proto, seconds, local))
            elif text.startswith("{") and text.endswith("}"):
                out.append("-")
            else:
                out.append(text)
        return "".join(out)

    def emit(self, q: Query, request_len: int, reply: bytes, peer, proto: str, seconds: float) -> None:
        if self.wants(q.qname, reply):
            self.write("[INFO] " + self.line(q, request_len, reply, peer, proto, seconds))


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
