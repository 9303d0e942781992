"""Packet-flow tables, run against both proxy modes with the same expected outcomes.

iptables mode: services -> rendered restore text -> FakeIptables -> trace.Tracer.
nftables mode: services -> rendered ``nft -f`` text -> FakeNft -> nft_trace.NftTracer.
Each case names one behaviour of kube-proxy's iptables mode that podnet must match;
:data:`NFT_DIFFERS` names the cases where the nftables mode differs on purpose, and why.
"""

from __future__ import annotations

import asyncio

import pytest
from podnet.proxy.nft_proxier import build as nft_build
from podnet.proxy.nft_render import render_full as nft_render_full
from podnet.proxy.nft_trace import NftTracer
from podnet.proxy.testing import NODE, NODE_IP, FakeNft, ctx, ep, program, slice_, svc

from podnet.proxy.trace import Packet

MODES = ("iptables", "nftables")


def program_mode(mode, services, slices, context=None):
    """(tracer, text) for ``mode``: the rules rendered, loaded into that mode's fake, and a tracer over it."""
    context = context or ctx()
    if mode == "iptables":
        _, tracer, text = program(services, slices, context)
        return tracer, text
    fake = FakeNft(context.family)
    text = nft_render_full(nft_build(services, slices, context, NODE))
    asyncio.run(fake.apply(text))
    return NftTracer(fake.chains, fake.elements, context.node_ips), text

CIP = "172.30.0.41"
POD = "10.0.3.3"  # a pod in the cluster CIDR
OUT = "203.0.113.9"  # outside the cluster
LB = "1.2.3.4"
EXT_IP = "192.0.2.10"

two = [ep("10.0.1.1"), ep("10.0.1.2")]
BOTH = ("10.0.1.1:80", "10.0.1.2:80")

