"""The nftables mode's pure part (fragments, render) and its sync logic against FakeNft."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.model import EndpointInfo, ServicePortInfo, ServicePortName
from podnet.proxy.nft_proxier import NftFamilyProxier, build
from podnet.proxy.nft_render import render_full, render_partial
from podnet.proxy.nft_rules import (
    MAP_NO_EP_IPS, MAP_NO_EP_NODEPORTS, MAP_NODEPORTS, MAP_SERVICE_IPS, REJECT_CHAIN, SET_CLUSTER_IPS, UnsafeValue,
    claims_of, fixed_chains, service_chain_names, service_nft,
)
from podnet.kube.testing import FakeInformer
from podnet.proxy.nft_run import Nft, NftRunner
from podnet.proxy.nft_trace import NftTracer
from podnet.proxy.trace import Packet
from podnet.proxy.testing import NODE, NODE_IP, FakeNft, ctx, ep, slice_, svc

SVC, SVL, EXT, FW = service_chain_names("ns/svc:http", "TCP")
HTTP = ((80, "TCP", "http"),)
HTTP_EP = ((8080, "TCP", "http"),)
CIP = (SET_CLUSTER_IPS, "172.30.0.41 . tcp . 80")


def one(services, slices, context=None):
    """The single service's (chains, elements) of a built state."""
    st = build(services, slices, context or ctx(), NODE)
    frs = st.services.get("ns/svc", ())
    chains = {k: v for f in frs for k, v in f.chains.items()}
    elements = {(m, k): v for f in frs for m, k, v in f.elements}
    return chains, elements


