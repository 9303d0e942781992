"""Denied-connection log lines read from an NFLOG group (``--log-denied``), as Calico and Antrea do.

With ``--log-denied`` every policy ``DROP`` is preceded by a rate-limited ``-j NFLOG --nflog-group
NFLOG_GROUP --nflog-prefix <pod chain>:`` rule (``render.py``). Only packets that would open a
connection reach it (replies and established flows RETURN before any pod chain), so what arrives
here is the first packet of each denied connection and its retransmissions. :class:`NflogReader`
binds a netfilter netlink socket (``NETLINK_NETFILTER``, subsystem ``NFNL_SUBSYS_ULOG``, hand
encoded: pyroute2 has no NFLOG client) to the group in the namespace it is created in, copies the
first :data:`COPY_RANGE` bytes of each packet, and :class:`DeniedLog` writes one line per denied
connection: the chain (so the pod and direction), protocol, source and destination address and
port. A connection seen again within :data:`REPEAT_WINDOW` seconds (a retransmitted SYN) is not
logged again, and at most :data:`LINES_PER_SECOND` lines a second (bursts of ``2 x``) are written;
what the limit suppresses is counted and reported in the next line written.

Guarantees: :func:`parse_packet` and :func:`five_tuple` are pure and never raise on any bytes
(a malformed message yields nothing); the socket layer only reads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["NFLOG_GROUP", "COPY_RANGE", "Denied", "DeniedLog", "NflogReader", "parse_messages", "parse_packet",
           "five_tuple", "config_message", "describe_chain"]

log = logging.getLogger("podnet.policy.denied")

NFLOG_GROUP = 6874
COPY_RANGE = 128
REPEAT_WINDOW = 30.0
LINES_PER_SECOND = 10.0
REMEMBERED = 4096

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def config_message(group: int, attrs: bytes, seq: int) -> bytes:
    """An NFULNL_MSG_CONFIG request for ``group`` (nfgenmsg: AF_UNSPEC, version 0, group big endian)."""
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, group) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_attrs() -> bytes:
    return _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND))


def mode_attrs(copy_range: int = COPY_RANGE) -> bytes:
    """Copy the first ``copy_range`` bytes of each packet, and send every packet at once (queue
    threshold 1; the kernel's default batches up to 100 packets or one second)."""
    return (_attr(NFULA_CFG_MODE, struct.pack("!IBB", copy_range, NFULNL_COPY_PACKET, 0))
            + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)))


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > len(data):
            return
        yield kind & 0x3FFF, data[off + 4:off + length]
        off += (length + 3) & ~3


def parse_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(nlmsg type, errno for NLMSG_ERROR else 0, body after the nfgenmsg) for each message in ``data``."""
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            return
        body = data[off + 16:off + length]
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            yield kind, err, b""
        else:
            yield kind, 0, body
        off += (length + 3) & ~3


@dataclass(frozen=True)
class Denied:
    prefix: str
    protocol: str
    src: str
    dst: str
    sport: int
    dport: int

    def key(self) -> tuple:
        return (self.prefix, self.protocol, self.src, self.dst, self.sport, self.dport)

    def line(self, who: str = "") -> str:
        """``denied <who or chain> <protocol> <src>:<sport> -> <dst>:<dport>``."""
        ports = self.protocol in ("TCP", "UDP", "SCTP")
        src = f"{_host(self.src)}:{self.sport}" if ports else self.src
        dst = f"{_host(self.dst)}:{self.dport}" if ports else self.dst
        return f"denied {who or self.prefix} {self.protocol} {src} -> {dst}"


def describe_chain(chain: str, chain_pods: dict[str, str]) -> str:
    """``<direction> of <ns/pod> (<chain>)`` for a pod chain the engine knows, else ``chain``."""
    pod = chain_pods.get(chain)
    if pod is None:
        return chain
    direction = "ingress" if chain.startswith(("PODNET-NP-I-", "PODNET-NP-IP-")) else "egress"
    return f"{direction} of {pod} ({chain})"


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def five_tuple(payload: bytes) -> tuple[str, str, str, int, int] | None:
    """(protocol, src, dst, sport, dport) of an IPv4 or IPv6 packet's first bytes (ports 0 when
    absent; an IPv6 extension header is reported by its number); None for anything else."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = socket.inet_ntop(socket.AF_INET, payload[12:16]), socket.inet_ntop(socket.AF_INET, payload[16:20])
        l4 = ihl
    elif version == 6 and len(payload) >= 40:
        proto = payload[6]
        src, dst = socket.inet_ntop(socket.AF_INET6, payload[8:24]), socket.inet_ntop(socket.AF_INET6, payload[24:40])
        l4 = 40
    else:
        return None
    name = _PROTOCOLS.get(proto, str(proto))
    sport = dport = 0
    if name in ("TCP", "UDP", "SCTP") and len(payload) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", payload, l4)
    return name, src, dst, sport, dport


