"""IP addresses and CIDRs parsed exactly as kube-apiserver parses them.

Python's :mod:`ipaddress` is not what Kubernetes uses: it accepts IPv6 zones
(``fd00::1%<any text>``, returned unchanged by ``str()``) and differs from Go
in other corners. This module ports the two Go parsers Kubernetes combines:

- ``netutils.ParseIPSloppy`` / ``ParseCIDRSloppy`` (k8s.io/utils/net): Go
  1.16's ``net.ParseIP`` / ``net.ParseCIDR``, which accept leading zeros in
  IPv4 octets and prefix lengths and never accept a zone;
- ``netip.ParseAddr`` / ``netip.ParsePrefix``: no leading zeros, at most four
  hex digits per IPv6 group, zones only on addresses (never on prefixes).

The strict validators of apimachinery (``IsValidIPForLegacyField`` and
``IsValidCIDRForLegacyField`` with strict validation, KEP-4858) accept a value
only when both parsers accept it, it is not an IPv4-mapped IPv6 address and,
for a CIDR, no bit is set beyond the prefix length. That is what
:func:`parse_ip` and :func:`parse_cidr` accept. They return canonical text
(Go's ``net.IP.String()``: dotted quad, RFC 5952 IPv6), so the text that
leaves this module never contains anything but ``[0-9a-f.:/]``.

The special-address predicates follow Go's ``net.IP`` methods; together they
make ``ValidateNonSpecialIP`` (formerly ``ValidateEndpointIP``) of
kube-apiserver's core validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Addr",
    "IPError",
    "parse_ip_sloppy",
    "parse_cidr_sloppy",
    "parse_addr_netip",
    "parse_prefix_netip",
    "parse_ip",
    "is_canonical_ipv4",
    "parse_cidr",
    "format_cidr",
    "go_trim_space",
    "special_reason",
    "special_reason_v4",
]

_BIG = 0xFFFFFF
_MAPPED_PREFIX = 0xFFFF << 32


class IPError(ValueError):
    """A value that is not an IP/CIDR for Kubernetes; ``str()`` is apimachinery's detail text."""


@dataclass(frozen=True, slots=True)
class Addr:
    """An address as Go's 16-byte ``net.IP``: ``value`` is always the 128-bit form;
    an IPv4 address is stored IPv4-mapped (``::ffff:a.b.c.d``), as Go stores it."""

    value: int

    @property
    def is4(self) -> bool:
        """Go's ``ip.To4() != nil``."""
        return self.value >> 32 == 0xFFFF

    @property
    def v4(self) -> int:
        return self.value & 0xFFFFFFFF

    def __str__(self) -> str:
        if self.is4:
            return _format4(self.v4)
        return _format6(self.value)


# --------------------------------------------------------------------------- Go 1.16 net (ParseIPSloppy)


def _dtoi(s: str) -> tuple[int, int, bool]:
    n = 0
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        n = n * 10 + ord(s[i]) - 48
        if n >= _BIG:
            return _BIG, i, False
        i += 1
    if i == 0:
        return 0, 0, False
    return n, i, True


def _xtoi(s: str) -> tuple[int, int, bool]:
    n = 0
    i = 0
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9":
            n = n * 16 + ord(c) - 48
        elif "a" <= c <= "f":
            n = n * 16 + ord(c) - 87
        elif "A" <= c <= "F":
            n = n * 16 + ord(c) - 55
        else:
            break
        if n >= _BIG:
            return 0, i, False
        i += 1
    if i == 0:
        return 0, i, False
    return n, i, True


def _sloppy4(s: str) -> int | None:
    """Go 1.16 parseIPv4: four decimal fields, leading zeros allowed; the 32-bit value."""
    out = 0
    for i in range(4):
        if not s:
            return None
        if i > 0:
            if s[0] != ".":
                return None
            s = s[1:]
        n, c, ok = _dtoi(s)
        if not ok or n > 0xFF:
            return None
        s = s[c:]
        out = out << 8 | n
    return None if s else out


def _sloppy6(s: str) -> int | None:
    """Go 1.16 parseIPv6 (no zone): the 128-bit value."""
    ip = [0] * 16
    ellipsis = -1
    if len(s) >= 2 and s[0] == ":" and s[1] == ":":
        ellipsis = 0
        s = s[2:]
        if not s:
            return 0
    i = 0
    while i < 16:
        n, c, ok = _xtoi(s)
        if not ok or n > 0xFFFF:
            return None
        if c < len(s) and s[c] == ".":
            if ellipsis < 0 and i != 12:
                return None
            if i + 4 > 16:
                return None
            v4 = _sloppy4(s)
            if v4 is None:
                return None
            ip[i:i + 4] = list(v4.to_bytes(4, "big"))
            s = ""
            i += 4
            break
        ip[i], ip[i + 1] = n >> 8, n & 0xFF
        i += 2
        s = s[c:]
        if not s:
            break
        if s[0] != ":" or len(s) == 1:
            return None
        s = s[1:]
        if s[0] == ":":
            if ellipsis >= 0:
                return None
            ellipsis = i
            s = s[1:]
            if not s:
                break
    if s:
        return None
    if i < 16:
        if ellipsis < 0:
            return None
        n = 16 - i
        ip = ip[:ellipsis] + [0] * n + ip[ellipsis:i]
    elif ellipsis >= 0:
        return None
    return int.from_bytes(bytes(ip), "big")


