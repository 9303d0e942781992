"""Defence in depth against hostile objects, pure and with FakeIptables.

Hostile values are put into already-parsed objects with dataclasses.replace, so
podnet.kube's boundary is bypassed and only the proxy's own checks (guard.py)
stand between the value and iptables-restore text.
"""

from __future__ import annotations

import dataclasses
import logging
import socket

import pytest
from prometheus_client import REGISTRY

from podnet.kube.testing import FakeClock, FakeInformer
from podnet.proxy import guard
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.iptables import drift, parse_save
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.render import restore_outcome
from podnet.proxy.rules import JUMPS
from podnet.proxy.testing import NODE, FakeIptables, ctx, ep, slice_, svc
from podnet.proxy.trace import Packet, Tracer

INJECTION = "fd00::%1\n-A PODNET-SERVICES -j ACCEPT\n"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- guard tables
@pytest.mark.parametrize("value,family,ok", [
    pytest.param("10.0.0.1", 4, True, id="v4"),
    pytest.param("fd00::1", 6, True, id="v6"),
    pytest.param("fd00::1%eth0", 6, False, id="v6-zone"),
    pytest.param("fd00:96::77%x", 6, False, id="v6-zone-x"),
    pytest.param(INJECTION, 6, False, id="zone-with-newline-injection"),
    pytest.param("010.0.0.1", 4, False, id="v4-leading-zero"),
    pytest.param("10.0.0.1\n", 4, False, id="trailing-newline"),
    pytest.param(" 10.0.0.1", 4, False, id="leading-space"),
    pytest.param("FD00::1", 6, False, id="v6-not-canonical"),
    pytest.param("fd00:0::1", 6, False, id="v6-uncompressed"),
    pytest.param("::ffff:10.0.0.1", 6, False, id="v4-mapped-v6"),
    pytest.param("10.0.0.1", 6, False, id="wrong-family"),
    pytest.param(None, 4, False, id="none"),
    pytest.param(167772161, 4, False, id="integer"),
])
def test_strict_ip(value, family, ok):
    if ok:
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        assert socket.inet_ntop(af, guard.strict_ip(value, family, "f")) == value
    else:
        with pytest.raises(guard.Unsafe):
            guard.strict_ip(value, family, "f")


@pytest.mark.parametrize("value,family,why", [
    pytest.param("0.0.0.0", 4, "unspecified", id="v4-unspecified"),
    pytest.param("::", 6, "unspecified", id="v6-unspecified"),
    pytest.param("127.0.0.1", 4, "loopback", id="v4-loopback"),
    pytest.param("127.9.9.9", 4, "loopback", id="v4-loopback-range"),
    pytest.param("::1", 6, "loopback", id="v6-loopback"),
    pytest.param("169.254.169.254", 4, "link-local", id="metadata"),
    pytest.param("fe80::1", 6, "link-local", id="v6-link-local"),
    pytest.param("224.0.0.1", 4, "multicast", id="v4-link-local-multicast"),
    pytest.param("239.1.1.1", 4, "multicast", id="v4-multicast"),
    pytest.param("ff02::1", 6, "multicast", id="v6-multicast"),
    pytest.param("255.255.255.255", 4, "broadcast", id="broadcast"),
    pytest.param("10.96.0.10", 4, "", id="ordinary-v4"),
    pytest.param("203.0.113.7", 4, "", id="documentation-v4"),
    pytest.param("fd00:96::a", 6, "", id="ordinary-v6"),
])
def test_special_addresses(value, family, why):
    assert guard.special(guard.strict_ip(value, family, "f")) == why
    if why:
        with pytest.raises(guard.Unsafe) as e:
            guard.destination_ip(value, family, "f")
        assert e.value.reason == "special-address"


@pytest.mark.parametrize("value,family,ok", [
    pytest.param("203.0.113.0/24", 4, True, id="v4"),
    pytest.param("fd00::/8", 6, True, id="v6"),
    pytest.param("0.0.0.0/0", 4, True, id="everything"),
    pytest.param("fd00::%1/64", 6, False, id="zone"),
    pytest.param(INJECTION + "/64", 6, False, id="injection"),
    pytest.param("10.0.0.0/033", 4, False, id="leading-zero-prefix"),
    pytest.param("10.0.0.0/33", 4, False, id="prefix-too-long"),
    pytest.param("10.0.0.0/8/8", 4, False, id="two-slashes"),
    pytest.param("10.0.0.0", 4, False, id="no-prefix"),
    pytest.param("10.0.0.0/ 8", 4, False, id="space"),
])
def test_strict_cidr(value, family, ok):
    if ok:
        assert guard.strict_cidr(value, family, "f") == value
    else:
        with pytest.raises(guard.Unsafe):
            guard.strict_cidr(value, family, "f")


