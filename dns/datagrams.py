"""Batched UDP receive and send: up to :data:`BATCH` datagrams per ``recvmmsg(2)`` and their replies
in one ``sendmmsg(2)``, through libc (Linux).

One ``recvmmsg`` call fills a ring of fixed slots (one per datagram: its bytes, the sender's
sockaddr, the length); the replies are written back into the slots they answer and sent with one
``sendmmsg`` whose headers reuse the received sockaddrs as they are, so the sender's address is never
turned into a Python tuple and back. That removes, per datagram, the event loop's callback, the address
conversions and two system calls' fixed cost (about 30 % of the CPU time of a query answered from the
table: ``bench/results/dns.md``).

Guarantees:

- Every datagram is delivered whole: a slot holds 65,536 bytes (more than any UDP payload); the slot
  memory is an anonymous mapping, so only the pages datagrams touch become resident.
- A reply is sent once, to the address its query came from; one that cannot be sent (the socket's
  send buffer is full) is dropped and counted, as a datagram the kernel drops would be.
- :meth:`BatchSocket.receive` never blocks (``MSG_DONTWAIT``); the caller registers the socket with
  its event loop's reader and drains it.

:func:`available` says whether libc has both calls; callers fall back to the event loop's datagram
transport otherwise.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
from collections import defaultdict
from typing import Callable, Protocol

__all__ = ["BATCH", "SLOT", "BatchSocket", "DatagramBatch", "available", "sockaddr_to_address"]

BATCH = 64
"""Datagrams per recvmmsg call."""
SLOT = 65536
"""Bytes per datagram slot (the largest UDP payload is 65,507)."""
MSG_DONTWAIT = 0x40
MMSGHDR = 64
"""sizeof(struct mmsghdr) on LP64: msghdr (56) + msg_len (4) + padding."""
IOVEC = 16
NAME = 32
"""Room for a sockaddr_in6 (28 bytes), rounded up."""
_LEN_WORD = 14
"""msg_len as the 15th 32-bit word of an mmsghdr."""

_libc = None


def _load():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        recv, send = lib.recvmmsg, lib.sendmmsg
        recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        recv.restype = ctypes.c_int
        send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        send.restype = ctypes.c_int
        _libc = (recv, send)
    return _libc


def available() -> bool:
    """True where libc has recvmmsg and sendmmsg and pointers are 64-bit (the layout this module writes)."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    try:
        _load()
    except (OSError, AttributeError):
        return False
    return True


def sockaddr_to_address(raw: bytes) -> tuple:
    """A received sockaddr as the address tuple Python's socket module uses ((host, port) for IPv4,
    (host, port, flowinfo, scope_id) for IPv6)."""
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET6:
        port, flow = struct.unpack_from("!HI", raw, 2)
        scope = struct.unpack_from("=I", raw, 24)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


class DatagramBatch(Protocol):
    """What the server needs from a batched socket."""

    batch: int

    def receive(self) -> int: ...
    def data(self, i: int) -> bytes: ...
    def address(self, i: int) -> tuple: ...
    def reply(self, i: int, payload: bytes) -> None: ...
    def answer_in_place(self, n: int, parts: Callable, types: defaultdict, sizes: defaultdict) -> list[int]: ...
    def flush(self) -> int: ...
    def send_one(self, payload: bytes, address: tuple) -> bool: ...


