"""Hostile input against podnet-dns's own boundary: objects no API server would hand out (built
directly, bypassing podnet.kube's validation), names with control bytes, large answers over UDP,
and one client holding many TCP connections.

Every hostile object must contribute nothing to the served table (the table equals the one built
without it), be listed as left out, and never stop the other names, old or new, from answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import struct

import aiohttp
import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.dns import answers, names, snapshot
from podnet.dns.answers import MAX_AMPLIFICATION, udp_limit
from podnet.dns.cache import Cache
from podnet.dns.daemon import Daemon, Options
from podnet.dns.forward import Forwarder, UpstreamAddr
from podnet.dns.handler import Handler
from podnet.dns.metrics import Collector, render
from podnet.dns.server import DnsServer
from podnet.dns.testing import FakeUpstream, cluster_objects, eps, svc, tcp_exchange, udp_exchange
from podnet.dns.wire import A, RR, Encoder
from podnet.kube.objects import Endpoint, EndpointPort, Namespace, ServicePort
from podnet.kube.testing import FakeInformer

# --------------------------------------------------------------------------- hostile objects

GOOD = svc("default", "victim", clusterIP="10.96.9.9", ports=[{"name": "http", "port": 80}])
GOOD_HEADLESS = svc("default", "hl", clusterIP="None", ports=[{"name": "p", "port": 80}])
GOOD_EXTERNAL = svc("default", "ext2", type="ExternalName", externalName="www.example.com")
GOOD_SLICE = eps("default", "hl", "hl-a", "IPv4", [{"addresses": ["10.1.9.1"], "hostname": "h0"}], [{"name": "p", "port": 80}])
GOOD_SLICE_V6 = eps("default", "hl", "hl-b", "IPv6", [{"addresses": ["fd00::9:1"]}], [{"name": "p", "port": 80}])


class NotAService:
    """Has a key and a namespace, nothing else: building records from it raises."""

    key = "default/broken"
    namespace = "default"
    name = "broken"


def _svc(**kw):
    return dataclasses.replace(GOOD, **kw)


_EXT_NAMES = iter(range(1000))


def _ext(value):
    return dataclasses.replace(GOOD_EXTERNAL, name=f"evil-{next(_EXT_NAMES)}", external_name=value)


def _port(**kw):
    base = dict(name="http", protocol="TCP", port=80, target_port=80)
    base.update(kw)
    return (ServicePort(**base),)


HOSTILE_SERVICES = [
    pytest.param(_svc(name="zone", cluster_ips=("fd00:96::77%x",)), "cluster-ip", id="cluster-ip-v6-zone"),
    pytest.param(_svc(name="inject", cluster_ips=("fd00::1%1\n-A PODNET-SERVICES -j ACCEPT",)), "cluster-ip", id="cluster-ip-zone-newline"),
    pytest.param(_svc(name="lz", cluster_ips=("10.096.0.1",)), "cluster-ip", id="cluster-ip-leading-zero"),
    pytest.param(_svc(name="nl4", cluster_ips=("10.96.0.1\n",)), "cluster-ip", id="cluster-ip-trailing-newline"),
    pytest.param(_svc(name="garbage", cluster_ips=("not-an-ip",)), "cluster-ip", id="cluster-ip-garbage"),
    pytest.param(_svc(name="x\n"), "name", id="name-trailing-newline"),
    pytest.param(_svc(name="a\x00b"), "name", id="name-nul"),
    pytest.param(_svc(name="a b"), "name", id="name-space"),
    pytest.param(_svc(name="evil.victim"), "name", id="name-with-dot"),
    pytest.param(_svc(name="Victim"), "name", id="name-uppercase"),
    pytest.param(_svc(name="a" * 64), "name", id="name-too-long"),
    pytest.param(_svc(name="pct%x"), "name", id="name-percent"),
    pytest.param(_svc(namespace="default\n", name="nsnl"), "namespace", id="namespace-newline"),
    pytest.param(_ext("evil.com\n"), "external-name", id="external-name-newline"),
    pytest.param(_ext("evil.com\r\n"), "external-name", id="external-name-crlf"),
    pytest.param(_ext("ev\x01il.com"), "external-name", id="external-name-control"),
    pytest.param(_ext("evil .com"), "external-name", id="external-name-space"),
    pytest.param(_ext("_evil.com"), "external-name", id="external-name-underscore"),
    pytest.param(_ext("evil..com"), "external-name", id="external-name-empty-label"),
    pytest.param(_ext("a" * 64 + ".com"), "external-name", id="external-name-label-too-long"),
    pytest.param(_ext(""), "external-name", id="external-name-empty"),
    pytest.param(_ext("ünïcode.com"), "external-name", id="external-name-8bit"),
    pytest.param(_svc(name="pn", ports=_port(name="http\n")), "port-name", id="port-name-newline"),
    pytest.param(_svc(name="pd", ports=_port(name="a.b")), "port-name", id="port-name-dot"),
    pytest.param(_svc(name="pr", ports=_port(protocol="TCP\n")), "protocol", id="protocol-newline"),
    pytest.param(_svc(name="p0", ports=_port(port=0)), "port", id="port-zero"),
    pytest.param(_svc(name="pbig", ports=_port(port=70000)), "port", id="port-too-big"),
    pytest.param(NotAService(), "unbuildable", id="not-a-service"),
]


def _slice(**ep):
    base = {"addresses": ("10.1.9.2",), "hostname": ""}
    base.update(ep)
    endpoint = Endpoint(addresses=tuple(base["addresses"]), hostname=base["hostname"])
    return dataclasses.replace(GOOD_SLICE, name="evil", endpoints=(endpoint,))


HOSTILE_SLICES = [
    pytest.param(_slice(addresses=("10.1.9.2%x",)), "address", id="address-zone"),
    pytest.param(dataclasses.replace(_slice(addresses=("fd00::9:2%eth0",)), address_type="IPv6"), "address", id="address-v6-zone"),
    pytest.param(_slice(addresses=("fd00::9:2",)), "address", id="address-family-mismatch"),
    pytest.param(_slice(addresses=("10.1.9.2\n",)), "address", id="address-newline"),
    pytest.param(_slice(addresses=("010.1.9.2",)), "address", id="address-leading-zero"),
    pytest.param(_slice(hostname="h\n1"), "hostname", id="hostname-newline"),
    pytest.param(_slice(hostname="h.1"), "hostname", id="hostname-dot"),
    pytest.param(_slice(hostname="h 1"), "hostname", id="hostname-space"),
    pytest.param(dataclasses.replace(_slice(), ports=(EndpointPort(name="p\n", port=80),)), "port-name", id="port-name-newline"),
    pytest.param(dataclasses.replace(_slice(), ports=(EndpointPort(name="p", protocol="tcp", port=80),)), "protocol",
                 id="protocol-lowercase"),
    pytest.param(dataclasses.replace(_slice(), ports=(EndpointPort(name="p", port=-1),)), "port", id="port-negative"),
]

HOSTILE_NAMESPACES = [
    pytest.param("evil\n", id="newline"),
    pytest.param("a b", id="space"),
    pytest.param("a.b", id="dot"),
    pytest.param("\x00", id="nul"),
]

NAMESPACES = ["default", "kube-system", "other", "quiet"]


def base_objects():
    services, slices, namespaces = cluster_objects()
    return [*services, GOOD, GOOD_HEADLESS, GOOD_EXTERNAL], [*slices, GOOD_SLICE, GOOD_SLICE_V6], namespaces


def compile_(services, slices, namespaces) -> answers.AnswerTable:
    return answers.compile_table(snapshot.build(services, slices, namespaces, serial=7))


def table_bytes(table: answers.AnswerTable) -> dict[bytes, tuple]:
    return {k: (e.shape, e.body) for k, e in table.hot.items()}


def assert_all_names_safe(table: answers.AnswerTable) -> None:
    for key in table.hot:
        wname = key[:-2]
        assert not re.search(rb"[\x00-\x20\x7f-\xff%]", bytes(b for b in _labels_only(wname))), key


def _labels_only(wname: bytes) -> bytes:
    out, i = bytearray(), 0
    while wname[i]:
        out += wname[i + 1 : i + 1 + wname[i]]
        i += 1 + wname[i]
    return bytes(out)


# --------------------------------------------------------------------------- pure: nothing reaches the table

@pytest.mark.parametrize("hostile,reason", HOSTILE_SERVICES)
def test_hostile_service_contributes_nothing(hostile, reason):
    services, slices, namespaces = base_objects()
    baseline = compile_(services, slices, namespaces)
    table = compile_([*services, hostile], slices, namespaces)
    assert table_bytes(table) == table_bytes(baseline)
    assert set(table.ents) == set(baseline.ents)
    assert table.rejected == {("service", hostile.key): reason}
    assert_all_names_safe(table)


@pytest.mark.parametrize("hostile,reason", HOSTILE_SLICES)
def test_hostile_slice_is_left_out_and_its_service_still_answers(hostile, reason):
    services, slices, namespaces = base_objects()
    baseline = compile_(services, slices, namespaces)
    table = compile_(services, [*slices, hostile], namespaces)
    assert table_bytes(table) == table_bytes(baseline)
    assert table.rejected == {("endpointslice", hostile.key): reason}
    hl = names.to_wire("hl.default.svc.cluster.local") + struct.pack("!H", A)
    assert table.hot[hl].counts[0] == 1


@pytest.mark.parametrize("hostile", HOSTILE_NAMESPACES)
def test_hostile_namespace_makes_no_names(hostile):
    services, slices, namespaces = base_objects()
    baseline = compile_(services, slices, namespaces)
    table = compile_(services, slices, [*namespaces, hostile])
    assert table_bytes(table) == table_bytes(baseline)
    assert set(table.ents) == set(baseline.ents)
    assert table.rejected == {("namespace", hostile): "name"}


def test_unencodable_service_left_out_at_compile_time():
    """Defence in depth: records that slipped past the snapshot's checks are refused where they
    become wire bytes, and only that service is left out."""
    services, slices, namespaces = base_objects()
    snap = snapshot.build(services, slices, namespaces, serial=7)
    bad_name = "x\n.default.svc.cluster.local"
    bad = snapshot.ServiceRecords(GOOD, (), snap.config, {bad_name: {A: (RR(bad_name, A, 30, "10.96.9.10"),)}})
    hostile = dataclasses.replace(snap, services={**snap.services, "default/x": bad}, changed=None)
    table = answers.compile_table(hostile)
    baseline = answers.compile_table(snap)
    assert table_bytes(table) == table_bytes(baseline)
    assert table.rejected == {("service", "default/x"): "unencodable"}


@pytest.mark.parametrize(
    "name",
    ["x\n.default", "a b", "a\x00b", "tab\there", "pct%x.y", "dot\\.esc", "ü.com", "a" * 64, "a..b", ".lead"],
    ids=["newline", "space", "nul", "tab", "percent", "backslash", "8bit", "label-too-long", "empty-label", "leading-dot"],
)
def test_names_refused_where_written(name):
    assert not names.safe_name(name)
    with pytest.raises(ValueError):
        names.to_wire(name)
    enc = Encoder("web.default.svc.cluster.local")
    with pytest.raises(ValueError):
        enc.rr(RR(name, A, 30, "10.0.0.1"))
    with pytest.raises(ValueError):
        Encoder("web.default.svc.cluster.local").name(name)


@pytest.mark.parametrize(
    "text,ok",
    [
        ("10.96.0.1", True), ("0.0.0.0", True), ("fd00::1", True), ("::ffff:10.0.0.1", True), ("2001:db8::", True),
        ("10.096.0.1", False), ("10.96.0.1\n", False), (" 10.96.0.1", False), ("10.96.0", False), ("256.1.1.1", False),
        ("fd00::1%eth0", False), ("fd00::1%1\n-A X", False), ("fe80::1%", False), ("", False), ("1e1.0.0.1", False),
        ("::ffff:010.0.0.1", False), ("١٠.96.0.1", False),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else str(v),
)
def test_go_ip(text, ok):
    assert (names.go_ip(text) is not None) == ok


# --------------------------------------------------------------------------- the daemon: live events over real UDP


class Lab:
    def __init__(self):
        services, slices, namespaces = base_objects()
        self.services = FakeInformer(services)
        self.slices = FakeInformer(slices)
        self.namespaces = FakeInformer([Namespace(n) for n in namespaces])
        opts = Options(listen="127.0.0.1:0", upstreams=[UpstreamAddr("127.0.0.9", 9)], health_listen="127.0.0.1:0",
                       ready_listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", lameduck=0.3)
        self.daemon = Daemon(opts, make_informers=lambda: (self.services, self.slices, self.namespaces))

    def sync(self):
        for inf in (self.services, self.slices, self.namespaces):
            inf.synced()

    async def q(self, name, qtype="A"):
        m = dns.message.make_query(name, qtype)
        return await dns.asyncquery.udp(m, "127.0.0.1", port=self.daemon.server.port, timeout=3)

    async def http(self, path):
        port = self.daemon.http.ports[path]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                return r.status, await r.text()

    async def metric(self, line_start: str) -> float:
        _, text = await self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def lab():
    lab = Lab()
    tasks = await lab.daemon.start()
    yield lab
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await lab.daemon.sync.close()
    await lab.daemon.server.stop()
    await lab.daemon.http.stop()
    await lab.daemon.forwarder.close()


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


ALL_HOSTILE = [p.values[0] for p in HOSTILE_SERVICES]


async def test_every_hostile_object_live_others_and_new_names_still_answer(lab, caplog):
    """One hostile object after another arrives by watch event; after each one the old names
    answer, a Service created after it resolves, /ready stays 200 and the skip is counted."""
    lab.sync()
    await settle()
    reached = 0
    for i, hostile in enumerate(ALL_HOSTILE):
        lab.services.set(hostile)
        lab.services.set(svc("default", f"after-{i}", clusterIP=f"10.96.200.{i + 1}"))
        await settle()
        r = await lab.q(f"after-{i}.default.svc.cluster.local.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == f"10.96.200.{i + 1}", hostile
        assert (await lab.q("victim.default.svc.cluster.local.")).answer[0][0].to_text() == "10.96.9.9"
        assert (await lab.q("web.default.svc.cluster.local.")).answer[0][0].to_text() == "10.96.0.5"
        assert await lab.http("/ready") == (200, "OK")
        table = lab.daemon.handler.table
        assert ("service", hostile.key) in table.rejected
        assert_all_names_safe(table)
    for i, hostile in enumerate(ALL_HOSTILE):
        if names.dns_label(hostile.name) and names.dns_label(hostile.namespace):
            for qtype in ("A", "AAAA", "CNAME", "SRV", "ANY"):
                r = await lab.q(f"{hostile.name}.{hostile.namespace}.svc.cluster.local.", qtype)
                reached += bool(r.answer)
    assert reached == 0
    _, text = await lab.http("/metrics")
    skipped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("podnet_dns_skipped_objects_total{"))
    assert skipped == len(ALL_HOSTILE)
    assert "left out of DNS" in caplog.text
    # Removing them clears the gauge.
    for hostile in ALL_HOSTILE:
        lab.services.delete(hostile.key)
    await settle()
    assert lab.daemon.handler.table.rejected == {}
    _, text = await lab.http("/metrics")
    assert not [line for line in text.splitlines() if line.startswith("podnet_dns_skipped_objects_current{")]


async def test_hostile_slice_live_service_keeps_answering(lab):
    lab.sync()
    await settle()
    for i, p in enumerate(HOSTILE_SLICES):
        hostile = dataclasses.replace(p.values[0], name=f"evil-{i}")
        lab.slices.set(hostile)
        await settle()
        r = await lab.q("hl.default.svc.cluster.local.")
        assert [rd.to_text() for rd in r.answer[0]] == ["10.1.9.1"], p.id
        assert ("endpointslice", hostile.key) in lab.daemon.handler.table.rejected
    assert await lab.http("/ready") == (200, "OK")


async def test_ready_goes_503_while_rebuilds_fail(lab, caplog, monkeypatch):
    lab.sync()
    await settle()
    assert await lab.http("/ready") == (200, "OK")
    real_update = snapshot.update
    fault = {"on": True}

    def update(*args, **kw):
        if fault["on"]:
            raise RuntimeError("injected fault")
        return real_update(*args, **kw)

    monkeypatch.setattr(snapshot, "update", update)
    lab.services.set(svc("default", "during", clusterIP="10.96.201.1"))
    await settle()
    assert "rebuilding the DNS table failed" in caplog.text
    assert await lab.http("/ready") == (503, "kubernetes")
    assert await lab.metric("podnet_dns_ready ") == 0
    assert await lab.metric("podnet_dns_rebuild_failures_total ") == 1
    # The previous table is still served meanwhile.
    assert (await lab.q("web.default.svc.cluster.local.")).answer[0][0].to_text() == "10.96.0.5"
    fault["on"] = False
    lab.services.set(svc("default", "later", clusterIP="10.96.201.2"))
    await settle()
    assert await lab.http("/ready") == (200, "OK")
    assert await lab.metric("podnet_dns_ready ") == 1
    for name, ip in (("during", "10.96.201.1"), ("later", "10.96.201.2")):
        assert (await lab.q(f"{name}.default.svc.cluster.local.")).answer[0][0].to_text() == ip


# --------------------------------------------------------------------------- control bytes in query names

ODD_NAMES = [
    pytest.param(b"\x03a\x00b\x07default\x03svc\x07cluster\x05local\x00", id="nul-in-zone"),
    pytest.param(b"\x04web\n\x07default\x03svc\x07cluster\x05local\x00", id="newline-in-zone"),
    pytest.param(b"\x03a b\x07default\x03svc\x07cluster\x05local\x00", id="space-in-zone"),
    pytest.param(b"\x03a\tb\x07example\x03com\x00", id="tab-elsewhere"),
    pytest.param(b"\x04evil\x04com\n\x00", id="newline-elsewhere"),
    pytest.param(b"\x03\x7fab\x07example\x03com\x00", id="del-elsewhere"),
    pytest.param(b"\x03\xff\xfe\xfd\x07example\x03com\x00", id="8bit-elsewhere"),
    pytest.param(b"\x0210\x0210\x0210\x02\x0a1\x07in-addr\x04arpa\x00", id="newline-reverse"),
    pytest.param(b"\x01\x00\x00", id="nul-label-at-root"),
]


@pytest.fixture
async def forwarding_server(table):
    up = await FakeUpstream("127.0.0.2", {("www.example.com", "A"): ["www.example.com. 60 IN A 192.0.2.53"]}).start()
    fwd = Forwarder([UpstreamAddr(up.host, up.port)], Cache())
    srv = DnsServer(Handler(table, fwd), "127.0.0.1", 0)
    await srv.start()
    try:
        yield srv, up
    finally:
        await srv.stop()
        await fwd.close()
        await up.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qname", ODD_NAMES)
@pytest.mark.parametrize("edns", [False, True], ids=["plain", "edns"])
async def test_control_byte_names_refused_never_forwarded(forwarding_server, transport, qname, edns):
    srv, up = forwarding_server
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" if edns else b""
    payload = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 1 if edns else 0) + qname + b"\x00\x01\x00\x01" + opt
    raw = await (udp_exchange if transport == "udp" else tcp_exchange)(srv.port, payload)
    assert raw is not None and raw[:2] == b"\xbe\xef" and raw[2] & 0x80
    assert raw[3] & 0x0F == dns.rcode.REFUSED
    assert struct.unpack_from("!HH", raw, 6) == (0, 0)  # no answer, no authority
    assert up.queries == []
    assert srv.errors == 0
    good = dns.message.from_wire(await udp_exchange(srv.port, dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()))
    assert good.answer[0][0].to_text() == "10.96.0.5"
    fwd = dns.message.from_wire(await udp_exchange(srv.port, dns.message.make_query("www.example.com.", "A").to_wire()))
    assert fwd.answer[0][0].to_text() == "192.0.2.53"


# --------------------------------------------------------------------------- amplification


N_ENDPOINTS = 1000


@pytest.fixture
async def huge_server():
    """A headless Service with 1000 ready endpoints (hostnames, IPv4 and IPv6) and two named ports."""
    ports = [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    services = [svc("default", "huge", clusterIP="None", ports=ports), svc("default", "w", clusterIP="10.96.0.3")]
    v4 = [{"addresses": [f"10.3.{i // 250}.{i % 250 + 1}"], "hostname": f"pod-{i}"} for i in range(N_ENDPOINTS)]
    v6 = [{"addresses": [f"fd00::3:{i + 1:x}"]} for i in range(N_ENDPOINTS)]
    slices = [eps("default", "huge", "huge-4", "IPv4", v4, ports), eps("default", "huge", "huge-6", "IPv6", v6, ports)]
    table = answers.compile_table(snapshot.build(services, slices, ["default"]))
    srv = DnsServer(Handler(table), "127.0.0.1", 0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


AMP_NAMES = [
    "huge.default.svc.cluster.local.", "HuGe.DeFaUlT.sVc.cluster.local.", "_http._tcp.huge.default.svc.cluster.local.",
    "_dns._udp.huge.default.svc.cluster.local.", "pod-7.huge.default.svc.cluster.local.", "w.default.svc.cluster.local.",
    "1.0.3.10.in-addr.arpa.", "cluster.local.", "default.svc.cluster.local.", "nope.default.svc.cluster.local.",
    "dns-version.cluster.local.", "ns.dns.cluster.local.", "10-3-0-1.default.pod.cluster.local.", "h.s.svc.cluster.local.",
]
AMP_TYPES = ["A", "AAAA", "SRV", "ANY", "PTR", "TXT", "NS", "SOA", "CNAME", "MX"]
AMP_EDNS = [None, 0, 512, 1232, 4096, 65535]


async def test_udp_amplification_bounded_on_a_1000_endpoint_headless_service(huge_server, capsys):
    worst = (0.0, "")
    tried = truncated = 0
    for name in AMP_NAMES:
        for qtype in AMP_TYPES:
            for size in AMP_EDNS:
                for do in (False, True) if size is not None else (False,):
                    kw = {} if size is None else {"use_edns": 0, "payload": size, "want_dnssec": do}
                    q = dns.message.make_query(name, qtype, **kw)
                    wire = q.to_wire()
                    raw = await udp_exchange(huge_server.port, wire)
                    assert raw is not None, (name, qtype, size)
                    tried += 1
                    assert len(raw) <= udp_limit(len(wire), size), (name, qtype, size, len(raw))
                    factor = len(raw) / len(wire)
                    if factor > worst[0]:
                        worst = (factor, f"{qtype} {name} edns={size} do={do}: {len(wire)} -> {len(raw)} bytes")
                    r = dns.message.from_wire(raw)
                    truncated += bool(r.flags & dns.flags.TC)
    assert worst[0] <= MAX_AMPLIFICATION
    assert truncated > 0
    with capsys.disabled():
        print(f"\n[amplification] {tried} UDP queries, {truncated} truncated, worst {worst[0]:.2f}x ({worst[1]})")
    assert huge_server.errors == 0


@pytest.mark.parametrize("qtype,count", [("A", N_ENDPOINTS), ("AAAA", N_ENDPOINTS), ("SRV", None)], ids=["a", "aaaa", "srv"])
async def test_truncated_udp_answer_is_complete_over_tcp(huge_server, qtype, count):
    """TCP carries what UDP cannot: every record, or (4000 SRV records and their glue) as many as 64 KiB holds."""
    q = dns.message.make_query("huge.default.svc.cluster.local.", qtype, use_edns=0, payload=4096)
    r = dns.message.from_wire(await udp_exchange(huge_server.port, q.to_wire()))
    udp_records = sum(len(s) for s in r.answer)
    assert r.flags & dns.flags.TC and udp_records > 0
    r = await dns.asyncquery.tcp(q, "127.0.0.1", port=huge_server.port, timeout=10)
    tcp_records = sum(len(s) for s in r.answer)
    if count is not None:
        assert not r.flags & dns.flags.TC
        assert tcp_records == count
    else:
        assert r.flags & dns.flags.TC and len(r.to_wire()) <= 65535
        assert tcp_records > 10 * udp_records


# --------------------------------------------------------------------------- TCP: one client cannot shut others out


def tcp_query(name: str = "web.default.svc.cluster.local.") -> bytes:
    wire = dns.message.make_query(name, "A").to_wire()
    return struct.pack("!H", len(wire)) + wire


async def tcp_ask(reader, writer, name: str = "web.default.svc.cluster.local.") -> dns.message.Message:
    writer.write(tcp_query(name))
    await writer.drain()
    n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(n), 5))


async def open_from(source: str, port: int):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


@pytest.mark.parametrize(
    "per_client,attackers,each",
    [
        pytest.param(32, ["127.0.0.2"], 300, id="one-client-300-idle-default-cap"),
        pytest.param(256, ["127.0.0.2"], 300, id="one-client-300-idle-no-client-cap"),
        pytest.param(256, [f"127.0.0.{i}" for i in range(2, 6)], 80, id="four-clients-80-idle-each"),
    ],
)
async def test_idle_tcp_flood_does_not_shut_others_out(table, per_client, attackers, each):
    srv = DnsServer(Handler(table), "127.0.0.1", 0, max_tcp=256, max_tcp_per_client=per_client, idle=60)
    await srv.start()
    held = []
    try:
        for source in attackers:
            for _ in range(each):
                held.append(await open_from(source, srv.port))
        await settle()
        assert len(srv.tcp_conns) <= 256
        assert all(len(c) <= per_client for c in srv.tcp_by_client.values())
        # Another client still gets answers, on a new connection each time.
        for _ in range(3):
            reader, writer = await open_from("127.0.0.1", srv.port)
            r = await tcp_ask(reader, writer)
            assert r.answer[0][0].to_text() == "10.96.0.5"
            writer.close()
        closed = srv.stats.tcp_closed
        assert closed["refused"] == 0
        assert closed["evicted-client"] + closed["evicted-capacity"] >= len(attackers) * each - 256
    finally:
        for _, w in held:
            w.close()
        await srv.stop()


async def test_recently_active_connection_outlives_idle_ones(table):
    srv = DnsServer(Handler(table), "127.0.0.1", 0, max_tcp=4, max_tcp_per_client=4, idle=60)
    await srv.start()
    try:
        conns = [await open_from("127.0.0.2", srv.port) for _ in range(4)]
        await settle()
        assert (await tcp_ask(*conns[0])).answer  # conns[0] is now the most recently active
        newcomer = await open_from("127.0.0.3", srv.port)
        assert (await tcp_ask(*newcomer)).answer
        assert await asyncio.wait_for(conns[1][0].read(10), 5) == b""  # the least recently active went
        assert (await tcp_ask(*conns[0])).answer
        for _, w in (*conns, newcomer):
            w.close()
    finally:
        await srv.stop()


async def test_busy_connections_are_not_evicted_and_excess_is_refused(table):
    """Connections with a query in progress (a slow upstream) are never closed to make room; when
    every connection is busy the new one is refused and counted."""
    up = await FakeUpstream("127.0.0.2", {("slow.example.com", "A"): ["slow.example.com. 60 IN A 192.0.2.9"]}, delay=1.0).start()
    fwd = Forwarder([UpstreamAddr(up.host, up.port)], Cache())
    srv = DnsServer(Handler(table, fwd), "127.0.0.1", 0, max_tcp=2, max_tcp_per_client=2, idle=60)
    await srv.start()
    try:
        busy = [await open_from("127.0.0.4", srv.port) for _ in range(2)]
        for _, w in busy:
            w.write(tcp_query("slow.example.com."))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if all(c.pending for c in srv.tcp_conns) and len(srv.tcp_conns) == 2:
                break
        assert all(c.pending for c in srv.tcp_conns)
        late_r, late_w = await open_from("127.0.0.5", srv.port)
        assert await asyncio.wait_for(late_r.read(10), 5) == b""
        assert srv.stats.tcp_closed["refused"] == 1
        text = render(Collector(srv.stats, "dns://test")).decode()
        assert 'podnet_dns_tcp_closed_connections_total{reason="refused",server="dns://test"} 1.0' in text
        for r, _ in busy:
            n = struct.unpack("!H", await asyncio.wait_for(r.readexactly(2), 10))[0]
            assert dns.message.from_wire(await r.readexactly(n)).answer[0][0].to_text() == "192.0.2.9"
        for _, w in (*busy, (late_r, late_w)):
            w.close()
    finally:
        await srv.stop()
        await fwd.close()
        await up.stop()


async def test_idle_connection_closed_after_timeout(table):
    srv = DnsServer(Handler(table), "127.0.0.1", 0, idle=0.2)
    await srv.start()
    try:
        reader, writer = await open_from("127.0.0.1", srv.port)
        assert (await tcp_ask(reader, writer)).answer
        assert await asyncio.wait_for(reader.read(10), 10) == b""
        assert srv.stats.tcp_closed["idle"] == 1
        assert not srv.tcp_conns and not srv.tcp_by_client
        writer.close()
    finally:
        await srv.stop()


# --------------------------------------------------------------------------- property: generated objects

_HOSTILE_CHARS = st.sampled_from(list("ab0-.%_ \t\n\r\x00\x7f:/\\") + ["ü", "\u2028", "١"])
_TEXT = st.one_of(st.sampled_from(["", "web", "a" * 63, "a" * 64, "x\n", "fd00::1%x", "10.0.0.1", "fd00::1"]),
                  st.text(_HOSTILE_CHARS, max_size=12))
_BASELINE = compile_(*base_objects())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_TEXT, namespace=st.one_of(st.just("default"), _TEXT), ip=_TEXT, external=st.one_of(st.none(), _TEXT),
       port_name=_TEXT, hostname=_TEXT, address=_TEXT)
def test_generated_objects_never_break_the_zone(name, namespace, ip, external, port_name, hostname, address):
    """Whatever the values, the build never fails, every name in the table is safe to write, the other
    services keep their exact answers, and an object with any refused value contributes nothing."""
    if external is not None:
        hostile = dataclasses.replace(GOOD_EXTERNAL, name=name, namespace=namespace, external_name=external)
    else:
        hostile = dataclasses.replace(GOOD, name=name, namespace=namespace, cluster_ips=(ip,), ports=_port(name=port_name))
    sl = dataclasses.replace(GOOD_SLICE, name="gen", endpoints=(Endpoint(addresses=(address,), hostname=hostname),))
    services, slices, namespaces = base_objects()
    table = compile_([*services, hostile], [*slices, sl], namespaces)
    assert_all_names_safe(table)
    got, base = table_bytes(table), table_bytes(_BASELINE)
    valid = snapshot.service_problem(hostile) is None
    assert valid or ("service", hostile.key) in table.rejected
    # A generated Service may replace a baseline one with its key (then that one's names change or go).
    same_key = names.dns_label(name) and names.dns_label(namespace)
    own = names.to_wire(f"{name}.{namespace}.svc.cluster.local") if same_key else None

    def may_differ(key: bytes) -> bool:
        """Names the generated objects legitimately touch: the generated service's key, the slice's
        service hl, and reverse names."""
        wname = key[:-2]
        return (b"\x02hl\x07default\x03svc" in wname or wname.endswith(b"\x04arpa\x00")
                or (own is not None and wname.endswith(own)))

    for key, value in base.items():
        if not may_differ(key):
            assert got.get(key) == value, key
    for key in got.keys() - base.keys():
        assert may_differ(key), key
    if not valid and own is not None:
        assert not [k for k in got if k[:-2].endswith(own)]  # a refused Service has no names at all