def parse_ip_sloppy(s: str) -> Addr | None:
    """``netutils.ParseIPSloppy``: Go 1.16's ``net.ParseIP`` (leading zeros allowed, no zones)."""
    for ch in s:
        if ch == ".":
            v4 = _sloppy4(s)
            return None if v4 is None else Addr(_MAPPED_PREFIX | v4)
        if ch == ":":
            v6 = _sloppy6(s)
            return None if v6 is None else Addr(v6)
    return None


def parse_cidr_sloppy(s: str) -> tuple[Addr, int, bool] | None:
    """``netutils.ParseCIDRSloppy``: (address, prefix length, is IPv4 form) or None."""
    slash = s.find("/")
    if slash < 0:
        return None
    addr, mask = s[:slash], s[slash + 1:]
    v4 = _sloppy4(addr)
    if v4 is not None:
        ip, bits, is4 = Addr(_MAPPED_PREFIX | v4), 32, True
    else:
        v6 = _sloppy6(addr)
        if v6 is None:
            return None
        ip, bits, is4 = Addr(v6), 128, False
    n, i, ok = _dtoi(mask)
    if not ok or i != len(mask) or n > bits:
        return None
    return ip, n, is4


# --------------------------------------------------------------------------- Go net/netip (ParseAddr, ParsePrefix)


def _netip4(s: str) -> int | None:
    """netip parseIPv4: four decimal fields, no leading zeros, each at most 255."""
    fields = s.split(".")
    if len(fields) != 4:
        return None
    out = 0
    for f in fields:
        if not f or len(f) > 3 or not all("0" <= c <= "9" for c in f):
            return None
        if len(f) > 1 and f[0] == "0":
            return None
        n = int(f)
        if n > 255:
            return None
        out = out << 8 | n
    return out


def _netip6(s: str) -> int | None:
    """netip parseIPv6 without the zone: groups of 1-4 hex digits, one '::', an IPv4 tail."""
    ip = [0] * 16
    ellipsis = -1
    if len(s) >= 2 and s[0] == ":" and s[1] == ":":
        ellipsis = 0
        s = s[2:]
        if not s:
            return 0
    i = 0
    while i < 16:
        off = 0
        acc = 0
        while off < len(s):
            c = s[off]
            if "0" <= c <= "9":
                acc = acc * 16 + ord(c) - 48
            elif "a" <= c <= "f":
                acc = acc * 16 + ord(c) - 87
            elif "A" <= c <= "F":
                acc = acc * 16 + ord(c) - 55
            else:
                break
            off += 1
            if off > 4:
                return None
        if off == 0:
            return None
        if off < len(s) and s[off] == ".":
            if ellipsis < 0 and i != 12:
                return None
            if i + 4 > 16:
                return None
            v4 = _netip4(s)
            if v4 is None:
                return None
            ip[i:i + 4] = list(v4.to_bytes(4, "big"))
            s = ""
            i += 4
            break
        ip[i], ip[i + 1] = acc >> 8, acc & 0xFF
        i += 2
        s = s[off:]
        if not s:
            break
        if s[0] != ":" or len(s) == 1:
            return None
        s = s[1:]
        if s[0] == ":":
            if ellipsis >= 0:
                return None
            ellipsis = i
            s = s[1:]
            if not s:
                break
    if s:
        return None
    if i < 16:
        if ellipsis < 0:
            return None
        n = 16 - i
        ip = ip[:ellipsis] + [0] * n + ip[ellipsis:i]
    elif ellipsis >= 0:
        return None
    return int.from_bytes(bytes(ip), "big")


def parse_addr_netip(s: str) -> tuple[int, int, str] | None:
    """``netip.ParseAddr``: (bits 32 or 128, value, zone) or None. Zones are returned, not dropped."""
    for ch in s:
        if ch == ".":
            v4 = _netip4(s)
            return None if v4 is None else (32, v4, "")
        if ch == ":":
            addr, pct, zone = s.partition("%")
            if pct and not zone:
                return None
            v6 = _netip6(addr)
            return None if v6 is None else (128, v6, zone)
        if ch == "%":
            return None
    return None


def parse_prefix_netip(s: str) -> tuple[int, int, int] | None:
    """``netip.ParsePrefix``: (bits 32 or 128, value, prefix length) or None; zones refused."""
    slash = s.rfind("/")
    if slash < 0:
        return None
    parsed = parse_addr_netip(s[:slash])
    if parsed is None or parsed[2]:
        return None
    bits, value, _ = parsed
    length = s[slash + 1:]
    if not length or not all("0" <= c <= "9" for c in length):
        return None
    if len(length) > 1 and length[0] == "0":
        return None
    n = int(length)
    if n > bits:
        return None
    return bits, value, n


