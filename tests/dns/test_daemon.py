"""The daemon wiring with in-memory informers: sync gating, live updates, /health /ready /metrics, lameduck, CLI."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from podnet.dns.cli import parse_args
from podnet.dns.daemon import Daemon, Options
from podnet.dns.forward import UpstreamAddr
from podnet.dns.testing import cluster_objects, eps, svc
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer


class Lab:
    def __init__(self):
        services, slices, namespaces = cluster_objects()
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


@pytest.fixture
async def lab():
    lab = Lab()
    tasks = await lab.daemon.start()
    yield lab
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await lab.daemon.server.stop()
    await lab.daemon.http.stop()
    await lab.daemon.forwarder.close()


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


async def test_servfail_and_not_ready_until_synced(lab):
    r = await lab.q("web.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert r.authority and r.authority[0].name.to_text() == "cluster.local."
    r = await lab.q("dns-version.cluster.local.", "TXT")
    assert r.rcode() == dns.rcode.NOERROR
    assert await lab.http("/ready") == (503, "kubernetes")
    assert (await lab.http("/health"))[0] == 200
    lab.services.synced()
    lab.slices.synced()
    await settle()
    assert (await lab.http("/ready"))[0] == 503  # namespaces not yet synced
    lab.namespaces.synced()
    await settle()
    assert await lab.http("/ready") == (200, "OK")
    r = await lab.q("web.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.0.5"
    assert lab.daemon.sync.rebuilds == 1


async def test_changes_are_served_on_the_next_loop_turn(lab):
    lab.sync()
    await settle()
    r = await lab.q("new.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    lab.services.set(svc("default", "new", clusterIP="10.96.9.9"))
    await settle()
    r = await lab.q("new.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.9.9"
    lab.services.set(svc("default", "new", clusterIP="10.96.9.10"))
    await settle()
    r = await lab.q("new.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.9.10"
    lab.services.delete("default/new")
    await settle()
    assert (await lab.q("new.default.svc.cluster.local.")).rcode() == dns.rcode.NXDOMAIN


async def test_endpoint_changes_update_headless_answers(lab):
    lab.sync()
    await settle()
    lab.slices.set(eps("default", "empty-headless", "eh-a", "IPv4", [{"addresses": ["10.1.0.30"]}]))
    await settle()
    r = await lab.q("empty-headless.default.svc.cluster.local.")
    assert [rd.to_text() for rd in r.answer[0]] == ["10.1.0.30"]
    lab.slices.delete("default/eh-a")
    await settle()
    r = await lab.q("empty-headless.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_burst_of_events_coalesces(lab):
    lab.sync()
    await settle()
    before = lab.daemon.sync.rebuilds
    for i in range(50):
        lab.services.set(svc("default", f"burst-{i}", clusterIP=f"10.96.8.{i + 1}"))
    await settle()
    assert lab.daemon.sync.rebuilds == before + 1
    r = await lab.q("burst-49.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.8.50"


async def test_serial_advances_on_change(lab):
    lab.sync()
    await settle()
    s1 = (await lab.q("cluster.local.", "SOA")).answer[0][0].serial
    lab.namespaces.set(Namespace("fresh"))
    await settle()
    s2 = (await lab.q("cluster.local.", "SOA")).answer[0][0].serial
    assert s2 > s1
    assert (await lab.q("fresh.svc.cluster.local.")).rcode() == dns.rcode.NOERROR


async def test_metrics_use_coredns_names(lab):
    lab.sync()
    await settle()
    await lab.q("web.default.svc.cluster.local.")
    await lab.q("nope.default.svc.cluster.local.")
    status, text = await lab.http("/metrics")
    assert status == 200
    for name in (
        'coredns_dns_requests_total{family="1",proto="udp"',
        'coredns_dns_responses_total{plugin="kubernetes",rcode="NXDOMAIN"',
        "coredns_dns_request_duration_seconds_bucket",
        "coredns_cache_hits_total",
        "coredns_cache_entries",
        "coredns_forward_max_concurrent_rejects_total",
        "coredns_kubernetes_dns_programming_duration_seconds_count",
        "coredns_build_info",
    ):
        assert name in text.replace('server="dns://127.0.0.1:0",', "").replace(',type="A"', "").replace(',view="",zone="."', ""), name
    line = next(x for x in text.splitlines() if x.startswith("coredns_dns_responses_total") and 'rcode="NXDOMAIN"' in x)
    assert float(line.rsplit(" ", 1)[1]) == 1.0


async def test_lameduck(lab):
    lab.sync()
    await settle()
    lab.daemon.begin_lameduck()
    assert (await lab.http("/ready"))[0] == 503
    assert (await lab.http("/health"))[0] == 200
    r = await lab.q("web.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.0.5"
    await asyncio.wait_for(lab.daemon.stopping.wait(), 3)


def test_cli_flags_used_by_netlab():
    o = parse_args([
        "--master", "http://10.0.0.1:6443", "--listen", "0.0.0.0:53", "--upstream", "10.0.0.2:53",
        "--health-listen", "0.0.0.0:8080", "--ready-listen", "0.0.0.0:8181", "--metrics-listen", "0.0.0.0:9153",
    ])
    assert o.master == "http://10.0.0.1:6443"
    assert o.upstreams == (UpstreamAddr("10.0.0.2", 53),)
    assert (o.health_listen, o.ready_listen, o.metrics_listen) == ("0.0.0.0:8080", "0.0.0.0:8181", "0.0.0.0:9153")


def test_cli_defaults():
    o = parse_args([])
    assert (o.zone, o.listen, o.ttl, o.upstreams) == ("cluster.local", "0.0.0.0:53", 30, ())


@pytest.mark.parametrize("argv", [["--ttl", "4000"], ["--upstream", "nonsense"]], ids=["ttl-range", "bad-upstream"])
def test_cli_rejects(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


class Broken:
    """Not a Service: building records from it raises."""

    key = "default/broken"
    namespace = "default"
    name = "broken"


async def test_unbuildable_object_is_left_out_and_others_still_answer(lab, caplog):
    lab.sync()
    await settle()
    lab.services.set(Broken())
    await settle()
    assert "'default/broken' left out of DNS: unbuildable" in caplog.text
    assert "rebuilding the DNS table failed" not in caplog.text
    assert await lab.http("/ready") == (200, "OK")
    r = await lab.q("web.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.0.5"
    lab.services.delete("default/broken")
    lab.services.set(svc("default", "after", clusterIP="10.96.7.7"))
    await settle()
    r = await lab.q("after.default.svc.cluster.local.")
    assert r.answer[0][0].to_text() == "10.96.7.7"
    assert (await lab.q("web.default.svc.cluster.local.")).answer[0][0].to_text() == "10.96.0.5"


async def test_second_signal_stops_at_once(lab):
    lab.daemon.opts = dataclasses.replace(lab.daemon.opts, lameduck=60)
    lab.daemon.begin_lameduck()
    assert not lab.daemon.stopping.is_set()
    lab.daemon.begin_lameduck()
    assert lab.daemon.stopping.is_set()


@pytest.mark.parametrize(
    "text,listen,want",
    [
        ("nameserver 10.0.0.2\nnameserver 10.0.0.3\n", "127.0.0.1:0", ["10.0.0.2:53", "10.0.0.3:53"]),
        # a node whose resolv.conf points at the local stub while we listen on every address: a loop, dropped
        ("nameserver 127.0.0.53\nnameserver 10.0.0.2\n", "0.0.0.0:53", ["10.0.0.2:53"]),
        ("", "127.0.0.1:0", []),
    ],
    ids=["two-nameservers", "stub-resolver-loop", "empty"],
)
def test_upstreams_from_resolv_conf(tmp_path, text, listen, want):
    conf = tmp_path / "resolv.conf"
    conf.write_text(text)
    d = Daemon(Options(listen=listen, resolv_conf=str(conf)), make_informers=lambda: ())
    assert [u.name for u in d.forwarder.upstreams] == want
