"""Pure helpers for DNS names: wire form, reverse names, dashed IPs, and the cluster qname parser.

Names are handled as lower-case text without the trailing dot ("web.default.svc.cluster.local")
everywhere inside podnet.dns; the wire form is produced only by :func:`to_wire`. Nothing here does
I/O or keeps state, so every function is safe to call from any thread and is tested by tables.

The parser follows CoreDNS's ``parse.go`` shapes, relative to the cluster zone:

    ``<zone>``                                   apex
    ``dns-version.<zone>``                       schema version TXT
    ``svc.<zone>`` / ``pod.<zone>``              empty non-terminals
    ``<ns>.svc.<zone>``                          namespace (empty non-terminal if it exists)
    ``<svc>.<ns>.svc.<zone>``                    service
    ``<endpoint>.<svc>.<ns>.svc.<zone>``         endpoint (hostname or dashed IP)
    ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``   SRV for a named port
    ``<a-b-c-d>.<ns>.pod.<zone>``                pod record (insecure mode)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "to_wire",
    "from_wire_labels",
    "join",
    "dashed_ip",
    "reverse_name",
    "pod_label_ip",
    "ClusterName",
    "parse_cluster_name",
    "relative_labels",
    "is_reverse",
    "safe_name",
    "check_name",
    "dns_label",
    "external_name",
    "go_ip",
]

MAX_NAME = 255
MAX_LABEL = 63

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*")
"""Every name podnet-dns writes itself: letters, digits, '-' and '_' (SRV labels) only, so no
control byte, whitespace, '.' inside a label, '%' or escape can reach the wire from our own data."""
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def safe_name(name: str) -> bool:
    """True when every label of ``name`` (text, no trailing dot) is 1-63 of [A-Za-z0-9_-] and the
    whole name fits 255 wire bytes; '' (the root) is safe."""
    return name == "" or (_SAFE_NAME.fullmatch(name) is not None and len(name) + 2 <= MAX_NAME)


def check_name(name: str) -> str:
    """``name`` itself when :func:`safe_name`, else ValueError (names are checked where they are written)."""
    if not safe_name(name):
        raise ValueError(f"unsafe DNS name {name[:80]!r}")
    return name


def dns_label(value: object) -> bool:
    """Kubernetes' DNS-1123 label (namespaces, Service names, endpoint hostnames), full-string match."""
    return isinstance(value, str) and _DNS1123_LABEL.fullmatch(value) is not None


def external_name(value: object) -> str | None:
    """The CNAME target for an ExternalName, or None when kube-apiserver would refuse it: a
    lower-case DNS-1123 subdomain of at most 253 characters after one trailing dot is removed,
    at least one character (as ``ValidateService``: TrimSuffix "." then IsDNS1123Subdomain)."""
    if not isinstance(value, str):
        return None
    name = value[:-1] if value.endswith(".") else value
    if not 0 < len(name) <= 253 or _DNS1123_SUBDOMAIN.fullmatch(name) is None:
        return None
    if any(len(label) > MAX_LABEL for label in name.split(".")):
        return None
    return name


def go_ip(value: object) -> str | None:
    """``value`` when Go's net.ParseIP accepts it (dotted IPv4 without leading zeros, or IPv6 with no
    zone), else None; the text is returned unchanged so records keep what the API server stored."""
    if not isinstance(value, str):
        return None
    if ":" not in value:
        if _IPV4.fullmatch(value) is None or any(int(octet) > 255 for octet in value.split(".")):
            return None
        return value
    if _IPV6_CHARS.fullmatch(value) is None:
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return value


def join(*parts: str) -> str:
    """Join name fragments with dots, skipping empty ones (so join(x, "") == x)."""
    return ".".join(p for p in parts if p)