CASES = [
    # --- ClusterIP
    ("clusterip-balances-over-ready", [svc()], [slice_(endpoints=two)], {}, Packet(POD, CIP, 80), "ACCEPT", BOTH, False),
    ("clusterip-wrong-port-untouched", [svc()], [slice_(endpoints=two)], {}, Packet(POD, CIP, 81), "ACCEPT", (), False),
    ("clusterip-from-outside-cidr-masq", [svc()], [slice_(endpoints=two)], {}, Packet(OUT, CIP, 80), "ACCEPT", BOTH, True),
    ("clusterip-masquerade-all", [svc()], [slice_(endpoints=two)], {"masquerade_all": True}, Packet(POD, CIP, 80), "ACCEPT", BOTH, True),
    ("clusterip-no-cluster-cidr-no-masq", [svc()], [slice_(endpoints=two)], {"cluster_cidrs": ()}, Packet(OUT, CIP, 80), "ACCEPT", BOTH, False),
    ("hairpin-masqueraded", [svc()], [slice_(endpoints=[ep("10.0.1.1")])], {}, Packet("10.0.1.1", CIP, 80), "ACCEPT", ("10.0.1.1:80",), True),
    ("node-local-client", [svc()], [slice_(endpoints=[ep("10.0.1.1")])], {}, Packet(NODE_IP, CIP, 80, local_origin=True), "ACCEPT", ("10.0.1.1:80",), True),
    ("udp-clusterip", [svc(ports=((53, "UDP", "dns"),))], [slice_(endpoints=[ep("10.0.1.1")], ports=((5353, "UDP", "dns"),))], {}, Packet(POD, CIP, 53, "udp"), "ACCEPT", ("10.0.1.1:5353",), False),
    ("udp-port-does-not-match-tcp", [svc(ports=((53, "UDP", "dns"),))], [slice_(endpoints=[ep("10.0.1.1")], ports=((53, "UDP", "dns"),))], {}, Packet(POD, CIP, 53, "tcp"), "ACCEPT", (), False),
    ("sctp-clusterip", [svc(ports=((9, "SCTP", "s"),))], [slice_(endpoints=[ep("10.0.1.1")], ports=((9, "SCTP", "s"),))], {}, Packet(POD, CIP, 9, "sctp"), "ACCEPT", ("10.0.1.1:9",), False),
    ("named-target-port-via-slice", [svc(ports=((80, "TCP", "http"),))], [slice_(endpoints=[ep("10.0.1.1")], ports=((8080, "TCP", "http"),))], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:8080",), False),
    ("no-endpoints-reject", [svc()], [], {}, Packet(POD, CIP, 80), "REJECT", (), False),
    ("only-unready-endpoints-reject", [svc()], [slice_(endpoints=[ep("10.0.1.1", ready=False, serving=False)])], {}, Packet(POD, CIP, 80), "REJECT", (), False),
    ("terminating-used-when-none-ready", [svc()], [slice_(endpoints=[ep("10.0.1.1", ready=False, serving=True, terminating=True)])], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:80",), False),
    ("terminating-ignored-when-some-ready", [svc()], [slice_(endpoints=[ep("10.0.1.1", ready=False, serving=True, terminating=True), ep("10.0.1.2")])], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.2:80",), False),
    ("endpoints-merged-across-slices", [svc()], [slice_(endpoints=[ep("10.0.1.1")]), slice_(endpoints=[ep("10.0.1.2"), ep("10.0.1.1")])], {}, Packet(POD, CIP, 80), "ACCEPT", BOTH, False),
    # --- internalTrafficPolicy Local
    ("itp-local-uses-local-only", [svc(internalTrafficPolicy="Local")], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")])], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:80",), False),
    ("itp-local-no-local-drop", [svc(internalTrafficPolicy="Local")], [slice_(endpoints=two)], {}, Packet(POD, CIP, 80), "DROP", (), False),
    ("itp-local-no-endpoints-reject", [svc(internalTrafficPolicy="Local")], [], {}, Packet(POD, CIP, 80), "REJECT", (), False),
    # --- NodePort
    ("nodeport-from-outside", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet(OUT, NODE_IP, 30080), "ACCEPT", BOTH, True),
    ("nodeport-other-port-untouched", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet(OUT, NODE_IP, 30081), "ACCEPT", (), False),
    ("nodeport-not-on-foreign-ip", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet(OUT, "192.168.0.99", 30080), "ACCEPT", (), False),
    ("nodeport-no-endpoints-reject", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [], {}, Packet(OUT, NODE_IP, 30080), "REJECT", (), False),
    ("nodeport-localhost", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet("127.0.0.1", "127.0.0.1", 30080, local_origin=True), "ACCEPT", BOTH, True),
    ("nodeport-localhost-off", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {"localhost_nodeports": False}, Packet("127.0.0.1", "127.0.0.1", 30080, local_origin=True), "ACCEPT", (), False),
    ("martian-localnet-dropped", [svc()], [slice_(endpoints=two)], {}, Packet(OUT, "127.0.0.1", 22), "DROP", (), False),
    ("nodeport-addresses-selects", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {"node_ips": (NODE_IP, "192.168.9.2"), "nodeport_cidrs": ("192.168.9.0/24",)}, Packet(OUT, "192.168.9.2", 30080), "ACCEPT", BOTH, True),
    ("nodeport-addresses-excludes", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {"node_ips": (NODE_IP, "192.168.9.2"), "nodeport_cidrs": ("192.168.9.0/24",)}, Packet(OUT, NODE_IP, 30080), "ACCEPT", (), False),
    ("nodeport-addresses-no-localhost", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {"nodeport_cidrs": ("192.168.0.0/24",)}, Packet("127.0.0.1", "127.0.0.1", 30080, local_origin=True), "ACCEPT", (), False),
    # --- externalIPs and load balancers
    ("external-ip", [svc(externalIPs=[EXT_IP])], [slice_(endpoints=two)], {}, Packet(OUT, EXT_IP, 80), "ACCEPT", BOTH, True),
    ("external-ip-no-endpoints-reject", [svc(externalIPs=[EXT_IP])], [], {}, Packet(OUT, EXT_IP, 80), "REJECT", (), False),
    ("lb-ip", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(OUT, LB, 80), "ACCEPT", BOTH, True),
    ("lb-source-range-allowed", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), loadBalancerSourceRanges=["203.0.113.0/25"], status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(OUT, LB, 80), "ACCEPT", BOTH, True),
    ("lb-source-range-denied", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), loadBalancerSourceRanges=["198.51.100.0/24"], status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(OUT, LB, 80), "DROP", (), False),
    ("lb-source-range-nodeport-bypasses", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), loadBalancerSourceRanges=["198.51.100.0/24"], status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(OUT, NODE_IP, 30080), "ACCEPT", BOTH, True),
    ("lb-source-range-with-node-ip-allows-vip", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), loadBalancerSourceRanges=["192.168.0.0/24"], status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(LB, LB, 80), "ACCEPT", BOTH, True),
    ("lb-no-endpoints-reject", [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [], {}, Packet(OUT, LB, 80), "REJECT", (), False),
    # --- externalTrafficPolicy Local
    ("etp-local-only-local-no-masq", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")])], {}, Packet(OUT, NODE_IP, 30080), "ACCEPT", ("10.0.1.1:80",), False),
    ("etp-local-pod-short-circuit", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")])], {}, Packet(POD, NODE_IP, 30080), "ACCEPT", BOTH, False),
    ("etp-local-node-local-short-circuit", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=[ep("10.0.1.2")])], {}, Packet(NODE_IP, NODE_IP, 30080, local_origin=True), "ACCEPT", ("10.0.1.2:80",), True),
    ("etp-local-no-local-drop", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet(OUT, NODE_IP, 30080), "DROP", (), False),
    ("etp-local-no-local-pod-still-served", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=two)], {}, Packet(POD, NODE_IP, 30080), "ACCEPT", BOTH, False),
    ("etp-local-clusterip-uses-all", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=[ep("10.0.1.1", node=NODE), ep("10.0.1.2")])], {}, Packet(POD, CIP, 80), "ACCEPT", BOTH, False),
    ("etp-local-lb-ip-no-local-drop", [svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000, ports=((80, "TCP", "p80", 30080),), status={"loadBalancer": {"ingress": [{"ip": LB}]}})], [slice_(endpoints=two)], {}, Packet(OUT, LB, 80), "DROP", (), False),
    ("etp-local-terminating-local-fallback", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),))], [slice_(endpoints=[ep("10.0.1.1", node=NODE, ready=False, serving=True, terminating=True), ep("10.0.1.2")])], {}, Packet(OUT, NODE_IP, 30080), "ACCEPT", ("10.0.1.1:80",), False),
    ("healthcheck-nodeport-accepted", [svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000, ports=((80, "TCP", "p80", 30080),))], [], {}, Packet(OUT, NODE_IP, 32000), "ACCEPT", (), False),
    # --- topology-aware routing: zone hints, opt-in, node zone in the context
    ("topology-hints-keep-traffic-in-zone", [svc(annotations={"service.kubernetes.io/topology-mode": "Auto"})], [slice_(endpoints=[ep("10.0.1.1", zones=("zone-a",)), ep("10.0.1.2", zones=("zone-b",))])], {"zone": "zone-a"}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:80",), False),
    ("topology-no-hint-for-zone-uses-all", [svc(annotations={"service.kubernetes.io/topology-mode": "Auto"})], [slice_(endpoints=[ep("10.0.1.1", zones=("zone-a",)), ep("10.0.1.2", zones=("zone-b",))])], {"zone": "zone-c"}, Packet(POD, CIP, 80), "ACCEPT", BOTH, False),
    ("topology-nodeport-narrowed-too", [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),), trafficDistribution="PreferClose")], [slice_(endpoints=[ep("10.0.1.1", zones=("zone-a",)), ep("10.0.1.2", zones=("zone-b",))])], {"zone": "zone-b"}, Packet(OUT, NODE_IP, 30080), "ACCEPT", ("10.0.1.2:80",), True),
    ("topology-etp-local-wins-for-nodeport", [svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "p80", 30080),), trafficDistribution="PreferClose")], [slice_(endpoints=[ep("10.0.1.1", zones=("zone-a",)), ep("10.0.1.2", node=NODE, zones=("zone-b",))])], {"zone": "zone-a"}, Packet(OUT, NODE_IP, 30080), "ACCEPT", ("10.0.1.2:80",), False),
    # --- dual stack: the IPv6 half through the same code
    ("ipv6-clusterip", [svc(cluster_ip="fd00:30::41")], [slice_(endpoints=[ep("fd00:1::1")], family="IPv6")], {"family": 6, "cluster_cidrs": ("fd00::/48",), "node_ips": ("fd00:99::2",)}, Packet("fd00:0:0:3::3", "fd00:30::41", 80), "ACCEPT", ("[fd00:1::1]:80",), False),
    ("ipv6-no-endpoints-reject", [svc(cluster_ip="fd00:30::41")], [], {"family": 6, "cluster_cidrs": ("fd00::/48",), "node_ips": ("fd00:99::2",)}, Packet("fd00:0:0:3::3", "fd00:30::41", 80), "REJECT", (), False),
    ("dual-stack-v4-half-ignores-v6-slices", [svc(cluster_ip=[CIP, "fd00:30::41"], ipFamilies=["IPv4", "IPv6"])], [slice_(endpoints=[ep("fd00:1::1")], family="IPv6"), slice_(endpoints=[ep("10.0.1.1")])], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:80",), False),
]


