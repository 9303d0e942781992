"""Batched UDP: every datagram gets the answer the one-at-a-time path gives, to its own sender.

The server's batch loop runs over :class:`FakeDatagramBatch` (what is answered, counted, dropped), and
:class:`BatchSocket` over real loopback sockets (recvmmsg/sendmmsg: whole datagrams, replies to the
right addresses, IPv4 and IPv6).
"""

from __future__ import annotations

import socket
from collections import defaultdict

import dns.message
import dns.rcode
import pytest

from podnet.dns import datagrams
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer, _BatchedUdp
from podnet.dns.testing import FakeDatagramBatch, cluster_table, udp_exchange

pytestmark = pytest.mark.skipif(not datagrams.available(), reason="libc without recvmmsg/sendmmsg")

CLIENT = ("127.0.0.9", 40000)
OTHER = ("127.0.0.10", 40001)


def query(name: str, rtype: str = "A", qid: int = 7, **kw) -> bytes:
    msg = dns.message.make_query(name, rtype, **kw)
    msg.id = qid
    return msg.to_wire()


FAST = query("web.default.svc.cluster.local.")
FAST_MIXED_CASE = query("WeB.Default.svc.cluster.local.", qid=8)
NXDOMAIN = query("nope.default.svc.cluster.local.", qid=9)
NODATA = query("web.default.svc.cluster.local.", "MX", qid=10)
WITH_EDNS = query("web.default.svc.cluster.local.", qid=11, use_edns=0, payload=1232)
RESPONSE = bytes([0, 1, 0x80]) + FAST[3:]
SHORT = b"\x00\x01\x00"


def expected(data: bytes) -> bytes | None:
    """The reply of the one-datagram-at-a-time path (a fresh handler: same table, same counters)."""
    return Handler(cluster_table()).answer_udp(data)


@pytest.mark.parametrize("datagrams_in,fail_sends,want_sent,want_dropped,want_fast", [
    pytest.param([(FAST, CLIENT)], 0, [(FAST, CLIENT)], 0, 1, id="fast-path"),
    pytest.param([(FAST_MIXED_CASE, CLIENT)], 0, [(FAST_MIXED_CASE, CLIENT)], 0, 1, id="fast-path-keeps-the-query-case"),
    pytest.param([(NXDOMAIN, CLIENT)], 0, [(NXDOMAIN, CLIENT)], 0, 0, id="slow-path-nxdomain"),
    pytest.param([(NODATA, CLIENT)], 0, [(NODATA, CLIENT)], 0, 0, id="slow-path-nodata"),
    pytest.param([(WITH_EDNS, CLIENT)], 0, [(WITH_EDNS, CLIENT)], 0, 0, id="slow-path-edns"),
    pytest.param([(RESPONSE, CLIENT), (SHORT, OTHER)], 0, [], 2, 0, id="not-queries-dropped"),
    pytest.param([(FAST, CLIENT), (NXDOMAIN, OTHER), (FAST_MIXED_CASE, OTHER)], 0,
                 [(FAST, CLIENT), (NXDOMAIN, OTHER), (FAST_MIXED_CASE, OTHER)], 0, 2, id="mixed-batch-each-to-its-sender"),
    pytest.param([(FAST, CLIENT), (NXDOMAIN, OTHER)], 1, [(NXDOMAIN, OTHER)], 1, 1, id="send-buffer-full-drops-one"),
    pytest.param([(FAST, (f"127.0.0.{i % 200 + 1}", 1000 + i)) for i in range(150)], 0,
                 [(FAST, (f"127.0.0.{i % 200 + 1}", 1000 + i)) for i in range(150)], 0, 150, id="more-than-one-batch"),
])
def test_batch_loop(datagrams_in, fail_sends, want_sent, want_dropped, want_fast):
    server = DnsServer(Handler(cluster_table()), batch_udp=False)
    fake = FakeDatagramBatch(datagrams_in, batch=64, fail_sends=fail_sends)
    _BatchedUdp(server, fake).drain()
    assert [(reply, addr) for reply, addr in fake.sent] == [(expected(q), addr) for q, addr in want_sent]
    assert server.stats.dropped == want_dropped
    assert sum(server.stats.fast.values()) == want_fast
    made = len(want_sent) + fail_sends  # a reply the socket would not take was made, and is counted dropped too
    assert sum(h.n for h in server.stats.durations.values()) == made
    assert sum(server.stats.request_sizes["udp"].values()) == made


