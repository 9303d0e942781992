"""policy/model.py: the upstream e2e cases as truth tables on the pure model, plus edge cases."""

from __future__ import annotations

import pytest

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.policy.model import Snapshot, allowed, compute
from podnet.policy.testing import raw_ns, raw_pod, raw_policy

from .cases import ALL, CASES, ip, snapshot


def table(verdicts, proto, port):
    return {(f, t): allowed(verdicts, ip(f), ip(t), proto, port) for f in ALL for t in ALL if f != t}


@pytest.mark.parametrize("policies, proto, port, expect", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_upstream_truth_table(policies, proto, port, expect):
    got = table(compute(snapshot(policies), None), proto, port)
    want = {(f, t): expect(f, t) for f in ALL for t in ALL if f != t}
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"{len(wrong)} cells differ, e.g. {wrong[:5]}"


def test_no_policies_nothing_isolated():
    assert compute(snapshot([]), None) == {}


def test_only_local_pods_get_verdicts():
    snap = snapshot([("x", {"podSelector": {}, "ingress": []})], node_of=lambda p: "node-a" if p.endswith("a") else "node-b")
    assert set(compute(snap, "node-a")) == {"x/a"}


def test_cross_node_judged_by_each_end():
    """Egress is enforced where the source runs, ingress where the destination runs."""
    policies = [("x", {"podSelector": sel_a(), "policyTypes": ["Egress"]}),
                ("y", {"podSelector": {}, "ingress": []})]
    node = lambda p: "n1" if p.startswith("x/") else "n2"  # noqa: E731
    snap = snapshot(policies, node_of=node)
    n1, n2 = compute(snap, "n1"), compute(snap, "n2")
    assert not allowed(n1, ip("x/a"), ip("z/a"), "TCP", 80)
    assert allowed(n1, ip("x/b"), ip("y/a"), "TCP", 80) and not allowed(n2, ip("x/b"), ip("y/a"), "TCP", 80)


def sel_a():
    return {"matchLabels": {"pod": "a"}}


def test_host_network_pod_is_not_a_target_nor_a_peer():
    pods = (parse_policy_pod(raw_pod("x", "h", "192.168.0.2", host_network=True, labels={"pod": "a"})),
            parse_policy_pod(raw_pod("x", "a", "10.1.0.1", labels={"pod": "a"})))
    pol = parse_network_policy(raw_policy("x", "p", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))
    v = compute(Snapshot((pol,), pods, (parse_namespace(raw_ns("x")),)), None)
    assert set(v) == {"x/a"}
    assert not allowed(v, "192.168.0.2", "10.1.0.1", "TCP", 80)


def test_finished_pod_address_not_a_peer():
    pods = (parse_policy_pod(raw_pod("x", "done", "10.1.0.9", labels={"pod": "b"}, phase="Succeeded")),
            parse_policy_pod(raw_pod("x", "a", "10.1.0.1", labels={"pod": "a"})))
    pol = parse_network_policy(raw_policy("x", "p", {"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {}}]}]}))
    v = compute(Snapshot((pol,), pods, (parse_namespace(raw_ns("x")),)), None)
    assert not allowed(v, "10.1.0.9", "10.1.0.1", "TCP", 80)


def test_deleted_namespace_matches_no_namespace_selector():
    snap = snapshot([("x", {"podSelector": sel_a(), "ingress": [{"from": [{"namespaceSelector": {}}]}]})])
    gone = Snapshot(snap.policies, snap.pods, tuple(n for n in snap.namespaces if n.name != "y"))
    v = compute(gone, None)
    assert not allowed(v, ip("y/a"), ip("x/a"), "TCP", 80)
    assert allowed(v, ip("z/a"), ip("x/a"), "TCP", 80)


def test_namespace_label_change_takes_effect():
    pols = [("x", {"podSelector": sel_a(), "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]})]
    before = compute(snapshot(pols), None)
    after = compute(snapshot(pols, ns_labels={"z": {"team": "blue"}}), None)
    assert not allowed(before, ip("z/b"), ip("x/a"), "TCP", 80)
    assert allowed(after, ip("z/b"), ip("x/a"), "TCP", 80)


def test_set_identity_stable_under_pod_churn():
    pols = [("x", {"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})]
    snap = snapshot(pols)
    fewer = Snapshot(snap.policies, tuple(p for p in snap.pods if p.key != "x/b"), snap.namespaces)
    a1, a2 = compute(snap, None)["x/a"].ingress[0], compute(fewer, None)["x/a"].ingress[0]
    assert a1.peer.identity == a2.peer.identity and a1.peer.ips == (ip("x/b"),) and a2.peer.ips == ()


def test_compute_is_deterministic_regardless_of_input_order():
    snap = snapshot([c for case in CASES[:6] for c in case[1]])
    rev = Snapshot(tuple(reversed(snap.policies)), tuple(reversed(snap.pods)), tuple(reversed(snap.namespaces)))
    assert compute(snap, None) == compute(rev, None)