NFT_DIFFERS: dict[str, tuple[tuple[str, tuple[str, ...], bool], str]] = {
    "hairpin-masqueraded": (
        ("ACCEPT", ("10.0.1.1:80",), False),
        "the nftables mode masquerades hairpin traffic only for this node's endpoints (one set of "
        "endpoint pairs instead of a rule per endpoint chain): a client can only hairpin through an "
        "endpoint on its own node, and 10.0.1.1 is on node-b; hairpin-local-endpoint-masqueraded "
        "is the case that matters, and holds in both modes",
    ),
    "external-ip-no-endpoints-from-the-node": (
        ("REJECT", (), False),
        "the iptables mode checks externalIPs and load-balancer IPs without endpoints only on "
        "INPUT and FORWARD (PODNET-EXTERNAL-SERVICES), so the node's own connection leaves "
        "un-DNATed; the nftables mode checks every service IP on output too, as kube-proxy's "
        "nftables mode does (@no-endpoint-services from filter-output), and refuses it at once",
    ),
}
"""Case id -> (the nftables mode's outcome, why it differs on purpose)."""

CASES += [
    ("hairpin-local-endpoint-masqueraded", [svc()], [slice_(endpoints=[ep("10.0.1.1", node=NODE)])], {}, Packet("10.0.1.1", CIP, 80), "ACCEPT", ("10.0.1.1:80",), True),
    ("external-ip-no-endpoints-from-the-node", [svc(externalIPs=[EXT_IP])], [], {}, Packet(NODE_IP, EXT_IP, 80, local_origin=True), "ACCEPT", (), False),
    ("other-pod-to-local-endpoint-not-masqueraded", [svc()], [slice_(endpoints=[ep("10.0.1.1", node=NODE)])], {}, Packet(POD, CIP, 80), "ACCEPT", ("10.0.1.1:80",), False),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("services,slices,ctx_kw,pkt,verdict,endpoints,masq", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_packet_flow(request, mode, services, slices, ctx_kw, pkt, verdict, endpoints, masq):
    case = request.node.callspec.id.rsplit("-", 1)[0]
    tracer, _ = program_mode(mode, services, slices, ctx(**ctx_kw))
    r = tracer.trace(pkt)
    want = (verdict, endpoints, masq)
    if mode == "nftables" and case in NFT_DIFFERS:
        want = NFT_DIFFERS[case][0]
    assert (r.verdict, r.endpoints, r.masq) == want


def test_every_named_difference_is_a_case():
    assert set(NFT_DIFFERS) <= {c[0] for c in CASES}


@pytest.mark.parametrize("mode,remembers", [
    pytest.param("iptables", "--rcheck --seconds 300 --reap", id="iptables"),
    pytest.param("nftables", "flags dynamic,timeout ; timeout 300s ;", id="nftables"),
])
def test_session_affinity_sticks_and_records(mode, remembers):
    s = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}})
    tracer, text = program_mode(mode, [s], [slice_(endpoints=two)])
    fresh = tracer.trace(Packet(POD, CIP, 80))
    assert fresh.endpoints == BOTH and len(fresh.recent_set) == 2
    assert remembers in text
    remembered = next(name for name in fresh.recent_set)
    again = tracer.trace(Packet(POD, CIP, 80, recent=frozenset({remembered})))
    assert len(again.endpoints) == 1 and again.recent_set == (remembered,)


@pytest.mark.parametrize("mode,pattern,want", [
    pytest.param("iptables", "--probability ", ["0.2500000000", "0.3333333333", "0.5000000000"], id="iptables"),
    pytest.param("nftables", "numgen random mod ", ["4", "3", "2"], id="nftables"),
])
def test_balancing_probabilities_are_uniform(mode, pattern, want):
    _, text = program_mode(mode, [svc()], [slice_(endpoints=[ep(f"10.0.1.{i}") for i in range(1, 5)])])
    picks = [ln.split(pattern)[1].split()[0] for ln in text.splitlines() if pattern in ln]
    assert picks == want