@pytest.mark.parametrize("rule,ok", [
    pytest.param('-d 10.96.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/web:http cluster IP" -j PODNET-SVC-ABCDEFGHIJKLMNOP', True, id="dispatch"),
    pytest.param("-p tcp -m tcp -j DNAT --to-destination [fd00::1]:80", True, id="dnat-v6"),
    pytest.param('-m comment --comment "x\n" -j ACCEPT', False, id="newline-in-comment"),
    pytest.param("-s 10.0.0.1/32 -j ACCEPT\n-A PODNET-SERVICES -j ACCEPT", False, id="line-injection"),
    pytest.param('-m comment --comment "a" b" -j ACCEPT', False, id="unbalanced-quote"),
    pytest.param("-m comment --comment 'x' -j ACCEPT", False, id="single-quote"),
    pytest.param("-d fd00::1%eth0/128 -j ACCEPT", False, id="percent"),
    pytest.param("-j ACCEPT\t", False, id="tab"),
    pytest.param("-j  ACCEPT", None, id="double-space"),
    pytest.param("-j ACCEPT\x00", False, id="nul"),
    pytest.param('-m comment --comment "a\\" -j ACCEPT', False, id="backslash"),
    pytest.param("", False, id="empty"),
])
def test_rule_grammar(rule, ok):
    """check_rule: the full grammar; check_rules: its alphabet at C speed (None: a harmless
    spelling only the full grammar refuses)."""
    if ok:
        guard.check_rule(rule)
        guard.check_rules([rule, rule])
    elif ok is None:
        with pytest.raises(guard.Unsafe):
            guard.check_rule(rule)
        guard.check_rules(["-j ACCEPT", rule])
    else:
        with pytest.raises(guard.Unsafe):
            guard.check_rule(rule)
        with pytest.raises(guard.Unsafe):
            guard.check_rules(['-j ACCEPT', rule])


# ---------------------------------------------------------------- hostile objects, one family each
def _port(s, **kw):
    return dataclasses.replace(s, ports=(dataclasses.replace(s.ports[0], **kw),))


def _slice_ip(sl, ip):
    e = sl.endpoints[0]
    return dataclasses.replace(sl, endpoints=(dataclasses.replace(e, addresses=(ip,)),))


def _v4(name="bad", cip="172.30.0.77"):
    return svc(name=name, cluster_ip=cip)


def _v6(name="bad", cip="fd00:96::77"):
    return svc(name=name, cluster_ip=cip)


def _lb(**spec):
    return svc(name="bad", cluster_ip="fd00:96::77", type="LoadBalancer", ports=((80, "TCP", "p80", 30077),),
               loadBalancerSourceRanges=["fd00::/8"], status={"loadBalancer": {"ingress": [{"ip": "fd00:1b::1"}]}}, **spec)


