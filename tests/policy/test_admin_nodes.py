"""AdminNetworkPolicy ``nodes`` egress peers: the selected nodes' InternalIP addresses, one set per selector,
on the pure model, on the rendered rules (fake kernel, both families), through the incremental compute and
the engine, following node label and address changes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.kube.netpol import parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.policy import render as r
from podnet.policy.engine import Engine
from podnet.policy.incremental import Incremental
from podnet.policy.model import Snapshot, allowed, compute
from podnet.policy.nodes import PolicyNode, parse_policy_node
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod

from .admin_cases import SUBJ_X, admin_snapshot, anp, banp, parse, pod, rule, tcp
from .cases import ip

WORKER = {"matchLabels": {"role": "worker"}}
CONTROL = {"matchLabels": {"role": "control-plane"}}


def raw_node(name: str, labels: dict[str, str], *addresses: tuple[str, str], ready: str = "True") -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", **labels}},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses],
                       "conditions": [{"type": "Ready", "status": ready}]}}


NODES = {
    "n1": raw_node("n1", {"role": "worker", "zone": "z1"}, ("InternalIP", "192.168.77.1"),
                   ("InternalIP", "fd00:77::1"), ("ExternalIP", "203.0.113.1"), ("Hostname", "n1")),
    "n2": raw_node("n2", {"role": "worker", "zone": "z2"}, ("InternalIP", "192.168.77.2")),
    "n3": raw_node("n3", {"role": "control-plane"}, ("InternalIP", "192.168.77.3"), ("InternalIP", "fd00:77::3")),
}
N1, N2, N3 = "192.168.77.1", "192.168.77.2", "192.168.77.3"
OUTSIDE = "203.0.113.1"


def nodes(**changed: dict) -> tuple[PolicyNode, ...]:
    return tuple(parse_policy_node(raw) for raw in {**NODES, **changed}.values() if raw)


def snap(admin: list[dict], policies=(), **changed: dict) -> Snapshot:
    return dataclasses.replace(admin_snapshot(admin, list(policies)), nodes=nodes(**changed))


def dual_stack(s: Snapshot) -> Snapshot:
    """Every pod also gets an IPv6 address, fd00:1::<n>."""
    return dataclasses.replace(s, pods=tuple(dataclasses.replace(p, ips=(*p.ips, f"fd00:1::{i + 1:x}"))
                                             for i, p in enumerate(s.pods)))


def eg(action, *peers, ports=None):
    return rule(action, *peers, ports=ports, egress=True)


def test_policy_node_keeps_name_labels_and_internal_ips_only():
    n = parse_policy_node(NODES["n1"])
    assert n == PolicyNode("n1", (("kubernetes.io/os", "linux"), ("role", "worker"), ("zone", "z1")),
                           ("192.168.77.1", "fd00:77::1"))
    heartbeat = {**NODES["n1"], "status": {**NODES["n1"]["status"], "conditions": [{"type": "Ready", "status": "False"}]}}
    assert parse_policy_node(heartbeat) == n


# (id, admin objects, NetworkPolicies, {(from pod, to address, port): allowed}); a port is TCP unless written "UDP/53"
CASES = [
    ("deny-to-selected-nodes", [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": WORKER})])], [],
     {("x/a", N1, 80): False, ("x/b", N2, 443): False, ("x/a", N3, 80): True, ("y/a", N1, 80): True,
      ("x/a", OUTSIDE, 80): True}),
    ("allow-port-then-deny-all-nodes",
     [anp("a", 1, SUBJ_X, egress=[eg("Allow", {"nodes": CONTROL}, ports=[tcp(6443)])]),
      anp("d", 2, SUBJ_X, egress=[eg("Deny", {"nodes": {}})])], [],
     {("x/a", N3, 6443): True, ("x/a", N3, 80): False, ("x/a", N1, 6443): False, ("x/a", ip("y/a"), 80): True}),
    ("pass-to-baseline",
     [anp("p", 1, SUBJ_X, egress=[eg("Pass", {"nodes": CONTROL})]),
      banp(SUBJ_X, egress=[eg("Allow", {"nodes": CONTROL}), eg("Deny", {"nodes": {}})])], [],
     {("x/a", N3, 80): True, ("x/a", N1, 80): False, ("x/a", N2, 80): False, ("y/a", N1, 80): True}),
    ("pass-to-networkpolicy",
     [anp("p", 1, SUBJ_X, egress=[eg("Pass", {"nodes": {}}), eg("Deny", {"networks": ["192.168.77.0/24"]})])],
     [("x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": N2 + "/32"}}]}]})],
     {("x/a", N2, 80): True, ("x/a", N1, 80): False, ("x/a", "192.168.77.9", 80): False}),
    ("selector-matching-no-node-denies-nothing",
     [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": {"matchLabels": {"role": "gpu"}}})])], [],
     {("x/a", N1, 80): True, ("x/a", N3, 80): True}),
    ("match-expressions",
     [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": {"matchExpressions": [
         {"key": "zone", "operator": "NotIn", "values": ["z1"]}]}})])], [],
     {("x/a", N1, 80): True, ("x/a", N2, 80): False, ("x/a", N3, 80): False}),
    ("nodes-and-pods-in-one-rule",
     [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": CONTROL}, {"pods": pod("y", "b")}, ports=[tcp(80)])])], [],
     {("x/a", N3, 80): False, ("x/a", ip("y/b"), 80): False, ("x/a", N3, 81): True, ("x/a", N1, 80): True,
      ("x/a", ip("y/a"), 80): True}),
    ("external-ip-is-not-a-node-address",
     [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": {}})])], [],
     {("x/a", OUTSIDE, 80): True, ("x/a", N1, 80): False}),
    # AdminNetworkPolicyEgressNodePeers (network-policy-api conformance): the node-visible half of the
    # lab case anp-egress-node-peers; every node here is labelled kubernetes.io/os=linux
    ("upstream-egress-node-peers",
     [anp("node-selector-as-peer-example", 75, SUBJ_X, egress=[
         eg("Allow", {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}, ports=[tcp(36363)]),
         eg("Pass", {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}},
            ports=[{"portNumber": {"protocol": "UDP", "port": 5353}}]),
         eg("Deny", {"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
                              "podSelector": {}}}, {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}})])], [],
     {("x/a", N1, 36363): True, ("x/b", N3, "UDP/5353"): True, ("x/b", N3, 36364): False, ("x/b", N3, "UDP/53"): False,
      ("x/a", N2, "SCTP/9003"): False, ("x/a", ip("y/a"), 80): False, ("x/a", ip("z/a"), 80): True}),
]


def _proto_port(port) -> tuple[str, int]:
    """``80`` (TCP) or ``"UDP/53"``."""
    if isinstance(port, int):
        return "TCP", port
    proto, _, n = port.partition("/")
    return proto, int(n)
PARAMS = [pytest.param(*c[1:], id=c[0]) for c in CASES]


@pytest.mark.parametrize("admin, policies, table", PARAMS)
def test_node_peers_on_the_model(admin, policies, table):
    verdicts = compute(snap(admin, policies), None)
    got = {k: allowed(verdicts, ip(k[0]), k[1], *_proto_port(k[2])) for k in table}
    assert got == table


@pytest.mark.parametrize("admin, policies, table", PARAMS)
async def test_node_peers_on_the_rendered_rules(admin, policies, table):
    verdicts = compute(snap(admin, policies), None)
    k = FakeKernel()
    await Programmer(k).apply(verdicts)
    got = {key: k.forward(ip(key[0]), key[1], *_proto_port(key[2])) for key in table}
    assert got == table


def _node_sets(out: r.Rendered) -> dict[str, tuple[str, ...]]:
    return {s.name: s.members for s in out.sets.values() if s.kind == "hash:ip" and s.members
            and all(m.startswith(("192.168.77.", "fd00:77::")) for m in s.members)}


def test_one_set_per_selector_in_each_family():
    admin = [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": WORKER}), eg("Deny", {"nodes": WORKER}, ports=[tcp(1)]),
                                         eg("Deny", {"nodes": CONTROL})])]
    v4 = r.render(compute(snap(admin), None), 4)
    assert sorted(_node_sets(v4).values()) == [(N1, N2), (N3,)]
    # every pod of x judges egress through the same two sets
    assert len({s for s in v4.sets if any(f"--match-set {s} dst" in ln for ln in v4.iptables.splitlines())}) == 2
    v6 = r.render(compute(dual_stack(snap(admin)), None), 6)
    assert sorted(_node_sets(v6).values()) == [("fd00:77::1",), ("fd00:77::3",)]


async def test_ipv6_node_addresses_are_enforced():
    admin = [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": CONTROL})])]
    dual = dual_stack(snap(admin))
    k = FakeKernel(6)
    await Programmer(k).apply(compute(dual, None))
    src = next(p for p in dual.pods if p.key == "x/a").ips[1]
    assert not k.forward(src, "fd00:77::3", "tcp", 80)
    assert k.forward(src, "fd00:77::1", "tcp", 80)


@pytest.mark.parametrize("change, blocked, open_", [
    pytest.param({"n3": raw_node("n3", {"role": "worker"}, ("InternalIP", N3))}, [N1, N2, N3], [], id="relabel-in"),
    pytest.param({"n2": raw_node("n2", {"role": "retired"}, ("InternalIP", N2))}, [N1], [N2, N3], id="relabel-out"),
    pytest.param({"n2": raw_node("n2", {"role": "worker"}, ("InternalIP", "192.168.77.20"))}, [N1, "192.168.77.20"],
                 [N2, N3], id="address-change"),
    pytest.param({"n4": raw_node("n4", {"role": "worker"}, ("InternalIP", "192.168.77.4"))},
                 [N1, N2, "192.168.77.4"], [N3], id="node-joins"),
    pytest.param({"n1": None}, [N2], [N1, N3], id="node-leaves"),
])
def test_node_changes_change_set_members_not_rules(change, blocked, open_):
    admin = [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": WORKER})])]
    before, after = snap(admin), snap(admin, **change)
    inc = Incremental(None)
    inc.compute(before)
    verdicts = inc.compute(after)
    assert verdicts == compute(after, None)
    assert inc.last_recomputed is None  # a node change reaches every pod an admin nodes peer judges
    old, new = r.render(compute(before, None), 4), r.render(verdicts, 4)
    assert old.iptables == new.iptables
    assert {ip_: allowed(verdicts, ip("x/a"), ip_, "TCP", 80) for ip_ in blocked + open_} == \
        {**{b: False for b in blocked}, **{o: True for o in open_}}


def test_node_changes_without_a_nodes_peer_recompute_nothing():
    admin = [anp("d", 1, SUBJ_X, egress=[eg("Deny", {"networks": ["192.168.77.0/24"]})])]
    inc = Incremental(None)
    inc.compute(snap(admin))
    inc.compute(snap(admin, n2=raw_node("n2", {"role": "x"}, ("InternalIP", "192.168.77.20"))))
    assert inc.last_recomputed == 0


async def test_engine_follows_node_informer():
    k = FakeKernel()
    eng = Engine([Programmer(k)], "node-a")
    pols, pods, nss, anps, banps, nodes_inf = (FakeInformer() for _ in range(6))
    eng.attach(pols, pods, nss, anps, banps, nodes=nodes_inf)
    for n in ("x", "y"):
        nss.set(parse_namespace(raw_ns(n)))
    pods.set(parse_policy_pod(raw_pod("x", "a", "10.1.0.1")))
    anps.set(parse(anp("d", 1, SUBJ_X, egress=[eg("Deny", {"nodes": WORKER})])))
    nodes_inf.set(parse_policy_node(NODES["n1"]))
    for i in (pols, pods, nss, anps, banps):
        i.synced()
    assert not await eng.sync()  # the Nodes informer has not synced yet
    nodes_inf.synced()
    assert await eng.sync()
    assert not k.forward("10.1.0.1", N1, "tcp", 80) and k.forward("10.1.0.1", N2, "tcp", 80)
    nodes_inf.set(parse_policy_node(NODES["n2"]))
    await eng.sync()
    assert not k.forward("10.1.0.1", N2, "tcp", 80)
    nodes_inf.delete("n1")
    await eng.sync()
    assert k.forward("10.1.0.1", N1, "tcp", 80)
    assert eng.snapshot().admin == (anps.list()[0],)


# Random node churn under random admin policies with nodes peers: the incremental compute equals a full one
# after every step, and the rendered rules on the fake kernel agree with the model for every node address.
node_labels = st.sampled_from([{}, {"role": "worker"}, {"role": "control-plane"}, {"role": "worker", "zone": "z1"}])
node_ips = st.sampled_from([(N1,), (N2,), (N3,), (N1, "fd00:77::1"), ("192.168.77.20",), ()])
node_change = st.tuples(st.sampled_from(["n1", "n2", "n3", "n4"]), st.one_of(st.none(), st.tuples(node_labels, node_ips)))
node_selector = st.sampled_from([{}, WORKER, CONTROL, {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                                 {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["worker"]}]}])
admin_rule = st.builds(lambda action, sel, port, pods: eg(action, {"nodes": sel}, *([{"pods": pod("y", "a")}] if pods else []),
                                                          ports=[tcp(port)] if port else None),
                       st.sampled_from(["Allow", "Deny", "Pass"]), node_selector, st.sampled_from([0, 80, 81]), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(admin_rule, min_size=1, max_size=3), changes=st.lists(node_change, min_size=1, max_size=5))
def test_random_node_churn_incremental_equals_full_and_rules_agree(rules, changes):
    admin = [anp("n", 1, SUBJ_X, egress=rules)]
    inc = Incremental("node-a")
    current: dict[str, dict | None] = dict(NODES)
    inc.compute(snap(admin))
    for name, new in changes:
        current[name] = None if new is None else raw_node(name, new[0], *(("InternalIP", a) for a in new[1]))
        s = snap(admin, **current)
        verdicts = inc.compute(s)
        assert verdicts == compute(s, "node-a")
    k = FakeKernel()
    asyncio.run(Programmer(k).apply(verdicts))
    for dst in (N1, N2, N3, "192.168.77.20", OUTSIDE):
        for port in (80, 81):
            assert k.forward(ip("x/a"), dst, "tcp", port) == allowed(verdicts, ip("x/a"), dst, "TCP", port), (dst, port)
