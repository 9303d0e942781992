"""The Corefile plugins over real UDP/TCP with dnspython: a CorefileDaemon on 127.0.0.1 (ephemeral port),
in-memory informers, fake upstreams on 127.0.0.2/127.0.0.3. log, hosts, rewrite, stub domains, errors."""

from __future__ import annotations

import asyncio
import logging
import re

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from podnet.dns.coreconfig import HostsConfig, LogConfig, load
from podnet.dns.coredaemon import CorefileDaemon
from podnet.dns.hosts import Hosts
from podnet.dns.querylog import QueryLog, go_seconds
from podnet.dns.rewrite import apply_rules, parse_rewrite
from podnet.dns.testing import FakeUpstream, cluster_objects
from podnet.dns.wire import A, AAAA, MX, PTR, parse_query
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer

COREFILE = r"""
example.org:53 {
    errors
    log
    forward . 127.0.0.2:{$STUB_PORT}
}
broken.test {
    errors
    forward . {$DEAD}
}
.:53 {
    bind 127.0.0.1
    errors
    log . {
        class denial error success
    }
    hosts {
        10.0.0.99 static.example.net
        fd00::99 static.example.net
        fallthrough
    }
    rewrite name exact alias.example.net web.default.svc.cluster.local
    rewrite name suffix .corp.test .default.svc.cluster.local
    rewrite name regex (.*)\.rx\.test {1}.default.svc.cluster.local answer auto
    rewrite name regex (.*)\.raw\.test {1}.default.svc.cluster.local
    rewrite stop {
        name regex (.*)\.old\.test {1}.default.svc.cluster.local
        answer name (.*)\.default\.svc\.cluster\.local {1}.old.test
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . 127.0.0.3:{$MAIN_PORT}
    cache 30
}
"""


class Env:
    def __init__(self, stub: FakeUpstream, main: FakeUpstream, dead_port: int) -> None:
        self.stub, self.main = stub, main
        self.lines: list[str] = []
        cfg = load(COREFILE, "Corefile", {"STUB_PORT": str(stub.port), "MAIN_PORT": str(main.port),
                                          "DEAD": f"127.0.0.9:{dead_port}"}, port_override=0)
        services, slices, namespaces = cluster_objects()
        self.informers = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(n) for n in namespaces]))
        self.daemon = CorefileDaemon(cfg, make_informers=lambda: self.informers, log_write=self.lines.append)

    def sync(self) -> None:
        for inf in self.informers:
            inf.synced()

    async def q(self, name: str, qtype: str = "A", tcp: bool = False):
        m = dns.message.make_query(name, qtype)
        port = self.daemon.server.port
        if tcp:
            return await dns.asyncquery.tcp(m, "127.0.0.1", port=port, timeout=5)
        return await dns.asyncquery.udp(m, "127.0.0.1", port=port, timeout=5)


@pytest.fixture
async def env():
    stub = await FakeUpstream("127.0.0.2", {("www.example.org", "A"): ["www.example.org. 60 IN A 192.0.2.1"]}).start()
    main = await FakeUpstream("127.0.0.3", {("www.other.test", "A"): ["www.other.test. 60 IN A 192.0.2.3"]}).start()
    e = Env(stub, main, dead_port=9)
    tasks = await e.daemon.start()
    try:
        yield e
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await e.daemon.server.stop()
        await e.daemon.http.stop()
        await e.daemon.forwarder.close()
        for f in e.daemon.stub_forwarders:
            await f.close()
        await stub.stop()
        await main.stop()


def answers(r) -> list[tuple[str, str]]:
    return [(rrset.name.to_text(), rr.to_text()) for rrset in r.answer for rr in rrset]


async def test_stub_domain_goes_to_its_own_upstream(env):
    env.sync()
    r = await env.q("www.example.org.")
    assert answers(r) == [("www.example.org.", "192.0.2.1")]
    r = await env.q("www.other.test.")
    assert answers(r) == [("www.other.test.", "192.0.2.3")]
    assert [q[1] for q in env.stub.queries] == ["www.example.org"]
    assert [q[1] for q in env.main.queries] == ["www.other.test"]
    r = await env.q("web.default.svc.cluster.local.")  # the cluster zone is still the '.' block's
    assert answers(r) == [("web.default.svc.cluster.local.", "10.96.0.5")]


