"""Path-MTU discovery for pod traffic over the VXLAN overlay.

The kernel alone does not complete it for pods behind a routed (non-bridged) VXLAN device: the node
learns the underlay path MTU to a peer VTEP from the ICMP "fragmentation needed" (IPv4, outer DF set)
or "packet too big" (IPv6) an underlay router sends for an outer packet, but IPv4 forwarding ignores
a learned path MTU (unless the node-wide ``net.ipv4.ip_forward_use_pmtu`` is 1) and the VXLAN driver
answers the inner sender only on a bridge port, so the pod is never told.

Forwarding does honour a route's own ``mtu`` metric (``ip_dst_mtu_maybe_forward``; IPv6 output checks
the route MTU too). So the CNI daemon reads the path MTU the node learned toward each peer VTEP
(``ip route get <VTEP>``, :meth:`podnet.cni.overlay.OverlayOps.path_mtus`) and gives every pod-CIDR
route over that VTEP the metric ``path MTU - encapsulation`` (:func:`route_mtu`, pure); the node
then answers the pod's next oversized packet itself, and the pod's TCP adapts. A learned path MTU
expires in the kernel (``net.ipv4.route.mtu_expires``, 10 minutes); the metric goes with it on the
next re-check, and a smaller path is found again the same way.

:class:`TooBigWatch` shortens the wait for the periodic re-check: a raw ICMP socket (and a raw
ICMPv6 one) in the node netns gets a copy of every incoming ICMP error; those about an outer VXLAN
packet (:func:`parse_icmp4`, :func:`parse_icmp6`, pure) call back at once, rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("podnet.cni.pmtu")

MIN_POD_MTU = {4: 576, 6: 1280}
"""The smallest route MTU given to a pod CIDR of each family (RFC 791's datagram every host takes; IPv6's
minimum link MTU), whatever path MTU was learned."""

ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PKT_TOOBIG = 3, 4, 2
IPPROTO_UDP = 17
SOL_RAW, ICMP_FILTER = 255, 1
"""SOL_RAW option of a raw ICMP socket: a bit mask of ICMP types to drop (linux/icmp.h)."""
ICMPV6_FILTER = 1
"""IPPROTO_ICMPV6 option of a raw ICMPv6 socket: 256 bits, a set bit drops that type (linux/icmpv6.h)."""


def route_mtu(path_mtu: int, overhead: int, pod_family: int, device_mtu: int) -> int:
    """Pure. The ``mtu`` metric for a pod-CIDR route of ``pod_family`` over a VTEP whose underlay path MTU
    is ``path_mtu`` (0 = none learned) with ``overhead`` bytes of encapsulation: 0 (no metric) unless
    that is below the VXLAN device's MTU; never below :data:`MIN_POD_MTU`."""
    if not path_mtu:
        return 0
    mtu = max(path_mtu - overhead, MIN_POD_MTU[pod_family])
    return mtu if mtu < device_mtu else 0


@dataclass(frozen=True, slots=True)
class TooBig:
    """An ICMP error saying an outer VXLAN packet to ``peer`` was too big for a hop of ``mtu`` bytes."""

    peer: str
    mtu: int


def parse_icmp4(packet: bytes, port: int) -> TooBig | None:
    """Pure. What a raw IPv4 ICMP socket read (IP header, ICMP header, quoted packet) says, when it is a
    "fragmentation needed" quoting a UDP packet to ``port``; else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    icmp = packet[(packet[0] & 0xF) * 4:]
    if len(icmp) < 8 + 20 + 4 or (icmp[0], icmp[1]) != (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED):
        return None
    quoted = icmp[8:]
    qhl = (quoted[0] & 0xF) * 4
    if quoted[0] >> 4 != 4 or quoted[9] != IPPROTO_UDP or qhl < 20 or len(quoted) < qhl + 4:
        return None
    if struct.unpack_from("!H", quoted, qhl + 2)[0] != port:
        return None
    return TooBig(socket.inet_ntop(socket.AF_INET, quoted[16:20]), struct.unpack_from("!H", icmp, 6)[0])


def parse_icmp6(message: bytes, port: int) -> TooBig | None:
    """Pure. What a raw ICMPv6 socket read (the ICMPv6 message, no IPv6 header) says, when it is a
    "packet too big" quoting a UDP packet (no extension headers) to ``port``; else None."""
    if len(message) < 8 + 40 + 4 or message[0] != ICMPV6_PKT_TOOBIG:
        return None
    quoted = message[8:]
    if quoted[0] >> 4 != 6 or quoted[6] != IPPROTO_UDP or struct.unpack_from("!H", quoted, 42)[0] != port:
        return None
    return TooBig(socket.inet_ntop(socket.AF_INET6, quoted[24:40]), struct.unpack_from("!I", message, 4)[0])


def _icmp4_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                      socket.IPPROTO_ICMP)
    s.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", 0xFFFFFFFF & ~(1 << ICMP_DEST_UNREACH)))
    return s


def _icmp6_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                      socket.IPPROTO_ICMPV6)
    words = [0xFFFFFFFF] * 8
    words[ICMPV6_PKT_TOOBIG // 32] &= ~(1 << (ICMPV6_PKT_TOOBIG % 32))
    s.setsockopt(socket.IPPROTO_ICMPV6, ICMPV6_FILTER, struct.pack("=8I", *words))
    return s


class TooBigWatch:
    """Raw ICMP and ICMPv6 sockets in the calling process's netns that call ``on_too_big`` for every ICMP
    error about an outer VXLAN packet (UDP to ``port``), at most once per ``min_gap`` seconds (a later one
    within the gap is delivered when it ends, so the last word is never lost). The kernel filters the
    sockets down to "destination unreachable" and "packet too big" before they wake the loop."""

    def __init__(self, port: int, on_too_big: Callable[[TooBig], None], min_gap: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.on_too_big = on_too_big
        self.min_gap = min_gap
        self.clock = clock
        self._socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = float("-inf")
        self._pending: TooBig | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> list[str]:
        """Open and watch both sockets; the families that could not be watched (e.g. no CAP_NET_RAW, no
        IPv6), one line each: path-MTU changes then wait for the periodic re-check."""
        self._loop = loop
        errors = []
        for what, make, parse in (("ICMP", _icmp4_socket, parse_icmp4), ("ICMPv6", _icmp6_socket, parse_icmp6)):
            try:
                s = make()
            except OSError as e:
                errors.append(f"{what}: {e.strerror or e}")
                continue
            self._socks.append(s)
            loop.add_reader(s.fileno(), self._read, s, parse)
        return errors

    def _read(self, s: socket.socket, parse: Callable[[bytes, int], TooBig | None]) -> None:
        for _ in range(64):  # bounded per wake-up; the rest waits for the next one
            try:
                data = s.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("ICMP socket: %s", e)
                return
            got = parse(data, self.port)
            if got is not None:
                self._deliver(got)

    def _deliver(self, got: TooBig) -> None:
        wait = self._last + self.min_gap - self.clock()
        if wait <= 0:
            self._last = self.clock()
            self.on_too_big(got)
        elif self._pending is None and self._loop is not None:
            self._pending = got
            self._loop.call_later(wait, self._flush)
        else:
            self._pending = got

    def _flush(self) -> None:
        got, self._pending = self._pending, None
        if got is not None:
            self._last = self.clock()
            self.on_too_big(got)

    def close(self) -> None:
        for s in self._socks:
            if self._loop is not None:
                self._loop.remove_reader(s.fileno())
            s.close()
        self._socks.clear()