HOSTILE = [
    # (id, family, Service, endpoint address or None, expected reason)
    ("lb-source-range-injection", 6, dataclasses.replace(_lb(), load_balancer_source_ranges=(INJECTION + "/64",)), "fd00:1::7", "cidr"),
    ("service-name-newline", 4, dataclasses.replace(_v4(), name="x\n"), "10.0.1.7", "name"),
    ("namespace-quote", 4, dataclasses.replace(_v4(), namespace='ns" -j ACCEPT'), "10.0.1.7", "name"),
    ("port-name-newline", 4, _port(_v4(), name="http\n"), "10.0.1.7", "name"),
    ("port-name-space", 4, _port(_v4(), name="http -j ACCEPT"), "10.0.1.7", "name"),
    ("protocol-injection", 4, _port(_v4(), protocol="TCP -j ACCEPT"), "10.0.1.7", "protocol"),
    ("port-bool", 4, _port(_v4(), port=True), "10.0.1.7", "port"),
    ("port-zero", 4, _port(_v4(), port=0), "10.0.1.7", "port"),
    ("clusterip-zone", 6, dataclasses.replace(_v6(), cluster_ips=("fd00:96::77%x",)), "fd00:1::7", "ip"),
    ("clusterip-leading-zero", 4, dataclasses.replace(_v4(), cluster_ips=("172.030.0.77",)), "10.0.1.7", "ip"),
    ("clusterip-loopback", 4, dataclasses.replace(_v4(), cluster_ips=("127.0.0.1",)), "10.0.1.7", "special-address"),
] + [
    (f"endpoint-{ip}", 4, _v4(), ip, "special-address")
    for ip in ("0.0.0.0", "127.0.0.1", "169.254.169.254", "224.0.0.1", "255.255.255.255")
] + [
    (f"external-ip-{ip}", 4, dataclasses.replace(_v4(), external_ips=(ip,)), "10.0.1.7", "special-address")
    for ip in ("0.0.0.0", "127.0.0.1", "169.254.169.254", "224.0.0.1", "255.255.255.255")
] + [
    ("endpoint-zone", 6, _v6(), "fd00:1::7%eth0", "ip"),
    ("endpoint-newline", 4, _v4(), "10.0.1.7\n", "ip"),
    ("lb-ip-zone", 6, dataclasses.replace(_lb(), load_balancer_ips=("fd00:1b::1%1",)), "fd00:1::7", "ip"),
]


def _family_daemon(family: int):
    fake = FakeIptables(family)
    context = ctx(family=6, cluster_cidrs=("fd00:10::/64",), node_ips=("fd00:ff::2",)) if family == 6 else ctx()
    fam = FamilyProxier(fake, context, NODE)
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    services, slices = FakeInformer(), FakeInformer()
    d.attach(services, slices)
    return d, fake, fam, services, slices


@pytest.mark.parametrize("family,hostile,ep_ip,reason", [pytest.param(f, s, e, r, id=i) for i, f, s, e, r in HOSTILE])
async def test_hostile_service_is_skipped_counted_and_others_sync(family, hostile, ep_ip, reason, caplog):
    d, fake, fam, services, slices = _family_daemon(family)
    good_ip, good_ep, new_ip, new_ep = (("172.30.0.41", "10.0.1.1", "172.30.0.42", "10.0.1.2") if family == 4
                                        else ("fd00:96::41", "fd00:1::1", "fd00:96::42", "fd00:1::2"))
    fam_label, addr_type = f"IPv{family}", f"IPv{family}"
    services.set(svc(cluster_ip=good_ip))
    slices.set(slice_(endpoints=[ep(good_ep)], family=addr_type, name="good"))
    bad_slice = dataclasses.replace(slice_(service="bad", endpoints=[ep(good_ep)], family=addr_type, name="bad"),
                                    service_name=hostile.name, namespace=hostile.namespace)
    services.set(hostile)
    slices.set(_slice_ip(bad_slice, ep_ip))
    before = metric("podnet_proxy_skipped_services_total", reason=reason, ip_family=fam_label)
    services.synced(), slices.synced()
    with caplog.at_level(logging.ERROR, "podnet.proxy"):
        assert await d.sync_once()
    assert metric("podnet_proxy_skipped_services_total", reason=reason, ip_family=fam_label) == before + 1
    assert any("skipped" in r.getMessage() for r in caplog.records)
    assert hostile.key not in fam.fragments
    # nothing of the hostile service reached the restore input
    text = "".join(fake.restores)
    assert f'"{hostile.namespace}/{hostile.name}' not in text and "%" not in text
    for line in text.splitlines():
        if line.startswith("-A ") or line.startswith("-I "):
            guard.check_rule(line.split(" ", 2)[2] if line.startswith("-A ") else line.split(" ", 3)[3])
    tracer = Tracer(fake.tables, fam.ctx.node_ips)
    src = "10.0.3.3" if family == 4 else "fd00:3::3"
    port = 80
    assert tracer.trace(Packet(src, good_ip, port, "tcp")).endpoints == ((f"{good_ep}:80",) if family == 4 else (f"[{good_ep}]:80",))
    # a Service created afterwards is programmed too
    services.set(svc(name="new", cluster_ip=new_ip))
    slices.set(slice_(service="new", endpoints=[ep(new_ep)], family=addr_type, name="new"))
    assert await d.sync_once()
    assert tracer.__class__(fake.tables, fam.ctx.node_ips).trace(Packet(src, new_ip, port, "tcp")).endpoints
    # the hostile service fixed upstream is programmed; deleted, it leaves nothing
    services.delete(hostile.key)
    assert await d.sync_once()
    assert hostile.key not in fam.fragments


