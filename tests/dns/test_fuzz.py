"""Fuzzing (bounded, seeded): scapy-built, mutated and random packets through the real UDP and TCP listeners,
then the server must still answer correctly. No reply may exceed 512 bytes, or the query's EDNS size."""

from __future__ import annotations

import asyncio
import random
import struct

import dns.exception
import dns.message
import pytest

from podnet.dns.forward import Forwarder
from podnet.dns.handler import Handler, run_sync
from podnet.dns.testing import cluster_table, tcp_exchange, udp_exchange
from podnet.dns.wire import FormErr, parse_query, read_name, walk_rrs

SEED = 20261122
NAMES = ["web.default.svc.cluster.local.", "_http._tcp.web.default.svc.cluster.local.", "db.default.svc.cluster.local.",
         "5.0.96.10.in-addr.arpa.", "10-1-2-3.default.pod.cluster.local.", "cluster.local.", "x.ext.default.svc.cluster.local."]


def scapy_packets(rng: random.Random, n: int) -> list[bytes]:
    from scapy.layers.dns import DNS, DNSQR, DNSRROPT
    from scapy.packet import fuzz

    out = []
    for i in range(n):
        name = rng.choice(NAMES)
        kind = i % 4
        if kind == 0:
            p = DNS(id=rng.getrandbits(16), rd=1, qd=DNSQR(qname=name, qtype=rng.choice([1, 28, 33, 12, 255, 16, 0, 41, 252, 65535])))
        elif kind == 1:
            p = fuzz(DNS(qd=DNSQR(qname=name)))
        elif kind == 2:
            p = DNS(id=rng.getrandbits(16), qd=DNSQR(qname=name), ar=DNSRROPT(rclass=rng.choice([0, 100, 512, 1232, 4096, 65535]),
                                                                           version=rng.choice([0, 0, 1])))
        else:
            p = fuzz(DNS(qd=DNSQR(qname=name), ar=DNSRROPT()))
        try:
            out.append(bytes(p))
        except Exception:  # noqa: BLE001 - scapy cannot always build what fuzz() picks
            continue
    return out


def mutated(rng: random.Random, n: int) -> list[bytes]:
    base = [dns.message.make_query(name, t, use_edns=e).to_wire() for name in NAMES for t in ("A", "SRV") for e in (None, 0)]
    out = []
    for _ in range(n):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if not b:
                break
            if op < 0.4:
                b[rng.randrange(len(b))] = rng.getrandbits(8)
            elif op < 0.6:
                del b[rng.randrange(len(b)):]
            elif op < 0.8 and len(b) > 14:
                pos = rng.randrange(12, len(b) - 1)
                b[pos:pos + 2] = bytes([0xC0 | (pos >> 8), pos & 0xFF])  # a pointer to itself
            else:
                b += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
        out.append(bytes(b))
    return out


def random_packets(rng: random.Random, n: int) -> list[bytes]:
    return [bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 11, 12, 13, 17, 30, 64, 200, 600]))) for _ in range(n)]


def udp_limit(query: bytes) -> int:
    try:
        m = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
        return 512
    return max(512, m.payload) if m.edns >= 0 else 512


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    rng = random.Random(SEED)
    return scapy_packets(rng, 1200) + mutated(rng, 2000) + random_packets(rng, 800)


def test_handler_never_raises(corpus):
    h = Handler(cluster_table(), Forwarder([]))
    for pkt in corpus:
        reply = run_sync(h.answer_udp(pkt))
        if reply is not None:
            assert len(reply) <= udp_limit(pkt)
            assert reply[:2] == pkt[:2]
        reply = run_sync(h.answer(pkt, udp=False))
        assert reply is None or len(reply) <= 65535


async def test_udp_listener_survives_fuzz(server, corpus):
    loop = asyncio.get_running_loop()
    replies: list[bytes] = []

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            replies.append(data)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", server.port))
    try:
        limits = {}
        for i, pkt in enumerate(corpus):
            tr.sendto(pkt)
            if len(pkt) >= 2:
                limits.setdefault(pkt[:2], []).append(udp_limit(pkt))
            if i % 50 == 0:
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
    finally:
        tr.close()
    assert replies
    for r in replies:
        assert len(r) <= max(limits.get(r[:2], [512]))
    assert server.errors == 0
    reply = dns.message.from_wire(await udp_exchange(server.port, dns.message.make_query(NAMES[0], "A").to_wire()))
    assert reply.answer[0][0].to_text() == "10.96.0.5"


async def test_tcp_listener_survives_fuzz(server, corpus):
    rng = random.Random(SEED + 1)
    for pkt in rng.sample(corpus, 300):
        if not pkt:
            continue
        reply = await tcp_exchange(server.port, pkt, timeout=0.3)
        assert reply is None or reply[:2] == pkt[:2]
    # a raw junk stream, then a good query on a fresh connection
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(bytes(rng.getrandbits(8) for _ in range(5000)))
    await writer.drain()
    writer.close()
    assert server.errors == 0
    good = await tcp_exchange(server.port, dns.message.make_query(NAMES[0], "A").to_wire())
    assert dns.message.from_wire(good).answer[0][0].to_text() == "10.96.0.5"


def test_reply_parser_only_raises_formerr(corpus):
    """Upstream replies are parsed with the same loop-safe reader: junk ends in FormErr, never a hang."""
    rng = random.Random(SEED + 2)
    loop_reply = struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"
    for pkt in corpus + [loop_reply] + random_packets(rng, 500):
        for pos in (0, 12):
            try:
                read_name(pkt, pos)
            except FormErr:
                pass
            try:
                walk_rrs(pkt, 12, 3)
            except FormErr:
                pass
        try:
            parse_query(pkt)
        except FormErr:
            pass
