"""kube/netpol.py: NetworkPolicy parsing, v1 defaulting and kube-apiserver's ValidateNetworkPolicy."""

from __future__ import annotations

import pytest

from podnet.kube.netpol import (
    IPBlock,
    PolicyPort,
    Requirement,
    Selector,
    parse_network_policy,
    parse_policy_pod,
    parse_selector,
)
from podnet.kube.objects import InvalidObject
from podnet.policy.testing import raw_pod, raw_policy


def pol(spec):
    return parse_network_policy(raw_policy("x", "p", spec))


@pytest.mark.parametrize("spec, types", [
    pytest.param({"podSelector": {}}, ("Ingress",), id="empty-defaults-to-ingress"),
    pytest.param({"podSelector": {}, "egress": [{}]}, ("Ingress", "Egress"), id="egress-rules-add-egress"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress"]}, ("Egress",), id="listed-egress-only"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress", "Ingress"]}, ("Ingress", "Egress"), id="listed-both"),
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}, ("Ingress",),
                 id="listed-wins-over-egress-rules"),
])
def test_policy_types_defaulting(spec, types):
    assert pol(spec).policy_types == types


@pytest.mark.parametrize("spec, why", [
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}, "more than two", id="three-types"),
    pytest.param({"podSelector": {}, "policyTypes": ["ingress"]}, "supported values", id="lowercase-type"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{}]}]}, "must specify a peer", id="empty-peer"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
                 "both ipBlock", id="ipblock-and-selector"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
                 "strict subset", id="except-outside-cidr"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
                 "strict subset", id="except-equal-to-cidr"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}]},
                 "strict subset", id="except-other-family"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::%eth0/64"}}]}]},
                 "CIDR", id="zone-in-cidr"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "010.0.0.0/8"}}]}]},
                 "leading 0", id="leading-zero"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]},
                 "beyond the prefix", id="host-bits"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": ""}}]}]}, "Required", id="empty-cidr"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8\n"}}]}]},
                 "CIDR", id="newline-after-cidr"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}, "out of range", id="port-zero"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]}, "greater than", id="endport-below"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 65536}]}]}, "out of range", id="endport-big"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "non-numeric", id="endport-named"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"endPort": 90}]}]}, "not specified", id="endport-alone"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": "80"}]}]}, "IANA", id="port-digits-string"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": "a--b"}]}]}, "IANA", id="port-name-double-dash"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, "protocol", id="icmp"),
    pytest.param({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "must be specified",
                 id="in-without-values"),
    pytest.param({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
                 "may not be specified", id="exists-with-values"),
    pytest.param({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}},
                 "operator", id="unknown-operator"),
    pytest.param({"podSelector": {"matchLabels": {"a b": "x"}}}, "qualified", id="bad-label-key"),
    pytest.param({"podSelector": {"matchLabels": {"a": "x y"}}}, "label value", id="bad-label-value"),
])
def test_refused_as_kube_apiserver_refuses(spec, why):
    with pytest.raises(InvalidObject, match=why):
        pol(spec)


def test_peers_ports_and_blocks_parsed():
    p = pol({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"pod": "b"}}, "namespaceSelector": {}},
                     {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24", "10.0.1.0/24"]}}],
            "ports": [{"port": 80}, {"port": "serve-81-udp", "protocol": "UDP"}, {"port": 90, "endPort": 99, "protocol": "SCTP"},
                      {"protocol": "UDP"}],
        }],
    })
    rule = p.ingress[0]
    assert rule.peers[0].pod_selector == Selector((("pod", "b"),))
    assert rule.peers[0].namespace_selector == Selector()
    assert rule.peers[1].ip_block == IPBlock("10.0.0.0/16", ("10.0.1.0/24", "10.0.2.0/24"))
    assert rule.ports == (PolicyPort("TCP", 80), PolicyPort("UDP", name="serve-81-udp"),
                          PolicyPort("SCTP", 90, 99), PolicyPort("UDP"))


@pytest.mark.parametrize("req, labels, want", [
    pytest.param(Requirement("a", "In", ("1", "2")), {"a": "2"}, True, id="in-hit"),
    pytest.param(Requirement("a", "In", ("1",)), {}, False, id="in-missing"),
    pytest.param(Requirement("a", "NotIn", ("1",)), {}, True, id="notin-missing-key-matches"),
    pytest.param(Requirement("a", "NotIn", ("1",)), {"a": "1"}, False, id="notin-hit"),
    pytest.param(Requirement("a", "Exists"), {"a": ""}, True, id="exists"),
    pytest.param(Requirement("a", "DoesNotExist"), {"a": "1"}, False, id="doesnotexist"),
])
def test_requirement_semantics(req, labels, want):
    assert req.matches(labels) is want


def test_selector_and_of_labels_and_expressions():
    sel = parse_selector({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}, "s")
    assert sel.matches({"app": "web"}) and not sel.matches({"app": "web", "tier": "db"}) and not sel.matches({"tier": "x"})


def test_pod_container_ports():
    p = parse_policy_pod(raw_pod("x", "a", "10.0.0.5", ports=(("serve-80-tcp", 80, "TCP"), ("serve-80-udp", 80, "UDP"))))
    assert p.named_port("serve-80-udp", "UDP") == 80
    assert p.named_port("serve-80-udp", "TCP") is None
    assert p.ips == ("10.0.0.5",)


@pytest.mark.parametrize("ports, why", [
    pytest.param((("Serve", 80, "TCP"),), "IANA", id="uppercase-name"),
    pytest.param((("http", 0, "TCP"),), "range", id="port-zero"),
    pytest.param((("http", 80, "ICMP"),), "protocol", id="bad-protocol"),
])
def test_pod_ports_refused(ports, why):
    with pytest.raises(InvalidObject, match=why):
        parse_policy_pod(raw_pod("x", "a", "10.0.0.5", ports=ports))


def test_ten_thousand_ipblocks_parse():
    peers = [{"ipBlock": {"cidr": f"10.{i // 256}.{i % 256}.0/24"}} for i in range(10_000)]
    p = pol({"podSelector": {}, "ingress": [{"from": peers}]})
    assert len(p.ingress[0].peers) == 10_000


@pytest.mark.parametrize("raw", [
    pytest.param({}, id="no-metadata"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": []}, id="spec-list"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}, "ingress": "all"}}, id="ingress-string"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]}},
                 id="bool-port"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": []}]}]}},
                 id="ipblock-list"),
    pytest.param({"metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 1.5}]}]}},
                 id="float-port"),
])
def test_hostile_policies_rejected_at_the_boundary_never_raise(raw):
    from podnet.kube.resources import convert
    from podnet.policy.engine import NETWORK_POLICIES

    assert convert(NETWORK_POLICIES, raw) is None