@pytest.mark.parametrize("name, qtype, rcode, want", [
    pytest.param("static.example.net.", "A", dns.rcode.NOERROR, [("static.example.net.", "10.0.0.99")], id="a"),
    pytest.param("STATIC.example.net.", "AAAA", dns.rcode.NOERROR, [("STATIC.example.net.", "fd00::99")], id="aaaa-case-kept"),
    pytest.param("static.example.net.", "MX", dns.rcode.NOERROR, [], id="other-type-nodata"),
    pytest.param("99.0.0.10.in-addr.arpa.", "PTR", dns.rcode.NOERROR, [("99.0.0.10.in-addr.arpa.", "static.example.net.")], id="ptr"),
    pytest.param("nothere.example.net.", "A", dns.rcode.NXDOMAIN, [], id="fallthrough-to-forward"),
])
async def test_hosts(env, name, qtype, rcode, want):
    env.sync()
    r = await env.q(name, qtype)
    assert r.rcode() == rcode
    assert answers(r) == want
    if want:
        assert r.flags & dns.flags.AA and all(rrset.ttl == 3600 for rrset in r.answer)


@pytest.mark.parametrize("name, qtype, want", [
    pytest.param("alias.example.net.", "A", [("alias.example.net.", "10.96.0.5")], id="exact"),
    pytest.param("Alias.Example.NET.", "A", [("Alias.Example.NET.", "10.96.0.5")], id="exact-case-kept"),
    pytest.param("web.corp.test.", "A", [("web.corp.test.", "10.96.0.5")], id="suffix"),
    pytest.param("db.rx.test.", "A", [("db.rx.test.", "10.1.0.20"), ("db.rx.test.", "10.1.0.21"), ("db.rx.test.", "10.1.0.23")],
                 id="regex-answer-auto"),
    pytest.param("_http._tcp.web.corp.test.", "SRV", [("_http._tcp.web.corp.test.", "0 100 80 web.default.svc.cluster.local.")],
                 id="srv-through-suffix"),
    pytest.param("web.raw.test.", "A", [("web.default.svc.cluster.local.", "10.96.0.5")], id="regex-without-answer-rule"),
    pytest.param("web.old.test.", "A", [("web.old.test.", "10.96.0.5")], id="regex-answer-name"),
])
async def test_rewrite(env, name, qtype, want):
    env.sync()
    for tcp in (False, True):
        r = await env.q(name, qtype, tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR
        assert r.question[0].name.to_text() == name
        assert sorted(answers(r)) == sorted(want)


async def test_rewrite_to_a_missing_name_is_nxdomain_with_the_clients_question(env):
    env.sync()
    r = await env.q("nope.corp.test.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.question[0].name.to_text() == "nope.corp.test."
    assert r.authority[0].name.to_text() == "cluster.local."


LINE = re.compile(r'\[INFO\] 127\.0\.0\.1:\d+ - \d+ "(\S+) IN (\S+) (udp|tcp) \d+ (true|false) (\d+)" (\S+) ([a-z,]+) \d+ \d+\.\d+s')


async def test_query_log_common_format(env):
    env.sync()
    await env.q("static.example.net.")
    await env.q("nothere.cluster.local.", tcp=True)
    await env.q("www.example.org.")
    m = [LINE.fullmatch(line) for line in env.lines]
    assert all(m), env.lines
    got = [(x.group(1), x.group(2), x.group(3), x.group(6)) for x in m]
    assert got == [("A", "static.example.net.", "udp", "NOERROR"), ("A", "nothere.cluster.local.", "tcp", "NXDOMAIN"),
                   ("A", "www.example.org.", "udp", "NOERROR")]
    assert m[0].group(7).startswith("qr,aa,rd")


async def test_errors_logs_servfail_causes(env, caplog):
    caplog.set_level(logging.ERROR, logger="podnet.dns.errors")
    r = await env.q("web.default.svc.cluster.local.")  # before the first sync
    assert r.rcode() == dns.rcode.SERVFAIL
    r = await env.q("x.broken.test.")  # the only upstream does not answer (2 s timeout)
    assert r.rcode() == dns.rcode.SERVFAIL
    msgs = [rec.getMessage() for rec in caplog.records if rec.name == "podnet.dns.errors"]
    assert msgs[0] == "plugin/errors: 2 web.default.svc.cluster.local. A: plugin/kubernetes: not synced with the API server yet"
    assert msgs[1].startswith("plugin/errors: 2 x.broken.test. A: plugin/forward: 127.0.0.9:9: ")
    assert len(msgs) == 2


@pytest.mark.parametrize("name, qtype, block", [
    pytest.param("www.example.org", "A", "example.org", id="stub"),
    pytest.param("a.b.sub.example.org", "A", "sub.example.org", id="longest-zone"),
    pytest.param("sub.example.org", "A", "sub.example.org", id="zone-apex"),
    pytest.param("5.1.0.10.in-addr.arpa", "PTR", "10.in-addr.arpa", id="reverse-stub"),
    pytest.param("5.1.0.11.in-addr.arpa", "PTR", "", id="other-reverse-to-root"),
    pytest.param("web.default.svc.cluster.local", "A", "", id="cluster-zone-in-root"),
])
def test_routing_by_longest_zone(name, qtype, block):
    cfg = load("example.org {\n forward . 127.0.0.2\n}\nsub.example.org {\n forward . 127.0.0.3\n}\n"
               "10.in-addr.arpa {\n forward . 127.0.0.4\n}\n. {\n kubernetes cluster.local\n}\n", port_override=0)
    d = CorefileDaemon(cfg, make_informers=lambda: ())
    assert d.chain.route(name).zones == (block,)


async def test_unmatched_zone_is_refused():
    cfg = load("example.org {\n forward . 127.0.0.2\n}\ncluster.local {\n bind 127.0.0.1\n kubernetes cluster.local\n}\n",
               port_override=0)
    informers = (FakeInformer(), FakeInformer(), FakeInformer())
    d = CorefileDaemon(cfg, make_informers=lambda: informers)
    tasks = await d.start()
    try:
        m = dns.message.make_query("www.elsewhere.test.", "A")
        r = await dns.asyncquery.udp(m, "127.0.0.1", port=d.server.port, timeout=5)
        assert r.rcode() == dns.rcode.REFUSED
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await d.server.stop()
        await d.forwarder.close()
        for f in d.stub_forwarders:
            await f.close()


# ------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize("args, block, qname, want", [
    pytest.param(["name", "a.example", "b.example"], None, "a.example", "b.example", id="exact-default"),
    pytest.param(["name", "exact", "a.example", "b.example"], None, "x.a.example", None, id="exact-no-match"),
    pytest.param(["name", "prefix", "old-", "new-"], None, "old-web.example", "new-web.example", id="prefix"),
    pytest.param(["name", "suffix", ".corp", ".svc.cluster.local"], None, "web.ns.corp", "web.ns.svc.cluster.local", id="suffix"),
    pytest.param(["name", "substring", "stage", "prod"], None, "api.stage.example", "api.prod.example", id="substring"),
    pytest.param(["name", "regex", r"(.*)-(us-west-1)\.example\.org", "{1}.service.{2}.consul"], None,
                 "ftp-us-west-1.example.org", "ftp.service.us-west-1.consul", id="regex-groups"),
    pytest.param(["stop"], [("name", ["regex", r"(.*)\.a\.test", "{1}.b.test"]), ("answer", ["name", r"(.*)\.b\.test", "{1}.a.test"])],
                 "x.a.test", "x.b.test", id="block-form"),
])
def test_rewrite_rules(args, block, qname, want):
    rw = apply_rules(parse_rewrite(args, block), qname)
    assert (rw.name if rw else None) == want


