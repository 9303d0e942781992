"""Packet-flow tables: services -> rendered rules -> FakeIptables -> tracer verdicts.

Each case names one behaviour of kube-proxy's iptables mode that podnet must match.
"""

from __future__ import annotations

import pytest
from podnet.proxy.testing import NODE, NODE_IP, ctx, ep, program, slice_, svc

from podnet.proxy.trace import Packet

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


@pytest.mark.parametrize("services,slices,ctx_kw,pkt,verdict,endpoints,masq", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_packet_flow(services, slices, ctx_kw, pkt, verdict, endpoints, masq):
    _, tracer, _ = program(services, slices, ctx(**ctx_kw))
    r = tracer.trace(pkt)
    assert (r.verdict, r.endpoints, r.masq) == (verdict, endpoints, masq)


def test_session_affinity_sticks_and_records():
    s = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}})
    _, tracer, text = program([s], [slice_(endpoints=two)])
    fresh = tracer.trace(Packet(POD, CIP, 80))
    assert fresh.endpoints == BOTH and len(fresh.recent_set) == 2
    assert "--rcheck --seconds 300 --reap" in text
    remembered = next(name for name in fresh.recent_set)
    again = tracer.trace(Packet(POD, CIP, 80, recent=frozenset({remembered})))
    assert len(again.endpoints) == 1 and again.recent_set == (remembered,)


def test_balancing_probabilities_are_uniform():
    _, _, text = program([svc()], [slice_(endpoints=[ep(f"10.0.1.{i}") for i in range(1, 5)])])
    probs = [ln.split("--probability ")[1].split()[0] for ln in text.splitlines() if "--probability" in ln]
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000"]
