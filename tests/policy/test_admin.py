"""AdminNetworkPolicy / BaselineAdminNetworkPolicy: the conformance truth tables on the pure model and
on the rendered rules (fake kernel), and the ordering the chains must keep."""

from __future__ import annotations

import pytest

from podnet.policy import render as r
from podnet.policy.model import allowed, compute
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel

from .admin_cases import CASES, SUBJ_X, NS_Y, admin_snapshot, anp, banp, rule, tcp
from .cases import ALL, ip

PARAMS = [pytest.param(*c[1:], id=c[0]) for c in CASES]


def _wrong(verdict_of, expect):
    return sorted((f, t) for f in ALL for t in ALL if f != t and verdict_of(f, t) != expect(f, t))


@pytest.mark.parametrize("admin, policies, proto, port, expect", PARAMS)
def test_conformance_truth_table_on_model(admin, policies, proto, port, expect):
    verdicts = compute(admin_snapshot(admin, policies), None)
    wrong = _wrong(lambda f, t: allowed(verdicts, ip(f), ip(t), proto, port), expect)
    assert not wrong, f"{len(wrong)} cells differ, e.g. {wrong[:5]}"


@pytest.mark.parametrize("admin, policies, proto, port, expect", PARAMS)
async def test_conformance_truth_table_on_rendered_rules(admin, policies, proto, port, expect):
    verdicts = compute(admin_snapshot(admin, policies), None)
    k = FakeKernel()
    await Programmer(k).apply(verdicts)
    wrong = _wrong(lambda f, t: k.forward(ip(f), ip(t), proto, port), expect)
    assert not wrong, f"{len(wrong)} cells differ, e.g. {wrong[:5]}"


async def test_pass_is_a_goto_to_the_stage_chain_and_denies_precede_it():
    verdicts = compute(admin_snapshot([anp("p", 1, SUBJ_X, [rule("Pass", NS_Y), rule("Deny", {"namespaces": {}})])],
                                      [("x", {"podSelector": {}, "ingress": []})]), None)
    out = r.render(verdicts, 4)
    ich, _ = r.pod_chains("x/a")
    stage, _ = r.stage_chains("x/a")
    lines = [ln for ln in out.iptables.splitlines() if ln.startswith(f"-A {ich} ")]
    assert lines[0].endswith(f"-g {stage}") and lines[1].endswith("-j DROP"), lines
    assert f":{stage} - [0:0]" in out.iptables
    assert [ln for ln in out.iptables.splitlines() if ln.startswith(f"-A {stage} ")] == [f"-A {stage} -j DROP"]


def test_no_pass_means_no_stage_chain():
    verdicts = compute(admin_snapshot([anp("d", 1, SUBJ_X, [rule("Deny", NS_Y, ports=[tcp(80)])])]), None)
    out = r.render(verdicts, 4)
    assert not any(c.startswith("PODNET-NP-IP-") for c in out.chains)
    assert all(len(c) <= 28 for c in out.chains)


def test_baseline_entries_dropped_where_networkpolicy_isolates():
    snap = admin_snapshot([banp(SUBJ_X, [rule("Deny", NS_Y)])], [("x", {"podSelector": {}, "ingress": []})])
    assert all(v.baseline_ingress == () for v in compute(snap, None).values())


def test_everything_after_a_match_all_entry_is_left_out():
    v = compute(admin_snapshot([anp("a", 1, SUBJ_X, [rule("Deny", {"namespaces": {}}), rule("Allow", NS_Y)]),
                                anp("b", 2, SUBJ_X, [rule("Allow", NS_Y)])]), None)["x/a"]
    # a namespaces peer selecting every namespace is a pod set, not "every address": both stay ordered
    assert [e.action for e in v.admin_ingress] == ["Deny", "Allow", "Allow"]
    # a peer kind of a newer API version fails closed: a Deny of every address, so nothing follows it
    v = compute(admin_snapshot([anp("a", 1, SUBJ_X, egress=[rule("Deny", {"serviceAccounts": {}}, egress=True)]),
                                anp("b", 2, SUBJ_X, egress=[rule("Allow", NS_Y, egress=True)])]), None)["x/a"]
    assert [e.action for e in v.admin_egress] == ["Deny"]
    # a nodes peer is the nodes' addresses (none in this snapshot): the later entries stay
    v = compute(admin_snapshot([anp("a", 1, SUBJ_X, egress=[rule("Deny", {"nodes": {}}, egress=True)]),
                                anp("b", 2, SUBJ_X, egress=[rule("Allow", NS_Y, egress=True)])]), None)["x/a"]
    assert [e.action for e in v.admin_egress] == ["Deny", "Allow"]


async def test_log_denied_logs_admin_denies():
    verdicts = compute(admin_snapshot([anp("d", 1, SUBJ_X, [rule("Deny", NS_Y)])]), None)
    k = FakeKernel()
    await Programmer(k, log_denied=True).apply(verdicts)
    assert not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)
    assert k.logged and k.logged[-1][1:] == (ip("y/a"), ip("x/a"), "tcp", 80)
    assert k.forward(ip("z/a"), ip("x/a"), "TCP", 80)


async def test_denied_counter_counts_admin_denies():
    verdicts = compute(admin_snapshot([anp("d", 1, SUBJ_X, [rule("Pass", NS_Y)])], [("x", {"podSelector": {}, "ingress": []})]), None)
    k = FakeKernel()
    prog = Programmer(k)
    await prog.apply(verdicts)
    assert not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)  # passed, then the NetworkPolicy's DROP in the stage chain
    assert (await prog.denied()).get("x/a") == 1
