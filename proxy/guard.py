"""The last check before iptables-restore text: values and rule lines of one service.

Pure. podnet.kube validates objects at the API boundary; this module holds the
proxy's own line of defence, so that a value that slipped through (a bug
upstream, or an object built without the parsers) can never become a foreign
rule, a foreign chain, or a restore that fails for everyone.

Guarantees, for every fragment that :func:`check_fragment` accepts:

* every IP is re-parsed strictly: ASCII digits, hex and separators only (no
  zone, no whitespace), the canonical text of its family (so no leading zeros,
  no IPv4-mapped IPv6), and a service or endpoint address is none of the
  special addresses kube-apiserver refuses in ``ValidateEndpointIP`` /
  ``ValidateNonSpecialIP`` (unspecified, loopback, link-local unicast,
  link-local multicast); the proxy also refuses every multicast address and the
  IPv4 limited broadcast, which no Service or endpoint can use;
* CIDRs are a strict IP, ``/``, and a decimal prefix length without leading
  zeros within the family's range;
* names interpolated into comments (namespace, name, port name) are short
  ASCII tokens of letters, digits, ``.``, ``_`` and ``-``; protocols are TCP,
  UDP or SCTP; ports are integers (not bools) in 1..65535;
* every chain the fragment owns is ``PODNET-<kind>-<16 base32>``, at most 28
  characters;
* every rule line is non-empty, made of a fixed ASCII alphabet (letters,
  digits, space and ``_.:/!,+[]();"-``), so no control byte, newline, tab,
  ``%``, backslash or single quote can appear, and its double quotes pair up
  within the line (:func:`check_rules`, one C-speed pass over all lines;
  :func:`check_rule` is the full token grammar, used to name the bad line).

Cost: about 30 ms per 1,000 service ports with 5 endpoints each, paid only
when a service's fragment is recomputed (fragments are cached).

A rejected value raises :class:`Unsafe` with a short ``reason`` (a metric
label) and a message that names the field and shows the value with ``repr``.
"""

from __future__ import annotations

import re
import socket
from typing import Iterable

from podnet.kube.objects import EndpointSlice
from podnet.proxy.model import ServicePortInfo
from podnet.proxy.rules import NodeContext, ServiceRules


