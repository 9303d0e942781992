"""Protocol behaviour through the real listeners: case, EDNS, BADVERS, truncation, TCP framing, bad input."""

from __future__ import annotations

import asyncio
import struct

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer
from podnet.dns.testing import eps, svc, tcp_exchange, udp_exchange


def query_bytes(name: str, qtype: str = "A", **kw) -> bytes:
    q = dns.message.make_query(name, qtype, **kw)
    q.id = 0x1234
    return q.to_wire()


async def test_case_preserved_in_answers_and_authority(server):
    r = dns.message.from_wire(await udp_exchange(server.port, query_bytes("WeB.DeFaUlT.sVc.ClUsTeR.LoCaL.")))
    assert r.question[0].name.to_text() == "WeB.DeFaUlT.sVc.ClUsTeR.LoCaL."
    assert r.answer[0].name.to_text() == "WeB.DeFaUlT.sVc.ClUsTeR.LoCaL."
    r = dns.message.from_wire(await udp_exchange(server.port, query_bytes("NoPe.DeFaUlT.sVc.ClUsTeR.LoCaL.")))
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].name.to_text() == "ClUsTeR.LoCaL."


@pytest.mark.parametrize("do", [False, True], ids=["plain", "do-bit"])
async def test_edns_echoed(server, do):
    wire = query_bytes("web.default.svc.cluster.local.", use_edns=0, payload=1232, want_dnssec=do)
    r = dns.message.from_wire(await udp_exchange(server.port, wire))
    assert r.edns == 0
    assert r.payload == 1232
    assert bool(r.ednsflags & dns.flags.DO) == do
    assert r.answer[0][0].to_text() == "10.96.0.5"


async def test_no_opt_without_edns(server):
    r = dns.message.from_wire(await udp_exchange(server.port, query_bytes("web.default.svc.cluster.local.")))
    assert r.edns == -1


@pytest.mark.parametrize("name", ["web.default.svc.cluster.local.", "example.com."], ids=["ours", "elsewhere"])
async def test_badvers(server, name):
    r = dns.message.from_wire(await udp_exchange(server.port, query_bytes(name, use_edns=1)))
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0
    assert not r.answer


async def test_id_and_rd_copied(server):
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    q.flags &= ~dns.flags.RD
    q.id = 4321
    r = dns.message.from_wire(await udp_exchange(server.port, q.to_wire()))
    assert r.id == 4321 and not r.flags & dns.flags.RD
    q.flags |= dns.flags.RD
    r = dns.message.from_wire(await udp_exchange(server.port, q.to_wire()))
    assert r.flags & dns.flags.RD