CASES = [
    pytest.param(
        [svc(ports=HTTP)], [slice_(endpoints=[ep("10.0.1.1"), ep("10.0.1.2"), ep("10.0.1.3")], ports=HTTP_EP)], None,
        {SVC: ("numgen random mod 3 == 0 meta l4proto tcp dnat to 10.0.1.1:8080",
               "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.0.1.2:8080",
               "meta l4proto tcp dnat to 10.0.1.3:8080")},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: ""},
        id="clusterip-three-endpoints-plain-probability-rules",
    ),
    pytest.param(
        [svc(ports=HTTP)], [], None, {},
        {(MAP_NO_EP_IPS, "172.30.0.41 . tcp . 80"): f"goto {REJECT_CHAIN}"},
        id="no-endpoints-reject",
    ),
    pytest.param(
        [svc(ports=HTTP, internalTrafficPolicy="Local")], [slice_(endpoints=[ep("10.0.1.1")], ports=HTTP_EP)], None, {},
        {(MAP_NO_EP_IPS, "172.30.0.41 . tcp . 80"): "drop"},
        id="itp-local-without-local-endpoints-drop",
    ),
    pytest.param(
        [svc(ports=HTTP, internalTrafficPolicy="Local")], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")], ports=HTTP_EP)], None,
        {SVL: ("meta l4proto tcp dnat to 10.0.1.1:8080",)},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVL}", CIP: "", ("hairpin", "10.0.1.1 . 10.0.1.1"): ""},
        id="itp-local-goes-to-local-endpoint-only",
    ),
    pytest.param(
        [svc(ports=((80, "TCP", "http", 30080),), type="NodePort")], [slice_(endpoints=[ep("10.0.1.1")], ports=HTTP_EP)], None,
        {SVC: ("meta l4proto tcp dnat to 10.0.1.1:8080",),
         EXT: ("jump mark-for-masquerade", f"goto {SVC}")},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: "", (MAP_NODEPORTS, "tcp . 30080"): f"goto {EXT}"},
        id="nodeport-masquerades-then-balances",
    ),
    pytest.param(
        [svc(ports=((80, "TCP", "http", 30080),), type="NodePort", externalTrafficPolicy="Local")],
        [slice_(endpoints=[ep("10.0.1.1")], ports=HTTP_EP)], None,
        {SVC: ("meta l4proto tcp dnat to 10.0.1.1:8080",),
         EXT: (f"ip saddr 10.0.0.0/16 goto {SVC}", "fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {SVC}")},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: "", (MAP_NODEPORTS, "tcp . 30080"): f"goto {EXT}",
         (MAP_NO_EP_NODEPORTS, "tcp . 30080"): "drop"},
        id="etp-local-without-local-endpoints-drops-nodeport",
    ),
    pytest.param(
        [svc(ports=((80, "TCP", "http", 30080),), type="NodePort")], [], None, {},
        {(MAP_NO_EP_IPS, "172.30.0.41 . tcp . 80"): f"goto {REJECT_CHAIN}", (MAP_NO_EP_NODEPORTS, "tcp . 30080"): f"goto {REJECT_CHAIN}"},
        id="nodeport-without-endpoints-rejects",
    ),
    pytest.param(
        [svc(ports=((80, "TCP", "http", 30080),), type="LoadBalancer", loadBalancerSourceRanges=["203.0.113.0/24"],
             externalIPs=["198.51.100.7"], status={"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}})],
        [slice_(endpoints=[ep("10.0.1.1")], ports=HTTP_EP)], None,
        {SVC: ("meta l4proto tcp dnat to 10.0.1.1:8080",),
         EXT: ("jump mark-for-masquerade", f"goto {SVC}"),
         FW: (f"ip saddr 203.0.113.0/24 goto {EXT}", "drop")},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: "",
         (MAP_SERVICE_IPS, "198.51.100.7 . tcp . 80"): f"goto {EXT}",
         (MAP_SERVICE_IPS, "192.0.2.10 . tcp . 80"): f"goto {FW}",
         (MAP_NODEPORTS, "tcp . 30080"): f"goto {EXT}"},
        id="loadbalancer-source-ranges-and-external-ip",
    ),
    pytest.param(
        [svc(ports=HTTP)], [slice_(endpoints=[ep("10.0.1.1", ready=False, serving=True, terminating=True),
                                          ep("10.0.1.2", ready=False, serving=False, terminating=True)], ports=HTTP_EP)], None,
        {SVC: ("meta l4proto tcp dnat to 10.0.1.1:8080",)},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: ""},
        id="terminating-fallback-serving-only",
    ),
    pytest.param(
        [svc(ports=HTTP, cluster_ip="fd00:96::41")], [slice_(endpoints=[ep("fd00:1::1")], ports=HTTP_EP, family="IPv6")],
        ctx(family=6, cluster_cidrs=("fd00::/48",), node_ips=("fd00:ff::2",)),
        {SVC: ("meta l4proto tcp dnat to [fd00:1::1]:8080",)},
        {(MAP_SERVICE_IPS, "fd00:96::41 . tcp . 80"): f"goto {SVC}", (SET_CLUSTER_IPS, "fd00:96::41 . tcp . 80"): ""},
        id="ipv6",
    ),
    pytest.param(
        [svc(ports=HTTP)], [slice_(endpoints=[ep("10.0.1.1")], ports=HTTP_EP)], ctx(masquerade_all=True),
        {SVC: ("meta l4proto tcp dnat to 10.0.1.1:8080",)},
        {(MAP_SERVICE_IPS, "172.30.0.41 . tcp . 80"): f"goto {SVC}", CIP: ""},
        id="masquerade-all",
    ),
]


@pytest.mark.parametrize("services,slices,context,chains,elements", CASES)
def test_service_fragment(services, slices, context, chains, elements):
    got_chains, got_elements = one(services, slices, context)
    assert got_chains == chains
    assert got_elements == elements


def test_affinity_uses_one_dynamic_set_per_endpoint():
    st = build([svc(ports=HTTP, sessionAffinity="ClientIP")], [slice_(endpoints=[ep("10.0.1.1"), ep("10.0.1.2")], ports=HTTP_EP)], ctx(), NODE)
    (f,) = st.services["ns/svc"]
    assert set(f.affinity_sets.values()) == {10800} and len(f.affinity_sets) == 2
    a1, a2 = sorted(f.affinity_sets, key=lambda s: f.chains[SVC][0].find(s) < 0)
    rules = f.chains[SVC]
    assert rules[0] == f"ip saddr @{a1} update @{a1} {{ ip saddr }} meta l4proto tcp dnat to 10.0.1.1:8080"
    assert rules[1] == f"ip saddr @{a2} update @{a2} {{ ip saddr }} meta l4proto tcp dnat to 10.0.1.2:8080"
    assert rules[2] == f"numgen random mod 2 == 0 update @{a1} {{ ip saddr }} meta l4proto tcp dnat to 10.0.1.1:8080"
    assert rules[3] == f"update @{a2} {{ ip saddr }} meta l4proto tcp dnat to 10.0.1.2:8080"
    text = render_full(st)
    assert f"set {a1} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}" in text


