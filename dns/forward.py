"""Forwarding to upstream resolvers: failover, TCP retry, a cap on queries in flight, loop detection.

Behaviour (modelled on CoreDNS's ``forward`` and ``loop`` plugins):

* Upstreams come from ``--upstream`` or the nameserver lines of /etc/resolv.conf (at most 15).
  Healthy upstreams are tried first in random order (or round-robin / as listed, CoreDNS's
  ``policy``), then the ones that failed ``max_fails`` (2) times in a row;
  each try waits ``timeout`` seconds. Any reply, even SERVFAIL, counts as healthy.
* A UDP reply with TC set is retried over TCP to the same upstream.
* At most ``max_concurrent`` client queries wait on upstreams; beyond that :class:`Refused` is raised
  (the server answers REFUSED). Identical questions in flight share one upstream exchange.
* Loops: an upstream that reaches our own listener (same address, or any local address with our port
  when we listen on a wildcard: :func:`self_matcher`) is dropped at start, and :meth:`probe`
  sends a random ``<r>.<r>.podnet-loop.`` HINFO query through each upstream; if one comes back to
  our own listener (:meth:`seen_query`), that upstream is disabled instead of crashing the server.
* Replies must match the query's ID and question; anything else is ignored (anti-spoofing).

Answers pass through :class:`~podnet.dns.cache.Cache` when one is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from podnet.dns import names
from podnet.dns.cache import Cache, Upstream
from podnet.dns.metrics import Histogram
from podnet.dns.wire import HINFO, OPT, FormErr, opt_rr, walk_rrs
from podnet.host.addr import split_hostport

__all__ = ["Forwarder", "Refused", "UpstreamAddr", "parse_upstream", "read_resolv_conf", "ForwardStats", "self_matcher", "is_local_address"]

log = logging.getLogger("podnet.dns.forward")
MAX_UPSTREAMS = 15
MAX_FAILURES = 1024
POLICIES = ("random", "round_robin", "sequential")
EDNS_SIZE = 1232


class Refused(Exception):
    """Too many queries in flight."""


@dataclass(frozen=True, slots=True)
class UpstreamAddr:
    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_upstream(text: str) -> UpstreamAddr:
    """'IP', 'IP:port', '[v6]:port' or bare v6 -> UpstreamAddr; ValueError otherwise."""
    text = text.strip()
    host, port = split_hostport(text, 53)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}")
    return UpstreamAddr(host, port)


def read_resolv_conf(text: str) -> list[UpstreamAddr]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(UpstreamAddr(str(ipaddress.ip_address(parts[1].split("%")[0]))))
            except ValueError:
                log.warning("resolv.conf: ignoring nameserver %r", parts[1])
    return out[:MAX_UPSTREAMS]


@dataclass
class ForwardStats:
    requests: dict[str, int] = field(default_factory=dict)  # upstream -> count
    responses: dict[tuple[str, int], int] = field(default_factory=dict)  # (upstream, rcode)
    durations: dict[tuple[str, int], Histogram] = field(default_factory=dict)  # (upstream, rcode)
    healthcheck_failures: dict[str, int] = field(default_factory=dict)
    max_concurrent_rejects: int = 0
    healthcheck_broken: int = 0
    """Queries that found no healthy upstream (every one failed ``max_fails`` times in a row, or none usable)."""


class _UdpClient(asyncio.DatagramProtocol):
    """One connected UDP socket to an upstream; replies are matched to waiters by (ID, question)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[bytes, asyncio.Future]] = {}

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        qid = struct.unpack_from("!H", data)[0]
        w = self.waiting.get(qid)
        if w is None or w[1].done():
            return
        question, fut = w
        if not data[2] & 0x80 or data[12 : 12 + len(question)].lower() != question:
            return
        fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        pass

    def new_id(self) -> int:
        while True:
            qid = secrets.randbits(16)
            if qid not in self.waiting:
                return qid


class _Upstream:
    def __init__(self, addr: UpstreamAddr) -> None:
        self.addr = addr
        self.name = str(addr)
        self.fails = 0
        self.looping = False
        self.udp: _UdpClient | None = None
        self.lock = asyncio.Lock()


