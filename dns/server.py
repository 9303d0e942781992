"""asyncio UDP and TCP listeners on one address, answering through a :class:`~podnet.dns.handler.Handler`.

UDP: every datagram goes to ``Handler.answer_udp``; bytes are sent at once, awaitables are run as
tasks (forwarding) and their reply sent when ready. Handler exceptions are logged and counted, the
datagram dropped; the listener itself never stops on bad input.

TCP (RFC 7766): 2-byte length framing, pipelined queries answered as they complete (possibly out
of order), at most ``max_tcp`` connections (extra ones are closed at once), ``max_pending``
unanswered queries per connection, and connections closed after ``idle`` seconds without a full
message. A frame shorter than a header, or one that is not a query, closes the connection.

The handler's table is swapped atomically by assigning ``handler.table`` (single-threaded loop).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from podnet.dns.handler import Handler

__all__ = ["DnsServer", "split_hostport"]

log = logging.getLogger("podnet.dns.server")


def split_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """'0.0.0.0:53' / '[::]:53' / '127.0.0.1' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "0.0.0.0", int(port)
    return text, default_port


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer") -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        t0 = time.perf_counter()
        handler = self.server.handler
        try:
            reply = handler.answer_udp(data)
        except Exception:  # noqa: BLE001 - a handler bug must never take the listener down
            self.server.stats.errors += 1
            log.exception("handler failed on a %d-byte datagram", len(data))
            return
        if reply is None:
            return
        if isinstance(reply, bytes):
            self.transport.sendto(reply, addr)
            self.server.stats.answered_udp(handler.qtype, len(data), len(reply), time.perf_counter() - t0)
            return
        self.server.spawn(self._later(reply, addr, t0, handler.qtype, len(data)))

    async def _later(self, aw, addr, t0: float, qtype: bytes, request_len: int) -> None:
        reply = await aw
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
            self.server.stats.answered_udp(qtype, request_len, len(reply), time.perf_counter() - t0)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class _Tcp(asyncio.Protocol):
    def __init__(self, server: "DnsServer") -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending = 0
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        srv = self.server
        if len(srv.tcp_conns) >= srv.max_tcp:
            transport.abort()
            return
        srv.tcp_conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(self.server.idle, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.server.tcp_conns.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 2:
            n = struct.unpack_from("!H", self.buf)[0]
            if n < 12:
                self._close()
                return
            if len(self.buf) < 2 + n:
                if len(self.buf) > 2 + 65535:
                    self._close()
                break
            msg = bytes(self.buf[2 : 2 + n])
            del self.buf[: 2 + n]
            self._arm()
            self._handle(msg)
            if self.transport is None:
                return

    def _handle(self, msg: bytes) -> None:
        t0 = time.perf_counter()
        handler = self.server.handler
        try:
            reply = handler.answer(msg, udp=False)
        except Exception:  # noqa: BLE001
            self.server.stats.errors += 1
            log.exception("handler failed on a %d-byte TCP message", len(msg))
            self._close()
            return
        if reply is None:
            self._close()
            return
        if isinstance(reply, bytes):
            self._send(reply, t0, handler.qtype, len(msg))
            return
        if self.pending >= self.server.max_pending:
            self._close()
            return
        self.pending += 1
        self.server.spawn(self._later(reply, t0, handler.qtype, len(msg)))

    async def _later(self, aw, t0: float, qtype: bytes, request_len: int) -> None:
        try:
            reply = await aw
        finally:
            self.pending -= 1
        if reply is not None:
            self._send(reply, t0, qtype, request_len)

    def _send(self, reply: bytes, t0: float, qtype: bytes, request_len: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(reply)) + reply)
            self.server.stats.answered("tcp", qtype, request_len, len(reply), time.perf_counter() - t0)


class DnsServer:
    """UDP+TCP on ``host:port`` (port 0 picks one free port for both)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *, max_tcp: int = 256,
                 max_pending: int = 64, idle: float = 10.0, sockets: tuple[socket.socket, socket.socket] | None = None) -> None:
        self.handler = handler
        self.stats = handler.stats
        self.host, self.port = host, port
        self.max_tcp, self.max_pending, self.idle = max_tcp, max_pending, idle
        self.tcp_conns: set[_Tcp] = set()
        self.stats.family = "2" if ":" in host else "1"
        self._tasks: set[asyncio.Task] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._sockets = sockets
        """Pre-bound (udp, tcp) sockets, e.g. made inside another network namespace."""

    @property
    def errors(self) -> int:
        """Exceptions caught while answering (never expected; counted as coredns_panics_total)."""
        return self.stats.errors

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.errors += 1
            log.error("query task failed: %r", task.exception())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sockets is not None:
            udp_sock, tcp_sock = self._sockets
            self.port = udp_sock.getsockname()[1]
            tcp_sock.setblocking(False)
            udp_sock.setblocking(False)
            await self._serve(loop, udp_sock, tcp_sock)
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            tcp_sock = socket.socket(family, socket.SOCK_STREAM)
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp_sock = None
            try:
                tcp_sock.bind((self.host, self.port))
                port = tcp_sock.getsockname()[1]
                udp_sock = socket.socket(family, socket.SOCK_DGRAM)
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                udp_sock.bind((self.host, port))
            except OSError:
                tcp_sock.close()
                if udp_sock is not None:
                    udp_sock.close()
                if self.port:
                    raise
                continue
            break
        else:
            raise OSError("no free port for both UDP and TCP")
        self.port = port
        await self._serve(loop, udp_sock, tcp_sock)

    async def _serve(self, loop, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        tcp_sock.listen(1024)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
        self._tcp = await loop.create_server(lambda: _Tcp(self), sock=tcp_sock)
        log.info("listening on %s:%d (udp+tcp)", self.host, self.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for c in list(self.tcp_conns):
                c._close()
            await self._tcp.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