def test_batch_loop_counts_sizes_and_types():
    server = DnsServer(Handler(cluster_table()), batch_udp=False)
    fake = FakeDatagramBatch([(FAST, CLIENT), (FAST_MIXED_CASE, OTHER)])
    _BatchedUdp(server, fake).drain()
    reply_len = len(expected(FAST))
    assert dict(server.stats.fast) == {b"\x00\x01": 2}
    assert dict(server.stats.request_sizes["udp"]) == {len(FAST): 2}
    assert dict(server.stats.response_sizes["udp"]) == {reply_len: 2}


def test_fast_parts_matches_fast_udp_for_every_entry():
    handler = Handler(cluster_table())
    checked = 0
    for key in handler.table.hot:
        wname, qtype = key[:-2], key[-2:]
        data = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wname + qtype + b"\x00\x01"
        whole = handler.fast_udp(data)
        parts = handler.fast_parts(b"junk" + data + b"more", 4, 4 + len(data))
        assert (whole is None) == (parts is None), key
        if whole is not None and not handler.table.hot[key].rot:
            assert data[:2] + parts[0] + data[12:] + parts[1] == whole
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("family,host", [
    pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", id="ipv6"),
])
def test_batch_socket_over_loopback(family, host):
    try:
        srv = socket.socket(family, socket.SOCK_DGRAM)
        srv.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host}")
    srv.setblocking(False)
    clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(2)]
    batch = datagrams.BatchSocket(srv, batch=8)
    try:
        for c in clients:
            c.bind((host, 0))
            c.settimeout(2)
        big = FAST + b"\x00" * 60000  # longer than any reply: delivered whole all the same
        sent = [(clients[i % 2], query("web.default.svc.cluster.local.", qid=i)) for i in range(5)]
        sent.append((clients[1], big))
        for c, payload in sent:
            c.sendto(payload, srv.getsockname())
        got: list[tuple[bytes, tuple]] = []
        for _ in range(100):
            n = batch.receive()
            got += [(batch.data(i), batch.address(i)) for i in range(n)]
            if len(got) >= len(sent):
                break
        assert [d for d, _ in got] == [p for _, p in sent]
        assert [a[:2] for _, a in got] == [c.getsockname()[:2] for c, _ in sent]
        # Answer the batch: the first three in place, the rest as given bytes.
        handler = Handler(cluster_table())
        for i in range(3):
            batch.reply(i, handler.answer_udp(got[i][0]))
        for i in range(3, len(got)):
            batch.reply(i, b"reply-%d" % i)
        assert batch.flush() == 0
        for i, (c, payload) in enumerate(sent):
            want = handler.answer_udp(payload) if i < 3 else b"reply-%d" % i
            assert c.recv(65536) == want
    finally:
        batch.close()
        srv.close()
        for c in clients:
            c.close()


def test_batch_socket_answers_in_place():
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    batch = datagrams.BatchSocket(srv)
    handler = Handler(cluster_table())
    try:
        order = [FAST, NXDOMAIN, FAST_MIXED_CASE]
        for payload in order:
            client.sendto(payload, srv.getsockname())
        n = 0
        for _ in range(100):
            n = batch.receive()
            if n:
                break
        assert n == 3
        types: defaultdict[bytes, int] = defaultdict(int)
        sizes: defaultdict[int, int] = defaultdict(int)
        rest = batch.answer_in_place(n, handler.fast_parts, types, sizes)
        assert rest == [1]
        batch.reply(1, handler.answer_udp(batch.data(1)))
        assert batch.flush() == 0
        replies = {client.recv(65536) for _ in order}
        assert replies == {expected(p) for p in order}
        assert dns.message.from_wire(expected(NXDOMAIN)).rcode() == dns.rcode.NXDOMAIN
        assert dict(types) == {b"\x00\x01": 2}
        assert sum(sizes.values()) == 2
    finally:
        batch.close()
        srv.close()
        client.close()


@pytest.mark.parametrize("batch_udp", [pytest.param(True, id="batched"), pytest.param(False, id="one-per-callback")])
async def test_server_answers_the_same_either_way(batch_udp):
    srv = DnsServer(Handler(cluster_table()), "127.0.0.1", 0, batch_udp=batch_udp)
    await srv.start()
    try:
        for payload in (FAST, FAST_MIXED_CASE, NXDOMAIN, NXDOMAIN, NODATA, WITH_EDNS):
            assert await udp_exchange(srv.port, payload) == expected(payload)
        assert await udp_exchange(srv.port, RESPONSE, timeout=0.3) is None
    finally:
        await srv.stop()