async def test_both_families_sync_when_each_has_a_hostile_service():
    fakes = {4: FakeIptables(4), 6: FakeIptables(6)}
    fams = [FamilyProxier(fakes[4], ctx(), NODE),
            FamilyProxier(fakes[6], ctx(family=6, cluster_cidrs=("fd00:10::/64",), node_ips=("fd00:ff::2",)), NODE)]
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), fams, FakeClock())
    services, slices = FakeInformer(), FakeInformer()
    d.attach(services, slices)
    services.set(svc(cluster_ip=["172.30.0.41", "fd00:96::41"], ipFamilyPolicy="PreferDualStack"))
    slices.set(slice_(endpoints=[ep("10.0.1.1")], name="v4"))
    slices.set(slice_(endpoints=[ep("fd00:1::1")], family="IPv6", name="v6"))
    services.set(dataclasses.replace(_v6(name="bad6"), cluster_ips=("fd00:96::77%x",)))
    services.set(dataclasses.replace(_v4(name="bad4"), name="x\n"))
    services.synced(), slices.synced()
    assert await d.sync_once()
    assert all(r.ok for r in d.proxier.last_reports) and len(d.proxier.last_reports) == 2
    assert Tracer(fakes[4].tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", "172.30.0.41", 80, "tcp")).endpoints == ("10.0.1.1:80",)
    assert Tracer(fakes[6].tables, ("fd00:ff::2",)).trace(Packet("fd00:3::3", "fd00:96::41", 80, "tcp")).endpoints == ("[fd00:1::1]:80",)


# ---------------------------------------------------------------- failed restores across tables
@pytest.mark.parametrize("line,want", [
    pytest.param(3, ([], "nat", ["filter", "mangle"]), id="fails-in-first-table"),
    pytest.param(4, ([], "nat", ["filter", "mangle"]), id="fails-at-first-commit"),
    pytest.param(7, (["nat"], "filter", ["mangle"]), id="fails-in-second-table"),
    pytest.param(10, (["nat", "filter"], "mangle", []), id="fails-in-last-table"),
    pytest.param(None, (["?"], None, []), id="line-unknown"),
    pytest.param(99, (["?"], None, []), id="line-beyond-input"),
])
def test_restore_outcome(line, want):
    text = "*nat\n:A - [0:0]\n-A A -j RETURN\nCOMMIT\n*filter\n:B - [0:0]\n-A B -j RETURN\nCOMMIT\n*mangle\n-A C -j X\nCOMMIT\n"
    assert restore_outcome(text, line) == want


async def test_filter_failure_after_nat_commit_is_reported_and_repaired(caplog):
    """A full sync writes nat first; when filter fails, nat is already committed: the proxy
    says so, keeps need_full, and the next sync rewrites every table."""
    d, fake, fam, services, slices = _family_daemon(4)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    fake.fail_table = "filter"
    with caplog.at_level(logging.ERROR, "podnet.proxy"):
        assert not await d.sync_once()
    rep = d.proxier.last_reports[0]
    assert rep.committed == ("nat",) and rep.failed_table == "filter" and fam.need_full and fam.applied is None
    assert any("committed: nat; failed: filter; not applied: mangle" in r.getMessage() for r in caplog.records)
    assert "PODNET-SERVICES" in fake.tables["nat"] and "PODNET-SERVICES" not in fake.tables["filter"]
    fake.fail_table = None
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full
    assert drift(fam.applied, parse_save(await fake.save()), JUMPS) == []


# ---------------------------------------------------------------- foreign changes
def _drop_jump(fake, table, chain):
    fake.tables[table][chain] = [r for r in fake.tables[table][chain] if "PODNET-SERVICES" not in r]


FOREIGN = [
    # (change, table, kind, seen by the quick check too)
    pytest.param(lambda f: f.tables["nat"].update({c: [] for c in f.tables["nat"]}), "nat", "rules-changed", True, id="flush-nat"),
    pytest.param(lambda f: f.flush_table("nat"), "nat", "chain-missing", True, id="flush-and-delete-nat"),
    pytest.param(lambda f: f.tables["filter"].update({"PODNET-CANARY": []}), "filter", "rules-changed", True, id="flush-filter-canary"),
    pytest.param(lambda f: f.tables["mangle"].update({"PODNET-CANARY": []}), "mangle", "rules-changed", True, id="flush-mangle"),
    pytest.param(lambda f: f.tables["nat"].update({"PODNET-SERVICES": []}), "nat", "rules-changed", False, id="flush-one-podnet-chain"),
    pytest.param(lambda f: f.tables["nat"]["PODNET-POSTROUTING"].append("-j ACCEPT"), "nat", "rules-changed", False, id="foreign-rule-added"),
    pytest.param(lambda f: _drop_jump(f, "nat", "PREROUTING"), "nat", "jump-missing", True, id="delete-prerouting-jump"),
    pytest.param(lambda f: _drop_jump(f, "filter", "OUTPUT"), "filter", "jump-missing", True, id="delete-filter-jump"),
]


@pytest.mark.parametrize("check", ["full", "quick"])
@pytest.mark.parametrize("change,table,kind,quick", FOREIGN)
async def test_foreign_change_is_detected_counted_and_repaired(change, table, kind, quick, check):
    """The full check (a read-back of everything, when its cost budget allows) sees every
    change; the quick check between two full ones sees table flushes and deleted jumps."""
    d, fake, fam, services, slices = _family_daemon(4)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    assert await d.sync_once()
    assert await fam.canary_ok()  # nothing changed: no false alarm (a full check)
    assert await fam.canary_ok()  # ... nor from the quick one
    before = metric("podnet_proxy_foreign_changes_total", table=table, kind=kind, ip_family="IPv4")
    change(fake)
    fam.next_full_check = None if check == "full" else float("inf")
    fam.check_costs = (1.0, 0.01)  # measured costs are real time: fixed here so the choice is
    if check == "quick" and not quick:
        assert await fam.canary_ok()  # left to the next full check
        fam.next_full_check, fam.check_costs = None, (1.0, 0.01)
    assert not await fam.canary_ok()
    assert metric("podnet_proxy_foreign_changes_total", table=table, kind=kind, ip_family="IPv4") == before + 1
    assert fam.need_full
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full and await fam.canary_ok()
    assert Tracer(fake.tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", "172.30.0.41", 80, "tcp")).endpoints == ("10.0.1.1:80",)


def test_full_check_keeps_to_its_budget():
    fam = FamilyProxier(FakeIptables(), ctx(), NODE)
    from podnet.proxy.proxier import CHECK_BUDGET

    clock = iter([100.0, 101.5])  # a full check that takes 1.5 s
    fam.wall = lambda: next(clock)
    fam.applied = {"nat": {}}
    import asyncio

    asyncio.run(fam.canary_ok())
    assert fam.next_full_check == pytest.approx(100.0 + 1.5 / CHECK_BUDGET)
    assert fam.check_costs[0] == pytest.approx(1.5)


async def test_quick_check_as_costly_as_a_full_one_is_replaced_by_it():
    d, fake, fam, services, slices = _family_daemon(4)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    assert await d.sync_once()
    fam.next_full_check, fam.check_costs = float("inf"), (2.0, 1.9)  # iptables-legacy at 10k services
    fake.tables["nat"]["PODNET-SERVICES"] = []  # only the full check sees a flushed podnet chain
    assert not await fam.canary_ok()


# ---------------------------------------------------------------- endpoint bound
async def test_endpoints_unbounded_by_default_and_cut_when_set(caplog):
    eps = [ep(f"10.{1 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}") for i in range(6000)]
    for bound, kept in ((0, 6000), (100, 100)):
        fake = FakeIptables()
        fam = FamilyProxier(fake, ctx(), NODE, **({"max_endpoints": bound} if bound else {}))
        d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
        services, slices = FakeInformer(), FakeInformer()
        d.attach(services, slices)
        services.set(svc())
        for i in range(6):  # at most 1000 endpoints per slice
            slices.set(slice_(endpoints=eps[i * 1000:(i + 1) * 1000], name=f"a{i}"))
        services.synced(), slices.synced()
        before = metric("podnet_proxy_endpoints_truncated_total")
        caplog.clear()
        with caplog.at_level(logging.WARNING, "podnet.proxy"):
            assert await d.sync_once()
        assert sum(1 for c in fake.tables["nat"] if c.startswith("PODNET-SEP-")) == kept
        assert metric("podnet_proxy_endpoints_truncated_total") == before + 6000 - kept
        warned = [r.getMessage() for r in caplog.records if "keeping the first" in r.getMessage()]
        assert warned == ([] if not bound else [warned[0]]) and (not bound or "ns/svc" in warned[0])
    assert Config().max_endpoints_per_service_port == 0


@pytest.mark.parametrize("change", [
    pytest.param({"cluster_cidrs": ("10.0.0.0/16\n-A PODNET-SERVICES -j ACCEPT",)}, id="cluster-cidr-injection"),
    pytest.param({"nodeport_cidrs": ("fd00::%1/64",)}, id="nodeport-cidr-zone"),
    pytest.param({"masq_mark": 0x4001}, id="mark-not-one-bit"),
])
async def test_unsafe_node_settings_write_nothing(change):
    d, fake, fam, services, slices = _family_daemon(4)
    fam.ctx = dataclasses.replace(fam.ctx, **change)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced(), slices.synced()
    assert not await d.sync_once()
    assert fake.restores == []


@pytest.mark.parametrize("line,chain", [
    pytest.param(2, "PODNET-A", id="declaration"),
    pytest.param(3, "PODNET-A", id="append"),
    pytest.param(4, "PODNET-B", id="delete"),
    pytest.param(5, None, id="commit"),
    pytest.param(1, None, id="table-header"),
    pytest.param(None, None, id="unknown"),
    pytest.param(9, None, id="beyond-input"),
])
def test_failing_chain(line, chain):
    from podnet.proxy.render import failing_chain

    assert failing_chain("*nat\n:PODNET-A - [0:0]\n-A PODNET-A -j RETURN\n-X PODNET-B\nCOMMIT\n", line) == chain


async def test_a_service_whose_line_the_kernel_refuses_is_left_out_until_it_changes():
    d, fake, fam, services, slices = _family_daemon(4)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.set(svc(name="other", cluster_ip="172.30.0.42"))
    slices.set(slice_(service="other", endpoints=[ep("10.0.2.1")], name="o"))
    services.synced(), slices.synced()
    assert await d.sync_once()
    # as if a value had slipped past every check: one line of "other" that the kernel refuses
    frag = fam.fragments["ns/other"][0]
    svc_chain = next(c for c in frag.nat_chains if c.startswith("PODNET-SVC-"))
    fam.fragments["ns/other"] = (dataclasses.replace(frag, nat_chains={**frag.nat_chains, svc_chain: ("-j PODNET-SEP-AAAAAAAAAAAAAAAA",)}),)
    fam.need_full = True
    services.set(svc(name="new", cluster_ip="172.30.0.43"))
    slices.set(slice_(service="new", endpoints=[ep("10.0.3.1")], name="n"))
    before = metric("podnet_proxy_skipped_services_total", reason="restore-refused", ip_family="IPv4")
    assert await d.sync_once()  # the same sync writes everything else without it
    assert fam.quarantined == {"ns/other"}
    assert metric("podnet_proxy_skipped_services_total", reason="restore-refused", ip_family="IPv4") == before + 1
    tr = Tracer(fake.tables, ("192.168.0.2",))
    assert tr.trace(Packet("10.0.3.3", "172.30.0.41", 80, "tcp")).endpoints == ("10.0.1.1:80",)
    assert tr.trace(Packet("10.0.3.3", "172.30.0.43", 80, "tcp")).endpoints == ("10.0.3.1:80",)
    assert tr.trace(Packet("10.0.3.3", "172.30.0.42", 80, "tcp")).endpoints == ()
    slices.set(slice_(service="other", endpoints=[ep("10.0.2.2")], name="o"))  # it changes: tried again
    assert await d.sync_once()
    assert fam.quarantined == set()
    assert Tracer(fake.tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", "172.30.0.42", 80, "tcp")).endpoints == ("10.0.2.2:80",)