def test_topology_narrows_to_zone_like_iptables_mode():
    slices = [slice_(endpoints=[ep("10.0.1.1", zones=("a",)), ep("10.0.1.2", zones=("b",))], ports=HTTP_EP)]
    chains, _ = one([svc(ports=HTTP, trafficDistribution="PreferClose")], slices, ctx(zone="a"))
    assert chains[SVC] == ("meta l4proto tcp dnat to 10.0.1.1:8080",)


def sp(**kw):
    base = dict(name=ServicePortName("ns", "svc", "http", "TCP"), cluster_ip="172.30.0.41", port=80, protocol="TCP")
    base.update(kw)
    return ServicePortInfo(**base)


@pytest.mark.parametrize("port,eps,context", [
    pytest.param(sp(cluster_ip="172.30.0.41 drop"), (), ctx(), id="cluster-ip-with-space"),
    pytest.param(sp(cluster_ip="172.030.0.41"), (), ctx(), id="cluster-ip-leading-zero"),
    pytest.param(sp(cluster_ip="fe80::1%eth0"), (), ctx(family=6), id="cluster-ip-with-zone"),
    pytest.param(sp(port=0), (), ctx(), id="port-zero"),
    pytest.param(sp(protocol="ICMP"), (), ctx(), id="protocol"),
    pytest.param(sp(), (EndpointInfo("10.0.1.1\n", 8080),), ctx(), id="endpoint-with-newline"),
    pytest.param(sp(), (EndpointInfo("10.0.1.1", 70000),), ctx(), id="endpoint-port-out-of-range"),
    pytest.param(sp(affinity_timeout=10**9), (EndpointInfo("10.0.1.1", 8080),), ctx(), id="affinity-timeout"),
])
def test_unsafe_values_refused(port, eps, context):
    with pytest.raises(UnsafeValue):
        service_nft(port, eps, context)


@pytest.mark.parametrize("context", [
    pytest.param(ctx(cluster_cidrs=("10.0.0.0/16%",)), id="cluster-cidr-percent"),
    pytest.param(ctx(cluster_cidrs=("10.0.0.1",)), id="cluster-cidr-without-prefix"),
])
def test_unsafe_node_values_refused(context):
    with pytest.raises(UnsafeValue):
        fixed_chains(context)


def _services(n, n_eps=3):
    services = [svc(name=f"s{i}", cluster_ip=f"172.30.1.{i}", ports=HTTP) for i in range(1, n + 1)]
    slices = [slice_(service=f"s{i}", endpoints=[ep(f"10.0.{i}.{j}") for j in range(1, n_eps + 1)], ports=HTTP_EP)
              for i in range(1, n + 1)]
    return services, slices


async def _apply(fake, text):
    await fake.apply(text)
    return {k: list(v) for k, v in fake.chains.items()}, {k: set(v) for k, v in fake.elements.items()}


