"""Forwarding through the real listener to fake upstreams on 127.0.0.x: cache, failover, TC->TCP, cap, loops."""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from podnet.dns.cache import Cache
from podnet.dns.forward import Forwarder, UpstreamAddr, parse_upstream, read_resolv_conf, self_matcher
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer
from podnet.dns.testing import FakeUpstream, UdpRelay, cluster_table
from podnet.kube.testing import FakeClock

RECORDS = {
    ("www.example.com", "A"): ["www.example.com. 60 IN A 192.0.2.53"],
    ("www.example.com", "AAAA"): ["www.example.com. 60 IN AAAA 2001:db8::53"],
    ("short.example.com", "A"): ["short.example.com. 2 IN A 192.0.2.2"],
    ("big.example.com", "A"): [f"big.example.com. 60 IN A 192.0.2.{i}" for i in range(1, 41)],
    ("txt.example.com", "TXT"): ['txt.example.com. 60 IN TXT "hello"'],
}


class Rig:
    def __init__(self, upstreams, clock, **fw):
        self.clock = clock
        self.cache = Cache(clock=clock, max_ttl=30, max_denial_ttl=30)
        self.forwarder = Forwarder([UpstreamAddr(u.host, u.port) for u in upstreams], self.cache, clock=clock, **fw)
        self.server = DnsServer(Handler(cluster_table(), self.forwarder), "127.0.0.1", 0)

    async def q(self, name, qtype="A", tcp=False, **kw):
        m = dns.message.make_query(name, qtype, **kw)
        fn = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        return await fn(m, "127.0.0.1", port=self.server.port, timeout=5)


@pytest.fixture
async def rig_factory():
    made = []

    async def make(*upstreams, **fw):
        for u in upstreams:
            await u.start()
        rig = Rig(upstreams, FakeClock(), **fw)
        await rig.server.start()
        made.append((rig, upstreams))
        return rig

    yield make
    for rig, ups in made:
        await rig.server.stop()
        await rig.forwarder.close()
        for u in ups:
            await u.stop()


async def test_forward_answer_and_case(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    r = await rig.q("WwW.ExAmPlE.CoM.")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer[0].name.to_text() == "WwW.ExAmPlE.CoM."
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.53"]
    assert r.answer[0].ttl == 60
    assert not r.flags & dns.flags.AA


@pytest.mark.parametrize(
    "name,qtype,rcode,age,left,expire",
    [
        # positive: cached for min(60, cap 30) s
        ("www.example.com.", "A", "NOERROR", 12, 18, 19),
        # negative: cached for the SOA's MINIMUM, 10 s
        ("nope.example.com.", "A", "NXDOMAIN", 4, 6, 7),
        ("www.example.com.", "MX", "NOERROR", 4, 6, 7),
    ],
    ids=["positive", "nxdomain", "nodata"],
)
async def test_cache_ttl_counts_down(rig_factory, name, qtype, rcode, age, left, expire):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)

    def ttl(r):
        return (r.answer or r.authority)[0].ttl

    r1 = await rig.q(name, qtype)
    assert dns.rcode.to_text(r1.rcode()) == rcode
    assert ttl(r1) == 60
    rig.clock.advance(age)
    r2 = await rig.q(name, qtype)
    assert dns.rcode.to_text(r2.rcode()) == rcode
    assert ttl(r2) == left
    assert len(up.queries) == 1
    rig.clock.advance(expire)
    await rig.q(name, qtype)
    assert len(up.queries) == 2


