"""The upstream e2e model (kubernetes test/e2e/network/netpol) as pure data.

Namespaces x, y, z (labelled ``kubernetes.io/metadata.name`` by the API server);
pods a, b, c in each, labelled ``pod: <name>``, serving 80 and 81 over TCP, UDP
and SCTP with container ports named ``serve-<port>-<protocol>``. Pod x/a is
10.1.0.1, y/b 10.1.1.2 and so on. Each case is a list of policies and the
expected truth table as a function of (from, to) -> bool for one protocol/port;
self-to-self pairs are ignored, as upstream ignores loopback.
"""

from __future__ import annotations

from typing import Callable

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.policy.model import Snapshot
from podnet.policy.testing import raw_ns, raw_pod, raw_policy

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = tuple((f"serve-{port}-{proto.lower()}", port, proto) for port in (80, 81) for proto in ("TCP", "UDP", "SCTP"))


def ip(pod: str) -> str:
    ns, name = pod.split("/")
    return f"10.1.{NAMESPACES.index(ns)}.{PODS.index(name) + 1}"


ALL = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS)


def snapshot(policies: list[tuple[str, dict]], node_of: Callable[[str], str] = lambda pod: "node-a",
             ns_labels: dict[str, dict[str, str]] | None = None) -> Snapshot:
    pods = [parse_policy_pod(raw_pod(p.split("/")[0], p.split("/")[1], ip(p), node=node_of(p),
                                     labels={"pod": p.split("/")[1]}, ports=PORTS)) for p in ALL]
    nss = [parse_namespace(raw_ns(n, **(ns_labels or {}).get(n, {}))) for n in NAMESPACES]
    pols = [parse_network_policy(raw_policy(ns, f"p{i}", spec)) for i, (ns, spec) in enumerate(policies)]
    return Snapshot(tuple(pols), tuple(pods), tuple(nss))


def sel(**labels: str) -> dict:
    return {"matchLabels": labels}


NSNAME = "kubernetes.io/metadata.name"


def _to(pod: str) -> Callable[[str, str], bool]:
    return lambda f, t: t != pod


# (id, policies, protocol, port, expected(from, to))
CASES: list[tuple[str, list[tuple[str, dict]], str, int, Callable[[str, str], bool]]] = [
    ("default-deny-ingress", [("x", {"podSelector": {}, "ingress": []})], "TCP", 80,
     lambda f, t: not t.startswith("x/")),
    ("default-deny-all", [("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})], "TCP", 80,
     lambda f, t: not t.startswith("x/") and not f.startswith("x/")),
    ("allow-from-pods-within-namespace-by-podselector",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]})], "TCP", 80,
     lambda f, t: t != "x/a" or f == "x/b"),
    ("allow-ingress-for-a-target",
     [("x", {"podSelector": {}, "ingress": []}),
      ("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]})],
     "TCP", 80, lambda f, t: not t.startswith("x/") or t == "x/a"),
    ("allow-from-all-namespaces",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": {}}]}]})], "TCP", 80,
     lambda f, t: True),
    ("allow-only-from-other-namespace-by-namespaceselector",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(**{NSNAME: "y"})}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f.startswith("y/")),
    ("podselector-match-expressions",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": {
         "matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f == "x/b"),
    ("namespaceselector-match-expressions",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": {
         "matchExpressions": [{"key": NSNAME, "operator": "In", "values": ["y"]}]}}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f.startswith("y/")),
    ("podselector-or-namespaceselector",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [
         {"namespaceSelector": {"matchExpressions": [{"key": NSNAME, "operator": "NotIn", "values": ["x"]}]}},
         {"podSelector": sel(pod="b")}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f not in ("x/c",)),
    ("podselector-and-namespaceselector",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [
         {"namespaceSelector": {"matchExpressions": [{"key": NSNAME, "operator": "NotIn", "values": ["x"]}]},
          "podSelector": sel(pod="b")}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f in ("y/b", "z/b")),
    ("named-port-ingress-allowed-port",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})], "TCP", 81,
     lambda f, t: True),
    ("named-port-ingress-other-port-denied",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})], "TCP", 80,
     _to("x/a")),
    ("named-port-wrong-protocol-resolves-to-nothing",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "serve-81-tcp", "protocol": "UDP"}]}]})],
     "UDP", 81, _to("x/a")),
    ("named-port-no-pod-has-opens-nothing",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "nosuch"}]}]})], "TCP", 80, _to("x/a")),
    ("endport-range-inside",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 80, "endPort": 82}]}]})], "TCP", 81,
     lambda f, t: True),
    ("endport-range-outside",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]})], "TCP", 81,
     _to("x/a")),
    ("udp-only-policy-denies-tcp",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]})], "TCP", 81,
     _to("x/a")),
    ("udp-only-policy-allows-udp",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]})], "UDP", 81,
     lambda f, t: True),
    ("sctp-protocol-only-all-ports",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"protocol": "SCTP"}]}]})], "SCTP", 80,
     lambda f, t: True),
    ("policies-combine-as-union",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]}),
      ("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(**{NSNAME: "y"})}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or f == "x/b" or f.startswith("y/")),
    ("deny-egress-by-podselector",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"]})], "TCP", 80, lambda f, t: f != "x/a"),
    ("egress-to-namespace-only",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": sel(**{NSNAME: "y"})}]}]})],
     "TCP", 80, lambda f, t: f != "x/a" or t.startswith("y/")),
    ("egress-rules-default-to-ingress-and-egress",
     [("x", {"podSelector": sel(pod="a"), "egress": [{"to": [{"namespaceSelector": sel(**{NSNAME: "y"})}]}]})],
     "TCP", 80, lambda f, t: (f != "x/a" or t.startswith("y/")) and t != "x/a"),
    ("egress-ipblock-with-except",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [
         {"ipBlock": {"cidr": "10.1.0.0/16", "except": [f"{ip('y/b')}/32"]}}]}]})],
     "TCP", 80, lambda f, t: f != "x/a" or t != "y/b"),
    ("ingress-ipblock-except-whole-namespace",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [
         {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}]}]})],
     "TCP", 80, lambda f, t: t != "x/a" or not f.startswith("z/")),
    ("egress-named-port-resolves-on-destination",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]})],
     "UDP", 80, lambda f, t: True),
    ("egress-named-port-other-port-denied",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]})],
     "UDP", 81, lambda f, t: f != "x/a"),
    ("selector-matching-nothing-isolates-nothing",
     [("x", {"podSelector": sel(pod="nobody"), "ingress": []})], "TCP", 80, lambda f, t: True),
    ("peer-selector-matching-nothing-allows-nothing",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="nobody")}]}]})],
     "TCP", 80, _to("x/a")),
    ("allow-all-ingress-rule",
     [("x", {"podSelector": {}, "ingress": [{}]})], "TCP", 80, lambda f, t: True),
    ("egress-and-ingress-both-must-pass",
     [("x", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": sel(pod="b")}]}]}),
      ("x", {"podSelector": sel(pod="b"), "ingress": [{"from": [{"podSelector": sel(pod="c")}]}]})],
     "TCP", 80, lambda f, t: (f != "x/a" or t == "x/b") and (t != "x/b" or f == "x/c")),
]
