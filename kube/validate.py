"""Validators for strings that come from the Kubernetes API.

Every string that podnet copies from an API object into an iptables-restore
line, a DNS name, a file path or a log line passes one of these first. Each
validator either returns the value in canonical form or raises
:class:`InvalidField`; none of them ever returns text it did not check. The
patterns are Kubernetes' own (apimachinery ``validation.go``), so an object a
real API server accepts is accepted here too.
"""

from __future__ import annotations

import ipaddress
import re
import sys

__all__ = [
    "InvalidField",
    "dns_label",
    "dns_subdomain",
    "port_name",
    "port_number",
    "optional_port_number",
    "protocol",
    "ip_address",
    "cidr",
    "label_key",
    "label_value",
    "zone_name",
    "PROTOCOLS",
]

PROTOCOLS = ("TCP", "UDP", "SCTP")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# IANA_SVC_NAME: at most 15 characters, lower-case letters, digits and '-',
# at least one letter, no leading/trailing/double '-'.
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# Zones/topology labels are free-form in Kubernetes; we accept label values.


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
    """An RFC 1123 label: what Service, Namespace and port names must be."""
    s = _str(field, value)
    if not _DNS_LABEL.match(s):
        raise InvalidField(field, value, "not a DNS-1123 label")
    return s


def dns_subdomain(field: str, value: object) -> str:
    """An RFC 1123 subdomain (at most 253 characters): Pod, Node, slice names."""
    s = _str(field, value)
    if len(s) > 253 or not _DNS_SUBDOMAIN.match(s):
        raise InvalidField(field, value, "not a DNS-1123 subdomain")
    return s


def port_name(field: str, value: object) -> str:
    """A port name (IANA_SVC_NAME), or '' for an unnamed port."""
    if value is None or value == "":
        return ""
    s = _str(field, value)
    if len(s) > 15 or not _PORT_NAME.match(s) or "--" in s or not re.search("[a-z]", s):
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


def ip_address(field: str, value: object) -> str:
    """An IPv4 or IPv6 address, returned in canonical compressed form.

    Leading zeros in IPv4 octets are refused, as Kubernetes refuses them
    (they are ambiguous between decimal and octal).
    """
    s = _str(field, value)
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        raise InvalidField(field, value, "not an IP address") from None


def cidr(field: str, value: object) -> str:
    """A CIDR; host bits are cleared (1.2.3.4/24 -> 1.2.3.0/24)."""
    s = _str(field, value)
    if "/" not in s:
        raise InvalidField(field, value, "not a CIDR")
    try:
        return str(ipaddress.ip_network(s.strip(), strict=False))
    except ValueError:
        raise InvalidField(field, value, "not a CIDR") from None


def label_key(field: str, value: object) -> str:
    """A label key: optional DNS-subdomain prefix and '/', then a name."""
    s = _str(field, value)
    prefix, slash, name = s.rpartition("/")
    if slash:
        dns_subdomain(field, prefix)
    if not _LABEL_NAME.match(name):
        raise InvalidField(field, value, "not a label key")
    return s


def label_value(field: str, value: object) -> str:
    """A label value (at most 63 characters of [-A-Za-z0-9_.])."""
    s = _str(field, value)
    if not _LABEL_VALUE.match(s):
        raise InvalidField(field, value, "not a label value")
    return s


def zone_name(field: str, value: object) -> str:
    """A topology zone: a label value (the API stores it as one). Interned: a cluster has few zones."""
    return sys.intern(label_value(field, value))