async def test_negative_cache_uses_soa_minimum(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    await rig.q("gone.example.com.")
    rig.clock.advance(9)
    await rig.q("gone.example.com.")
    assert len(up.queries) == 1
    rig.clock.advance(2)  # SOA MINIMUM is 10
    await rig.q("gone.example.com.")
    assert len(up.queries) == 2


async def test_minimum_cache_ttl_is_5s(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    await rig.q("short.example.com.")
    rig.clock.advance(4)
    r = await rig.q("short.example.com.")
    assert r.answer[0].ttl == 0
    assert len(up.queries) == 1


async def test_failover_to_second_upstream(rig_factory):
    dead = FakeUpstream("127.0.0.3", RECORDS, silent=True)
    good = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(dead, good, timeout=0.3)
    for name in ("www.example.com.", "txt.example.com."):
        r = await rig.q(name, "A" if name.startswith("www") else "TXT")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
    # After two failures the dead upstream is tried last, so answers come at once.
    assert len(good.queries) == 2


async def test_all_upstreams_down_servfail(rig_factory):
    dead = FakeUpstream("127.0.0.3", RECORDS, silent=True)
    rig = await rig_factory(dead, timeout=0.2)
    r = await rig.q("www.example.com.")
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_truncated_udp_retried_over_tcp(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS, truncate={"big.example.com"})
    rig = await rig_factory(up)
    r = await rig.q("big.example.com.", tcp=True)
    assert sum(len(s) for s in r.answer) == 40
    assert [p for p, _, _ in up.queries] == ["udp", "tcp"]
    r = await rig.q("big.example.com.")  # a plain UDP client gets at most 512 bytes, with TC
    assert r.flags & dns.flags.TC
    # An EDNS client gets at most 1232 bytes and 10 times its query (here 10 x 43 bytes), with TC.
    r = await rig.q("big.example.com.", use_edns=0, payload=4096)
    assert 0 < sum(len(s) for s in r.answer) < 40 and r.flags & dns.flags.TC
    assert len(r.to_wire()) <= 10 * len(dns.message.make_query("big.example.com.", "A", use_edns=0, payload=4096).to_wire())


async def test_in_flight_cap_refuses(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS, delay=0.5)
    rig = await rig_factory(up, max_concurrent=2)
    names = [f"n{i}.example.com." for i in range(6)]
    results = await asyncio.gather(*(rig.q(n) for n in names))
    codes = sorted(dns.rcode.to_text(r.rcode()) for r in results)
    assert codes.count("REFUSED") == 4
    assert codes.count("NXDOMAIN") == 2
    assert rig.forwarder.stats.max_concurrent_rejects == 4
    assert rig.forwarder.in_flight == 0


async def test_identical_questions_share_one_upstream_query(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS, delay=0.2)
    rig = await rig_factory(up)
    rig.cache.max_ttl = 0  # keep the cache out of it
    results = await asyncio.gather(*(rig.q("www.example.com.") for _ in range(5)))
    assert all(r.answer for r in results)
    assert len(up.queries) == 1


async def test_externalname_chased_through_upstream(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    r = await rig.q("ext.default.svc.cluster.local.")
    lines = sorted(f"{s.name} {rd}" for s in r.answer for rd in s)
    assert lines == ["ext.default.svc.cluster.local. www.example.com.", "www.example.com. 192.0.2.53"]
    assert r.flags & dns.flags.AA
    r = await rig.q("ext.default.svc.cluster.local.", "AAAA")
    assert sorted(rd.to_text() for s in r.answer for rd in s) == ["2001:db8::53", "www.example.com."]


async def test_cluster_names_never_forwarded(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    r = await rig.q("nope.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert up.queries == []


async def test_reverse_fallthrough_to_upstream(rig_factory):
    up = FakeUpstream("127.0.0.2", {("4.3.2.1.in-addr.arpa", "PTR"): ["4.3.2.1.in-addr.arpa. 60 IN PTR host.example."]})
    rig = await rig_factory(up)
    r = await rig.q("4.3.2.1.in-addr.arpa.", "PTR")
    assert [rd.to_text() for s in r.answer for rd in s] == ["host.example."]
    r = await rig.q("5.0.96.10.in-addr.arpa.", "PTR")
    assert [rd.to_text() for s in r.answer for rd in s] == ["web.default.svc.cluster.local."]
    assert len(up.queries) == 1


@pytest.mark.parametrize(
    "listen,upstream,is_self",
    [
        (("0.0.0.0", 53), UpstreamAddr("127.0.0.53", 53), True),   # systemd-resolved stub address, wildcard listener
        (("0.0.0.0", 53), UpstreamAddr("127.0.0.1", 53), True),
        (("0.0.0.0", 53), UpstreamAddr("127.0.0.1", 5353), False),
        (("0.0.0.0", 53), UpstreamAddr("192.0.2.1", 53), False),    # not an address of this host
        (("127.0.0.1", 53), UpstreamAddr("127.0.0.1", 53), True),
        (("127.0.0.1", 53), UpstreamAddr("127.0.0.2", 53), False),
    ],
    ids=["stub-on-wildcard", "loopback-on-wildcard", "other-port", "remote", "exact", "other-loopback-ip"],
)
def test_upstream_pointing_at_ourselves_is_dropped(listen, upstream, is_self):
    fw = Forwarder([upstream], is_self=self_matcher(*listen))
    assert (fw.usable == []) == is_self


async def test_dynamic_loop_detected_and_survived():
    """Our upstream relays everything back to us (resolv.conf pointing at ourselves, via another hop)."""
    handler = Handler(cluster_table())
    server = DnsServer(handler, "127.0.0.1", 0)
    await server.start()
    relay = await UdpRelay("127.0.0.5", ("127.0.0.1", server.port)).start()
    fw = Forwarder([UpstreamAddr("127.0.0.5", relay.port)], Cache(), timeout=0.5)
    handler.forwarder = fw
    try:
        await fw.probe()
        assert fw.usable == []
        q = dns.message.make_query("www.example.com.", "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
        assert r.rcode() == dns.rcode.SERVFAIL
        q = dns.message.make_query("web.default.svc.cluster.local.", "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
        assert r.answer[0][0].to_text() == "10.96.0.5"
        assert relay.relayed < 10
    finally:
        await relay.stop()
        await server.stop()
        await fw.close()


async def test_probe_through_healthy_upstream_keeps_it(rig_factory):
    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    await rig.forwarder.probe()
    assert len(rig.forwarder.usable) == 1
    assert up.queries[0][2] == "HINFO"


@pytest.mark.parametrize(
    "text,want",
    [
        ("10.0.0.1", UpstreamAddr("10.0.0.1", 53)),
        ("10.0.0.1:5353", UpstreamAddr("10.0.0.1", 5353)),
        ("[fd00::1]:54", UpstreamAddr("fd00::1", 54)),
        ("fd00::1", UpstreamAddr("fd00::1", 53)),
    ],
    ids=["v4", "v4-port", "v6-port", "v6"],
)
def test_parse_upstream(text, want):
    assert parse_upstream(text) == want


@pytest.mark.parametrize("text", ["nonsense", "10.0.0.1:0", "10.0.0.1:99999", "host.example:53"])
def test_parse_upstream_rejects(text):
    with pytest.raises(ValueError):
        parse_upstream(text)


def test_read_resolv_conf():
    text = "search a b\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n"
    assert read_resolv_conf(text) == [UpstreamAddr("10.0.0.1"), UpstreamAddr("fe80::1")]


async def test_forward_and_cache_metrics(rig_factory):
    from podnet.dns.metrics import Collector, render

    up = FakeUpstream("127.0.0.2", RECORDS)
    rig = await rig_factory(up)
    await rig.q("www.example.com.")
    await rig.q("www.example.com.")
    text = render(Collector(rig.server.stats, "dns://test", rig.cache, rig.forwarder)).decode()
    to = f"127.0.0.2:{up.port}"
    assert f'coredns_forward_requests_total{{to="{to}"}} 1.0' in text
    assert f'coredns_forward_responses_total{{rcode="NOERROR",to="{to}"}} 1.0' in text
    assert f'coredns_proxy_request_duration_seconds_count{{proxy_name="forward",rcode="NOERROR",to="{to}"}} 1.0' in text
    assert "coredns_forward_healthcheck_broken_total 0.0" in text
    assert 'coredns_cache_hits_total{server="dns://test",type="success",view="",zones="."} 1.0' in text
    assert 'coredns_cache_misses_total{server="dns://test",view="",zones="."} 1.0' in text


def test_upstream_records_with_odd_bytes_are_copied_exactly():
    """Owner and rdata names are kept in wire form, so labels holding dots or binary bytes survive."""
    import struct

    from podnet.dns.cache import Upstream
    from podnet.dns.wire import WireRR, parse_query

    owner = b"\x03a.B\x07example\x00"
    target = b"\x04\x00\xff.x\x00"
    q = parse_query(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x03A.b\x07EXAMPLE\x00" + b"\x00\x05\x00\x01")
    ans = Upstream(0, (WireRR(owner, 5, 1, 60, target),), (), (), False, 0.0)
    reply = Handler(cluster_table())._from_upstream(q, ans, 0.0, 512)
    m = dns.message.from_wire(reply)
    assert m.answer[0].name.labels[:2] == (b"A.b", b"EXAMPLE")  # the query's case, via a pointer
    assert m.answer[0][0].target.to_wire() == target


@pytest.fixture
async def dnsmasq(tmp_path):
    """Debian's dnsmasq as a real upstream on 127.0.0.6 (ephemeral port), serving a hosts file."""
    import shutil
    import socket

    exe = shutil.which("dnsmasq")
    if exe is None:
        pytest.skip("dnsmasq-base not installed")
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.77 real.example.org\n" + "".join(f"198.51.100.{i} many.example.org\n" for i in range(1, 61)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.6", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        exe, "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", f"--port={port}",
        "--listen-address=127.0.0.6", "--bind-interfaces", "--local=/example.org/", "--user=root", "--pid-file=",
        "--log-facility=/dev/null", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    class Up:
        host = "127.0.0.6"

        async def start(self):
            for _ in range(100):
                q = dns.message.make_query("real.example.org.", "A")
                try:
                    await dns.asyncquery.udp(q, "127.0.0.6", port=port, timeout=0.2)
                    return
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.05)

        async def stop(self):
            pass

    up = Up()
    up.port = port
    try:
        yield up
    finally:
        proc.terminate()
        await proc.wait()


async def test_forward_to_real_dnsmasq(rig_factory, dnsmasq):
    rig = await rig_factory(dnsmasq)
    r = await rig.q("Real.Example.Org.")
    assert [rd.to_text() for s in r.answer for rd in s] == ["192.0.2.77"]
    assert r.answer[0].name.to_text() == "Real.Example.Org."
    r = await rig.q("missing.example.org.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    # 60 A records: dnsmasq truncates at our EDNS size or not; either way a TCP client gets them all.
    r = await rig.q("many.example.org.", tcp=True)
    assert sum(len(s) for s in r.answer) == 60
    r = await rig.q("many.example.org.")
    assert r.flags & dns.flags.TC and len(r.to_wire()) <= 512