# --------------------------------------------------------------------------- the strict validators


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def is_canonical_ipv4(s: str) -> bool:
    """True for a dotted quad both Go parsers accept and print back unchanged (the common case,
    checked by one regular expression instead of two parsers)."""
    return _CANONICAL_V4.fullmatch(s) is not None


def parse_ip(s: str) -> Addr:
    """apimachinery's ``IsValidIPForLegacyField`` with strict validation; the parsed address.

    Raises :class:`IPError` with apimachinery's detail text."""
    if not isinstance(s, str):
        raise IPError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    if _CANONICAL_V4.fullmatch(s):
        a, b, c, d = s.split(".")
        return Addr(_MAPPED_PREFIX | int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d))
    if "." not in s and "%" not in s:
        # Hex and colons only: whatever netip accepts here, Go 1.16's parser accepts too.
        strict6 = parse_addr_netip(s)
        if strict6 is not None and strict6[1] >> 32 != 0xFFFF:
            return Addr(strict6[1])
    ip = parse_ip_sloppy(s)
    if ip is None:
        raise IPError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    strict = parse_addr_netip(s)
    if strict is None:
        raise IPError("must not have leading 0s")
    bits, value, _ = strict
    if bits == 128 and value >> 32 == 0xFFFF:
        raise IPError("must not be an IPv4-mapped IPv6 address")
    return ip


def parse_cidr(s: str) -> tuple[Addr, int]:
    """apimachinery's ``IsValidCIDRForLegacyField`` with strict validation: (network address, length).

    Raises :class:`IPError` with apimachinery's detail text."""
    if not isinstance(s, str):
        raise IPError("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    sloppy = parse_cidr_sloppy(s)
    if sloppy is None:
        raise IPError("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    ip, length, is4 = sloppy
    strict = parse_prefix_netip(s)
    if strict is None:
        raise IPError("must not have leading 0s in IP or prefix length")
    bits, value, n = strict
    if bits == 128 and value >> 32 == 0xFFFF:
        raise IPError("must not have an IPv4-mapped IPv6 address")
    host = (1 << (bits - n)) - 1
    if value & host:
        raise IPError("must not have bits set beyond the prefix length")
    return ip, length


def format_cidr(ip: Addr, length: int) -> str:
    """Go's ``IPNet.String()`` for a network address and prefix length."""
    return f"{ip}/{length}"


# --------------------------------------------------------------------------- Go's strings.TrimSpace

_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                      "\u200a\u2028\u2029\u202f\u205f\u3000")


def go_trim_space(s: str) -> str:
    """Go's ``strings.TrimSpace``: Unicode White_Space at both ends (not Python's wider set)."""
    start, end = 0, len(s)
    while start < end and s[start] in _GO_SPACE:
        start += 1
    while end > start and s[end - 1] in _GO_SPACE:
        end -= 1
    return s[start:end]


# --------------------------------------------------------------------------- special addresses (Go net.IP methods)


def is_unspecified(ip: Addr) -> bool:
    return ip.value == 0 or (ip.is4 and ip.v4 == 0)


def is_loopback(ip: Addr) -> bool:
    return (ip.v4 >> 24 == 127) if ip.is4 else ip.value == 1


def is_link_local_unicast(ip: Addr) -> bool:
    return (ip.v4 >> 16 == 0xA9FE) if ip.is4 else ip.value >> 118 == 0xFE80 >> 6


def is_link_local_multicast(ip: Addr) -> bool:
    if ip.is4:
        return ip.v4 >> 8 == 0xE00000
    return ip.value >> 120 == 0xFF and (ip.value >> 112) & 0x0F == 0x02


def special_reason_v4(a: int, b: int, c: int, d: int) -> str | None:
    """``special_reason`` for the IPv4 address a.b.c.d."""
    if a == 0 and b == 0 and c == 0 and d == 0:
        return "may not be unspecified (0.0.0.0)"
    if a == 127:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if a == 169 and b == 254:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if a == 224 and b == 0 and c == 0:
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


def special_reason(ip: Addr) -> str | None:
    """``ValidateNonSpecialIP``'s detail for ``ip``, or None when kube-apiserver allows it
    (it refuses unspecified, loopback, link-local unicast and link-local multicast only)."""
    if ip.is4:
        v = ip.v4
        return special_reason_v4(v >> 24, v >> 16 & 0xFF, v >> 8 & 0xFF, v & 0xFF)
    if is_unspecified(ip):
        return f"may not be unspecified ({ip})"
    if is_loopback(ip):
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if is_link_local_unicast(ip):
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if is_link_local_multicast(ip):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


# --------------------------------------------------------------------------- formatting


def _format4(v: int) -> str:
    return f"{v >> 24}.{v >> 16 & 0xFF}.{v >> 8 & 0xFF}.{v & 0xFF}"


def _format6(v: int) -> str:
    groups = [(v >> (112 - 16 * k)) & 0xFFFF for k in range(8)]
    best_start, best_len = -1, 0
    k = 0
    while k < 8:
        if groups[k] == 0:
            j = k
            while j < 8 and groups[j] == 0:
                j += 1
            if j - k > best_len:
                best_start, best_len = k, j - k
            k = j
        else:
            k += 1
    if best_len < 2:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len:])
    return f"{head}::{tail}"
