"""Validators for strings that come from the Kubernetes API.

Every string that podnet copies from an API object into an iptables-restore
line, a DNS name, a file path or a log line passes one of these first. Each
validator either returns the value in canonical form or raises
:class:`InvalidField`; none of them ever returns text it did not check.

The rules are kube-apiserver's own (apimachinery ``validation.go``,
``ip.go``; core and discovery ``validation.go``), so an object a real API
server accepts is accepted here too and one it refuses is refused:

- every pattern must match the *whole* string (``re.fullmatch``): Go's ``$``
  never matches before a final newline, Python's ``$`` does;
- IPs and CIDRs are parsed by :mod:`podnet.kube.goip` as Go parses them (no
  zones, no leading zeros, no IPv4-mapped IPv6, no host bits in a CIDR: the
  strict validation of KEP-4858) and returned in canonical form;
- none of the accepted values can hold whitespace or a control character.
"""

from __future__ import annotations

import functools
import re
import sys

from podnet.kube import goip

__all__ = [
    "InvalidField",
    "dns_label",
    "dns1035_label",
    "dns_subdomain",
    "fqdn",
    "port_name",
    "port_number",
    "optional_port_number",
    "protocol",
    "ip_address",
    "non_special_ip",
    "cidr",
    "source_range",
    "qualified_name",
    "label_key",
    "label_value",
    "annotation_key",
    "zone_name",
    "opaque_token",
    "PROTOCOLS",
]

PROTOCOLS = ("TCP", "UDP", "SCTP")

# apimachinery/pkg/util/validation/validation.go
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME_CHARSET = re.compile(r"[-a-z0-9]+")
_PORT_NAME_ONE_LETTER = re.compile(r"[a-z]")
_OPAQUE = re.compile(r"[!-~]*")
"""Printable ASCII without space: uid, resourceVersion (set by the server, opaque to clients)."""

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
PORT_NAME_MAX = 15
OPAQUE_MAX = 256


class InvalidField(ValueError):
    """A field of an API object failed validation; ``str()`` names the field."""

    def __init__(self, field: str, value: object, why: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}: {why} (got {shown})")
        self.field = field
        self.why = why


def _str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, value, "not a string")
    return value


def dns_label(field: str, value: object) -> str:
    """An RFC 1123 label (IsDNS1123Label): Namespace names, port names, hostnames."""
    s = _str(field, value)
    if len(s) > DNS1123_LABEL_MAX or not _DNS1123_LABEL.fullmatch(s):
        raise InvalidField(field, value, "not a DNS-1123 label")
    return s


def dns1035_label(field: str, value: object) -> str:
    """An RFC 1035 label (IsDNS1035Label): Service names (ValidateServiceName)."""
    s = _str(field, value)
    if len(s) > DNS1035_LABEL_MAX or not _DNS1035_LABEL.fullmatch(s):
        raise InvalidField(field, value, "not a DNS-1035 label")
    return s


def dns_subdomain(field: str, value: object) -> str:
    """An RFC 1123 subdomain (IsDNS1123Subdomain, at most 253 characters): Pod, Node, slice names."""
    s = _str(field, value)
    if len(s) > DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(s):
        raise InvalidField(field, value, "not a DNS-1123 subdomain")
    return s


def fqdn(field: str, value: object) -> str:
    """IsFullyQualifiedDomainName: one optional trailing dot, a subdomain of at least two labels,
    each a DNS-1123 label (at most 63 characters). Returned without the trailing dot."""
    s = _str(field, value)
    name = s[:-1] if s.endswith(".") else s
    dns_subdomain(field, name)
    labels = name.split(".")
    if len(labels) < 2:
        raise InvalidField(field, value, "should be a domain with at least two segments separated by dots")
    for label in labels:
        dns_label(field, label)
    return name


def port_name(field: str, value: object) -> str:
    """A container port name (IsValidPortName, IANA_SVC_NAME), or '' for an unnamed port."""
    if value is None or value == "":
        return ""
    s = _str(field, value)
    if (
        len(s) > PORT_NAME_MAX
        or not _PORT_NAME_CHARSET.fullmatch(s)
        or not _PORT_NAME_ONE_LETTER.search(s)
        or "--" in s
        or s[0] == "-"
        or s[-1] == "-"
    ):
        raise InvalidField(field, value, "not an IANA service name")
    return s