class Unsafe(ValueError):
    """A value that must never reach iptables-restore; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_IP_CHARS = re.compile(r"[0-9a-fA-F:.]{2,45}")
_PREFIX = re.compile(r"0|[1-9][0-9]{0,2}")
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?")
_OWN_CHAIN = re.compile(r"PODNET-(SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}")
_TOKEN = r'[A-Za-z0-9_.:/!,+\[\]-]+'
_QUOTED = r'"[A-Za-z0-9_.:/ ,;()+\[\]-]*"'
_ONE_RULE = rf"(?:{_TOKEN}|{_QUOTED})(?: (?:{_TOKEN}|{_QUOTED}))*"
_RULE = re.compile(_ONE_RULE)
_QUOTED_SEGMENT = re.compile(r'"[^"\n]*"')
_OUTSIDE_ALPHABET = re.compile(r'[^A-Za-z0-9_.:/!,+\[\]() ;"\n-]')
PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_V6_ZERO = b"\0" * 16
_V6_LOOPBACK = b"\0" * 15 + b"\x01"


def strict_ip(value: object, family: int, field: str) -> bytes:
    """``value`` as Go's net.ParseIP would accept it, canonical, in ``family``; its packed bytes.

    inet_pton refuses zones, whitespace and (for IPv4) leading zeros; comparing
    inet_ntop's text with the input refuses every other spelling (upper case,
    uncompressed zeros), at C speed."""
    if not isinstance(value, str) or not _IP_CHARS.fullmatch(value):
        raise Unsafe("ip", f"{field}: not an IP address: {value!r}")
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        packed = socket.inet_pton(af, value)
    except OSError:
        other = socket.AF_INET6 if family == 4 else socket.AF_INET
        try:
            socket.inet_pton(other, value)
        except OSError:
            raise Unsafe("ip", f"{field}: not an IP address: {value!r}") from None
        raise Unsafe("family", f"{field}: {value!r} is not IPv{family}") from None
    if socket.inet_ntop(af, packed) != value or (family == 6 and packed[:12] == _V4_MAPPED):
        raise Unsafe("ip", f"{field}: {value!r} is not in canonical form")
    return packed


def special(packed: bytes) -> str:
    """Why the address (packed, 4 or 16 bytes) can be no Service or endpoint address ('' when it can)."""
    b0 = packed[0]
    if len(packed) == 4:
        if packed == b"\0\0\0\0":
            return "unspecified"
        if b0 == 127:
            return "loopback"
        if b0 == 169 and packed[1] == 254:
            return "link-local"
        if 224 <= b0 <= 239:
            return "multicast"
        if packed == b"\xff\xff\xff\xff":
            return "broadcast"
        return ""
    if packed == _V6_ZERO:
        return "unspecified"
    if packed == _V6_LOOPBACK:
        return "loopback"
    if b0 == 0xFE and packed[1] & 0xC0 == 0x80:
        return "link-local"
    if b0 == 0xFF:
        return "multicast"
    return ""


def destination_ip(value: object, family: int, field: str) -> str:
    """A strict IP that is not special (ClusterIP, external IP, load-balancer IP, endpoint)."""
    why = special(strict_ip(value, family, field))
    if why:
        raise Unsafe("special-address", f"{field}: {value!r} is a {why} address")
    return value  # type: ignore[return-value]


def strict_cidr(value: object, family: int, field: str) -> str:
    if not isinstance(value, str) or value.count("/") != 1:
        raise Unsafe("cidr", f"{field}: not a CIDR: {value!r}")
    addr, prefix = value.split("/")
    try:
        strict_ip(addr, family, field)
    except Unsafe as e:
        raise Unsafe("cidr", f"{e} (in CIDR {value!r})") from None
    if not _PREFIX.fullmatch(prefix) or int(prefix) > (32 if family == 4 else 128):
        raise Unsafe("cidr", f"{field}: bad prefix length in {value!r}")
    return value


def port(value: object, field: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not int or not 1 <= value <= 65535:
        raise Unsafe("port", f"{field}: not a port: {value!r}")


def check_service_port(sp: ServicePortInfo, family: int) -> None:
    """Every value of one service port that a rule line interpolates."""
    name = sp.name
    for field, value in (("namespace", name.namespace), ("name", name.name)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise Unsafe("name", f"{field}: {value!r}")
    if not isinstance(name.port, str) or not _PORT_NAME.fullmatch(name.port):
        raise Unsafe("name", f"port name: {name.port!r}")
    if sp.protocol not in PROTOCOLS or name.protocol != sp.protocol:
        raise Unsafe("protocol", f"protocol: {sp.protocol!r}")
    port(sp.port, "port")
    port(sp.node_port, "nodePort", optional=True)
    port(sp.hc_node_port, "healthCheckNodePort", optional=True)
    if sp.affinity_timeout is not None and (type(sp.affinity_timeout) is not int or not 0 < sp.affinity_timeout <= 86400):
        raise Unsafe("affinity", f"sessionAffinity timeout: {sp.affinity_timeout!r}")
    destination_ip(sp.cluster_ip, family, "clusterIP")
    for ip in sp.external_ips:
        destination_ip(ip, family, "externalIPs")
    for ip in sp.lb_ips:
        destination_ip(ip, family, "loadBalancer ingress IP")
    for cidr in sp.source_ranges:
        strict_cidr(cidr, family, "loadBalancerSourceRanges")


def check_slices(slices: Iterable[EndpointSlice], family: int) -> None:
    """Every endpoint address and port of the slices of ``family`` that rules may use."""
    atype = f"IPv{family}"
    for sl in slices:
        if sl.address_type != atype:
            continue
        for p in sl.ports:
            port(p.port, "endpoint port", optional=True)
            if p.protocol not in PROTOCOLS or not isinstance(p.name, str) or not _PORT_NAME.fullmatch(p.name):
                raise Unsafe("name", f"EndpointSlice {sl.name!r} port: {p.name!r}/{p.protocol!r}")
        for e in sl.endpoints:
            for ip in e.addresses[:1]:
                destination_ip(ip, family, "endpoint address")


def check_chain(chain: str) -> None:
    if not _OWN_CHAIN.fullmatch(chain):
        raise Unsafe("chain", f"chain name outside the plan: {chain!r}")


def check_rule(rule: str) -> None:
    """One rule (the text after ``-A CHAIN``) in the fixed alphabet and grammar."""
    if not isinstance(rule, str) or not _RULE.fullmatch(rule):
        raise Unsafe("rule", f"rule text outside the grammar: {rule!r}")


def check_rules(rules: list[str]) -> None:
    """The alphabet part of :func:`check_rule` for many lines at C speed: every character
    from the rule alphabet (no control byte, newline, tab, ``%``, backslash or single
    quote), every rule non-empty with balanced double quotes. A failure is reported by
    the full grammar of :func:`check_rule`."""
    if not rules:
        return
    try:
        joined = "\n".join(rules)
    except TypeError:
        joined = None
    # A newline inside one rule would pass as a separator: the count proves there is none.
    # Quoted segments cannot span lines, so a quote left after removing them is unbalanced.
    if (joined is None or joined.count("\n") != len(rules) - 1 or _OUTSIDE_ALPHABET.search(joined)
            or not all(rules) or '"' in _QUOTED_SEGMENT.sub("", joined)):
        for r in rules:
            check_rule(r)
        raise Unsafe("rule", f"rule text outside the grammar in {rules!r}")


def check_fragment(frag: ServiceRules) -> None:
    """Every chain name and rule line one service port contributes."""
    rules: list[str] = []
    for chain, chain_rules in frag.nat_chains.items():
        check_chain(chain)
        rules.extend(chain_rules)
    for _ip, r in frag.nat_dispatch + frag.filter_services + frag.filter_external + frag.filter_firewall:
        rules.append(r)
    rules.extend(frag.nat_nodeports + frag.filter_external_plain + frag.filter_nodeports)
    check_rules(rules)


def check_context(ctx: NodeContext) -> None:
    """The node's own values that rule lines interpolate (flags and local addresses)."""
    for c in ctx.cluster_cidrs:
        strict_cidr(c, ctx.family, "--cluster-cidr")
    for c in ctx.nodeport_cidrs:
        strict_cidr(c, ctx.family, "--nodeport-addresses")
    if ctx.nodeport_cidrs:
        for ip in ctx.nodeport_ips():
            strict_ip(ip, ctx.family, "node address")
    mark = ctx.masq_mark
    if type(mark) is not int or mark <= 0 or mark >= 1 << 32 or mark & (mark - 1):
        raise Unsafe("context", f"masquerade mark: {mark!r}")
    if type(ctx.dispatch_leaf) is not int or ctx.dispatch_leaf < 1:
        raise Unsafe("context", f"dispatch leaf size: {ctx.dispatch_leaf!r}")
