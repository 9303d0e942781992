"""Chain names podnet owns: a fixed ``PODNET-`` prefix plus a stable hash.

Guarantees: every name is at most 28 characters (the iptables limit), is a
pure function of its inputs (so a restart computes the same names and
rewrites, never duplicates, the chains it left behind), and starts with
``PODNET-`` so ``--cleanup`` can find exactly podnet's chains and nothing else.
The hash is kube-proxy's recipe (base32 of sha256) over the same inputs, under
podnet's own prefixes, with one change for service chains (SVC/SVL/EXT/FW/SEP):
their 16 characters are :func:`service_order` of the Service (4) followed by
12 of kube-proxy's hash, so every chain of one Service sorts together. A full
sync that writes services in ``service_order`` (proxier.py) therefore creates
chains in name order, which is what libiptc's sorted chain list is fast at:
chains created in random name order cost a 10k-service restore ~1.4x the time
(bench/results/proxy.md).
"""

from __future__ import annotations

import hashlib
from typing import Callable

PREFIX = "PODNET-"
MAX_CHAIN_NAME = 28

# Fixed chains, hooked from the built-in chains.
SERVICES = "PODNET-SERVICES"
EXTERNAL_SERVICES = "PODNET-EXTERNAL-SERVICES"
NODEPORTS = "PODNET-NODEPORTS"
POSTROUTING = "PODNET-POSTROUTING"
MARK_MASQ = "PODNET-MARK-MASQ"
FORWARD = "PODNET-FORWARD"
PROXY_FIREWALL = "PODNET-PROXY-FIREWALL"
FIREWALL = "PODNET-FIREWALL"
CANARY = "PODNET-CANARY"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PAIRS = [_B32[i >> 5] + _B32[i & 31] for i in range(1024)]


def _hash(text: str) -> str:
    """base32(sha256(text))[:16]. Base32 encodes 5-byte groups on their own, so the
    first 10 digest bytes give exactly those 16 characters (two per 10 bits)."""
    v = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    p = _PAIRS
    return (
        p[v >> 70] + p[(v >> 60) & 1023] + p[(v >> 50) & 1023] + p[(v >> 40) & 1023]
        + p[(v >> 30) & 1023] + p[(v >> 20) & 1023] + p[(v >> 10) & 1023] + p[v & 1023]
    )


def port_proto_hash(service_port: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: ``ns/name:port`` + lower-case protocol."""
    return _hash(service_port + protocol.lower())


ORDER_CHARS = 4


def service_order(service_key: str) -> str:
    """The first characters of every chain name of one Service (``ns/name``)."""
    return _hash(service_key)[:ORDER_CHARS]


def _order_of(service_port: str) -> str:
    return service_order(service_port.partition(":")[0])  # "ns/name:port" or "ns/name"


def service_port_chains(service_port: str, protocol: str) -> tuple[str, str, str, str]:
    """(SVC, SVL, EXT, FW) chain names of one service port, hashing once."""
    h = _order_of(service_port) + port_proto_hash(service_port, protocol)[ORDER_CHARS:]
    return "PODNET-SVC-" + h, "PODNET-SVL-" + h, "PODNET-EXT-" + h, "PODNET-FW-" + h


def endpoint_chain(service_port: str, protocol: str, endpoint: str) -> str:
    """One endpoint (``ip:port``) of one service port."""
    return endpoint_chain_namer(service_port, protocol.lower())(endpoint)


def endpoint_chain_namer(service_port: str, protocol: str) -> Callable[[str], str]:
    """``endpoint_chain`` for many endpoints of one service port (lower-case
    ``protocol``): the shared part of the hashed text is built once."""
    base, head = service_port + protocol.lower(), "PODNET-SEP-" + _order_of(service_port)
    return lambda endpoint: head + _hash(base + endpoint)[ORDER_CHARS:]


def dispatch_chain(table: str, root: str, network: str) -> str:
    """An inner node of a destination dispatch tree (see dispatch.py)."""
    return "PODNET-DST-" + _hash(f"{table}/{root}/{network}")


OTHER_WRITERS = ("PODNET-POL-", "PODNET-NP-", "PODNET-MASQ")
"""Chains of the NetworkPolicy engine (podnet.policy) and the CNI daemon's masquerade chain
(podnet.cni.routes): another writer's, never the proxy's to sync, sweep or clean up."""


def is_ours(chain: str) -> bool:
    return chain.startswith(PREFIX) and not chain.startswith(OTHER_WRITERS)
