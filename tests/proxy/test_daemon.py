"""The daemon driven in-process: fake informers, FakeIptables, FakeConntrack."""

from __future__ import annotations

from prometheus_client import REGISTRY

from podnet.kube.testing import FakeClock, FakeInformer
from podnet.proxy.cleanup import cleanup
from podnet.proxy.conntrack import Flow, Reconciler
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.testing import NODE, FakeConntrack, FakeIptables, ctx, ep, slice_, svc
from podnet.proxy.trace import Packet, Tracer

CIP = "172.30.0.41"


def make(max_endpoints: int = 5000, conntrack: FakeConntrack | None = None):
    fake = FakeIptables()
    fam = FamilyProxier(fake, ctx(), NODE, max_endpoints, conntrack=Reconciler(conntrack, 4) if conntrack else None)
    cfg = Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address="")
    d = Daemon(cfg, [fam], FakeClock())
    services, slices = FakeInformer(), FakeInformer()
    d.attach(services, slices)
    return d, fake, services, slices, fam


def trace(fake: FakeIptables, dst: str = CIP, port: int = 80, proto: str = "tcp"):
    return Tracer(fake.tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", dst, port, proto))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_nothing_programmed_until_both_synced():
    d, fake, services, slices, _ = make()
    services.set(svc())
    slices.set(slice_(endpoints=[ep("10.0.1.1")], name="s1"))
    services.synced()
    assert await d.sync_once() and fake.restores == []
    slices.synced()
    assert await d.sync_once()
    assert trace(fake).endpoints == ("10.0.1.1:80",)


async def test_endpoint_change_is_partial_and_small():
    d, fake, services, slices, _ = make()
    for i in range(40):
        services.set(svc(name=f"s{i}", cluster_ip=f"172.30.1.{i + 1}"))
        slices.set(slice_(service=f"s{i}", endpoints=[ep(f"10.0.{i}.1")], name=f"s{i}-a"))
    services.synced(), slices.synced()
    await d.sync_once()
    assert d.proxier.last_reports[0].full
    slices.set(slice_(service="s7", endpoints=[ep("10.0.7.1"), ep("10.0.7.2")], name="s7-a"))
    await d.sync_once()
    rep = d.proxier.last_reports[0]
    text = fake.restores[-1]
    assert not rep.full and rep.changed_services == ("ns/s7",)
    # only the new endpoint chain and the balancing chain: unchanged chains are not rewritten
    assert "*filter" not in text and text.count("-A PODNET-SEP-") == 2 and text.count(":PODNET-") == 2
    assert trace(fake, "172.30.1.8").endpoints == ("10.0.7.1:80", "10.0.7.2:80")
    assert trace(fake, "172.30.1.9").endpoints == ("10.0.8.1:80",)


async def test_deleted_service_chains_removed_and_reject_when_endpoints_go():
    d, fake, services, slices, _ = make()
    services.set(svc()), services.set(svc(name="other", cluster_ip="172.30.0.42"))
    slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    slices.set(slice_(service="other", endpoints=[ep("10.0.2.1")], name="b"))
    services.synced(), slices.synced()
    await d.sync_once()
    slices.delete("ns/a")
    await d.sync_once()
    assert trace(fake).verdict == "REJECT"
    assert not any("10.0.1.1" in r for rules in fake.tables["nat"].values() for r in rules)
    services.delete("ns/svc")
    await d.sync_once()
    assert trace(fake).verdict == "ACCEPT" and trace(fake).endpoints == ()
    assert trace(fake, "172.30.0.42").endpoints == ("10.0.2.1:80",)


async def test_restore_failure_keeps_kernel_and_forces_full():
    d, fake, services, slices, fam = make()
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    before = metric("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", ip_family="IPv4")
    fake.fail_next = "iptables-restore: line 3 failed"
    slices.set(slice_(endpoints=[ep("10.0.1.2")], name="a"))
    assert await d.sync_once()  # the failed partial restore is repaired at once by a full one
    rep = d.proxier.last_reports[0]
    assert rep.full and rep.repaired_partial and not fam.need_full
    assert metric("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", ip_family="IPv4") == before + 1
    assert trace(fake).endpoints == ("10.0.1.2:80",)
    fake.fail_table = "nat"  # now every restore fails: the previous rules stay in force
    slices.set(slice_(endpoints=[ep("10.0.1.3")], name="a"))
    assert not await d.sync_once()
    assert trace(fake).endpoints == ("10.0.1.2:80",) and fam.need_full
    fake.fail_table = None
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full and trace(fake).endpoints == ("10.0.1.3:80",)


async def test_foreign_flush_detected_by_canary_and_repaired():
    d, fake, services, slices, fam = make()
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    assert await fam.canary_ok()
    fake.flush_table("filter")  # even a flush of one non-mangle table is seen
    assert not await fam.canary_ok()
    await d.sync_once()
    assert d.proxier.last_reports[0].full
    assert "PODNET-CANARY" in fake.tables["filter"] and await fam.canary_ok()


async def test_api_outage_changes_nothing():
    d, fake, services, slices, _ = make()
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    n, tables = len(fake.restores), repr(fake.tables)
    for _ in range(3):  # periodic syncs while the informers are silent
        assert await d.sync_once()
    assert len(fake.restores) == n and repr(fake.tables) == tables


async def test_huge_service_is_bounded_and_others_still_sync():
    d, fake, services, slices, _ = make(max_endpoints=500)
    services.set(svc(name="huge", cluster_ip="172.30.0.50")), services.set(svc())
    for s in range(100):  # 100 slices x 1000 endpoints = 100,000
        slices.set(slice_(service="huge", name=f"huge-{s}",
                          endpoints=[ep(f"10.{100 + s // 50}.{(s % 50) * 4 + i // 250}.{i % 250 + 1}") for i in range(1000)]))
    slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    before = metric("podnet_proxy_endpoints_truncated_total")
    services.synced(), slices.synced()
    assert await d.sync_once()
    assert metric("podnet_proxy_endpoints_truncated_total") == before + 99_500
    assert sum(1 for c in fake.tables["nat"] if c.startswith("PODNET-SEP-")) == 501
    assert trace(fake).endpoints == ("10.0.1.1:80",)


async def test_udp_endpoint_change_deletes_stale_flows():
    ct = FakeConntrack()
    d, fake, services, slices, _ = make(conntrack=ct)
    services.set(svc(ports=((53, "UDP", "dns"),)))
    slices.set(slice_(endpoints=[ep("10.0.1.1")], ports=((53, "UDP", "dns"),), name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    live = Flow("10.0.3.3", CIP, 5000, 53, "10.0.1.1")
    other = Flow("10.0.3.3", "10.9.9.9", 5001, 53, "10.9.9.9")
    ct.flows[4] = [live, other]
    slices.set(slice_(endpoints=[ep("10.0.1.2")], ports=((53, "UDP", "dns"),), name="a"))
    await d.sync_once()
    assert ct.flows[4] == [other]
    # scale to zero and delete: a flow to the service with no DNAT (reply from the VIP) goes too
    ct.flows[4] = [Flow("10.0.3.3", CIP, 5002, 53, CIP), other]
    slices.delete("ns/a")
    await d.sync_once()
    assert ct.flows[4] == [other]
    ct.flows[4] = [Flow("10.0.3.3", CIP, 5003, 53, "10.0.1.2"), other]
    services.delete("ns/svc")
    await d.sync_once()
    assert ct.flows[4] == [other]


async def test_cleanup_removes_only_podnet():
    d, fake, services, slices, _ = make()
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    await fake.restore("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n")
    await fake.ensure_jump("nat", "PREROUTING", "-j KUBE-SERVICES")
    assert await cleanup(fake) > 5
    left = [c for t in fake.tables.values() for c in t if c.startswith("PODNET")]
    jumps = [r for t in fake.tables.values() for rules in t.values() for r in rules if "PODNET" in r]
    assert left == [] and jumps == []
    assert fake.rules("nat", "PREROUTING") == ["-j KUBE-SERVICES"] and "KUBE-SERVICES" in fake.tables["nat"]
    assert await cleanup(fake) == 0


async def test_healthz_reports_overdue_queue():
    d, fake, services, slices, _ = make()
    t = [1000.0]
    d.health.clock = lambda: t[0]
    services.set(svc())
    assert d.health.report(True)[0] == 200
    t[0] += 61  # 2 x 30 s sync period passed with a sync still queued
    code, body = d.health.report(True)
    assert code == 503 and body["healthy"] is False
    services.synced(), slices.synced()
    await d.sync_once()
    assert d.health.report(False)[0] == 200


async def test_health_check_node_port_counts():
    d, fake, services, slices, _ = make()
    s = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000, ports=((80, "TCP", "p80", 30080),))
    services.set(s)
    slices.set(slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2", node=NODE), ep("10.0.1.3")], name="a"))
    d.service_health.host = "127.0.0.1"
    d.service_health.sync = _record(d.service_health)  # no listening sockets here; see the root test
    services.synced(), slices.synced()
    await d.sync_once()
    assert d.service_health.state == {"ns/svc": (32000, 2)}


def _record(obj):
    async def sync(wanted):
        obj.state = dict(wanted)

    return sync