@pytest.mark.parametrize("change", [
    pytest.param("endpoint", id="one-endpoint-removed"),
    pytest.param("delete", id="service-deleted"),
    pytest.param("empty", id="all-endpoints-gone"),
    pytest.param("add", id="service-added"),
])
async def test_partial_equals_full_and_names_only_the_changed_service(change):
    services, slices = _services(5)
    before = build(services, slices, ctx(), NODE)
    if change == "endpoint":
        slices[2] = slice_(service="s3", endpoints=[ep("10.0.3.1")], ports=HTTP_EP)
    elif change == "delete":
        del services[2], slices[2]
    elif change == "empty":
        slices[2] = slice_(service="s3", endpoints=[], ports=HTTP_EP)
    else:
        services.append(svc(name="s3b", cluster_ip="172.30.2.3", ports=HTTP))
        slices.append(slice_(service="s3b", endpoints=[ep("10.0.9.1")], ports=HTTP_EP))
    after = build(services, slices, ctx(), NODE)
    key = "ns/s3b" if change == "add" else "ns/s3"
    text = render_partial(after, before, {key})
    own = set(service_chain_names(("ns/s3b" if change == "add" else "ns/s3") + ":http", "TCP"))
    for line in text.splitlines():
        for other in ("s1", "s2", "s4", "s5"):
            for chain in service_chain_names(f"ns/{other}:http", "TCP"):
                assert chain not in line
    assert any(c in text for c in own)
    via_partial, via_full = FakeNft(), FakeNft()
    await via_partial.apply(render_full(before))
    got = await _apply(via_partial, text)
    want = await _apply(via_full, render_full(after))
    assert got == want


def test_partial_of_unchanged_state_is_empty():
    services, slices = _services(3)
    st = build(services, slices, ctx(), NODE)
    assert render_partial(st, build(services, slices, ctx(), NODE), {"ns/s1"}) == ""


def test_full_render_is_deterministic_and_one_table():
    services, slices = _services(4)
    a = render_full(build(services, slices, ctx(), NODE))
    b = render_full(build(list(reversed(services)), list(reversed(slices)), ctx(), NODE))
    assert a == b
    assert a.startswith("add table ip podnet\ndelete table ip podnet\n")
    assert {ln.split()[2] for ln in a.splitlines() if ln.startswith(("add element", "delete element"))} == {"ip"}
    assert {ln.split()[2] for ln in a.splitlines() if ln.startswith("table ")} == {"podnet"}


def test_fake_and_runner_implement_the_protocol():
    for impl in (FakeNft, NftRunner):
        assert isinstance(impl(4), Nft)
        for name in ("apply", "apply_stream", "census"):
            assert inspect.signature(getattr(impl, name)).parameters.keys() == inspect.signature(getattr(Nft, name)).parameters.keys()
            assert inspect.iscoroutinefunction(getattr(impl, name))


def daemon_with(fake, services, slices, wall=lambda: 0.0):
    """A daemon over one nftables family; ``wall`` is its clock (constant: every check affordable)."""
    fam = NftFamilyProxier(fake, ctx(), NODE, wall=wall)
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    for s in services:
        si.set(s)
    for s in slices:
        ei.set(s)
    si.synced(), ei.synced()
    return d, fam, si, ei


async def test_first_sync_full_then_partial_then_foreign_delete_repaired():
    fake = FakeNft()
    services, slices = _services(3)
    d, fam, si, ei = daemon_with(fake, services, slices)
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full and fake.texts[-1].startswith("add table ip podnet\nflush table")
    assert await fam.canary_ok()
    ei.set(slice_(service="s2", endpoints=[ep("10.0.2.1")], ports=HTTP_EP, name=slices[1].name))
    assert await d.sync_once()
    rep = d.proxier.last_reports[0]
    assert not rep.full and "flush chain ip podnet" in fake.texts[-1]
    fake.delete_table()
    assert not await fam.canary_ok()
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full and fake.exists
    assert await fam.canary_ok()
    fake.flush_chain("services")
    assert not await fam.canary_ok()
    assert await d.sync_once()
    assert len(fake.chains["services"]) == 3
    si.delete("ns/s1")
    assert await d.sync_once()
    assert fam.claims == claims_of(fam.fragments)  # the incremental index matches a fresh one


async def test_failed_partial_is_repaired_by_a_full_sync_at_once():
    fake = FakeNft()
    services, slices = _services(2)
    d, fam, si, ei = daemon_with(fake, services, slices)
    assert await d.sync_once()
    fake.fail_next = 1
    ei.set(slice_(service="s1", endpoints=[ep("10.0.1.1")], ports=HTTP_EP, name=slices[0].name))
    assert await d.sync_once()
    rep = d.proxier.last_reports[0]
    assert rep.full and rep.repaired_partial and rep.ok
    assert "\nflush table ip podnet\n" in fake.texts[-1]
    fake.fail_next = 1
    fam.need_full = True
    assert not await d.sync_once()
    assert await d.sync_once()  # after a failed full sync the table is deleted and declared again
    assert fake.texts[-1].startswith("add table ip podnet\ndelete table ip podnet\n")
    assert fake.chains[service_chain_names("ns/s1:http", "TCP")[0]][-1] == "meta l4proto tcp dnat to 10.0.1.1:8080"


