"""policy/render.py + programmer.py on the fake kernel: the rendered rules do what the model says."""

from __future__ import annotations

import pytest

from podnet.kube.netpol import IPBlock
from podnet.policy import render as r
from podnet.policy.kernel import Kernel, KernelError, KernelRunner
from podnet.policy.model import AddressSet, Allow, PodVerdict, PortRange, Snapshot, allowed, compute
from podnet.policy.programmer import Programmer, cleanup
from podnet.policy.testing import FakeKernel

from .cases import ALL, CASES, ip, snapshot


@pytest.mark.parametrize("impl", [pytest.param(FakeKernel, id="fake"), pytest.param(KernelRunner, id="real")])
def test_kernels_implement_the_protocol(impl):
    import inspect

    members = [n for n, v in vars(Kernel).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert len(members) == 9
    for name in members:
        want, got = inspect.signature(getattr(Kernel, name)), inspect.signature(getattr(impl, name))
        assert list(want.parameters) == list(got.parameters), name
        assert inspect.iscoroutinefunction(getattr(impl, name)), name
    assert isinstance(impl().family, int)


@pytest.mark.parametrize("policies, proto, port, expect", [pytest.param(*c[1:], id=c[0]) for c in CASES])
async def test_rendered_rules_match_model(policies, proto, port, expect):
    verdicts = compute(snapshot(policies), None)
    k = FakeKernel()
    await Programmer(k).apply(verdicts)
    for f in ALL:
        for t in ALL:
            if f != t:
                assert k.forward(ip(f), ip(t), proto, port) == allowed(verdicts, ip(f), ip(t), proto, port), (f, t)
                assert k.forward(ip(f), ip(t), proto, port) == expect(f, t), (f, t)


async def test_established_replies_pass_even_when_isolated():
    k = FakeKernel()
    await Programmer(k).apply(compute(snapshot([("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]), None))
    assert not k.forward(ip("x/a"), ip("y/a"), "TCP", 80)
    assert k.forward(ip("x/a"), ip("y/a"), "TCP", 80, established=True)
    assert k.forward(ip("y/a"), ip("x/a"), "TCP", 40000, established=True)


async def test_render_is_deterministic():
    policies = [c for case in CASES for c in case[1]]
    snap = snapshot(policies)
    rev = Snapshot(tuple(reversed(snap.policies)), tuple(reversed(snap.pods)), snap.namespaces)
    a, b = r.render(compute(snap, None), 4), r.render(compute(rev, None), 4)
    assert a.iptables == b.iptables and a.sets == b.sets


def _v(allows, ips=("10.1.0.1",)):
    return {"x/a": PodVerdict("x/a", ips, tuple(allows), None)}


@pytest.mark.parametrize("allows, want", [
    pytest.param([Allow(None, (PortRange("SCTP", 90, 99),))], "-p sctp --dport 90:99 -j RETURN", id="sctp-range"),
    pytest.param([Allow(None, (PortRange("UDP"),))], "-p udp -j RETURN", id="all-udp-ports"),
    pytest.param([Allow(None, None)], "-A PODNET-NP-I-", id="everything"),
])
def test_port_rendering(allows, want):
    assert want in r.render(_v(allows), 4).iptables


def test_zero_block_split_in_halves():
    spec = r.render(_v([Allow(AddressSet("b", block=IPBlock("0.0.0.0/0", ("10.0.0.0/8",))), None)]), 4).sets
    (s,) = spec.values()
    assert s.kind == "hash:net" and s.members == ("0.0.0.0/1", "128.0.0.0/1") and s.nomatch == ("10.0.0.0/8",)


def test_other_family_only_rendered_in_its_own_table():
    v = {"x/a": PodVerdict("x/a", ("10.1.0.1", "fd00::1"),
                           (Allow(AddressSet("b", block=IPBlock("fd00::/64")), None),), None)}
    four, six = r.render(v, 4), r.render(v, 6)
    pending = [ln for ln in four.iptables.splitlines() if "PENDING" in ln]
    assert not four.sets and "-d 10.1.0.1/32" in four.iptables and "fd00" not in four.iptables
    assert [ln for ln in four.iptables.splitlines() if "match-set" in ln] == pending
    assert len(six.sets) == 1 and "-d fd00::1/128" in six.iptables and "10.1.0.1" not in six.iptables
    assert all("PODNET-PS6-" in ln for ln in six.iptables.splitlines() if "match-set" in ln)


@pytest.mark.parametrize("bad", [
    pytest.param("10.0.0.1 -j ACCEPT", id="space"),
    pytest.param("10.0.0.1\n-A FORWARD", id="newline"),
    pytest.param("10.0.0.1%eth0", id="percent"),
])
def test_unsafe_values_refused(bad):
    with pytest.raises(r.UnsafeValue):
        r.render({"x/a": PodVerdict("x/a", (bad,), (), None)}, 4)


def test_names_fit_kernel_limits():
    ich, ech = r.pod_chains("some-namespace/a-very-long-pod-name-" + "x" * 200)
    assert len(ich) <= 28 and len(ech) <= 28
    name = r.set_name("pods|x|...", 4)
    assert len(name) <= 31 and len(r.temp_name(name)) <= 31 and r.temp_name(name).startswith("PODNET-PT4-")


async def test_pod_churn_changes_set_members_without_touching_chains():
    pol = [("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})]
    k = FakeKernel()
    prog = Programmer(k)
    snap = snapshot(pol)
    first = await prog.apply(compute(snap, None))
    assert first.chains_written and first.sets_written == 1
    k.calls.clear()
    moved = Snapshot(snap.policies, tuple(p for p in snap.pods if p.key != "x/b"), snap.namespaces)
    second = await prog.apply(compute(moved, None))
    assert k.calls == ["ipset_update"] and not second.chains_written and second.sets_written == 1
    assert not k.forward(ip("x/b"), ip("x/a"), "TCP", 80)
    k.calls.clear()
    await prog.apply(compute(snap, None))  # x/b is back
    assert k.calls == ["ipset_update"] and k.forward(ip("x/b"), ip("x/a"), "TCP", 80)
    third = await prog.apply(compute(snap, None))
    assert third.sets_written == 0 and not third.chains_written


async def test_policy_delete_reopens_and_removes_chains_and_sets():
    k = FakeKernel()
    prog = Programmer(k)
    await prog.apply(compute(snapshot([("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})]), None))
    assert not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)
    done = await prog.apply({})
    assert k.forward(ip("y/a"), ip("x/a"), "TCP", 80)
    assert done.sets_destroyed == 1 and set(k.sets) == set(r.pending_sets(4))
    assert {c for c in k.chains if c.startswith("PODNET-")} == {r.FORWARD, r.INPUT}


async def test_failed_restore_keeps_previous_rules_then_recovers():
    k = FakeKernel()
    prog = Programmer(k)
    deny = compute(snapshot([("x", {"podSelector": {}, "ingress": []})]), None)
    await prog.apply(deny)
    k.fail_next = "iptables_restore"
    with pytest.raises(KernelError):
        await prog.apply({})
    assert not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)  # still closed: nothing half-applied
    await prog.apply({})
    assert k.forward(ip("y/a"), ip("x/a"), "TCP", 80)


async def test_restart_adopts_and_removes_leftovers():
    k = FakeKernel()
    await Programmer(k).apply(compute(snapshot([("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})]), None))
    fresh = Programmer(k)  # a restarted engine: no memory of the first one's chains and sets
    await fresh.apply({})
    assert set(k.sets) == set(r.pending_sets(4)) and {c for c in k.chains if c.startswith("PODNET-NP-")} == set()


async def test_jumps_first_and_cleanup_removes_everything():
    k = FakeKernel()
    k.chains["FORWARD"].append("-j ACCEPT")
    await Programmer(k).apply(compute(snapshot([("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})]), None))
    assert k.chains["FORWARD"][0] == f"-j {r.FORWARD}" and k.chains["INPUT"][0] == f"-j {r.INPUT}"
    removed = await cleanup(k)
    assert removed >= 4 and k.chains["FORWARD"] == ["-j ACCEPT"] and not k.sets
    assert not any(c.startswith("PODNET-") for c in k.chains)


def test_policy_chains_are_not_the_proxys():
    from podnet.proxy import names

    text = r.render(compute(snapshot([("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]), None), 4)
    assert text.chains and not any(names.is_ours(c) for c in text.chains)
    assert names.is_ours("PODNET-SERVICES")


async def test_ten_thousand_ipblocks_are_one_set():
    peers = [{"ipBlock": {"cidr": f"172.{16 + i // 256 % 16}.{i % 256}.0/24"}} for i in range(4096)]
    peers += [{"ipBlock": {"cidr": f"fd00:{i:x}::/64"}} for i in range(5904)]
    verdicts = compute(snapshot([("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": peers}]})]), None)
    out = r.render(verdicts, 4)
    (spec,) = out.sets.values()
    assert spec.kind == "hash:net" and len(spec.members) == 4096
    k = FakeKernel()
    await Programmer(k).apply(verdicts)
    assert k.forward("172.20.7.9", ip("x/a"), "TCP", 80) and not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)


async def test_log_denied_logs_only_denied_and_counts_drops():
    k = FakeKernel()
    prog = Programmer(k, log_denied=True)
    pol = [("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})]
    await prog.apply(compute(snapshot(pol), None))
    assert k.forward(ip("x/b"), ip("x/a"), "TCP", 80) and not k.forward(ip("y/a"), ip("x/a"), "TCP", 80)
    assert not k.forward(ip("y/b"), ip("x/a"), "UDP", 53)
    assert [(src, proto) for _c, src, _d, proto, _p in k.logged] == [(ip("y/a"), "tcp"), (ip("y/b"), "udp")]
    assert await prog.denied() == {"x/a": 2}