def test_rewrite_continue_chains_and_stop_ends():
    rules = parse_rewrite(["continue", "name", "prefix", "a.", "b."], None) + parse_rewrite(["name", "suffix", ".x", ".y"], None) \
        + parse_rewrite(["name", "suffix", ".y", ".z"], None)
    rw = apply_rules(rules, "a.host.x")
    assert rw.name == "b.host.y" and len(rw.rules) == 2


def _hosts(**kw) -> Hosts:
    return Hosts(HostsConfig(path=None, inline=(("10.0.0.1", ("a.example",)), ("fd00::1", ("a.example",))), **kw))


@pytest.mark.parametrize("kw, qname, qtype, kind, rdata", [
    pytest.param({}, "a.example", A, "answer", ["10.0.0.1"], id="a"),
    pytest.param({}, "a.example", AAAA, "answer", ["fd00::1"], id="aaaa"),
    pytest.param({}, "a.example", MX, "answer", [], id="nodata"),
    pytest.param({}, "b.example", A, "servfail", [], id="missing-no-fallthrough"),
    pytest.param({"fallthrough": ()}, "b.example", A, "next", [], id="missing-fallthrough"),
    pytest.param({"fallthrough": ("other.test",)}, "b.example", A, "servfail", [], id="fallthrough-other-zone"),
    pytest.param({"zones": ("corp.test",)}, "a.example", A, "next", [], id="outside-zones"),
    pytest.param({}, "1.0.0.10.in-addr.arpa", PTR, "answer", ["a.example"], id="ptr"),
    pytest.param({"no_reverse": True}, "1.0.0.10.in-addr.arpa", PTR, "next", [], id="no-reverse"),
    pytest.param({}, "2.0.0.10.in-addr.arpa", PTR, "next", [], id="ptr-unknown"),
    pytest.param({}, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", PTR, "answer", ["a.example"], id="ptr6"),
])
def test_hosts_decisions(kw, qname, qtype, kind, rdata):
    d = _hosts(**kw).decide(qname, qtype)
    assert d.kind == kind and [rr.rdata for rr in d.records] == rdata


def test_hosts_file_is_read_and_reloaded(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("# comment\n10.0.0.5 one.example one  # alias\nfe80::1%eth0 zoned.example\nbad line\n")
    now = [0.0]
    h = Hosts(HostsConfig(path=str(f), reload=5.0), clock=lambda: now[0])
    assert [rr.rdata for rr in h.decide("one", A).records] == ["10.0.0.5"]
    assert h.decide("zoned.example", AAAA).kind == "servfail"
    f.write_text("10.0.0.6 two.example\n")
    import os
    os.utime(f, ns=(1, 1))  # a different mtime, whatever the file system's clock granularity
    now[0] = 10.0
    assert [rr.rdata for rr in h.decide("two.example", A).records] == ["10.0.0.6"]
    assert h.decide("one", A).kind == "servfail"


def test_query_log_line_and_classes():
    q = parse_query(dns.message.make_query("Web.Example.", "AAAA", use_edns=0, payload=1232, want_dnssec=True).to_wire())
    reply = dns.message.make_response(dns.message.from_wire(dns.message.make_query("web.example.", "AAAA").to_wire()))
    reply.set_rcode(dns.rcode.NXDOMAIN)
    wire = reply.to_wire()
    ql = QueryLog(LogConfig())
    line = ql.line(q, 40, wire, ("fd00::5", 5353), "udp", 0.0001234)
    assert line == f'[fd00::5]:5353 - {int.from_bytes(q.id, "big")} "AAAA IN web.example. udp 40 true 1232" NXDOMAIN qr,rd {len(wire)} 0.0001234s'
    assert QueryLog(LogConfig(classes=frozenset({"success"}))).wants("web.example", wire) is False
    assert QueryLog(LogConfig(classes=frozenset({"denial"}))).wants("web.example", wire) is True
    assert QueryLog(LogConfig(names=("other.test",))).wants("web.example", wire) is False
    assert QueryLog(LogConfig(format="{name} {>opcode} {nope}")).line(q, 40, wire, None, "tcp", 0) == "web.example. 0 -"


@pytest.mark.parametrize("seconds, text", [
    pytest.param(0.000183, "0.000183s", id="micro"), pytest.param(1.5, "1.5s", id="plain"), pytest.param(1e-05, "0.00001s", id="no-exponent"),
])
def test_go_seconds(seconds, text):
    assert go_seconds(seconds) == text


RELOAD_V1 = """
.:53 {
    bind 127.0.0.1
    hosts {
        10.0.0.1 pinned.example
        fallthrough
    }
    kubernetes cluster.local
    forward . 127.0.0.2:%d
    reload 2s 1s
}
"""


async def test_reload_applies_a_changed_corefile_in_place(caplog):
    up_a = await FakeUpstream("127.0.0.2", {("www.example", "A"): ["www.example. 60 IN A 192.0.2.10"]}).start()
    up_b = await FakeUpstream("127.0.0.3", {("www.example", "A"): ["www.example. 60 IN A 192.0.2.20"]}).start()
    texts = [RELOAD_V1 % up_a.port]

    def source():
        return texts[-1], load(texts[-1], port_override=0)

    text, cfg = source()
    informers = (FakeInformer(), FakeInformer(), FakeInformer())
    d = CorefileDaemon(cfg, make_informers=lambda: informers, source=source, text=text)
    tasks = await d.start()
    try:
        async def ask(name):
            m = dns.message.make_query(name, "A")
            return answers(await dns.asyncquery.udp(m, "127.0.0.1", port=d.server.port, timeout=5))

        assert await ask("pinned.example.") == [("pinned.example.", "10.0.0.1")]
        assert await ask("www.example.") == [("www.example.", "192.0.2.10")]
        assert await d.reload() is False  # unchanged
        texts.append(texts[0].replace("10.0.0.1", "10.0.0.2").replace(f"127.0.0.2:{up_a.port}", f"127.0.0.3:{up_b.port}"))
        assert await d.reload() is True
        assert await ask("pinned.example.") == [("pinned.example.", "10.0.0.2")]
        assert await ask("www.example.") == [("www.example.", "192.0.2.20")]
        caplog.set_level(logging.ERROR, logger="podnet.dns")
        texts.append(texts[-1].replace("hosts {", "hosts {\n        bogus"))
        assert await d.reload() is False and await d.reload() is False
        texts.append(texts[1].replace("kubernetes cluster.local", "kubernetes k8s.test"))
        assert await d.reload() is False
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors  # the invalid text is reported once
        assert "keeping the running configuration" in errors[0] and "Corefile:5" in errors[0]
        assert errors[1].endswith("a change of the kubernetes plugin needs a restart")
        assert await ask("pinned.example.") == [("pinned.example.", "10.0.0.2")]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await d.server.stop()
        await d.forwarder.close()
        await up_a.stop()
        await up_b.stop()


async def test_plugin_enabled_metric_follows_the_corefile(env):
    from podnet.dns.metrics import render

    text = render(env.daemon.collector).decode()
    enabled = set(re.findall(r'coredns_plugin_enabled\{name="([^"]+)",server="[^"]+",view="",zone="([^"]+)"\} 1\.0', text))
    assert ("forward", "example.org.") in enabled and ("hosts", ".") in enabled and ("rewrite", ".") in enabled
    assert ("kubernetes", "example.org.") not in enabled and ("kubernetes", ".") in enabled


async def test_console_script_query_log_on_stdout(tmp_path):
    """The real process: the log plugin's lines on stdout, hosts answered, over UDP on 127.0.0.1."""
    import shutil
    import socket
    import sys
    from pathlib import Path

    from podnet.netlab.apiserver.server import LabApiServer

    exe = shutil.which("podnet-dns") or str(Path(sys.executable).parent / "podnet-dns")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    corefile = tmp_path / "Corefile"
    corefile.write_text(".:53 {\n    bind 127.0.0.1\n    log\n    hosts {\n        192.0.2.5 pinned.example\n    }\n"
                        "    kubernetes cluster.local\n}\n")
    async with LabApiServer() as api:
        proc = await asyncio.create_subprocess_exec(
            exe, "-conf", str(corefile), "--dns-port", str(port), "--master", api.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            while True:
                line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
                assert line, "podnet-dns exited early"
                if "synced:" in line:
                    break
            m = dns.message.make_query("pinned.example.", "A")
            r = await dns.asyncquery.udp(m, "127.0.0.1", port=port, timeout=5)
            assert answers(r) == [("pinned.example.", "192.0.2.5")]
            out = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().rstrip("\n")
            assert LINE.fullmatch(out) and '"A IN pinned.example. udp' in out and " NOERROR qr,aa,rd" in out, out
        finally:
            if proc.returncode is None:
                proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def test_flag_configured_daemon_logs_servfail_causes_too(caplog):
    """Without a Corefile the daemon has the stock Corefile's errors plugin (as /metrics advertises)."""
    from podnet.dns.daemon import Daemon, Options
    from podnet.dns.forward import UpstreamAddr

    caplog.set_level(logging.ERROR, logger="podnet.dns.errors")
    informers = (FakeInformer(), FakeInformer(), FakeInformer())
    d = Daemon(Options(listen="127.0.0.1:0", upstreams=[UpstreamAddr("127.0.0.9", 9)], health_listen=None, ready_listen=None,
                       metrics_listen=None), make_informers=lambda: informers)
    tasks = await d.start()
    try:
        m = dns.message.make_query("web.default.svc.cluster.local.", "A")
        r = await dns.asyncquery.udp(m, "127.0.0.1", port=d.server.port, timeout=5)
        assert r.rcode() == dns.rcode.SERVFAIL
        msgs = [rec.getMessage() for rec in caplog.records if rec.name == "podnet.dns.errors"]
        assert msgs == ["plugin/errors: 2 web.default.svc.cluster.local. A: plugin/kubernetes: not synced with the API server yet"]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await d.server.stop()
        await d.forwarder.close()


@pytest.mark.parametrize("opts, want", [
    pytest.param("policy sequential", ["127.0.0.2"] * 4, id="sequential"),
    pytest.param("policy round_robin", ["127.0.0.3", "127.0.0.2", "127.0.0.3", "127.0.0.2"], id="round-robin"),
    pytest.param("force_tcp\n        policy sequential", ["127.0.0.2"] * 4, id="force-tcp"),
])
async def test_forward_policies(opts, want):
    from podnet.dns.forward import Forwarder

    ups = [await FakeUpstream(h, {(f"n{i}.test", "A"): [f"n{i}.test. 60 IN A 192.0.2.{i}"] for i in range(4)}).start()
           for h in ("127.0.0.2", "127.0.0.3")]
    try:
        cfg = load(f".:53 {{\n    kubernetes cluster.local\n    forward . 127.0.0.2:{ups[0].port} 127.0.0.3:{ups[1].port} {{\n"
                   f"        {opts}\n    }}\n}}\n")
        f = cfg.blocks[0].forward
        fwd = Forwarder(list(f.upstreams), None, policy=f.policy, force_tcp=f.force_tcp)
        got = []
        for i in range(4):
            question = dns.message.make_query(f"n{i}.test.", "A").question[0].name.to_wire() + b"\x00\x01\x00\x01"
            ans = await fwd.resolve(question)
            assert ans is not None and ans.answer
            got.append(next(u.host for u in ups if any(q[1] == f"n{i}.test" for q in u.queries)))
        await fwd.close()
        assert got == want
        protos = {q[0] for u in ups for q in u.queries}
        assert protos == ({"tcp"} if "force_tcp" in opts else {"udp"})
    finally:
        for u in ups:
            await u.stop()


async def test_forward_max_fails_zero_keeps_every_upstream_healthy():
    from podnet.dns.forward import Forwarder, UpstreamAddr

    fwd = Forwarder([UpstreamAddr("127.0.0.9", 9)], None, max_fails=0, timeout=0.2)
    question = dns.message.make_query("x.test.", "A").question[0].name.to_wire() + b"\x00\x01\x00\x01"
    for _ in range(3):
        assert await fwd.resolve(question) is None
    assert fwd.stats.healthcheck_broken == 0 and fwd.stats.healthcheck_failures == {}
    await fwd.close()


async def test_rewrite_to_an_impossible_name_is_servfail(caplog):
    caplog.set_level(logging.ERROR, logger="podnet.dns.errors")
    long_label = "x" * 63
    cfg = load(".:53 {\n bind 127.0.0.1\n errors\n rewrite name suffix .long.test ." + ".".join([long_label] * 4) + "\n"
               " kubernetes cluster.local\n}\n", port_override=0)
    informers = (FakeInformer(), FakeInformer(), FakeInformer())
    d = CorefileDaemon(cfg, make_informers=lambda: informers)
    tasks = await d.start()
    try:
        m = dns.message.make_query("a.long.test.", "A")
        r = await dns.asyncquery.udp(m, "127.0.0.1", port=d.server.port, timeout=5)
        assert r.rcode() == dns.rcode.SERVFAIL and r.question[0].name.to_text() == "a.long.test."
        msgs = [rec.getMessage() for rec in caplog.records if rec.name == "podnet.dns.errors"]
        assert msgs == ["plugin/errors: 2 a.long.test. A: plugin/rewrite: the rewritten name is not a valid domain name"]
        assert d.server.errors == 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await d.server.stop()
        await d.forwarder.close()
