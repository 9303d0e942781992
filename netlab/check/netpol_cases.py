"""The upstream NetworkPolicy e2e model (kubernetes test/e2e/network/netpol) as pure data.

Namespaces x, y, z (labelled ``kubernetes.io/metadata.name`` by the API server); pods a, b, c
in each, labelled ``pod: <name>``, serving 80 and 81 over TCP, UDP and SCTP with container
ports named ``serve-<port>-<protocol>`` (upstream's naming). Each :class:`Case` is a list of
``(namespace, NetworkPolicy spec)`` and the expected truth table as a function of
``(from, to) -> allowed`` for one protocol and port; self-to-self pairs are not judged, as
upstream ignores loopback. :class:`UpdateCase` adds upstream's label-update cases: the table
before and after a namespace's or a pod's labels change.

An ipBlock address that depends on where a pod landed is written ``{ns/pod}`` (e.g.
``"{y/b}/32"``) and filled in by :func:`resolve` from the pods' real addresses, so the same
table drives the pure model (tests/policy) and a running lab (``podnet lab check --suite
netpol``). Guarantees: data only, no I/O, no podnet imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from podnet.kube.names import NAMESPACE_NAME_LABEL

__all__ = ["NAMESPACES", "PODS", "PORTS", "ALL", "NSNAME", "Case", "CASES", "Relabel", "UpdateCase",
           "UPDATE_CASES", "resolve", "sel"]

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PROTOCOLS = ("TCP", "UDP", "SCTP")
PORTS = tuple((f"serve-{port}-{proto.lower()}", port, proto) for port in (80, 81) for proto in PROTOCOLS)
ALL = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS)


@dataclass(frozen=True)
class Case:
    id: str
    policies: list[tuple[str, dict]]
    """(namespace, spec) of each NetworkPolicy; ipBlock strings may hold ``{ns/pod}`` fields."""
    protocol: str
    port: int
    expected: Callable[[str, str], bool]
    """(from pod, to pod) -> allowed; pods are ``ns/name``."""
    admin: list[dict] = field(default_factory=list)
    """Raw AdminNetworkPolicy / BaselineAdminNetworkPolicy objects (cluster-scoped; ``kind``,
    ``metadata.name``, ``spec``) created beside the NetworkPolicies; ``{ns/pod}`` fields as above."""


def resolve(policies: list[tuple[str, dict]], ip_of: Mapping[str, str]) -> list[tuple[str, dict]]:
    """The policies with every ``{ns/pod}`` field replaced by that pod's address (a KeyError for
    a pod that has none)."""
    def fill(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, str) and "{" in v:
            return v.format_map(ip_of)
        return v
    return [(ns, fill(spec)) for ns, spec in policies]


def sel(**labels: str) -> dict:
    return {"matchLabels": labels}


NSNAME = NAMESPACE_NAME_LABEL


def _to(pod: str) -> Callable[[str, str], bool]:
    return lambda f, t: t != pod


CASES: list[Case] = [Case(*c) for c in [
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
         {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["{y/b}/32"]}}]}]})],
     "TCP", 80, lambda f, t: f != "x/a" or t != "y/b"),
    ("ingress-ipblock-except-whole-namespace",
     [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [
         {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["{z/a}/32", "{z/b}/32", "{z/c}/32"]}}]}]})],
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
]]


@dataclass(frozen=True)
class Relabel:
    """A label change on a namespace (``target`` "y") or a pod (``target`` "x/b"); a None value
    removes the label."""
    target: str
    labels: dict[str, str | None]


@dataclass(frozen=True)
class UpdateCase:
    """Upstream's update cases: the table before and after a label change, under the same
    policies (selectors are re-evaluated on every node as labels change)."""
    id: str
    policies: list[tuple[str, dict]]
    protocol: str
    port: int
    before: Callable[[str, str], bool]
    relabel: Relabel
    after: Callable[[str, str], bool]

    def phases(self) -> tuple[Case, Case]:
        return (Case(f"{self.id}/before", self.policies, self.protocol, self.port, self.before),
                Case(f"{self.id}/after", self.policies, self.protocol, self.port, self.after))


UPDATE_CASES: list[UpdateCase] = [
    UpdateCase("allow-ingress-from-updated-namespace",
               [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(ns2="updated")}]}]})],
               "TCP", 80, _to("x/a"), Relabel("y", {"ns2": "updated"}),
               lambda f, t: t != "x/a" or f.startswith("y/")),
    UpdateCase("allow-ingress-from-updated-pod",
               [("x", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod2="updated")}]}]})],
               "TCP", 80, _to("x/a"), Relabel("x/b", {"pod2": "updated"}),
               lambda f, t: t != "x/a" or f == "x/b"),
    UpdateCase("deny-ingress-to-updated-pod",
               [("x", {"podSelector": sel(target="isolated"), "policyTypes": ["Ingress"]})],
               "TCP", 80, lambda f, t: True, Relabel("x/a", {"target": "isolated"}), _to("x/a")),
]