class BatchSocket:
    """A bound, non-blocking UDP socket read and written ``batch`` datagrams at a time.

    ``receive()`` -> n datagrams, read with ``data(i)`` / ``address(i)``; ``reply(i, payload)`` or
    :meth:`answer_in_place` give the answer to datagram i (at most once per datagram, before the next
    ``receive``); ``flush()`` sends them and returns how many could not be sent.
    """

    def __init__(self, sock: socket.socket, batch: int = BATCH) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.batch = batch
        self._recv, self._send = _load()
        self._out_off = batch * MMSGHDR
        self._iov_off = 2 * batch * MMSGHDR
        self._name_off = self._iov_off + batch * IOVEC
        self._data_off = -(-(self._name_off + batch * NAME) // 4096) * 4096
        self._map = mmap.mmap(-1, self._data_off + batch * SLOT)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        base = self._base = ctypes.addressof(self._anchor)
        self._mv = memoryview(self._map)
        self._words = self._mv[: self._data_off].cast("I")
        self._quads = self._mv[: self._data_off].cast("Q")
        hdrs, iovs = bytearray(), bytearray()
        for i in range(batch):
            # struct mmsghdr: msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen,
            # msg_flags, msg_len
            hdrs += struct.pack("=QI4xQQQQi4xI4x", base + self._name_off + i * NAME, NAME,
                                base + self._iov_off + i * IOVEC, 1, 0, 0, 0, 0)
            iovs += struct.pack("=QQ", base + self._data_off + i * SLOT, SLOT)
        self._hdr_template = bytes(hdrs)
        self._iov_template = bytes(iovs)
        self._iov_len_quad = (self._iov_off + 8) // 8
        """Index of iovec 0's iov_len among the 64-bit words (iovec i's is 2 * i further)."""
        self._answered: list[int] = []

    def close(self) -> None:
        self._words.release()
        self._quads.release()
        self._mv.release()
        del self._anchor
        self._map.close()

    def receive(self) -> int:
        """Read up to ``batch`` waiting datagrams (0 when none is waiting); forgets unsent replies."""
        mv = self._mv
        mv[: self._out_off] = self._hdr_template
        mv[self._iov_off : self._name_off] = self._iov_template
        self._answered = []
        n = self._recv(self.fd, self._base, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, "recvmmsg: " + errno.errorcode.get(err, str(err)))
        return n

    def data(self, i: int) -> bytes:
        start = self._data_off + i * SLOT
        return self._map[start : start + self._words[i * 16 + _LEN_WORD]]

    def address(self, i: int) -> tuple:
        start = self._name_off + i * NAME
        return sockaddr_to_address(self._map[start : start + self._words[i * 16 + 2]])

    def reply(self, i: int, payload: bytes) -> None:
        start = self._data_off + i * SLOT
        self._map[start : start + len(payload)] = payload
        self._quads[self._iov_len_quad + 2 * i] = len(payload)
        self._answered.append(i)

    def answer_in_place(self, n: int, parts: Callable, types: defaultdict, sizes: defaultdict) -> list[int]:
        """Answer datagrams 0..n-1 whose reply ``parts(buffer, start, end)`` gives as (the 10 header bytes
        after the ID, the bytes after the question): the reply is the query with its header's last 10 bytes
        replaced and those bytes appended. Counts each answered datagram in ``types`` (by its last 4..2
        bytes, the query type of a plain query) and ``sizes`` (``request_len << 16 | reply_len``).
        Returns the indices of the datagrams it did not answer."""
        buf = self._map
        words = self._words
        quads = self._quads
        answered = self._answered
        rest = []
        start = self._data_off
        iov = self._iov_len_quad
        for i in range(n):
            end = start + words[i * 16 + _LEN_WORD]
            got = parts(buf, start, end)
            if got is None:
                rest.append(i)
            else:
                hdr, body = got
                buf[start + 2 : start + 12] = hdr
                size = end - start
                reply_len = size + len(body)
                buf[end : start + reply_len] = body
                quads[iov + 2 * i] = reply_len
                answered.append(i)
                types[buf[end - 4 : end - 2]] += 1
                sizes[size << 16 | reply_len] += 1
            start += SLOT
        return rest

    def send_one(self, payload: bytes, address: tuple) -> bool:
        """Send one datagram now (a reply that was not ready within its batch); False when it could not be sent."""
        try:
            self.sock.sendto(payload, address)
        except OSError:
            return False
        return True

    def flush(self) -> int:
        """Send the replies given since the last :meth:`receive`; returns how many were dropped (send
        buffer full, or an error for that one destination)."""
        answered = self._answered
        queued = len(answered)
        if not queued:
            return 0
        answered.sort()
        if answered[-1] == queued - 1:
            first = self._base  # datagrams 0..queued-1: their own headers, as received
        else:
            mv = self._mv
            out = self._out_off
            for i in answered:
                mv[out : out + MMSGHDR] = mv[i * MMSGHDR : (i + 1) * MMSGHDR]
                out += MMSGHDR
            first = self._base + self._out_off
        self._answered = []
        sent, dropped = 0, 0
        while sent < queued:
            k = self._send(self.fd, first + sent * MMSGHDR, queued - sent, 0)
            if k <= 0:
                # The reply at ``sent`` could not be sent: drop it, as the kernel would drop a datagram,
                # and send the rest.
                sent += 1
                dropped += 1
                continue
            sent += k
        return dropped
