"""The DNS package's test support: cluster objects covering every record kind, raw exchanges, a fake upstream.

Used by tests/dns and the benchmarks; product code never imports this. The informer and clock fakes are
:mod:`podnet.kube.testing`'s.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from podnet.dns import answers, snapshot
from podnet.kube.objects import parse_endpoint_slice, parse_service

ZONE = "cluster.local"


def svc(ns: str, name: str, **spec: Any) -> Any:
    return parse_service({"metadata": {"namespace": ns, "name": name}, "spec": spec})


def eps(ns: str, service: str, name: str, family: str, endpoints: list[dict], ports: list[dict] | None = None) -> Any:
    return parse_endpoint_slice({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": family, "endpoints": endpoints, "ports": ports or [],
    })


def cluster_objects() -> tuple[list, list, list]:
    """Services, EndpointSlices and Namespace names covering every record kind."""
    services = [
        svc("default", "web", clusterIP="10.96.0.5", ports=[{"name": "http", "port": 80}, {"name": "https", "port": 443}]),
        svc("default", "plain", clusterIP="10.96.0.6", ports=[{"port": 8080}]),
        svc("default", "dual", clusterIPs=["10.96.0.7", "fd00::7"], ipFamilies=["IPv4", "IPv6"],
            ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
        svc("default", "db", clusterIP="None", ports=[{"name": "pg", "port": 5432}]),
        svc("default", "empty-headless", clusterIP="None"),
        svc("default", "notready", clusterIP="None", publishNotReadyAddresses=True),
        svc("default", "ext", type="ExternalName", externalName="www.example.com"),
        svc("default", "ext-internal", type="ExternalName", externalName="web.default.svc.cluster.local"),
        svc("kube-system", "kube-dns", clusterIP="10.96.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
        svc("other", "web", clusterIP="10.96.1.5"),
    ]
    slices = [
        eps("default", "web", "web-a", "IPv4", [{"addresses": ["10.1.0.10"], "conditions": {"ready": True}}],
            [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}]),
        eps("default", "db", "db-a", "IPv4", [
            {"addresses": ["10.1.0.20"], "hostname": "db-0"},
            {"addresses": ["10.1.0.21"], "hostname": "db-1", "conditions": {"ready": True}},
            {"addresses": ["10.1.0.22"], "conditions": {"ready": False}},
            {"addresses": ["10.1.0.23"]},
        ], [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        # The same address in a second slice (controller skew) must not duplicate records.
        eps("default", "db", "db-b", "IPv4", [{"addresses": ["10.1.0.20"], "hostname": "db-0"}],
            [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        eps("default", "db", "db-v6", "IPv6", [{"addresses": ["fd00::20"], "hostname": "db-6"}],
            [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        eps("default", "empty-headless", "eh-a", "IPv4", [{"addresses": ["10.1.0.30"], "conditions": {"ready": False}}]),
        eps("default", "notready", "nr-a", "IPv4", [{"addresses": ["10.1.0.40"], "conditions": {"ready": False}}]),
    ]
    return services, slices, ["default", "kube-system", "other", "quiet"]


def cluster_table(**kw: Any) -> answers.AnswerTable:
    services, slices, namespaces = cluster_objects()
    snap = snapshot.build(services, slices, namespaces, snapshot.Config(), serial=42, **kw)
    return answers.compile_table(snap)


async def udp_exchange(port: int, payload: bytes, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes | None:
    """Send one datagram, return the reply or None on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not fut.done():
                fut.set_result(data)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=(host, port))
    try:
        tr.sendto(payload)
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        return None
    finally:
        tr.close()


async def tcp_exchange(port: int, payload: bytes, timeout: float = 2.0) -> bytes | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack("!H", len(payload)) + payload)
        await writer.drain()
        n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
        return await asyncio.wait_for(reader.readexactly(n), timeout)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionResetError):
        return None
    finally:
        writer.close()


