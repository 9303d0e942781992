"""asyncio UDP and TCP listeners on one address, answering through a :class:`~podnet.dns.handler.Handler`.

UDP: datagrams are read up to 64 at a time with ``recvmmsg`` and their replies sent with one
``sendmmsg`` (:mod:`podnet.dns.datagrams`; the event loop's datagram transport, one callback per
datagram, where libc lacks them or with ``batch_udp=False``). Every datagram first goes to the
byte-level fast path of the handler's ``fast_handler`` (when it has one: a Handler, or a Corefile
chain with one plain block), called directly, without the layers around it, which writes the reply
into the receive buffer; anything it does not answer goes to ``answer_udp``. Bytes are sent with the
batch, awaitables are run as tasks (forwarding) and their reply sent alone when ready. A fast-path
reply's duration is its batch's, from the read to the send. Handler exceptions are logged and
counted, the datagram dropped; the listener itself never stops on bad input.

TCP (RFC 7766): 2-byte length framing, pipelined queries answered as they complete (possibly out
of order), ``max_pending`` unanswered queries per connection, and connections closed after ``idle``
seconds without a full message and with no query in progress (miekg/dns, under CoreDNS, closes after
8 s). A frame shorter than a header, or one that is not a query, closes the connection.

Connection limits keep one client from shutting others out (RFC 7766 section 6.2.2 lets a server
close idle connections to reclaim resources; dnsdist's ``setMaxTCPConnectionsPerClient`` is the
per-client cap): at most ``max_tcp_per_client`` connections per client address and ``max_tcp`` in
all. A new connection over a limit takes the place of an idle one (no query in progress), the least
recently active first: over the client's own cap, one of that client's; over the total, one of the
client holding the most connections. Only when every candidate is busy is the new connection closed.
Every close the server decides is counted by reason (``podnet_dns_tcp_closed_connections_total``).

The handler's table is swapped atomically by assigning ``handler.table`` (single-threaded loop).
With ``reuse_port`` both sockets are bound with ``SO_REUSEPORT``, so several processes
(:mod:`podnet.dns.workers`) serve one address and the kernel spreads clients over them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import defaultdict

from podnet.dns import datagrams
from podnet.dns.datagrams import BatchSocket, DatagramBatch
from podnet.dns.handler import Handler
from podnet.host.addr import listen_address

__all__ = ["DnsServer", "split_hostport"]

log = logging.getLogger("podnet.dns.server")


def split_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """'0.0.0.0:53' / '[::]:53' / '127.0.0.1' -> (host, port) (:func:`podnet.host.addr.listen_address`)."""
    return listen_address(text, default_port)


class _Udp(asyncio.DatagramProtocol):
    """One datagram per callback through the event loop's transport (where batching is unavailable)."""

    def __init__(self, server: "DnsServer") -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        t0 = time.perf_counter()
        server = self.server
        fast = server.handler.fast_handler
        if fast is not None:
            # The byte-level fast path without the layers around it: a plain query in the table.
            try:
                reply = fast.fast_udp(data)
            except Exception:  # noqa: BLE001 - a handler bug must never take the listener down
                reply = None
            if reply is not None:
                self.transport.sendto(reply, addr)
                server.stats.answered_udp(fast.qtype, len(data), len(reply), time.perf_counter() - t0)
                return
        reply = server.answer_slow_udp(data, addr, t0, self.transport.sendto)
        if reply is not None:
            self.transport.sendto(reply, addr)
            server.stats.answered_udp(server.handler.qtype, len(data), len(reply), time.perf_counter() - t0)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class _BatchedUdp:
    """Datagrams read :data:`~podnet.dns.datagrams.BATCH` at a time when the socket is readable, and
    their replies sent together (:mod:`podnet.dns.datagrams`); replies that come later (forwarding)
    are sent one by one. At most ``rounds`` batches per wakeup, so TCP and HTTP keep their turns."""

    def __init__(self, server: "DnsServer", batch: DatagramBatch, rounds: int = 8) -> None:
        self.server = server
        self.batch = batch
        self.rounds = rounds

    def send_later(self, reply: bytes, addr) -> None:
        if not self.batch.send_one(reply, addr):
            self.server.stats.dropped += 1

    def drain(self) -> None:
        b = self.batch
        server = self.server
        stats = server.stats
        clock = time.perf_counter
        for _ in range(self.rounds):
            try:
                n = b.receive()
            except OSError as e:
                log.debug("udp receive error: %s", e)
                return
            if not n:
                return
            t0 = clock()
            handler = server.handler
            fast = handler.fast_handler
            types: defaultdict[bytes, int] = defaultdict(int)
            sizes: defaultdict[int, int] = defaultdict(int)
            rest = range(n)
            if fast is not None:
                # The byte-level fast path without the layers around it: plain queries in the table,
                # answered in the receive buffer.
                try:
                    rest = b.answer_in_place(n, fast.fast_parts, types, sizes)
                except Exception:  # noqa: BLE001 - a handler bug must never take the listener down
                    log.exception("fast path failed")
                    stats.errors += 1
                    return
            for i in rest:
                data = b.data(i)
                reply = server.answer_slow_udp(data, b.address(i), t0, self.send_later)
                if reply is not None:
                    b.reply(i, reply)
                    stats.answered_udp(handler.qtype, len(data), len(reply), clock() - t0)
            stats.dropped += b.flush()
            if types:
                stats.answered_fast_udp(types, sizes, clock() - t0)
            if n < b.batch:
                return