async def test_unsafe_service_skipped_others_written():
    fake = FakeNft()
    services, slices = _services(2)
    bad = slice_(service="s1", endpoints=[ep("10.0.1.1")], ports=((0, "TCP", "http"),))
    d, fam, si, ei = daemon_with(fake, services, slices[1:] + [bad])
    assert await d.sync_once()
    assert service_chain_names("ns/s2:http", "TCP")[0] in fake.chains


def test_hairpin_set_holds_only_this_nodes_endpoints():
    st = build([svc(ports=HTTP)], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")], ports=HTTP_EP)], ctx(), NODE)
    assert st.hairpin() == {"10.0.1.1"}
    assert "add element ip podnet hairpin { 10.0.1.1 . 10.0.1.1 }" in render_full(st)


@pytest.mark.parametrize("argv,mode", [
    pytest.param([], "iptables", id="default-iptables"),
    pytest.param(["--proxy-mode", "nftables"], "nftables", id="flag-nftables"),
    pytest.param(["--proxy-mode", "iptables"], "iptables", id="flag-iptables"),
])
def test_proxy_mode_flag_reaches_the_daemon_config(argv, mode):
    from podnet.proxy.cli import build_config, parser

    cfg = build_config(parser().parse_args(["--hostname-override", "n1", *argv]))
    assert cfg.proxy_mode == mode


async def test_partial_sync_report_counts_only_the_rewritten_chain():
    fake = FakeNft()
    services, slices = _services(4)
    d, fam, si, ei = daemon_with(fake, services, slices)
    assert await d.sync_once()
    assert d.proxier.last_reports[0].wrote_chains > 4
    ei.set(slice_(service="s4", endpoints=[ep("10.0.4.1")], ports=HTTP_EP, name=slices[3].name))
    assert await d.sync_once()
    rep = d.proxier.last_reports[0]
    assert (rep.full, rep.wrote_chains, rep.deleted_chains, rep.changed_services) == (False, 1, 0, ("ns/s4",))


async def test_two_services_claiming_one_external_ip_port_give_one_element():
    a = svc(name="a", cluster_ip="172.30.0.51", ports=HTTP, externalIPs=["198.51.100.7"])
    b = svc(name="b", cluster_ip="172.30.0.52", ports=HTTP, externalIPs=["198.51.100.7"])
    slices = [slice_(service=n, endpoints=[ep(ip)], ports=HTTP_EP) for n, ip in (("a", "10.0.1.1"), ("b", "10.0.1.2"))]
    st = build([a, b], slices, ctx(), NODE)
    ext_a = service_chain_names("ns/a:http", "TCP")[2]
    assert st.element_map()[(MAP_SERVICE_IPS, "198.51.100.7 . tcp . 80")] == f"goto {ext_a}"
    # b goes away, then a: the shared key follows the owner and is deleted exactly once
    fake = FakeNft()
    await fake.apply(render_full(st))
    only_a = build([a], slices, ctx(), NODE)
    await fake.apply(render_partial(only_a, st, {"ns/b"}))
    assert f"198.51.100.7 . tcp . 80 : goto {ext_a}" in fake.elements[MAP_SERVICE_IPS]
    none = build([], slices, ctx(), NODE)
    text = render_partial(none, only_a, {"ns/a"})
    assert text.count("198.51.100.7") == 1
    await fake.apply(text)
    assert fake.elements[MAP_SERVICE_IPS] == set()


async def test_shared_key_passes_to_the_remaining_service_when_the_winner_goes():
    a = svc(name="a", cluster_ip="172.30.0.51", ports=HTTP, externalIPs=["198.51.100.7"])
    b = svc(name="b", cluster_ip="172.30.0.52", ports=HTTP, externalIPs=["198.51.100.7"])
    slices = [slice_(service=n, endpoints=[ep(ip)], ports=HTTP_EP) for n, ip in (("a", "10.0.1.1"), ("b", "10.0.1.2"))]
    both, only_b = build([a, b], slices, ctx(), NODE), build([b], slices, ctx(), NODE)
    fake, want = FakeNft(), FakeNft()
    await fake.apply(render_full(both))
    await fake.apply(render_partial(only_b, both, {"ns/a"}))
    await want.apply(render_full(only_b))
    assert fake.elements == want.elements and fake.chains == want.chains


async def test_full_sync_over_a_loaded_table_drops_stale_objects_and_keeps_affinity_sets():
    aff = svc(name="s1", cluster_ip="172.30.1.1", ports=HTTP, sessionAffinity="ClientIP")
    services, slices = _services(3)
    before = build([aff] + services[1:], slices, ctx(), NODE)
    fake = FakeNft()
    await fake.apply(render_full(before))
    aff_sets = set(before.affinity_sets())
    for name in aff_sets:
        fake.elements[name].add("10.0.3.3")  # a client the kernel remembered
    fake.chains["svc-foreign"] = ["drop"]
    after = build([aff] + services[1:2], slices, ctx(), NODE)  # s3 is gone
    text = render_full(after, await fake.names("podnet"))
    assert "delete table" not in text
    await fake.apply(text)
    want = FakeNft()
    await want.apply(render_full(after))
    assert fake.chains == want.chains  # s3's chains and the foreign chain are gone
    assert {k: v for k, v in fake.elements.items() if k not in aff_sets} == {k: v for k, v in want.elements.items() if k not in aff_sets}
    assert all(fake.elements[n] == {"10.0.3.3"} for n in aff_sets)  # entries kept


def test_affinity_timeout_is_part_of_the_set_name():
    slices = [slice_(service="s1", endpoints=[ep("10.0.1.1")], ports=HTTP_EP)]
    names = [set(build([svc(name="s1", cluster_ip="172.30.1.1", ports=HTTP, sessionAffinity="ClientIP",
                            sessionAffinityConfig={"clientIP": {"timeoutSeconds": t}})], slices, ctx(), NODE).affinity_sets())
             for t in (60, 120)]
    assert names[0].isdisjoint(names[1]) and all(n.endswith("-60") for n in names[0])


def test_parse_names_reads_only_podnets_table():
    from podnet.proxy.nft_run import parse_names

    listing = "table ip podnet {\n\tchain a {\n\t}\n\tchain b {\n\t\ttype nat hook output priority -100; policy accept;\n\t}\n}\ntable ip other {\n\tchain c {\n\t}\n}\n"
    assert parse_names(listing, "podnet", "chain") == {"a", "b"}
    assert parse_names(listing, "other", "chain") == {"c"}


@pytest.mark.parametrize("drop_invalid,want", [
    pytest.param(True, ("ct state invalid drop", "ct state new jump service-endpoints-check",
                        "meta mark & 0x4000 == 0x4000 accept", "ct state established,related accept"), id="drop-invalid"),
    pytest.param(False, ("ct state new jump service-endpoints-check",
                         "meta mark & 0x4000 == 0x4000 accept", "ct state established,related accept"), id="keep-invalid"),
])
def test_forward_chain_is_the_iptables_modes_forward_rules(drop_invalid, want):
    from podnet.proxy.nft_rules import fixed_chains

    assert fixed_chains(ctx(drop_invalid=drop_invalid))["filter-forward"] == want


async def test_health_check_node_port_is_accepted_and_follows_the_service():
    lb = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000, ports=((80, "TCP", "http", 30080),))
    st = build([lb], [], ctx(), NODE)
    assert ("health-check-nodeports", "32000") in st.element_map()
    fake = FakeNft()
    await fake.apply(render_full(st))
    assert fake.elements["health-check-nodeports"] == {"32000"}
    assert "tcp dport @health-check-nodeports accept" in fake.chains["filter-input"]
    await fake.apply(render_partial(build([], [], ctx(), NODE), st, {"ns/svc"}))
    assert fake.elements["health-check-nodeports"] == set()


