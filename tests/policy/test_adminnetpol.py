"""kube/adminnetpol.py: what the network-policy-api CRDs' schema and CEL rules refuse is refused; the rest parses."""

from __future__ import annotations

import copy

import pytest

from podnet.kube.adminnetpol import (NO_SUCH_PORT, AdminPort, parse_admin_network_policy,
                                     parse_baseline_admin_network_policy)
from podnet.kube.objects import InvalidObject

NS_Y = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}


def anp(**spec):
    base = {"priority": 10, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [NS_Y]}]}
    base.update(spec)
    return {"metadata": {"name": "p"}, "spec": base}


def with_rule(direction="ingress", **fields):
    r = {"action": "Deny", ("from" if direction == "ingress" else "to"): [NS_Y]}
    r.update(fields)
    return anp(**{direction: [r]})


def port(p):
    return with_rule(ports=[p])


def egress_peer(peer, **fields):
    return with_rule("egress", to=[peer], **fields)


BAD = [
    pytest.param(anp(priority=1001), "spec.priority", id="priority-above-1000"),
    pytest.param(anp(priority=-1), "spec.priority", id="priority-negative"),
    pytest.param(anp(priority="5"), "spec.priority", id="priority-not-integer"),
    pytest.param({"metadata": {"name": "p"}, "spec": {"subject": {"namespaces": {}}}}, "spec.priority", id="priority-missing"),
    pytest.param(anp(subject={}), "spec.subject", id="subject-empty"),
    pytest.param(anp(subject={"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}}), "spec.subject",
                 id="subject-two-fields"),
    pytest.param(anp(subject={"pods": {"podSelector": {}}}), "namespaceSelector", id="subject-pods-without-ns-selector"),
    pytest.param(anp(subject={"namespaces": {"matchExpressions": [{"key": "a", "operator": "In"}]}}), "values",
                 id="subject-selector-in-without-values"),
    pytest.param(anp(ingress=[{"action": "Deny", "from": [NS_Y]}] * 101), "spec.ingress", id="101-ingress-rules"),
    pytest.param(anp(egress=[{"action": "Deny", "to": [NS_Y]}] * 101), "spec.egress", id="101-egress-rules"),
    pytest.param(with_rule(action="Reject"), "action", id="unknown-action"),
    pytest.param(with_rule(name="n" * 101), "name", id="rule-name-over-100"),
    pytest.param(with_rule(**{"from": []}), "from", id="no-peers"),
    pytest.param(with_rule(**{"from": [NS_Y] * 101}), "from", id="101-peers"),
    pytest.param(with_rule(**{"from": [{}]}), "from[0]", id="peer-empty"),
    pytest.param(with_rule(**{"from": [{"networks": ["10.0.0.0/8"]}]}), "networks", id="networks-on-ingress"),
    pytest.param(with_rule(**{"from": [{**NS_Y, "pods": {"namespaceSelector": {}, "podSelector": {}}}]}), "from[0]",
                 id="peer-two-fields"),
    pytest.param(with_rule(ports=[]), "ports", id="ports-empty-list"),
    pytest.param(port({}), "ports[0]", id="port-empty"),
    pytest.param(port({"portNumber": {"port": 80}, "namedPort": "web"}), "ports[0]", id="port-two-fields"),
    pytest.param(port({"portNumber": {"port": 0}}), "port", id="port-zero"),
    pytest.param(port({"portNumber": {"port": 65536}}), "port", id="port-too-big"),
    pytest.param(port({"portNumber": {"port": 80, "protocol": "ICMP"}}), "protocol", id="port-bad-protocol"),
    pytest.param(port({"portRange": {"start": 90, "end": 80}}), "portRange", id="range-start-after-end"),
    pytest.param(port({"portRange": {"start": 80, "end": 80}}), "portRange", id="range-start-equals-end"),
    pytest.param(egress_peer({"networks": []}), "networks", id="networks-empty"),
    pytest.param(egress_peer({"networks": [f"10.0.{i}.0/24" for i in range(26)]}), "networks", id="26-networks"),
    pytest.param(egress_peer({"networks": ["10.0.0.0/8", "10.0.0.0/8"]}), "networks", id="networks-duplicate"),
    pytest.param(egress_peer({"networks": ["010.0.0.0/8"]}), "networks[0]", id="network-leading-zero"),
    pytest.param(egress_peer({"networks": ["fe80::1%eth0/64"]}), "networks[0]", id="network-zone"),
    pytest.param(egress_peer({"networks": ["::ffff:10.0.0.0/104"]}), "networks[0]", id="network-v4-in-v6"),
    pytest.param(egress_peer({"networks": ["10.0.0.1"]}), "networks[0]", id="network-no-prefix"),
    pytest.param(egress_peer({"networks": ["1234:5678:9abc:def0:1234:5678:9abc:def0/0128"]}), "longer than 43",
                 id="network-over-43-chars"),
    pytest.param(egress_peer({"networks": ["10.0.0.0/8"]}, ports=[{"namedPort": "web"}]), "namedPorts",
                 id="networks-with-named-port"),
    pytest.param(egress_peer({"nodes": {}}, ports=[{"namedPort": "web"}]), "namedPorts", id="nodes-with-named-port"),
    pytest.param(with_rule(**{"from": [{"nodes": {}}]}), "from[0].nodes", id="nodes-on-ingress"),
    pytest.param(egress_peer({"nodes": {"matchLabels": {"bad key!": "x"}}}), "to[0].nodes.matchLabels",
                 id="nodes-bad-label-key"),
    pytest.param(egress_peer({"nodes": {"matchExpressions": [{"key": "role", "operator": "Exists", "values": ["a"]}]}}),
                 "to[0].nodes.matchExpressions[0].values", id="nodes-exists-with-values"),
    pytest.param(egress_peer({"nodes": {}, "networks": ["10.0.0.0/8"]}), "to[0]", id="nodes-and-networks-in-one-peer"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": None}, "spec", id="spec-missing"),
    pytest.param({"metadata": {"name": "Bad_Name"}, "spec": anp()["spec"]}, "metadata.name", id="bad-name"),
]


@pytest.mark.parametrize("raw, where", BAD)
def test_refused_as_the_crd_refuses(raw, where):
    with pytest.raises(InvalidObject) as e:
        parse_admin_network_policy(raw)
    assert where in str(e.value)


def test_baseline_must_be_named_default_and_has_no_pass():
    raw = {"metadata": {"name": "default"}, "spec": {"subject": {"namespaces": {}},
                                                     "egress": [{"action": "Allow", "to": [NS_Y]}]}}
    assert parse_baseline_admin_network_policy(raw).egress[0].action == "Allow"
    other = copy.deepcopy(raw)
    other["metadata"]["name"] = "other"
    with pytest.raises(InvalidObject, match="default"):
        parse_baseline_admin_network_policy(other)
    passing = copy.deepcopy(raw)
    passing["spec"]["egress"][0]["action"] = "Pass"
    with pytest.raises(InvalidObject, match="action"):
        parse_baseline_admin_network_policy(passing)


GOOD = [
    pytest.param({"portNumber": {"port": 80}}, AdminPort("TCP", 80, 80), id="port-number-defaults-tcp"),
    pytest.param({"portNumber": {"port": 53, "protocol": "UDP"}}, AdminPort("UDP", 53, 53), id="port-number-udp"),
    pytest.param({"portRange": {"start": 80, "end": 90, "protocol": "SCTP"}}, AdminPort("SCTP", 80, 90), id="range"),
    pytest.param({"namedPort": "web"}, AdminPort(name="web"), id="named"),
    pytest.param({"namedPort": "not a port name!"}, AdminPort(name=NO_SUCH_PORT), id="named-invalid-matches-nothing"),
]


@pytest.mark.parametrize("raw, want", GOOD)
def test_ports(raw, want):
    assert parse_admin_network_policy(port(raw)).ingress[0].ports == (want,)


def test_a_peer_kind_of_a_newer_version_is_kept_to_fail_closed():
    p = parse_admin_network_policy(with_rule(**{"from": [{"serviceAccounts": {"x": 1}}, NS_Y]}))
    assert p.ingress[0].peers[0].unknown == "serviceAccounts" and not p.ingress[0].peers[1].unknown


def test_networks_masked_as_go_parse_cidr_does():
    p = parse_admin_network_policy(egress_peer({"networks": ["10.1.2.3/8", "fd00::1/64", "0.0.0.0/0"]}))
    assert p.egress[0].peers[0].networks == ("0.0.0.0/0", "10.0.0.0/8", "fd00::/64")


def test_full_policy_parses_in_order():
    raw = anp(priority=0, subject={"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
              ingress=[{"name": "a", "action": "Allow", "from": [NS_Y]},
                       {"name": "b", "action": "Pass", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {}}}]}],
              egress=[{"action": "Deny", "to": [{"nodes": {}}, {"networks": ["192.168.0.0/16"]}]}])
    p = parse_admin_network_policy(raw)
    assert (p.priority, p.key, [r.name for r in p.ingress], [r.action for r in p.ingress]) == (0, "p", ["a", "b"],
                                                                                              ["Allow", "Pass"])
    assert p.subject_pods is not None and p.egress[0].ports is None
    assert p.egress[0].peers[0].node_selector is not None and p.egress[0].peers[1].networks == ("192.168.0.0/16",)


def test_nodes_peer_keeps_its_selector():
    sel = {"matchLabels": {"node-role.kubernetes.io/worker": ""},
           "matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1", "z2"]}]}
    p = parse_admin_network_policy(egress_peer({"nodes": sel}, ports=[{"portNumber": {"port": 6443}}]))
    peer = p.egress[0].peers[0]
    assert peer.node_selector is not None and not peer.unknown and peer.namespace_selector is None
    assert peer.node_selector.matches({"node-role.kubernetes.io/worker": "", "topology.kubernetes.io/zone": "z2"})
    assert not peer.node_selector.matches({"node-role.kubernetes.io/worker": "", "topology.kubernetes.io/zone": "z3"})
    assert not peer.node_selector.matches({"topology.kubernetes.io/zone": "z1"})
