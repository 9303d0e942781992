"""ipset member changes over netfilter netlink, without an ``ipset`` exec per change.

A peer pod's new address changes one member of a few ``hash:ip`` sets; exec'ing ``ipset restore``
for that costs 4-10 ms (more under load), the same change as netlink messages a fraction of a
millisecond. :func:`member_messages` encodes ``IPSET_CMD_DEL`` and ``IPSET_CMD_ADD`` requests
(``linux/netfilter/ipset/ip_set.h``, protocol 6, the oldest the kernel accepts) and
:class:`IpsetSocket` sends them in batches over one ``NETLINK_NETFILTER`` socket of the namespace it
was opened in, and reads one acknowledgement per request.

Guarantees: requests carry no ``NLM_F_EXCL``, so adding a present member or deleting an absent one
succeeds (``ipset -exist``); any other refusal (no such set, wrong family) raises
:class:`podnet.policy.kernel.KernelError` naming the set; every request of a batch is acknowledged
before :meth:`IpsetSocket.update` returns. pyroute2's decoder checks the encoding in the tests.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Iterable, Sequence

from podnet.policy.kernel import KernelError
from podnet.policy.nflog import NETLINK_NETFILTER, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, _attr

__all__ = ["IpsetSocket", "member_messages", "IPSET_CMD_ADD", "IPSET_CMD_DEL"]

NFNL_SUBSYS_IPSET = 6
IPSET_CMD_ADD = 9
IPSET_CMD_DEL = 10
IPSET_PROTOCOL = 6
IPSET_ATTR_PROTOCOL = 1
IPSET_ATTR_SETNAME = 2
IPSET_ATTR_DATA = 7
IPSET_ATTR_IP = 1
IPSET_ATTR_IPADDR_IPV4 = 1
IPSET_ATTR_IPADDR_IPV6 = 2
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
BATCH = 64
"""Requests per send: each acknowledgement is one skb in the socket's receive buffer."""


def _member(cmd: int, name: str, member: str, seq: int) -> bytes:
    addr = ipaddress.ip_address(member)
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    kind = IPSET_ATTR_IPADDR_IPV4 if addr.version == 4 else IPSET_ATTR_IPADDR_IPV6
    ip = _attr(IPSET_ATTR_IP | NLA_F_NESTED, _attr(kind | NLA_F_NET_BYTEORDER, addr.packed))
    body = (struct.pack("!BBH", family, 0, 0)
            + _attr(IPSET_ATTR_PROTOCOL, bytes((IPSET_PROTOCOL,)))
            + _attr(IPSET_ATTR_SETNAME, name.encode() + b"\0")
            + _attr(IPSET_ATTR_DATA | NLA_F_NESTED, ip))
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_IPSET << 8) | cmd, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def member_messages(dels: Iterable[tuple[str, str]], adds: Iterable[tuple[str, str]], seq: int = 1) -> list[tuple[int, str, bytes]]:
    """(sequence number, set name, request) for each (set, address) of ``dels``, then of ``adds``."""
    out: list[tuple[int, str, bytes]] = []
    for cmd, pairs in ((IPSET_CMD_DEL, dels), (IPSET_CMD_ADD, adds)):
        for name, member in pairs:
            out.append((seq, name, _member(cmd, name, member, seq)))
            seq += 1
    return out


class IpsetSocket:
    """One netfilter netlink socket, bound in the network namespace of the thread that opens it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(5.0)
        self._seq = 1

    def close(self) -> None:
        self._sock.close()

    def update(self, dels: Sequence[tuple[str, str]], adds: Sequence[tuple[str, str]]) -> None:
        """Delete ``dels`` then add ``adds`` ((set, address) pairs); raises KernelError on a refusal."""
        msgs = member_messages(dels, adds, self._seq)
        self._seq += len(msgs) + 1
        names = {seq: name for seq, name, _ in msgs}
        for start in range(0, len(msgs), BATCH):
            batch = msgs[start:start + BATCH]
            try:
                self._exchange(batch, names)
            except OSError as e:
                raise KernelError(f"ipset netlink: {e}") from None

    def _exchange(self, batch: list[tuple[int, str, bytes]], names: dict[int, str]) -> None:
        self._sock.send(b"".join(m for _, _, m in batch))
        waiting = {seq for seq, _, _ in batch}
        failed: tuple[int, int] | None = None
        while waiting:
            for seq, err in _acks(self._sock.recv(65536)):
                if seq in waiting:
                    waiting.discard(seq)
                    if err and failed is None:
                        failed = (seq, err)
        if failed is not None:
            seq, err = failed
            what = os.strerror(err) if err < 4096 else f"ipset error {err}"
            raise KernelError(f"ipset netlink: set {names[seq]}: {what}")


def _acks(data: bytes) -> list[tuple[int, int]]:
    """(sequence number, errno) of each acknowledgement in ``data`` (errno 0: done; ipset's own
    errors are 4096 and up)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            break
        if kind == NLMSG_ERROR and length >= 20:
            out.append((seq, -struct.unpack_from("=i", data, off + 16)[0]))
        off += (length + 3) & ~3
    return out
