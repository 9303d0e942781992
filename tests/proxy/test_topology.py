"""Topology-aware routing (zone hints), as kube-proxy's CategorizeEndpoints/canUseTopology.

Tables go through the real parsers (podnet.kube.objects) and the proxy's own model, so a
case covers the EndpointSlice/Service fields, the opt-in rule and the selection together.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from podnet.kube.objects import InvalidObject, parse_endpoint_slice, parse_node, parse_service
from podnet.kube.testing import FakeClock, FakeInformer
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.endpoints import categorize, use_topology
from podnet.proxy.model import endpoints_by_port, service_ports, wants_topology
from podnet.proxy.nft_proxier import NftFamilyProxier
from podnet.proxy.nft_trace import NftTracer
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.testing import NODE, FakeIptables, FakeNft, ctx, ep, slice_, svc
from podnet.proxy.trace import Packet, Tracer

MODE = {"service.kubernetes.io/topology-mode": "Auto"}
HINTS = {"service.kubernetes.io/topology-aware-hints": "auto"}
A, B = "zone-a", "zone-b"


# ---------------------------------------------------------------- parsing (kube/objects.py)
def _slice_raw(endpoint: dict) -> dict:
    return {
        "metadata": {"name": "s", "namespace": "ns", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "endpoints": [endpoint],
        "ports": [{"port": 80, "protocol": "TCP", "name": "p80"}],
    }


def test_zone_hints_parsed():
    sl = parse_endpoint_slice(_slice_raw(ep("10.0.1.1", zones=(A, B))))
    assert sl.endpoints[0].zone_hints == (A, B)
    assert parse_endpoint_slice(_slice_raw(ep("10.0.1.1"))).endpoints[0].zone_hints == ()
    assert parse_endpoint_slice(_slice_raw({**ep("10.0.1.1"), "hints": {}})).endpoints[0].zone_hints == ()


BAD_HINTS = [
    ("hints-not-an-object", ["zone-a"]),
    ("for-zones-not-a-list", {"forZones": "zone-a"}),
    ("zone-entry-not-an-object", {"forZones": ["zone-a"]}),
    ("zone-name-missing", {"forZones": [{}]}),
    ("zone-name-empty", {"forZones": [{"name": ""}]}),
    ("zone-name-not-a-label-value", {"forZones": [{"name": "zone a\"; -j ACCEPT"}]}),
    ("zone-name-too-long", {"forZones": [{"name": "z" * 64}]}),
    ("more-than-8-zones", {"forZones": [{"name": f"z{i}"} for i in range(9)]}),
]


@pytest.mark.parametrize("hints", [c[1] for c in BAD_HINTS], ids=[c[0] for c in BAD_HINTS])
def test_bad_zone_hints_reject_the_slice(hints):
    with pytest.raises(InvalidObject, match="hints"):
        parse_endpoint_slice(_slice_raw({**ep("10.0.1.1"), "hints": hints}))


ANNOTATIONS = [
    ("none", {}, ""),
    ("topology-mode", {"service.kubernetes.io/topology-mode": "Auto"}, "Auto"),
    ("deprecated-hints", {"service.kubernetes.io/topology-aware-hints": "auto"}, "auto"),
    ("deprecated-wins-like-kube-proxy", {"service.kubernetes.io/topology-aware-hints": "Disabled",
                                         "service.kubernetes.io/topology-mode": "Auto"}, "Disabled"),
    ("empty-deprecated-falls-through", {"service.kubernetes.io/topology-aware-hints": "",
                                        "service.kubernetes.io/topology-mode": "Auto"}, "Auto"),
    ("implementation-specific", {"service.kubernetes.io/topology-mode": "example.com/nearest"}, "example.com/nearest"),
]


@pytest.mark.parametrize("annotations,want", [c[1:] for c in ANNOTATIONS], ids=[c[0] for c in ANNOTATIONS])
def test_topology_annotation(annotations, want):
    assert svc(annotations=annotations).topology_mode == want


def test_malformed_topology_annotation_ignored_and_counted():
    labels = {"resource": "services", "field": "service.kubernetes.io/topology-mode"}
    before = REGISTRY.get_sample_value("podnet_kube_ignored_fields_total", labels) or 0.0
    s = svc(annotations={"service.kubernetes.io/topology-mode": "Auto; rm -rf"})
    assert s.topology_mode == "" and s.cluster_ip == "172.30.0.41"  # the Service itself is kept
    assert REGISTRY.get_sample_value("podnet_kube_ignored_fields_total", labels) == before + 1


def test_traffic_distribution_parsed_and_bad_rejected():
    assert svc(trafficDistribution="PreferClose").traffic_distribution == "PreferClose"
    assert svc().traffic_distribution == ""
    for bad in ("Prefer Close", 7, "x" * 70):
        with pytest.raises(InvalidObject, match="trafficDistribution"):
            svc(trafficDistribution=bad)


def test_topology_fields_take_part_in_equality():
    """An opt-in change is a Service update (informers drop updates that compare equal)."""
    assert svc() == svc() and svc(annotations=MODE) != svc() and svc(trafficDistribution="PreferClose") != svc()
    plain = parse_service({"metadata": {"name": "n", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.9"}})
    assert (plain.topology_mode, plain.traffic_distribution) == ("", "")
    hinted = parse_endpoint_slice(_slice_raw(ep("10.0.1.1", zones=(A,))))
    assert hinted != parse_endpoint_slice(_slice_raw(ep("10.0.1.1", zones=(B,))))


OPT_IN = [
    ("nothing", {}, {}, False),
    ("topology-mode-auto", MODE, {}, True),
    ("deprecated-annotation-auto", HINTS, {}, True),
    ("any-value-but-disabled", {"service.kubernetes.io/topology-mode": "example.com/nearest"}, {}, True),
    ("disabled", {"service.kubernetes.io/topology-mode": "disabled"}, {}, False),
    ("Disabled", {"service.kubernetes.io/topology-mode": "Disabled"}, {}, False),
    ("traffic-distribution-prefer-close", {}, {"trafficDistribution": "PreferClose"}, True),
    ("traffic-distribution-prefer-same-zone", {}, {"trafficDistribution": "PreferSameZone"}, True),
    ("traffic-distribution-unknown", {}, {"trafficDistribution": "example.com/other"}, False),
]


@pytest.mark.parametrize("annotations,spec,want", [c[1:] for c in OPT_IN], ids=[c[0] for c in OPT_IN])
def test_wants_topology(annotations, spec, want):
    s = svc(annotations=annotations, **spec)
    assert wants_topology(s) is want
    assert all(sp.topology is want for sp in service_ports(s, 4))


# ---------------------------------------------------------------- selection (proxy/endpoints.py)
def select(service, endpoints, zone, family=4, node=NODE):
    """(cluster, local, internal, external, has_any) as address:port strings, through the real model."""
    fam = "IPv4" if family == 4 else "IPv6"
    sp = service_ports(service, family)[0]
    eps = endpoints_by_port([slice_(endpoints=endpoints, family=fam)], family, node).get(("p80", "TCP"), ())
    c = categorize(sp, eps, zone)
    s = lambda es: tuple(str(e) for e in es)  # noqa: E731
    return s(c.cluster), s(c.local), s(c.internal), s(c.external), c.has_any


HINTED = [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", zones=(B,)), ep("10.0.1.3", zones=(A,))]
ALL3 = ("10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80")
IN_A = ("10.0.1.1:80", "10.0.1.3:80")
NP = ((80, "TCP", "p80", 30080),)

SELECT = [
    # name, service, endpoints, node zone, cluster, local, internal, external, has_any
    ("hints-for-my-zone", svc(annotations=MODE), HINTED, A, IN_A, (), IN_A, IN_A, True),
    ("hints-for-the-other-zone", svc(annotations=MODE), HINTED, B, ("10.0.1.2:80",), (), ("10.0.1.2:80",), ("10.0.1.2:80",), True),
    ("endpoint-hinted-for-two-zones", svc(annotations=MODE), [ep("10.0.1.1", zones=(A, B)), ep("10.0.1.2", zones=(B,))], A,
     ("10.0.1.1:80",), (), ("10.0.1.1:80",), ("10.0.1.1:80",), True),
    ("deprecated-annotation", svc(annotations=HINTS), HINTED, A, IN_A, (), IN_A, IN_A, True),
    ("traffic-distribution-prefer-close", svc(trafficDistribution="PreferClose"), HINTED, A, IN_A, (), IN_A, IN_A, True),
    ("none-for-my-zone-uses-all", svc(annotations=MODE), HINTED, "zone-c", ALL3, (), ALL3, ALL3, True),
    ("one-endpoint-without-hints-uses-all", svc(annotations=MODE),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", zones=(B,)), ep("10.0.1.3")], A, ALL3, (), ALL3, ALL3, True),
    ("not-opted-in-uses-all", svc(), HINTED, A, ALL3, (), ALL3, ALL3, True),
    ("opted-out-disabled-uses-all", svc(annotations={"service.kubernetes.io/topology-mode": "Disabled"}), HINTED, A,
     ALL3, (), ALL3, ALL3, True),
    ("node-without-zone-uses-all", svc(annotations=MODE), HINTED, "", ALL3, (), ALL3, ALL3, True),
    ("unhinted-unready-endpoint-not-looked-at", svc(annotations=MODE),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", zones=(B,)), ep("10.0.1.3", ready=False, serving=False)], A,
     ("10.0.1.1:80",), (), ("10.0.1.1:80",), ("10.0.1.1:80",), True),
    # terminating endpoints: never selected next to ready ones; when nothing is ready the
    # serving-terminating fallback is taken from every zone (kube-proxy ignores topology there)
    ("terminating-in-my-zone-not-used-while-ready-elsewhere", svc(annotations=MODE),
     [ep("10.0.1.1", ready=False, serving=True, terminating=True, zones=(A,)), ep("10.0.1.2", zones=(B,))], A,
     ("10.0.1.2:80",), (), ("10.0.1.2:80",), ("10.0.1.2:80",), True),
    ("terminating-fallback-ignores-zones", svc(annotations=MODE),
     [ep("10.0.1.1", ready=False, serving=True, terminating=True, zones=(A,)),
      ep("10.0.1.2", ready=False, serving=True, terminating=True, zones=(B,))], A,
     ("10.0.1.1:80", "10.0.1.2:80"), (), ("10.0.1.1:80", "10.0.1.2:80"), ("10.0.1.1:80", "10.0.1.2:80"), True),
    ("terminating-ready-in-zone-preferred", svc(annotations=MODE),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", ready=False, serving=True, terminating=True, zones=(A,)),
      ep("10.0.1.3", zones=(B,))], A, ("10.0.1.1:80",), (), ("10.0.1.1:80",), ("10.0.1.1:80",), True),
    # Local policies take precedence over hints for the traffic they govern
    ("itp-local-internal-ignores-zones", svc(annotations=MODE, internalTrafficPolicy="Local"),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", node=NODE, zones=(B,))], A,
     ("10.0.1.1:80",), ("10.0.1.2:80",), ("10.0.1.2:80",), ("10.0.1.1:80",), True),
    ("itp-local-no-local-endpoint-drops-not-zone", svc(annotations=MODE, internalTrafficPolicy="Local"), HINTED, A,
     IN_A, (), (), IN_A, True),
    ("itp-local-nodeport-external-narrowed-to-zone", svc(annotations=MODE, internalTrafficPolicy="Local", type="NodePort", ports=NP),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", node=NODE, zones=(B,))], A,
     ("10.0.1.1:80",), ("10.0.1.2:80",), ("10.0.1.2:80",), ("10.0.1.1:80",), True),
    ("etp-local-external-ignores-zones", svc(annotations=MODE, externalTrafficPolicy="Local", type="NodePort", ports=NP),
     [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", node=NODE, zones=(B,))], A,
     ("10.0.1.1:80",), ("10.0.1.2:80",), ("10.0.1.1:80",), ("10.0.1.2:80",), True),
    ("no-endpoints", svc(annotations=MODE), [], A, (), (), (), (), False),
]


@pytest.mark.parametrize("service,endpoints,zone,cluster,local,internal,external,has_any",
                         [c[1:] for c in SELECT], ids=[c[0] for c in SELECT])
def test_select(service, endpoints, zone, cluster, local, internal, external, has_any):
    assert select(service, endpoints, zone) == (cluster, local, internal, external, has_any)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-half", "ipv6-half"])
def test_dual_stack_each_family_narrowed(family):
    s = svc(annotations=MODE, cluster_ip=["172.30.0.41", "fd00:30::41"], ipFamilies=["IPv4", "IPv6"])
    if family == 4:
        eps = [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", zones=(B,))]
        want = ("10.0.1.1:80",)
    else:
        eps = [ep("fd00:1::1", zones=(A,)), ep("fd00:1::2", zones=(B,))]
        want = ("[fd00:1::1]:80",)
    assert select(s, eps, A, family)[0] == want


def test_dual_stack_families_decide_independently():
    """Each family's endpoints are categorized on their own, as kube-proxy's per-family proxiers do:
    the IPv6 slice lacking hints does not stop the IPv4 half from using its zone."""
    s = svc(annotations=MODE, cluster_ip=["172.30.0.41", "fd00:30::41"], ipFamilies=["IPv4", "IPv6"])
    assert select(s, [ep("10.0.1.1", zones=(A,)), ep("10.0.1.2", zones=(B,))], A, 4)[0] == ("10.0.1.1:80",)
    assert select(s, [ep("fd00:1::1"), ep("fd00:1::2", zones=(B,))], A, 6)[0] == ("[fd00:1::1]:80", "[fd00:1::2]:80")


def test_use_topology_needs_every_ready_endpoint_hinted():
    sp = service_ports(svc(annotations=MODE), 4)[0]
    eps = endpoints_by_port([slice_(endpoints=HINTED)], 4, NODE)[("p80", "TCP")]
    assert use_topology(sp, eps, A) and not use_topology(sp, eps, "")
    assert categorize(sp, eps, A).topology and not categorize(sp, eps, "zone-c").topology
    assert not use_topology(sp, eps + (eps[0]._replace(ip="10.0.1.9", zones=()),), A)


# ---------------------------------------------------------------- the daemon learns its zone from its Node
def node(zone: str | None, name: str = NODE):
    labels = {"kubernetes.io/hostname": name}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
    return parse_node({"metadata": {"name": name, "labels": labels}})


def _trace(fake: FakeIptables | FakeNft):
    pkt = Packet("10.0.3.3", "172.30.0.41", 80)
    if isinstance(fake, FakeNft):
        return NftTracer(fake.chains, fake.elements, ("192.168.0.2",)).trace(pkt)
    return Tracer(fake.tables, ("192.168.0.2",)).trace(pkt)


def _family(mode: str, context):
    """(fake, family proxier) of ``mode``: the daemon tables below run against both proxy modes."""
    if mode == "nftables":
        fake = FakeNft()
        return fake, NftFamilyProxier(fake, context, NODE)
    fake = FakeIptables()
    return fake, FamilyProxier(fake, context, NODE)


MODES = pytest.mark.parametrize("mode", ["iptables", "nftables"])


@MODES
async def test_daemon_follows_node_zone_label(mode):
    fake, fam = _family(mode, ctx())
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    services, slices, nodes = FakeInformer(), FakeInformer(), FakeInformer()
    d.attach(services, slices, nodes)
    requests = []
    d.runner.request = lambda: requests.append(1)  # type: ignore[method-assign]
    services.set(svc(annotations=MODE))
    services.set(svc(name="plain", cluster_ip="172.30.0.42"))
    slices.set(slice_(endpoints=HINTED, name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    assert _trace(fake).endpoints == ALL3  # the Node is not known yet: no zone, every endpoint

    n_before = len(requests)
    nodes.set(node(A))
    assert len(requests) > n_before and fam.ctx.zone == A
    await d.sync_once()
    assert _trace(fake).endpoints == IN_A
    rep = d.proxier.last_reports[0]
    assert not rep.full
    if mode == "iptables":
        assert fake.restores[-1].count("-A PODNET-SEP-") == 0  # SEP chains exist already

    n_before = len(requests)
    nodes.set(node(A))  # same labels: nothing to do
    nodes.set(parse_node({"metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": A, "x": "y"}}}))
    assert len(requests) == n_before

    nodes.set(node(B))
    await d.sync_once()
    assert _trace(fake).endpoints == ("10.0.1.2:80",)

    nodes.set(node(None))  # label removed: no zone, no topology
    await d.sync_once()
    assert _trace(fake).endpoints == ALL3

    nodes.set(node(A))
    await d.sync_once()
    nodes.delete(NODE)  # the Node is gone: kube-proxy forgets its labels
    assert fam.ctx.zone == "" and d.health.node_deleting
    await d.sync_once()
    assert _trace(fake).endpoints == ALL3


@MODES
async def test_opt_in_and_hint_changes_resync(mode):
    fake, fam = _family(mode, ctx(zone=A))
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    services, slices = FakeInformer(), FakeInformer()
    d.attach(services, slices)
    services.set(svc())
    slices.set(slice_(endpoints=HINTED, name="a"))
    services.synced(), slices.synced()
    await d.sync_once()
    assert _trace(fake).endpoints == ALL3  # hints present, but the Service has not opted in
    services.set(svc(annotations=MODE))
    await d.sync_once()
    assert _trace(fake).endpoints == IN_A
    slices.set(slice_(endpoints=[ep("10.0.1.1", zones=(B,)), ep("10.0.1.2", zones=(A,)), ep("10.0.1.3", zones=(B,))], name="a"))
    await d.sync_once()
    assert _trace(fake).endpoints == ("10.0.1.2:80",)
    services.set(svc(annotations={"service.kubernetes.io/topology-mode": "Disabled"}))
    await d.sync_once()
    assert _trace(fake).endpoints == ALL3


async def test_once_waits_for_the_node_zone(monkeypatch):
    import asyncio

    from podnet.proxy import daemon as daemon_mod

    class LateNode(FakeInformer):
        """Lists its Node only some loop turns after once() started the informers."""

        async def run(self) -> None:
            for _ in range(10):
                await asyncio.sleep(0)
            self.set(node(A))
            self.synced()
            await asyncio.Event().wait()

    class NeverNode(FakeInformer):
        pass  # run() never lists

    for nodes, want in ((LateNode(), IN_A), (NeverNode(), ALL3)):
        fake = FakeIptables()
        d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""),
                   [FamilyProxier(fake, ctx(), NODE)], FakeClock())
        services, slices = FakeInformer(), FakeInformer()
        d.attach(services, slices, nodes)
        services.set(svc(annotations=MODE))
        slices.set(slice_(endpoints=HINTED, name="a"))
        services.synced(), slices.synced()
        monkeypatch.setattr(daemon_mod, "ONCE_NODE_WAIT", 30.0 if want == IN_A else 0.01)
        assert await d.once(timeout=30)
        assert _trace(fake).endpoints == want
