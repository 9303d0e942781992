"""The network-policy-api conformance cases for AdminNetworkPolicy and BaselineAdminNetworkPolicy on the
upstream e2e model of :mod:`.netpol_cases` (namespaces x, y, z; pods a, b, c).

Read from sigs.k8s.io/network-policy-api ``conformance/tests/admin-network-policy-core-*.go`` and
``baseline-admin-network-policy-core-*.go`` with their manifests (``conformance/base/...``): the houses
map onto our namespaces (gryffindor: x, slytherin: y, hufflepuff and ravenclaw: z), the named pods onto
a/b/c, and each subtest's expectation (including the rule swaps the tests apply with Update) becomes
one :class:`~.netpol_cases.Case` whose ``admin`` holds the cluster-scoped objects (raw, as sent to the
API server), ``policies`` the NetworkPolicies, with protocol, port and the truth table
(from, to) -> bool. Expectations are written from the API's semantics, never computed by a model.

Addresses that depend on where a pod landed are ``{ns/pod}`` fields, filled by
:func:`~.netpol_cases.resolve` (tests/policy places the pods on fixed addresses, ``podnet lab check
--suite netpol`` uses the lab's). Guarantees: data only, no I/O, no podnet imports beyond
:mod:`.netpol_cases`.
"""

from __future__ import annotations

from typing import Any, Callable

from podnet.netlab.check.netpol_cases import Case

__all__ = ["ADMIN_CASES", "ns", "pod", "rule", "tcp", "anp", "banp", "SUBJ_X", "NS_Y", "NS_Z"]

Expect = Callable[[str, str], bool]


def ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def pod(namespace: str, name: str) -> dict[str, Any]:
    return {"namespaceSelector": ns(namespace), "podSelector": {"matchLabels": {"pod": name}}}


def rule(action: str, *peers: dict[str, Any], ports: list[dict[str, Any]] | None = None, egress: bool = False) -> dict:
    out: dict[str, Any] = {"action": action, ("to" if egress else "from"): list(peers)}
    if ports is not None:
        out["ports"] = ports
    return out


def tcp(port: int) -> dict[str, Any]:
    return {"portNumber": {"protocol": "TCP", "port": port}}


def anp(name: str, priority: int, subject: dict, ingress: list | None = None, egress: list | None = None) -> dict:
    spec: dict[str, Any] = {"priority": priority, "subject": subject}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"kind": "AdminNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def banp(subject: dict, ingress: list | None = None, egress: list | None = None) -> dict:
    spec: dict[str, Any] = {"subject": subject}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"}, "spec": spec}


SUBJ_X = {"namespaces": ns("x")}
LINUX_NODES = {"matchLabels": {"kubernetes.io/os": "linux"}}
NS_Y = {"namespaces": ns("y")}
NS_Z = {"namespaces": ns("z")}
DENY_ALL_INGRESS_X = ("x", {"podSelector": {}, "ingress": []})
ALLOW_FROM_Y_X = ("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{"from": [{"namespaceSelector": ns("y")}]}],
                        "egress": [{"to": [{"namespaceSelector": ns("y")}]}]})


def into(dst_ns: str, src: Callable[[str], bool]) -> Expect:
    """Everything allowed except ``src``-> any pod of ``dst_ns``."""
    return lambda f, t: not (t.startswith(dst_ns + "/") and src(f))


def from_ns(n: str) -> Callable[[str], bool]:
    return lambda f: f.startswith(n + "/")


def out_of(src_ns: str, dst: Callable[[str], bool]) -> Expect:
    """Everything allowed except any pod of ``src_ns`` -> ``dst``."""
    return lambda f, t: not (f.startswith(src_ns + "/") and dst(t))


def allow_all(f: str, t: str) -> bool:
    return True


def _ingress_tcp(order: tuple[str, str, str]) -> list:
    """core-ingress-tcp-rules.yaml's first rules (everything from ravenclaw, here z) in ``order``,
    then deny-from-slytherin(y)-at-80 and pass-from-slytherin-at-80."""
    return [rule(a, NS_Z) for a in order] + [rule("Deny", NS_Y, ports=[tcp(80)]), rule("Pass", NS_Y, ports=[tcp(80)])]


def _egress_tcp(order: tuple[str, str, str]) -> list:
    return ([rule(a, NS_Z, egress=True) for a in order]
            + [rule("Deny", NS_Y, ports=[tcp(80)], egress=True), rule("Pass", NS_Y, ports=[tcp(80)], egress=True)])