def port_number(field: str, value: object) -> int:
    """An integer port in 1..65535 (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, value, "not an integer")
    if not 1 <= value <= 65535:
        raise InvalidField(field, value, "port out of range 1-65535")
    return value


def optional_port_number(field: str, value: object) -> int | None:
    """A port in 1..65535, or None where the API leaves it unset or 0."""
    if value is None or value == 0:
        return None
    return port_number(field, value)


def protocol(field: str, value: object) -> str:
    """TCP, UDP or SCTP; unset means TCP, as the API server defaults it."""
    if value is None:
        return "TCP"
    s = _str(field, value)
    for p in PROTOCOLS:
        if s == p:
            return p  # the constant: one shared string instead of the decoder's copy
    raise InvalidField(field, value, "unknown protocol")


def _ip(field: str, value: object) -> goip.Addr:
    s = _str(field, value)
    try:
        return goip.parse_ip(s)
    except goip.IPError as e:
        raise InvalidField(field, value, str(e)) from None


def ip_address(field: str, value: object) -> str:
    """An IPv4 or IPv6 address (IsValidIPForLegacyField, strict), in canonical form.

    Refused: zones (``%``), leading zeros in IPv4 octets, IPv4-mapped IPv6,
    anything around the address (whitespace, a newline, a port)."""
    if isinstance(value, str) and goip.is_canonical_ipv4(value):
        return value
    return str(_ip(field, value))


def non_special_ip(field: str, value: object) -> str:
    """An address that may be a traffic destination: ``ip_address`` plus kube-apiserver's
    ValidateNonSpecialIP (not unspecified, loopback, link-local or link-local multicast).
    Used where kube-apiserver uses it: EndpointSlice addresses and Service externalIPs."""
    if isinstance(value, str) and goip.is_canonical_ipv4(value):
        a, b, c, d = value.split(".")
        why = goip.special_reason_v4(int(a), int(b), int(c), int(d))
        text = value
    else:
        ip = _ip(field, value)
        why = goip.special_reason(ip)
        text = str(ip)
    if why is not None:
        raise InvalidField(field, value, why)
    return text


def cidr(field: str, value: object) -> str:
    """A CIDR (IsValidCIDRForLegacyField, strict), in canonical form.

    Refused besides what ``ip_address`` refuses: bits set beyond the prefix
    length (``1.2.3.4/24``) and leading zeros in the length (``/024``)."""
    s = _str(field, value)
    try:
        ip, length = goip.parse_cidr(s)
    except goip.IPError as e:
        raise InvalidField(field, value, str(e)) from None
    return goip.format_cidr(ip, length)


def source_range(field: str, value: object) -> str:
    """A loadBalancerSourceRanges entry: kube-apiserver trims Go white space around it
    (strings.TrimSpace) before ``cidr``; the canonical text returned has none."""
    return cidr(field, goip.go_trim_space(_str(field, value)))


QUALIFIED_NAME_TOTAL_MAX = DNS1123_SUBDOMAIN_MAX + 1 + QUALIFIED_NAME_MAX


@functools.lru_cache(maxsize=4096)
def _qualified_name_error(s: str) -> str | None:
    """Why ``s`` is not a qualified name, or None. Cached: a cluster repeats few keys."""
    parts = s.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return "prefix part must be a DNS-1123 subdomain"
    else:
        return "a qualified name has at most one '/'"
    if not name or len(name) > QUALIFIED_NAME_MAX or not _QUALIFIED_NAME.fullmatch(name):
        return "not a qualified name"
    return None


def qualified_name(field: str, value: object) -> str:
    """IsQualifiedName: an optional DNS-1123 subdomain prefix and '/', then a name of at most
    63 characters (label keys, annotation keys, appProtocol)."""
    s = _str(field, value)
    why = "not a qualified name" if len(s) > QUALIFIED_NAME_TOTAL_MAX else _qualified_name_error(s)
    if why is not None:
        raise InvalidField(field, value, why)
    return s


def label_key(field: str, value: object) -> str:
    """A label key: a qualified name."""
    return qualified_name(field, value)


def label_value(field: str, value: object) -> str:
    """A label value (IsValidLabelValue: at most 63 characters of [-A-Za-z0-9_.], alphanumeric ends)."""
    s = _str(field, value)
    if len(s) > LABEL_VALUE_MAX or not _LABEL_VALUE.fullmatch(s):
        raise InvalidField(field, value, "not a label value")
    return s


def annotation_key(field: str, value: object) -> str:
    """An annotation key: ValidateAnnotations checks the lower-cased key as a qualified name."""
    s = _str(field, value)
    qualified_name(field, s.lower())
    return s


def zone_name(field: str, value: object) -> str:
    """A topology zone: a label value (the API stores it as one). Interned: a cluster has few zones."""
    return sys.intern(label_value(field, value))


def opaque_token(field: str, value: object) -> str:
    """A server-set opaque string (uid, resourceVersion): printable ASCII without space, bounded;
    '' when unset."""
    if value is None:
        return ""
    s = _str(field, value)
    if len(s) > OPAQUE_MAX or not _OPAQUE.fullmatch(s):
        raise InvalidField(field, value, "not a printable token")
    return s