def to_wire(name: str) -> bytes:
    """Uncompressed wire form of a dotted text name ('' is the root). Raises ValueError if too long or
    not :func:`safe_name` (a label with any byte other than letters, digits, '-' and '_')."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        if _SAFE_NAME.fullmatch(name) is None:
            raise ValueError(f"unsafe DNS name {name[:80]!r}")
        for label in name.split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) <= MAX_LABEL:
                raise ValueError(f"bad label {label!r} in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


_NEEDS_ESCAPE = re.compile(rb"[^\x21-\x2d\x2f-\x5b\x5d-\x7e]")
"""A byte that text names write as \\DDD: '.', '\\', and everything outside 0x21-0x7E."""


def from_wire_labels(labels: list[bytes]) -> str:
    """Dotted text for a list of raw labels; non-printable bytes are escaped as \\DDD (RFC 1035 5.1)."""
    joined = b"".join(labels)
    if _NEEDS_ESCAPE.search(joined) is None:
        return b".".join(labels).decode("ascii")
    out = []
    for label in labels:
        s = []
        for b in label:
            if b in (0x2E, 0x5C) or not 0x21 <= b <= 0x7E:
                s.append("\\%03d" % b)
            else:
                s.append(chr(b))
        out.append("".join(s))
    return ".".join(out)


def dashed_ip(ip: str) -> str:
    """CoreDNS's endpoint hostname for an IP: '10.1.2.3' -> '10-1-2-3', '2001:db8::' -> '2001-db8--0'."""
    if ":" in ip:
        s = ip.replace(":", "-")
        if s.startswith("-"):
            s = "0" + s
        if s.endswith("-"):
            s = s + "0"
        return s
    return ip.replace(".", "-")


def reverse_name(ip: str) -> str:
    """The PTR owner name: 'd.c.b.a.in-addr.arpa' or 32 reversed nibbles under 'ip6.arpa'."""
    return ipaddress.ip_address(ip).reverse_pointer


def pod_label_ip(label: str) -> str | None:
    """The IP encoded in a pod label ('10-1-2-3', '2001-db8--1'), or None when it is not an IP.

    Like CoreDNS: exactly three dashes and no '--' is IPv4, anything else is tried as IPv6.
    """
    try:
        if label.count("-") == 3 and "--" not in label:
            return str(ipaddress.IPv4Address(label.replace("-", ".")))
        if "-" in label:
            return str(ipaddress.IPv6Address(label.replace("-", ":")))
    except ValueError:
        return None
    return None


def relative_labels(name: str, zone: str) -> list[str] | None:
    """Labels of ``name`` below ``zone`` (both lower-case text), [] at the apex, None outside."""
    if name == zone:
        return []
    if zone == "":
        return name.split(".") if name else []
    if name.endswith("." + zone):
        return name[: -len(zone) - 1].split(".")
    return None


def is_reverse(name: str) -> bool:
    return name.endswith("in-addr.arpa") or name.endswith("ip6.arpa")


@dataclass(frozen=True, slots=True)
class ClusterName:
    """A parsed name under the cluster zone. ``kind`` is one of:

    apex, version, svc-root, pod-root, namespace, service, endpoint, port, pod, pod-namespace, invalid.
    'invalid' names can never exist (NXDOMAIN whatever the snapshot holds).
    """

    kind: str
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""
    pod_ip: str = ""


INVALID = ClusterName("invalid")


def parse_cluster_name(labels: list[str]) -> ClusterName:
    """Classify the labels below the zone (as from :func:`relative_labels`), most specific first."""
    n = len(labels)
    if n == 0:
        return ClusterName("apex")
    last = labels[-1]
    if n == 1:
        if last == "dns-version":
            return ClusterName("version")
        if last == "svc":
            return ClusterName("svc-root")
        if last == "pod":
            return ClusterName("pod-root")
        return INVALID
    if last == "pod":
        if n == 2:
            return ClusterName("pod-namespace", namespace=labels[0])
        if n == 3:
            ip = pod_label_ip(labels[0])
            return ClusterName("pod", namespace=labels[1], pod_ip=ip) if ip else INVALID
        return INVALID
    if last != "svc":
        return INVALID
    ns = labels[-2]
    if n == 2:
        return ClusterName("namespace", namespace=ns)
    svc = labels[-3]
    if n == 3:
        return ClusterName("service", namespace=ns, service=svc)
    if n == 4:
        first = labels[0]
        if first.startswith("_"):
            # '_tcp.svc.ns.svc.zone' (protocol only): an empty non-terminal when named ports exist.
            return ClusterName("port", namespace=ns, service=svc, protocol=first[1:])
        return ClusterName("endpoint", namespace=ns, service=svc, endpoint=first)
    if n == 5 and labels[0].startswith("_") and labels[1].startswith("_"):
        return ClusterName("port", namespace=ns, service=svc, port=labels[0][1:], protocol=labels[1][1:])
    return INVALID