# (id, admin objects, NetworkPolicies, protocol, port, expected(from, to))
_CASES: list[tuple[str, list[dict], list[tuple[str, dict]], str, int, Expect]] = [
    # AdminNetworkPolicyIngressTCP: allow at index 0 wins over deny at index 1
    ("anp-ingress-rule-order-allow-first", [anp("ingress-tcp", 3, SUBJ_X, _ingress_tcp(("Allow", "Deny", "Pass")))],
     [], "TCP", 81, allow_all),
    # ... and deny from slytherin (y) at port 80 applies
    ("anp-ingress-deny-at-port-80", [anp("ingress-tcp", 3, SUBJ_X, _ingress_tcp(("Allow", "Deny", "Pass")))],
     [], "TCP", 80, into("x", from_ns("y"))),
    # swap index 0 and 1: deny first
    ("anp-ingress-rule-order-deny-first", [anp("ingress-tcp", 3, SUBJ_X, _ingress_tcp(("Deny", "Allow", "Pass")))],
     [], "TCP", 81, into("x", from_ns("z"))),
    # swap index 0 and 2: pass first, no NetworkPolicy: allowed
    ("anp-ingress-rule-order-pass-first", [anp("ingress-tcp", 3, SUBJ_X, _ingress_tcp(("Pass", "Deny", "Allow")))],
     [], "TCP", 81, allow_all),
    # pass first with a NetworkPolicy that isolates x: the NetworkPolicy decides (default deny)
    ("anp-ingress-pass-defers-to-networkpolicy", [anp("ingress-tcp", 3, SUBJ_X, _ingress_tcp(("Pass", "Deny", "Allow")))],
     [DENY_ALL_INGRESS_X], "TCP", 81, into("x", lambda f: True)),
    # swap index 3 and 4 (pass before deny at 80): slytherin at 80 is passed, so allowed
    ("anp-ingress-pass-at-port-80", [anp("ingress-tcp", 3, SUBJ_X, [rule("Pass", NS_Y, ports=[tcp(80)]),
                                                                    rule("Deny", NS_Y, ports=[tcp(80)])])],
     [], "TCP", 80, allow_all),
    # allow-from-hufflepuff-at-port-80 then deny-from-hufflepuff-everything-else
    ("anp-ingress-allow-at-80-deny-rest-80", [anp("ingress-tcp", 3, SUBJ_X, [rule("Allow", NS_Z, ports=[tcp(80)]),
                                                                             rule("Deny", NS_Z)])],
     [], "TCP", 80, allow_all),
    ("anp-ingress-allow-at-80-deny-rest-81", [anp("ingress-tcp", 3, SUBJ_X, [rule("Allow", NS_Z, ports=[tcp(80)]),
                                                                             rule("Deny", NS_Z)])],
     [], "TCP", 81, into("x", from_ns("z"))),
    # AdminNetworkPolicyIngressPodSelectorTCP: a pods peer (quirrell denied, dumbledore allowed)
    ("anp-ingress-pod-peer", [anp("ingress-tcp", 3, SUBJ_X, [
        rule("Deny", {"pods": pod("y", "b")}, ports=[tcp(80)]),
        rule("Allow", {"pods": pod("y", "a")}, ports=[tcp(80)]),
        rule("Deny", {"pods": pod("y", "a")})])],
     [DENY_ALL_INGRESS_X], "TCP", 80, into("x", lambda f: f != "y/a")),
    # AdminNetworkPolicyEgressTCP, the same rule table on egress
    ("anp-egress-rule-order-allow-first", [anp("egress-tcp", 3, SUBJ_X, egress=_egress_tcp(("Allow", "Deny", "Pass")))],
     [], "TCP", 80, out_of("x", from_ns("y"))),
    ("anp-egress-rule-order-deny-first", [anp("egress-tcp", 3, SUBJ_X, egress=_egress_tcp(("Deny", "Allow", "Pass")))],
     [], "TCP", 81, out_of("x", from_ns("z"))),
    ("anp-egress-pass-defers-to-networkpolicy", [anp("egress-tcp", 3, SUBJ_X, egress=_egress_tcp(("Pass", "Deny", "Allow")))],
     [("x", {"podSelector": {}, "policyTypes": ["Egress"]})], "TCP", 81, out_of("x", lambda t: True)),
    # AdminNetworkPolicyPriorityField: priority 50 deny against 60 allow, then the allow moved to 40
    ("anp-priority-lower-number-wins", [anp("deny-50", 50, SUBJ_X, [rule("Deny", NS_Y)]),
                                        anp("allow-60", 60, SUBJ_X, [rule("Allow", NS_Y)])],
     [], "TCP", 80, into("x", from_ns("y"))),
    ("anp-priority-updated-to-40", [anp("deny-50", 50, SUBJ_X, [rule("Deny", NS_Y)]),
                                    anp("allow-60", 40, SUBJ_X, [rule("Allow", NS_Y)])],
     [DENY_ALL_INGRESS_X], "TCP", 80, into("x", lambda f: not f.startswith("y/"))),
    # AdminNetworkPolicyIntegration (core-anp-np-banp.yaml): ANP deny beats an NP allow ...
    ("integration-anp-deny-overrides-np-allow",
     [anp("pass-example", 10, SUBJ_X, [rule("Deny", NS_Y)], [rule("Deny", NS_Y, egress=True)]),
      banp(SUBJ_X, [rule("Deny", NS_Y)], [rule("Deny", NS_Y, egress=True)])],
     [ALLOW_FROM_Y_X], "TCP", 80,
     lambda f, t: not (t.startswith("x/") or f.startswith("x/"))),
    # ... updated to Pass: the NetworkPolicy allows y both ways (and isolates x from the rest)
    ("integration-anp-pass-np-allows",
     [anp("pass-example", 10, SUBJ_X, [rule("Pass", NS_Y)], [rule("Pass", NS_Y, egress=True)]),
      banp(SUBJ_X, [rule("Deny", NS_Y)], [rule("Deny", NS_Y, egress=True)])],
     [ALLOW_FROM_Y_X], "TCP", 80,
     lambda f, t: not ((t.startswith("x/") and not f.startswith("y/")) or (f.startswith("x/") and not t.startswith("y/")))),
    # ... NetworkPolicy deleted: the baseline's deny applies
    ("integration-banp-deny-without-np",
     [anp("pass-example", 10, SUBJ_X, [rule("Pass", NS_Y)], [rule("Pass", NS_Y, egress=True)]),
      banp(SUBJ_X, [rule("Deny", NS_Y)], [rule("Deny", NS_Y, egress=True)])],
     [], "TCP", 80, lambda f, t: not ((f.startswith("y/") and t.startswith("x/")) or (f.startswith("x/") and t.startswith("y/")))),
    # BaselineAdminNetworkPolicyIngressTCP: rule order and ports
    ("banp-ingress-rule-order-allow-first", [banp(SUBJ_X, [rule("Allow", NS_Z), rule("Deny", NS_Z),
                                                           rule("Deny", NS_Y, ports=[tcp(80)])])],
     [], "TCP", 80, into("x", from_ns("y"))),
    ("banp-ingress-rule-order-deny-first", [banp(SUBJ_X, [rule("Deny", NS_Z), rule("Allow", NS_Z),
                                                          rule("Deny", NS_Y, ports=[tcp(80)])])],
     [], "TCP", 81, into("x", from_ns("z"))),
    # a BaselineAdminNetworkPolicy never applies where a NetworkPolicy isolates the pod
    ("banp-ignored-where-np-isolates", [banp(SUBJ_X, [rule("Deny", NS_Y)])],
     [("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": ns("y")}]}]})],
     "TCP", 80, lambda f, t: not ((t == "x/a" and not f.startswith("y/")) or (t in ("x/b", "x/c") and f.startswith("y/")))),
    # BaselineAdminNetworkPolicyEgressTCP
    ("banp-egress-deny-at-port-80", [banp(SUBJ_X, egress=[rule("Allow", NS_Z, egress=True),
                                                          rule("Deny", NS_Y, ports=[tcp(80)], egress=True)])],
     [], "TCP", 80, out_of("x", from_ns("y"))),
    # UDP and named ports (AdminNetworkPolicyIngressUDP; namedPort is Extended support)
    ("anp-ingress-udp-deny-at-port-80", [anp("ingress-udp", 3, SUBJ_X, [
        rule("Deny", NS_Y, ports=[{"portNumber": {"protocol": "UDP", "port": 80}}])])],
     [], "UDP", 80, into("x", from_ns("y"))),
    ("anp-ingress-udp-rule-leaves-tcp", [anp("ingress-udp", 3, SUBJ_X, [
        rule("Deny", NS_Y, ports=[{"portNumber": {"protocol": "UDP", "port": 80}}])])],
     [], "TCP", 80, allow_all),
    ("anp-ingress-named-port", [anp("named", 3, SUBJ_X, [rule("Deny", NS_Y, ports=[{"namedPort": "serve-81-udp"}])])],
     [], "UDP", 81, into("x", from_ns("y"))),
    ("anp-egress-named-port-resolves-on-peer", [anp("named", 3, SUBJ_X, egress=[
        rule("Deny", NS_Y, ports=[{"namedPort": "serve-80-tcp"}], egress=True)])],
     [], "TCP", 80, out_of("x", from_ns("y"))),
    ("anp-port-range", [anp("range", 3, SUBJ_X, [rule("Deny", NS_Y, ports=[{"portRange": {"start": 79, "end": 80}}])])],
     [], "TCP", 80, into("x", from_ns("y"))),
    ("anp-port-range-excludes-81", [anp("range", 3, SUBJ_X, [rule("Deny", NS_Y, ports=[{"portRange": {"start": 79, "end": 80}}])])],
     [], "TCP", 81, allow_all),
    # subject by pods: only x/a is a subject
    ("anp-subject-pods", [anp("one-pod", 3, {"pods": pod("x", "a")}, [rule("Deny", NS_Y)])],
     [], "TCP", 80, lambda f, t: not (t == "x/a" and f.startswith("y/"))),
    # AdminNetworkPolicy Allow opens what a NetworkPolicy denies
    ("anp-allow-overrides-np-deny", [anp("allow-y", 3, SUBJ_X, [rule("Allow", NS_Y)])],
     [DENY_ALL_INGRESS_X], "TCP", 80, into("x", lambda f: not f.startswith("y/"))),
    # egress networks peer (StandardEgressInlineCIDR): a /32 of y/a
    ("anp-egress-networks", [anp("cidr", 3, SUBJ_X, egress=[rule("Deny", {"networks": ["{y/a}/32"]}, egress=True)])],
     [], "TCP", 80, out_of("x", lambda t: t == "y/a")),
    # AdminNetworkPolicyEgressNodePeers (extended-egress-selector-rules.yaml): allow 36363/TCP and pass
    # 5353/UDP to the linux nodes, then deny slytherin (y) and the nodes. Upstream probes a host-network
    # server on a node; on this pod-to-pod table the nodes peer matches no pod and the pods peer denies y
    # (the node addresses are judged in tests/policy/test_admin_nodes.py).
    ("anp-egress-node-peers", [anp("node-selector-as-peer-example", 75, SUBJ_X, egress=[
        rule("Allow", {"nodes": LINUX_NODES}, ports=[tcp(36363)], egress=True),
        rule("Pass", {"nodes": LINUX_NODES}, ports=[{"portNumber": {"protocol": "UDP", "port": 5353}}], egress=True),
        rule("Deny", {"pods": {"namespaceSelector": ns("y"), "podSelector": {}}}, {"nodes": LINUX_NODES}, egress=True)])],
     [], "TCP", 80, out_of("x", from_ns("y"))),
    # a nodes peer beside a namespaces peer: the Allow opens y, never the pods a nodes selector cannot match
    ("anp-egress-nodes-peer-matches-no-pod", [anp("nodes", 3, SUBJ_X, egress=[
        rule("Allow", {"nodes": {}}, NS_Y, egress=True)])],
     [("x", {"podSelector": {}, "policyTypes": ["Egress"]})], "TCP", 80, out_of("x", lambda t: not t.startswith("y/"))),
    # a peer kind of a newer API version fails closed: Deny and Pass deny everything, Allow matches nothing
    ("anp-unknown-peer-kind-deny-fails-closed", [anp("newer", 3, SUBJ_X, [rule("Deny", {"serviceAccounts": {}})])],
     [], "TCP", 80, into("x", lambda f: True)),
    ("anp-unknown-peer-kind-pass-fails-closed", [anp("newer", 3, SUBJ_X, [rule("Pass", {"serviceAccounts": {}})])],
     [], "TCP", 80, into("x", lambda f: True)),
    ("anp-unknown-peer-kind-allow-matches-nothing", [anp("newer", 3, SUBJ_X, [rule("Allow", {"serviceAccounts": {}}, NS_Y)])],
     [DENY_ALL_INGRESS_X], "TCP", 80, into("x", lambda f: True)),
]


ADMIN_CASES: list[Case] = [Case(cid, policies, proto, port, expect, admin)
                           for cid, admin, policies, proto, port, expect in _CASES]