class CountingNft(FakeNft):
    """FakeNft that counts the census calls that dumped the table."""

    dumps = 0

    async def census(self, table, known_gen, sets, chains, digest=frozenset()):
        c = await super().census(table, known_gen, sets, chains, digest)
        self.dumps += c.chains is not None
        return c


async def test_unchanged_table_costs_one_generation_read_per_period():
    fake = CountingNft()
    services, slices = _services(3)
    d, fam, si, ei = daemon_with(fake, services, slices)
    assert await d.sync_once()
    assert await fam.canary_ok() and fake.dumps == 1  # podnet's own write changed the generation: one dump
    assert await fam.canary_ok() and await fam.canary_ok() and fake.dumps == 1


@pytest.mark.parametrize("damage,full", [
    pytest.param(lambda fake, svc: fake.flush_chain(svc), False, id="service-chain-flushed"),
    pytest.param(lambda fake, svc: fake.chains.pop(svc), False, id="service-chain-deleted"),
    pytest.param(lambda fake, svc: fake.chains[svc].append("drop"), False, id="rule-added-to-service-chain"),
    pytest.param(lambda fake, svc: fake.elements[MAP_SERVICE_IPS].pop(), True, id="map-element-deleted"),
    pytest.param(lambda fake, svc: fake.flush_chain("nat-prerouting"), True, id="base-chain-flushed"),
    pytest.param(lambda fake, svc: fake.delete_table(), True, id="table-deleted"),
])
async def test_foreign_damage_found_in_one_period_and_repaired(damage, full):
    fake = CountingNft()
    services, slices = _services(4)
    d, fam, si, ei = daemon_with(fake, services, slices)
    assert await d.sync_once() and await fam.canary_ok()
    svc2 = service_chain_names("ns/s2:http", "TCP")[0]
    damage(fake, svc2)
    fake.generation += 1
    assert not await fam.canary_ok()
    assert await d.sync_once()
    assert d.proxier.last_reports[0].full == full
    if not full:  # only the damaged chain was written
        assert svc2 in fake.texts[-1] and all(
            service_chain_names(f"ns/{o}:http", "TCP")[0] not in fake.texts[-1] for o in ("s1", "s3", "s4"))
    want = FakeNft()
    await want.apply(render_full(build(services, slices, ctx(), NODE)))
    assert fake.chains == want.chains and fake.elements == want.elements
    assert await fam.canary_ok()