def parse_packet(body: bytes) -> Denied | None:
    """The denied packet of one NFULNL_MSG_PACKET body (after the nfgenmsg); None without a payload."""
    prefix, payload = "", b""
    for kind, value in _attrs(body[4:] if len(body) >= 4 else b""):
        if kind == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode("ascii", "replace").rstrip(":")
        elif kind == NFULA_PAYLOAD:
            payload = value
    t = five_tuple(payload)
    if t is None:
        return None
    return Denied(prefix, *t)


class DeniedLog:
    """One line per denied connection: repeats within ``window`` seconds dropped, at most ``rate``
    lines a second (bucket of ``2 x rate``); ``emit`` writes a line, ``clock`` is monotonic seconds."""

    def __init__(self, emit: Callable[[str], None] = log.warning, rate: float = LINES_PER_SECOND,
                 window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic,
                 remembered: int = REMEMBERED, describe: Callable[[str], str] = str) -> None:
        self.emit, self.rate, self.window, self.clock, self.remembered = emit, rate, window, clock, remembered
        self.describe = describe
        self.tokens = 2 * rate
        self.last = clock()
        self.seen: OrderedDict[tuple, float] = OrderedDict()
        self.suppressed = 0
        self.lines = 0

    def add(self, d: Denied) -> bool:
        """Consider one denied packet; True when a line was written."""
        now = self.clock()
        key = d.key()
        when = self.seen.get(key)
        if when is not None and now - when < self.window:
            return False
        self.seen[key] = now
        self.seen.move_to_end(key)
        while len(self.seen) > self.remembered:
            self.seen.popitem(last=False)
        self.tokens = min(2 * self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            self.suppressed += 1
            return False
        self.tokens -= 1
        extra = f" ({self.suppressed} more denied connections not logged)" if self.suppressed else ""
        self.suppressed = 0
        self.lines += 1
        self.emit(d.line(self.describe(d.prefix)) + extra)
        return True


class NflogReader:
    """The NFLOG group's socket in the calling thread's network namespace, read on the event loop."""

    def __init__(self, sink: Callable[[Denied], object], group: int = NFLOG_GROUP) -> None:
        self.sink, self.group = sink, group
        self.sock: socket.socket | None = None

    def open(self) -> None:
        """Bind the group (raises OSError when the kernel refuses, e.g. another listener holds it)."""
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            s.bind((0, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for seq, attrs in enumerate((bind_attrs(), mode_attrs()), 1):
                s.send(config_message(self.group, attrs, seq))
                for kind, err, _ in parse_messages(s.recv(65536)):
                    if kind == NLMSG_ERROR and err:
                        raise OSError(err, f"NFLOG group {self.group}: {'bind' if seq == 1 else 'copy mode'} refused")
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def read_ready(self) -> int:
        """Drain what the socket holds into ``sink``; the number of denied packets read."""
        n = 0
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as e:  # ENOBUFS: the kernel dropped log messages; keep reading
                log.debug("NFLOG socket: %s", e)
                return n
            for kind, _err, body in parse_messages(data):
                if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                    d = parse_packet(body)
                    if d is not None:
                        n += 1
                        self.sink(d)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.sock is None:
            self.open()
        (loop or asyncio.get_running_loop()).add_reader(self.sock.fileno(), self.read_ready)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.sock is not None:
            try:
                (loop or asyncio.get_running_loop()).remove_reader(self.sock.fileno())
            except RuntimeError:
                pass
            self.sock.close()
            self.sock = None