class _Tcp(asyncio.Protocol):
    def __init__(self, server: "DnsServer") -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self.last = 0.0
        """Loop time of the connection's start or its last full message (eviction order)."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.last = asyncio.get_running_loop().time()
        if not self.server._admit(self):
            transport.abort()
            return
        self._arm()

    def _arm(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(self.server.idle, self._idle)

    def _idle(self) -> None:
        if self.pending:
            self._arm()  # a query is still being answered: not idle
            return
        self.server.stats.tcp_closed["idle"] += 1
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.server._forget(self)
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
            self.last = asyncio.get_running_loop().time()
            self._arm()
            self._handle(msg)
            if self.transport is None:
                return

    def _handle(self, msg: bytes) -> None:
        t0 = time.perf_counter()
        handler = self.server.handler
        handler.peer = self.transport.get_extra_info("peername") if self.transport is not None else None
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


def _idlest(conns) -> _Tcp | None:
    """The least recently active connection with no query in progress, or None."""
    best = None
    for c in conns:
        if not c.pending and (best is None or c.last < best.last):
            best = c
    return best


class DnsServer:
    """UDP+TCP on ``host:port`` (port 0 picks one free port for both)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *, max_tcp: int = 256,
                 max_tcp_per_client: int = 32, max_pending: int = 64, idle: float = 10.0,
                 sockets: tuple[socket.socket, socket.socket] | None = None, reuse_port: bool = False,
                 batch_udp: bool = True) -> None:
        self.handler = handler
        self.batch_udp = batch_udp and datagrams.available()
        """Read and answer UDP with recvmmsg/sendmmsg (:mod:`podnet.dns.datagrams`) instead of one
        event-loop callback per datagram."""
        self.reuse_port = reuse_port
        """Bind with SO_REUSEPORT: several processes (podnet.dns.workers) share the address, the kernel
        spreads datagrams and connections over them."""
        self.stats = handler.stats
        self.host, self.port = host, port
        self.max_tcp, self.max_pending, self.idle = max(1, max_tcp), max_pending, idle
        self.max_tcp_per_client = max(1, min(max_tcp_per_client, self.max_tcp))
        self.tcp_conns: set[_Tcp] = set()
        self.tcp_by_client: dict[str, set[_Tcp]] = {}
        self.stats.family = "2" if ":" in host else "1"
        self._tasks: set[asyncio.Task] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._batched: _BatchedUdp | None = None
        self._udp_open = False
        self._tcp: asyncio.AbstractServer | None = None
        self._sockets = sockets
        """Pre-bound (udp, tcp) sockets, e.g. made inside another network namespace."""

    def _admit(self, conn: _Tcp) -> bool:
        """Register a new connection, closing an idle one first where a limit is reached; False
        (the caller closes the new one) when every connection that could make room is busy."""
        mine = self.tcp_by_client.get(conn.peer, set())
        if len(mine) >= self.max_tcp_per_client:
            victim = _idlest(mine)
            if victim is None:
                self.stats.tcp_closed["refused"] += 1
                return False
            self._evict(victim, "evicted-client")
        if len(self.tcp_conns) >= self.max_tcp:
            victim = None
            for conns in sorted(self.tcp_by_client.values(), key=len, reverse=True):
                victim = _idlest(conns)
                if victim is not None:
                    break
            if victim is None:
                self.stats.tcp_closed["refused"] += 1
                return False
            self._evict(victim, "evicted-capacity")
        self.tcp_conns.add(conn)
        self.tcp_by_client.setdefault(conn.peer, set()).add(conn)
        return True

    def _evict(self, conn: _Tcp, reason: str) -> None:
        self._forget(conn)
        self.stats.tcp_closed[reason] += 1
        conn._close()

    def _forget(self, conn: _Tcp) -> None:
        self.tcp_conns.discard(conn)
        mine = self.tcp_by_client.get(conn.peer)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self.tcp_by_client[conn.peer]

    @property
    def errors(self) -> int:
        """Exceptions caught while answering (never expected; counted as coredns_panics_total)."""
        return self.stats.errors

    def answer_slow_udp(self, data: bytes, addr, t0: float, send) -> bytes | None:
        """Everything the fast path did not answer: the reply bytes to send now, or None (dropped, or
        answered later through ``send(reply, addr)`` once an awaitable reply is ready)."""
        handler = self.handler
        handler.peer = addr  # the client, for handlers that log it (Corefile ``log``)
        try:
            reply = handler.answer_udp(data)
        except Exception:  # noqa: BLE001 - a handler bug must never take the listener down
            self.stats.errors += 1
            log.exception("handler failed on a %d-byte datagram", len(data))
            return None
        if reply is None or isinstance(reply, bytes):
            return reply
        self.spawn(self._udp_later(reply, addr, t0, handler.qtype, len(data), send))
        return None

    async def _udp_later(self, aw, addr, t0: float, qtype: bytes, request_len: int, send) -> None:
        reply = await aw
        if reply is not None and self._udp_open:
            send(reply, addr)
            self.stats.answered_udp(qtype, request_len, len(reply), time.perf_counter() - t0)

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
                if self.reuse_port:
                    tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                tcp_sock.bind((self.host, self.port))
                port = tcp_sock.getsockname()[1]
                udp_sock = socket.socket(family, socket.SOCK_DGRAM)
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                if self.reuse_port:
                    udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
        if self.batch_udp:
            udp_sock.setblocking(False)
            self._batched = _BatchedUdp(self, BatchSocket(udp_sock))
            loop.add_reader(udp_sock.fileno(), self._batched.drain)
        else:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
        self._udp_open = True
        self._tcp = await loop.create_server(lambda: _Tcp(self), sock=tcp_sock)
        log.info("listening on %s:%d (udp+tcp)", self.host, self.port)

    async def stop(self) -> None:
        self._udp_open = False
        if self._udp is not None:
            self._udp.close()
        if self._batched is not None:
            batch, self._batched = self._batched.batch, None
            asyncio.get_running_loop().remove_reader(batch.fd)
            batch.sock.close()
            batch.close()
        if self._tcp is not None:
            self._tcp.close()
            for c in list(self.tcp_conns):
                c._close()
            await self._tcp.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