async def test_counting_every_chain_keeps_to_its_time_budget():
    now = [0.0]
    fake = CountingNft()
    services, slices = _services(3)
    d, fam, si, ei = daemon_with(fake, services, slices, wall=lambda: now[0])
    assert await d.sync_once()
    real_census = fake.census

    async def slow_census(table, known_gen, sets, chains, digest=frozenset()):
        now[0] += 1.0  # every census takes one second
        return await real_census(table, known_gen, sets, chains, digest)

    fake.census = slow_census
    assert await fam.canary_ok()  # counted everything: next full count 1 s / CHECK_BUDGET later
    svc1 = service_chain_names("ns/s1:http", "TCP")[0]
    fake.flush_chain(svc1)
    assert await fam.canary_ok()  # within the budget only the fixed chains and elements are counted
    now[0] = fam.next_full_check
    assert not await fam.canary_ok() and fam.repair == {svc1}
    fake.delete_table()
    assert not await fam.canary_ok() and fam.need_full  # a deleted table is seen by the cheap check too


@pytest.mark.parametrize("slice_size,services,within", [
    pytest.param(1024, 4, 1, id="small-table-one-period"),
    pytest.param(3, 8, 7, id="rotating-slice-of-three-of-21-chains"),
])
async def test_rule_replaced_keeping_every_count_found_within_the_rotation(monkeypatch, slice_size, services, within):
    """A foreign rule that replaces one of podnet's (every count unchanged) is found by the content
    digest of its chain within ceil(chains / DIGEST_SLICE) periods, and only that chain is rewritten."""
    monkeypatch.setattr("podnet.proxy.nft_proxier.DIGEST_SLICE", slice_size)
    fake = CountingNft()
    svcs, slices = _services(services)
    d, fam, si, ei = daemon_with(fake, svcs, slices)
    assert await d.sync_once() and await fam.canary_ok()  # learns every chain's digest
    assert await fam.canary_ok()
    chains = len(fam.applied.chains())
    assert within == -(-chains // slice_size)
    victim = service_chain_names(f"ns/s{services}:http", "TCP")[0]
    good = fake.chains[victim][0]
    fake.replace_rule(victim, 0, good.replace("dnat to 10.0.", "dnat to 10.9."))
    results = [await fam.canary_ok() for _ in range(within)]
    assert results.count(False) == 1, results
    assert fam.repair == {victim}
    assert await d.sync_once() and not d.proxier.last_reports[0].full
    assert fake.chains[victim][0] == good
    assert victim in fake.texts[-1] and all(c not in fake.texts[-1] for c in fam.applied.chains() if c != victim)
    assert all([await fam.canary_ok() for _ in range(within + 1)])


async def test_rule_count_metrics_follow_the_table():
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, {"ip_family": "IPv4", **labels})

    fake = FakeNft()
    svcs, slices = _services(3)
    d, fam, si, ei = daemon_with(fake, svcs, slices)
    assert await d.sync_once()
    rules = sum(len(r) for r in fake.chains.values())
    assert value("podnet_proxy_sync_proxy_rules_nftables_objects", type="rule") == rules
    assert value("podnet_proxy_sync_proxy_rules_nftables_objects", type="chain") == len(fake.chains)
    assert value("podnet_proxy_sync_proxy_rules_nftables_last") == rules
    for name, items in fake.elements.items():
        assert value("podnet_proxy_sync_proxy_rules_nftables_elements", set=name) == len(items), name
    ei.set(slice_(service="s2", endpoints=[ep("10.0.2.1")], ports=HTTP_EP, name=slices[1].name))
    assert await d.sync_once() and not d.proxier.last_reports[0].full
    assert value("podnet_proxy_sync_proxy_rules_nftables_objects", type="rule") == sum(len(r) for r in fake.chains.values()) == rules - 2
    assert value("podnet_proxy_sync_proxy_rules_nftables_last") == 1
    si.delete("ns/s3")
    assert await d.sync_once()
    assert value("podnet_proxy_sync_proxy_rules_nftables_objects", type="chain") == len(fake.chains)
    for name, items in fake.elements.items():
        assert value("podnet_proxy_sync_proxy_rules_nftables_elements", set=name) == len(items), name