class Forwarder:
    def __init__(
        self,
        upstreams: list[UpstreamAddr],
        cache: Cache | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 2.0,
        max_concurrent: int = 1000,
        max_fails: int = 2,
        is_self: Callable[[UpstreamAddr], bool] = lambda _u: False,
        policy: str = "random",
        force_tcp: bool = False,
    ) -> None:
        """``policy`` orders the healthy upstreams as CoreDNS's forward does: ``random``,
        ``round_robin`` (the first one tried moves on by one per query) or ``sequential`` (as
        listed). ``max_fails`` 0 never marks an upstream unhealthy. ``force_tcp`` asks over TCP only."""
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.upstreams = []
        for u in upstreams[:MAX_UPSTREAMS]:
            if is_self(u):
                log.error("upstream %s is this server itself (forwarding loop); ignoring it", u)
                continue
            self.upstreams.append(_Upstream(u))
        self.cache = cache
        self.clock = clock
        self.timeout = timeout
        self.max_concurrent = max_concurrent
        self.max_fails = max_fails
        self.policy = policy
        self.force_tcp = force_tcp
        self._next = 0
        self.in_flight = 0
        self.stats = ForwardStats()
        self._shared: dict[bytes, asyncio.Future] = {}
        self._probes: dict[str, _Upstream] = {}
        self.failures: dict[bytes, str] = {}
        """Why the last resolution of a question (as passed to :meth:`resolve`) found no answer, for the
        ``errors`` plugin to log; read with :meth:`take_failure`. At most MAX_FAILURES are kept."""

    # ---------------------------------------------------------------- loop detection

    def seen_query(self, qname: str) -> bool:
        """Called for every forwarded query name; True if it is one of our loop probes."""
        up = self._probes.get(qname)
        if up is None:
            return False
        if not up.looping:
            log.error("forwarding loop detected: upstream %s sends our queries back to us; disabling it", up.name)
            up.looping = True
        return True

    @staticmethod
    def probe_name() -> str:
        return f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}.podnet-loop"

    def expect_probes(self, probe_names: dict[str, str]) -> None:
        """Recognise ``probe_names[upstream]`` as that upstream's loop probe (processes sharing one
        address share the names, so whichever of them a looping probe reaches recognises it)."""
        for up in self.upstreams:
            if up.name in probe_names:
                self._probes[probe_names[up.name]] = up

    async def probe(self, probe_names: dict[str, str] | None = None) -> None:
        """Send one loop probe through each upstream; replies are irrelevant, arrivals at our listener are not."""
        tasks = []
        for up in self.upstreams:
            name = (probe_names or {}).get(up.name) or self.probe_name()
            self._probes[name] = up
            question = names.to_wire(name) + struct.pack("!HH", HINFO, 1)
            tasks.append(self._exchange_udp(up, question, False))
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def probing(self) -> bool:
        return bool(self._probes)

    @property
    def usable(self) -> list[_Upstream]:
        return [u for u in self.upstreams if not u.looping]

    # ---------------------------------------------------------------- resolving

    async def resolve(self, question: bytes, do: bool = False) -> Upstream | None:
        """The answer for ``question`` (lower-case wire name + type + class), None if every upstream failed.

        Raises Refused when ``max_concurrent`` queries are already waiting."""
        key = question + (b"\1" if do else b"\0")
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        if self.in_flight >= self.max_concurrent:
            self.stats.max_concurrent_rejects += 1
            raise Refused()
        self.in_flight += 1
        try:
            fut = self._shared.get(key)
            if fut is None:
                fut = asyncio.ensure_future(self._resolve_upstream(question, do))
                self._shared[key] = fut
                fut.add_done_callback(lambda _f: self._shared.pop(key, None))
            ans = await asyncio.shield(fut)
        finally:
            self.in_flight -= 1
        if ans is not None and self.cache is not None:
            self.cache.put(key, ans)
        return ans

    def take_failure(self, question: bytes) -> str | None:
        """The recorded cause of the last failed resolution of ``question`` (removed), or None."""
        return self.failures.pop(question, None)

    def _fail(self, question: bytes, causes: list[str]) -> None:
        if len(self.failures) >= MAX_FAILURES:
            self.failures.clear()
        self.failures[question] = "; ".join(causes) if causes else "no usable upstream"

    async def _resolve_upstream(self, question: bytes, do: bool) -> Upstream | None:
        ups = self.usable
        if self.max_fails:
            healthy = [u for u in ups if u.fails < self.max_fails]
            sick = [u for u in ups if u.fails >= self.max_fails]
        else:
            healthy, sick = list(ups), []
        if self.policy == "random":
            random.shuffle(healthy)
        elif self.policy == "round_robin" and healthy:
            self._next += 1
            k = self._next % len(healthy)
            healthy = healthy[k:] + healthy[:k]
        if not healthy:
            self.stats.healthcheck_broken += 1
        causes: list[str] = []
        for up in healthy + sick:
            start = time.perf_counter()
            self.stats.requests[up.name] = self.stats.requests.get(up.name, 0) + 1
            try:
                if self.force_tcp:
                    reply = await self._exchange_tcp(up, question, do)
                else:
                    reply = await self._exchange_udp(up, question, do)
                    if reply[2] & 0x02:
                        reply = await self._exchange_tcp(up, question, do)
                ans = self._parse(reply, question)
            except (OSError, asyncio.TimeoutError, FormErr, asyncio.IncompleteReadError) as e:
                up.fails += 1
                if self.max_fails and up.fails >= self.max_fails:
                    self.stats.healthcheck_failures[up.name] = self.stats.healthcheck_failures.get(up.name, 0) + 1
                log.debug("upstream %s failed: %r", up.name, e)
                causes.append(f"{up.name}: {_describe(e)}")
                continue
            up.fails = 0
            k = (up.name, ans.rcode)
            self.stats.responses[k] = self.stats.responses.get(k, 0) + 1
            self.stats.durations.setdefault(k, Histogram()).observe(time.perf_counter() - start)
            return ans
        self._fail(question, causes)
        return None

    def _query_bytes(self, qid: int, question: bytes, do: bool) -> bytes:
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) + question + opt_rr(EDNS_SIZE, do)

    async def _exchange_udp(self, up: _Upstream, question: bytes, do: bool) -> bytes:
        loop = asyncio.get_running_loop()
        if up.udp is None or up.udp.transport is None or up.udp.transport.is_closing():
            async with up.lock:  # one socket per upstream, even when the first queries race
                if up.udp is None or up.udp.transport is None or up.udp.transport.is_closing():
                    _, proto = await loop.create_datagram_endpoint(_UdpClient, remote_addr=(up.addr.host, up.addr.port))
                    up.udp = proto
        client = up.udp
        qid = client.new_id()
        fut = loop.create_future()
        client.waiting[qid] = (question, fut)
        try:
            client.transport.sendto(self._query_bytes(qid, question, do))
            return await asyncio.wait_for(fut, self.timeout)
        finally:
            client.waiting.pop(qid, None)

    async def _exchange_tcp(self, up: _Upstream, question: bytes, do: bool) -> bytes:
        async def go() -> bytes:
            reader, writer = await asyncio.open_connection(up.addr.host, up.addr.port)
            try:
                qid = secrets.randbits(16)
                msg = self._query_bytes(qid, question, do)
                writer.write(struct.pack("!H", len(msg)) + msg)
                await writer.drain()
                n = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(n)
                if len(data) < 12 or struct.unpack_from("!H", data)[0] != qid:
                    raise FormErr("TCP reply does not match")
                return data
            finally:
                writer.close()

        return await asyncio.wait_for(go(), self.timeout)

    def _parse(self, data: bytes, question: bytes) -> Upstream:
        if len(data) < 12 + len(question):
            raise FormErr("short reply")
        flags, qd, an, ns, ar = struct.unpack_from("!HHHHH", data, 2)
        if qd != 1 or data[12 : 12 + len(question)].lower() != question:
            raise FormErr("reply question mismatch")
        pos = 12 + len(question)
        answer, pos = walk_rrs(data, pos, an)
        authority, pos = walk_rrs(data, pos, ns)
        additional, pos = walk_rrs(data, pos, ar)
        rcode = flags & 0xF
        opt = [rr for rr in additional if rr.rtype == OPT]
        if opt:
            rcode |= (opt[0].ttl >> 24) << 4
        extra = tuple(rr for rr in additional if rr.rtype != OPT)
        return Upstream(rcode, tuple(answer), tuple(authority), extra, bool(flags & 0x0200), self.clock())

    async def close(self) -> None:
        for up in self.upstreams:
            if up.udp is not None and up.udp.transport is not None:
                up.udp.transport.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "i/o timeout"
    return str(e) or type(e).__name__


def is_local_address(ip: str) -> bool:
    """True when ``ip`` is an address of this host (network namespace): binding to it succeeds."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def self_matcher(listen_host: str, listen_port: int, is_local: Callable[[str], bool] = is_local_address) -> Callable[[UpstreamAddr], bool]:
    """A predicate: does an upstream address reach our own listener? (resolv.conf pointing at us,
    e.g. 127.0.0.53 while we listen on 0.0.0.0:53)."""
    wildcard = listen_host in ("0.0.0.0", "::", "")

    def is_self(u: UpstreamAddr) -> bool:
        if u.port != listen_port:
            return False
        if u.host == listen_host:
            return True
        return wildcard and is_local(u.host)

    return is_self