class FakeUpstream:
    """A tiny authoritative resolver for tests (UDP+TCP on ``host``, ephemeral port), built on dnslib.

    ``records`` maps (lower-case name without dot, TYPE) to zone-file lines. Names in ``names`` with
    no record of the asked type get NODATA, others NXDOMAIN, both with an SOA whose MINIMUM is 10.
    ``truncate`` names get an empty TC reply over UDP; ``silent`` drops everything; ``delay`` waits.
    Every query is logged in ``queries`` as (proto, name, TYPE).
    """

    SOA = "example. 60 IN SOA ns.example. host.example. 1 7200 1800 86400 10"

    def __init__(self, host: str = "127.0.0.2", records: dict | None = None, *, silent: bool = False,
                 truncate: set[str] | None = None, delay: float = 0.0) -> None:
        self.host = host
        self.records = records or {}
        self.names = {n for n, _ in self.records}
        self.silent = silent
        self.truncate = truncate or set()
        self.delay = delay
        self.queries: list[tuple[str, str, str]] = []
        self.port = 0
        self._udp = None
        self._tcp = None

    def reply(self, data: bytes, proto: str) -> bytes | None:
        from dnslib import QTYPE, RCODE, RR, DNSRecord

        q = DNSRecord.parse(data)
        name = str(q.q.qname).rstrip(".").lower()
        qtype = QTYPE.get(q.q.qtype)
        self.queries.append((proto, name, qtype))
        if self.silent:
            return None
        r = q.reply()
        if proto == "udp" and name in self.truncate:
            r.header.tc = 1
            return r.pack()
        lines = self.records.get((name, qtype))
        if lines:
            for line in lines:
                r.add_answer(*RR.fromZone(line))
        else:
            if name not in self.names:
                r.header.rcode = RCODE.NXDOMAIN
            r.add_auth(*RR.fromZone(self.SOA))
        return r.pack()

    async def start(self) -> "FakeUpstream":
        loop = asyncio.get_running_loop()
        up = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                async def later():
                    if up.delay:
                        await asyncio.sleep(up.delay)
                    out = up.reply(data, "udp")
                    if out is not None:
                        self.transport.sendto(out, addr)
                asyncio.ensure_future(later())

        async def tcp(reader, writer):
            try:
                while True:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                    out = up.reply(await reader.readexactly(n), "tcp")
                    if out is not None:
                        writer.write(struct.pack("!H", len(out)) + out)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._tcp = await asyncio.start_server(tcp, self.host, 0)
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, self.port))
        return self

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


class UdpRelay:
    """Relays every datagram it gets to ``target`` and the replies back: a forwarding loop in a box."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host, self.target = host, target
        self.port = 0
        self.relayed = 0
        self._tr = None

    async def start(self) -> "UdpRelay":
        loop = asyncio.get_running_loop()
        relay = self

        class P(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                relay.relayed += 1
                if relay.relayed > 1000:
                    return
                asyncio.ensure_future(self.forward(data, addr))

            async def forward(self, data, addr):
                reply = await udp_exchange(relay.target[1], data, relay.target[0], timeout=1.0)
                if reply is not None:
                    self.transport.sendto(reply, addr)

        self._tr, _ = await loop.create_datagram_endpoint(P, local_addr=(self.host, 0))
        self.port = self._tr.get_extra_info("sockname")[1]
        return self

    async def stop(self) -> None:
        if self._tr is not None:
            self._tr.close()


class FakeDatagramBatch:
    """:class:`podnet.dns.datagrams.DatagramBatch` over lists: ``incoming`` holds (payload, address)
    datagrams, ``receive`` takes up to ``batch`` of them; every reply sent is appended to ``sent`` as
    (payload, address). ``fail_sends`` replies are dropped (counted by ``flush``/refused by
    ``send_one``) before any is sent, as a full send buffer would."""

    def __init__(self, incoming: list[tuple[bytes, tuple]] | None = None, batch: int = 64, fail_sends: int = 0) -> None:
        self.incoming = list(incoming or [])
        self.batch = batch
        self.fail_sends = fail_sends
        self.sent: list[tuple[bytes, tuple]] = []
        self._now: list[tuple[bytes, tuple]] = []
        self._replies: dict[int, bytes] = {}

    def receive(self) -> int:
        self._now, self.incoming = self.incoming[: self.batch], self.incoming[self.batch :]
        self._replies = {}
        return len(self._now)

    def data(self, i: int) -> bytes:
        return self._now[i][0]

    def address(self, i: int) -> tuple:
        return self._now[i][1]

    def reply(self, i: int, payload: bytes) -> None:
        assert i not in self._replies, f"datagram {i} answered twice"
        self._replies[i] = payload

    def answer_in_place(self, n: int, parts, types, sizes) -> list[int]:
        rest = []
        for i in range(n):
            data = self._now[i][0]
            got = parts(data, 0, len(data))
            if got is None:
                rest.append(i)
                continue
            reply = data[:2] + got[0] + data[12:] + got[1]
            self.reply(i, reply)
            types[data[-4:-2]] += 1
            sizes[len(data) << 16 | len(reply)] += 1
        return rest

    def flush(self) -> int:
        dropped = 0
        for i in sorted(self._replies):
            if not self.send_one(self._replies[i], self._now[i][1]):
                dropped += 1
        self._replies = {}
        return dropped

    def send_one(self, payload: bytes, address: tuple) -> bool:
        if self.fail_sends:
            self.fail_sends -= 1
            return False
        self.sent.append((payload, address))
        return True