NP_LOCAL = ((80, "TCP", "http", 30080),)


@pytest.mark.parametrize("service,packet,masq", [
    pytest.param(svc(ports=HTTP, internalTrafficPolicy="Local"), Packet("203.0.113.9", "172.30.0.41", 80), True,
                 id="itp-local-clusterip-from-outside-cidr-masqueraded"),
    pytest.param(svc(ports=HTTP), Packet("10.0.3.3", "172.30.0.41", 80), False, id="clusterip-from-pod-not-masqueraded"),
    pytest.param(svc(ports=NP_LOCAL, type="NodePort", externalTrafficPolicy="Local", internalTrafficPolicy="Local"),
                 Packet("203.0.113.9", NODE_IP, 30080), False, id="etp-and-itp-local-nodeport-keeps-client-ip"),
    pytest.param(svc(ports=NP_LOCAL, type="NodePort"), Packet("203.0.113.9", NODE_IP, 30080), True,
                 id="nodeport-cluster-policy-masqueraded"),
])
def test_cluster_ip_masquerade_is_scoped_to_the_cluster_ip(service, packet, masq):
    """The @cluster-ips rule marks ClusterIP traffic only: traffic that reaches an internal chain through a
    NodePort keeps the ext chain's policy (eTP Local keeps the client's address, as kube-proxy)."""
    fake = FakeNft()
    asyncio.run(fake.apply(render_full(build([service], [slice_(endpoints=[ep("10.0.1.1", node=NODE)], ports=HTTP_EP)], ctx(), NODE))))
    got = NftTracer(fake.chains, fake.elements, ctx().node_ips).trace(packet)
    assert (got.verdict, got.endpoints, got.masq) == ("ACCEPT", ("10.0.1.1:8080",), masq)