@pytest.fixture
async def big_server():
    """A headless service with 100 ready IPv4 endpoints."""
    services = [svc("default", "big", clusterIP="None", ports=[{"name": "p", "port": 80}])]
    endpoints = [{"addresses": [f"10.2.{i // 200}.{i % 200 + 1}"]} for i in range(100)]
    slices = [eps("default", "big", "big-a", "IPv4", endpoints, [{"name": "p", "port": 80}])]
    table = answers.compile_table(snapshot.build(services, slices, ["default"]))
    srv = DnsServer(Handler(table), "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


BIG = "big.default.svc.cluster.local."


@pytest.mark.parametrize(
    "qtype,kw,size",
    [
        ("A", {}, 512),
        ("A", {"use_edns": 0, "payload": 1232}, 1232),
        ("A", {"use_edns": 0, "payload": 4096}, 1232),
        ("A", {"use_edns": 0, "payload": 100}, 512),
        ("SRV", {}, 512),
        ("SRV", {"use_edns": 0, "payload": 65000}, 1232),
    ],
    ids=["plain-512", "edns-1232", "edns-4096", "edns-below-512", "srv-512", "srv-edns-max"],
)
async def test_udp_truncation(big_server, qtype, kw, size):
    """100 records never fit: the reply is cut at the EDNS size (at most 1232, at least 512) and at
    10 times the query, whichever is smaller, with TC."""
    wire = query_bytes(BIG, qtype, **kw)
    raw = await udp_exchange(big_server.port, wire)
    assert len(raw) <= min(size, 10 * len(wire))
    r = dns.message.from_wire(raw)
    assert r.flags & dns.flags.TC
    n = sum(len(s) for s in r.answer)
    assert 0 < n < 100


async def test_tcp_not_truncated(big_server):
    q = dns.message.make_query(BIG, "SRV")
    r = await dns.asyncquery.tcp(q, "127.0.0.1", port=big_server.port, timeout=3)
    assert not r.flags & dns.flags.TC
    assert sum(len(s) for s in r.answer) == 100
    assert sum(len(s) for s in r.additional) == 100


def hdr(id_=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", id_, flags, qd, an, ns, ar)


WEB_Q = b"\x03web\x07default\x03svc\x07cluster\x05local\x00"
A_IN = b"\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"

BAD = [
    ("empty", b"", None),
    ("short-header", b"\x12\x34\x01\x00\x00\x01", None),
    ("is-a-response", hdr(flags=0x8100) + WEB_Q + A_IN, None),
    ("no-question", hdr(qd=0), "FORMERR"),
    ("two-questions", hdr(qd=2) + WEB_Q + A_IN + WEB_Q + A_IN, "FORMERR"),
    ("name-truncated", hdr() + WEB_Q[:10], "FORMERR"),
    ("type-truncated", hdr() + WEB_Q + b"\x00", "FORMERR"),
    ("pointer-loop-in-question", hdr() + b"\xc0\x0c" + A_IN, "FORMERR"),
    ("pointer-in-question", hdr() + b"\x03www\xc0\x0c" + A_IN, "FORMERR"),
    ("label-too-long", hdr() + b"\x40" + b"a" * 64 + b"\x00" + A_IN, "FORMERR"),
    ("extended-label", hdr() + b"\x41" + b"a" * 10 + b"\x00" + A_IN, "FORMERR"),
    ("name-too-long", hdr() + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + A_IN, "FORMERR"),
    ("answer-in-query", hdr(an=1) + WEB_Q + A_IN, "FORMERR"),
    ("authority-in-query", hdr(ns=1) + WEB_Q + A_IN, "FORMERR"),
    ("two-opts", hdr(ar=2) + WEB_Q + A_IN + OPT + OPT, "FORMERR"),
    ("opt-truncated", hdr(ar=1) + WEB_Q + A_IN + OPT[:7], "FORMERR"),
    ("arcount-without-records", hdr(ar=3) + WEB_Q + A_IN, "FORMERR"),
    ("opcode-notify", hdr(flags=0x2000) + WEB_Q + A_IN, "NOTIMP"),
    ("opcode-update", hdr(flags=0x2800) + WEB_Q + A_IN, "NOTIMP"),
    ("opcode-iquery", hdr(flags=0x0800) + WEB_Q + A_IN, "NOTIMP"),
    ("class-chaos", hdr() + WEB_Q + b"\x00\x10\x00\x03", "REFUSED"),
    ("class-any", hdr() + WEB_Q + b"\x00\x01\x00\xff", "REFUSED"),
    ("class-none", hdr() + WEB_Q + b"\x00\x01\x00\xfe", "REFUSED"),
    ("qtype-axfr", hdr() + WEB_Q + b"\x00\xfc\x00\x01", "REFUSED"),
    ("qtype-ixfr", hdr() + WEB_Q + b"\x00\xfb\x00\x01", "REFUSED"),
    ("qtype-opt", hdr() + WEB_Q + b"\x00\x29\x00\x01", "FORMERR"),
    ("qtype-zero", hdr() + WEB_Q + b"\x00\x00\x00\x01", "FORMERR"),
    ("qtype-tsig", hdr() + WEB_Q + b"\x00\xfa\x00\x01", "FORMERR"),
    ("qtype-unknown-private", hdr() + WEB_Q + b"\xff\x00\x00\x01", "NOERROR"),
    ("trailing-junk", hdr() + WEB_Q + A_IN + b"junk", "NOERROR"),
    ("binary-label", hdr() + b"\x03a\x00b" + b"\x07cluster\x05local\x00" + A_IN, "REFUSED"),
    ("uppercase-unknown", hdr() + b"\x04NOPE\x07CLUSTER\x05LOCAL\x00" + A_IN, "NXDOMAIN"),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("payload,rcode", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_bad_input(server, transport, payload, rcode):
    if transport == "udp":
        raw = await udp_exchange(server.port, payload, timeout=0.5 if rcode is None else 2)
    else:
        raw = await tcp_exchange(server.port, payload, timeout=0.5 if rcode is None else 2)
    if rcode is None:
        assert raw is None
    else:
        assert raw is not None
        assert raw[:2] == payload[:2]
        assert raw[2] & 0x80
        assert raw[3] & 0x0F == dns.rcode.from_text(rcode)
        assert len(raw) <= 512 if transport == "udp" else True
    # The server still answers a good query afterwards.
    good = dns.message.from_wire(await udp_exchange(server.port, query_bytes("web.default.svc.cluster.local.")))
    assert good.answer[0][0].to_text() == "10.96.0.5"


async def test_tcp_pipelined_queries(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    names = ["web.default.svc.cluster.local.", "db.default.svc.cluster.local.", "nope.default.svc.cluster.local."]
    msgs = []
    for i, n in enumerate(names):
        q = dns.message.make_query(n, "A")
        q.id = 100 + i
        w = q.to_wire()
        msgs.append(struct.pack("!H", len(w)) + w)
    writer.write(b"".join(msgs))
    await writer.drain()
    got = {}
    for _ in names:
        n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
        r = dns.message.from_wire(await reader.readexactly(n))
        got[r.id] = dns.rcode.to_text(r.rcode())
    writer.close()
    assert got == {100: "NOERROR", 101: "NOERROR", 102: "NXDOMAIN"}


@pytest.mark.parametrize(
    "junk",
    [b"\x00\x05hello", b"\x00\x00", b"\xff\xff" + b"x" * 100, bytes(range(256)) * 4],
    ids=["short-frame", "zero-length", "incomplete-frame", "binary-stream"],
)
async def test_tcp_junk_closes_or_waits_but_server_survives(server, junk):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(junk)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(65536), 0.5)
    except asyncio.TimeoutError:
        data = b"pending"
    writer.close()
    # Nothing that is not a DNS reply comes back: either closed (b"") or still waiting for the frame.
    assert data in (b"", b"pending") or data[2] & 0x80
    r = await dns.asyncquery.tcp(dns.message.make_query("web.default.svc.cluster.local.", "A"), "127.0.0.1",
                                 port=server.port, timeout=3)
    assert r.answer[0][0].to_text() == "10.96.0.5"


async def test_tcp_connection_cap(table):
    srv = DnsServer(Handler(table), "127.0.0.1", 0, max_tcp=2)
    await srv.start()
    try:
        conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        # A third connection takes the place of the least recently active idle one.
        r3, w3 = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await asyncio.wait_for(conns[0][0].read(10), 2) == b""
        q = query_bytes("web.default.svc.cluster.local.")
        w3.write(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", await asyncio.wait_for(r3.readexactly(2), 2))[0]
        assert dns.message.from_wire(await r3.readexactly(n)).answer[0][0].to_text() == "10.96.0.5"
        assert len(srv.tcp_conns) == 2
        w3.close()
        for _, w in conns:
            w.close()
    finally:
        await srv.stop()


async def test_ipv6_listener(table):
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv = DnsServer(Handler(table), "::1", 0)
    await srv.start()
    try:
        for fn in (dns.asyncquery.udp, dns.asyncquery.tcp):
            r = await fn(dns.message.make_query("dual.default.svc.cluster.local.", "AAAA"), "::1", port=srv.port, timeout=3)
            assert r.answer[0][0].to_text() == "fd00::7"
    finally:
        await srv.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_address_sets_rotate(server, transport):
    """Like CoreDNS's loadbalance: successive replies start with different addresses, same set."""
    fn = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    firsts, sets = [], set()
    for _ in range(3):
        r = await fn(dns.message.make_query("db.default.svc.cluster.local.", "A"), "127.0.0.1", port=server.port, timeout=3)
        addrs = [rd.to_text() for rd in r.answer[0]]
        firsts.append(addrs[0])
        sets.add(frozenset(addrs))
    assert len(set(firsts)) == 3
    assert sets == {frozenset({"10.1.0.20", "10.1.0.21", "10.1.0.23"})}
