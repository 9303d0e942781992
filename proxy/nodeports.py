"""``--nodeport-addresses``: CIDRs plus kube-proxy's keywords, resolved to CIDRs.

kube-proxy (1.29+, combinable since the localhost-NodePort work) accepts
CIDRs and the keywords ``primary`` (the node's primary IP per family,
according to its Node object), ``localhost`` (the loopback addresses) and
``all`` (every address), in any combination. Unset means every local
address. Pure:

* :func:`parse` validates the entries (canonical CIDRs, keywords kept);
* :func:`primary_ips` is kube-proxy's GetNodeHostIPs: InternalIPs first,
  then ExternalIPs; the first address, plus the first of the other family;
* :func:`resolve` turns keywords into CIDRs. ``primary`` contributes a
  host CIDR per non-loopback primary IP; if nothing at all is left (only
  ``primary`` and the Node has no IP), the result is empty, i.e. every
  local address, which is what kube-proxy falls back to;
* :func:`for_family` gives one family's ``NodeContext.nodeport_cidrs``:
  ``()`` (every local address) when unset or when a zero CIDR is present,
  a CIDR matching no address when the list has none of this family.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from podnet.kube.objects import Node

PRIMARY, LOCALHOST, ALL = "primary", "localhost", "all"
KEYWORDS = (PRIMARY, LOCALHOST, ALL)
_EXPANSIONS = {LOCALHOST: ("127.0.0.0/8", "::1/128"), ALL: ("0.0.0.0/0", "::/0")}
_NOTHING = {4: "0.0.0.0/32", 6: "::/128"}
"""A CIDR holding no usable node address: NodePorts of that family are accepted nowhere."""


def parse(entries: Iterable[str]) -> tuple[str, ...]:
    """Keywords (lower-cased) and canonical CIDRs, order kept, duplicates dropped; ValueError otherwise."""
    out: list[str] = []
    for raw in entries:
        e = raw.strip()
        if not e:
            continue
        if e.lower() in KEYWORDS:
            e = e.lower()
        else:
            try:
                e = str(ipaddress.ip_network(e, strict=False))
            except ValueError:
                raise ValueError(f"--nodeport-addresses: {raw!r} is neither a CIDR nor one of {', '.join(KEYWORDS)}") from None
        if e not in out:
            out.append(e)
    return tuple(out)


def primary_ips(node: Node | None) -> tuple[str, ...]:
    """The node's primary IP, plus one of the other family when it has one (dual-stack)."""
    ips = []
    for a in node.ips("InternalIP", "ExternalIP") if node is not None else ():
        try:
            ips.append(ipaddress.ip_address(a))
        except ValueError:
            continue
    if not ips:
        return ()
    out = [ips[0]]
    other = next((ip for ip in ips if ip.version != ips[0].version), None)
    if other is not None:
        out.append(other)
    return tuple(str(ip) for ip in out)


def resolve(entries: Iterable[str], primary: Iterable[str] = ()) -> tuple[str, ...]:
    """Keywords expanded to CIDRs (order kept, no duplicates); empty means every local address."""
    out: list[str] = []
    for e in entries:
        if e == PRIMARY:
            cidrs = tuple(f"{ip}/{ip.max_prefixlen}" for ip in map(ipaddress.ip_address, primary) if not ip.is_loopback)
        else:
            cidrs = _EXPANSIONS.get(e, (e,))
        out.extend(c for c in cidrs if c not in out)
    return tuple(out)


def for_family(resolved: Iterable[str], family: int) -> tuple[str, ...]:
    """One family's nodeport_cidrs (see the module docstring)."""
    resolved = tuple(resolved)
    if not resolved:
        return ()
    nets = [ipaddress.ip_network(c) for c in resolved]
    mine = [n for n in nets if n.version == family]
    if not mine:
        return (_NOTHING[family],)
    if any(n.prefixlen == 0 for n in mine):
        return ()
    return tuple(str(n) for n in mine)
