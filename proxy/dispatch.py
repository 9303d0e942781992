"""Two-level (in fact radix) dispatch on the destination address.

Why: kube-proxy's KUBE-SERVICES is one linear chain with a rule per service
port, so the first packet of every new connection is compared with every
service (10k services = 10k rule matches before the DNAT). nftables fixes
that with verdict maps; plain iptables has no maps, and ``-m set`` (ipset)
can say "is this a service IP" but cannot pick a per-service chain. What
iptables *can* do cheaply is a prefix match: ``-d 10.96.16.0/20 -j CHAIN``.

So podnet builds a radix tree over the destination IPs that actually occur:
take the sorted destinations of a node, find their common prefix, split on
the next 4 bits into at most 16 children, and recurse until a group holds at
most ``leaf`` destinations; those get their ordinary exact-match rules. Tiny
groups (one or two destinations) are inlined in the parent instead of
costing a chain. The tree adapts to any allocation pattern (sequential or
random cluster IPs, dual-stack) because it splits on the bits that differ.

Cost: a lookup walks about log16(N) levels of at most 16 prefix rules plus
one leaf of at most ``leaf`` destinations: ~50 rule matches at 10k services
instead of 10k. Children are disjoint, so order inside a node never changes
the verdict. Chain names are pure functions of (table, root, prefix), so a
service change rewrites only the few tree chains whose contents moved; the
per-chain diff in sync.py keeps partial restores small.

With ``leaf`` or fewer destinations the tree is just the root chain with the
exact-match rules, i.e. the same shape as kube-proxy's.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

from podnet.proxy import names

LEAF = 16
FANOUT_BITS = 4
INLINE_MAX = 2


def build_tree(
    table: str,
    root: str,
    entries: Iterable[tuple[str, str]],
    leaf: int = LEAF,
) -> dict[str, list[str]]:
    """Chains (root first) that send each (destination IP, rule) to its rule.

    ``entries`` rules must themselves match ``-d <ip>`` exactly; the tree
    only narrows which rules a packet is compared with.
    """
    by_ip: dict[int, list[str]] = {}
    width = 32
    pton, from_bytes = socket.inet_pton, int.from_bytes
    for ip, rule in entries:  # validated canonical IPs of one family (podnet.kube)
        if ":" in ip:
            width, key = 128, from_bytes(pton(socket.AF_INET6, ip), "big")
        else:
            width, key = 32, from_bytes(pton(socket.AF_INET, ip), "big")
        rules = by_ip.get(key)
        if rules is None:
            by_ip[key] = [rule]
        else:
            rules.append(rule)
    chains: dict[str, list[str]] = {root: []}
    _fill(chains, table, root, root, sorted(by_ip), by_ip, width, leaf)
    return chains


def _fill(
    chains: dict[str, list[str]],
    table: str,
    root: str,
    chain: str,
    keys: list[int],
    by_ip: dict[int, list[str]],
    width: int,
    leaf: int,
) -> None:
    out = chains[chain]
    if len(keys) <= leaf:
        for k in keys:
            out.extend(by_ip[k])
        return
    common = width - (keys[0] ^ keys[-1]).bit_length()
    bits = min(FANOUT_BITS, width - common)
    shift = width - common - bits
    groups: dict[int, list[int]] = {}
    for k in keys:
        groups.setdefault(k >> shift, []).append(k)
    for head, group in groups.items():
        if len(group) <= INLINE_MAX:
            for k in group:
                out.extend(by_ip[k])
            continue
        net = _network(head << shift, common + bits, width)
        child = names.dispatch_chain(table, root, net)
        chains[child] = []
        out.append(f"-d {net} -j {child}")
        _fill(chains, table, root, child, group, by_ip, width, leaf)


def _network(value: int, prefix: int, width: int) -> str:
    addr = ipaddress.IPv4Address(value) if width == 32 else ipaddress.IPv6Address(value)
    return f"{addr}/{prefix}"
