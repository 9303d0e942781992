"""policy/incremental.py: on random change sequences the incremental verdicts equal a full compute
after every step, and a change recomputes only the local pods it can affect; the programmer's
delta restores (only changed chains) leave the kernel as a full apply does."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.netlab.check.netpol_cases import ALL, NAMESPACES, PORTS
from podnet.policy import render as r
from podnet.policy.incremental import Incremental
from podnet.policy.model import Snapshot, compute
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod, raw_policy

from .admin_cases import parse
from .cases import ip
from .test_property import policy

NODE = "node-a"
NS_Y = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
ADMIN = [
    {"kind": "AdminNetworkPolicy", "metadata": {"name": "deny-y"}, "spec": {
        "priority": 5, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [NS_Y]}]}},
    {"kind": "AdminNetworkPolicy", "metadata": {"name": "pass-b"}, "spec": {
        "priority": 1, "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}},
        "egress": [{"action": "Pass", "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}}],
                    "ports": [{"namedPort": "serve-80-tcp"}]}]}},
    {"kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"}, "spec": {
        "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [NS_Y]}]}},
]


class World:
    """Raw objects that changes edit; ``snapshot()`` parses them as an informer would."""

    def __init__(self, policies: list[tuple[str, dict]]) -> None:
        self.pods = {p: self.fresh(p) for p in ALL}
        self.ns = {n: {} for n in NAMESPACES}
        self.policies = {f"{ns}/p{i}": (ns, spec) for i, (ns, spec) in enumerate(policies)}
        self.admin: dict[str, dict] = {}
        self.serial = 0

    @staticmethod
    def fresh(p: str) -> dict:
        return {"ip": ip(p), "node": NODE if p.endswith(("a", "b")) else "node-b", "labels": {"pod": p.split("/")[1]},
                "phase": "Running"}

    def snapshot(self) -> Snapshot:
        pods = tuple(parse_policy_pod(raw_pod(k.split("/")[0], k.split("/")[1], v["ip"], node=v["node"],
                                              labels=v["labels"], ports=PORTS, phase=v["phase"]))
                     for k, v in sorted(self.pods.items()))
        nss = tuple(parse_namespace(raw_ns(n, **labels)) for n, labels in sorted(self.ns.items()))
        pols = tuple(parse_network_policy(raw_policy(ns, k.split("/")[1], spec)) for k, (ns, spec) in self.policies.items())
        return Snapshot(pols, pods, nss, tuple(parse(a) for a in self.admin.values()))

    def apply(self, change: tuple) -> None:
        kind, *args = change
        if kind in ("relabel-pod", "move-ip", "move-node", "finish", "delete-pod") and args[0] not in self.pods:
            self.pods[args[0]] = self.fresh(args[0])  # a deleted pod comes back
        elif kind == "relabel-pod":
            self.pods[args[0]]["labels"] = args[1]
        elif kind == "move-ip":
            self.serial += 1
            self.pods[args[0]]["ip"] = f"10.9.{self.serial // 250}.{self.serial % 250 + 1}"
        elif kind == "move-node":
            p = self.pods[args[0]]
            p["node"] = "node-b" if p["node"] == NODE else NODE
        elif kind == "finish":
            self.pods[args[0]]["phase"] = "Succeeded"
        elif kind == "delete-pod":
            self.pods.pop(args[0], None)
        elif kind == "relabel-ns":
            self.ns[args[0]] = args[1]
        elif kind == "add-policy":
            self.serial += 1
            self.policies[f"{args[0][0]}/n{self.serial}"] = args[0]
        elif kind == "delete-policy":
            if self.policies:
                self.policies.pop(sorted(self.policies)[args[0] % len(self.policies)])
        elif kind == "toggle-admin":
            a = ADMIN[args[0]]
            if a["metadata"]["name"] in self.admin:
                del self.admin[a["metadata"]["name"]]
            else:
                self.admin[a["metadata"]["name"]] = a
        elif kind == "nothing":
            pass


pod_names = st.sampled_from(ALL)
changes = st.one_of(
    st.tuples(st.just("relabel-pod"), pod_names, st.sampled_from([{}, {"pod": "a"}, {"pod": "b"}, {"pod": "c"}])),
    st.tuples(st.just("move-ip"), pod_names),
    st.tuples(st.just("move-node"), pod_names),
    st.tuples(st.just("finish"), pod_names),
    st.tuples(st.just("delete-pod"), pod_names),
    st.tuples(st.just("relabel-ns"), st.sampled_from(NAMESPACES), st.sampled_from([{}, {"team": "t"}])),
    st.tuples(st.just("add-policy"), policy()),
    st.tuples(st.just("delete-policy"), st.integers(0, 20)),
    st.tuples(st.just("toggle-admin"), st.integers(0, len(ADMIN) - 1)),
    st.tuples(st.just("nothing")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policy(), max_size=4), st.lists(changes, min_size=1, max_size=12))
def test_incremental_equals_full_compute_after_every_change(policies, steps):
    world = World(policies)
    inc = Incremental(NODE)
    assert inc.compute(world.snapshot()) == compute(world.snapshot(), NODE)
    for step in steps:
        world.apply(step)
        snap = world.snapshot()
        assert inc.compute(snap) == compute(snap, NODE), step


def test_a_policy_change_recomputes_only_the_pods_it_selects():
    world = World([("x", {"podSelector": {}, "ingress": []}), ("y", {"podSelector": {}, "ingress": []})])
    inc = Incremental(NODE)
    inc.compute(world.snapshot())
    assert inc.last_recomputed is None
    world.apply(("add-policy", ("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]})))
    inc.compute(world.snapshot())
    assert inc.last_recomputed == 1  # x/a (x/b lives on this node too, but is not selected)
    inc.compute(world.snapshot())
    assert inc.last_recomputed == 0


FROM_C = ("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]})
TO_C_NAMED = ("x", {"podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "c"}}}], "ports": [{"port": "serve-80-tcp"}]}]})
DENY_Y = ("y", {"podSelector": {}, "ingress": []})
PEER_CHANGES = {
    # name: (policies, change, pods recomputed, sets refilled)
    "peer's new address is a set-member change": ([FROM_C, DENY_Y], ("move-ip", "x/c"), 0, 1),
    "peer relabelled out of the set": ([FROM_C, DENY_Y], ("relabel-pod", "x/c", {"pod": "b"}), 0, 1),
    "peer finished": ([FROM_C, DENY_Y], ("finish", "x/c"), 0, 1),
    "peer deleted": ([FROM_C, DENY_Y], ("delete-pod", "x/c"), 0, 1),
    "a pod no peer selects": ([FROM_C, DENY_Y], ("move-ip", "z/c"), 0, 0),
    "egress named port: its per-port sets may change": ([TO_C_NAMED], ("move-ip", "x/c"), 2, 0),
}


@pytest.mark.parametrize("policies, change, recomputed, refilled", PEER_CHANGES.values(), ids=PEER_CHANGES.keys())
def test_a_peer_change_refills_sets_without_recomputing_pods(policies, change, recomputed, refilled):
    world = World(policies)
    inc = Incremental(NODE)
    before = inc.compute(world.snapshot())
    world.apply(change)
    v = inc.compute(world.snapshot())
    assert v == compute(world.snapshot(), NODE)
    assert (inc.last_recomputed, inc.last_refilled) == (recomputed, refilled)
    if refilled:
        assert v != before  # the members changed in the verdicts...
        assert r.render(v, 4).iptables == r.render(before, 4).iptables  # ...and no rule did


def _ours(k: FakeKernel) -> tuple[dict, dict]:
    chains = {c: rules for c, rules in k.chains.items() if c.startswith(("PODNET-", "FORWARD", "INPUT"))}
    return chains, {name: (kind, sorted(m), sorted(n)) for name, (kind, m, n) in k.sets.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policy(), max_size=4), st.lists(changes, min_size=1, max_size=8))
def test_delta_restores_leave_the_kernel_as_a_full_apply_does(policies, steps):
    """The programmer rewrites only changed chains after the first apply; the kernel must end up
    exactly as a fresh full apply of the same verdicts leaves it."""
    async def run() -> None:
        world = World(policies)
        k = FakeKernel()
        prog = Programmer(k, log_denied=True)
        await prog.apply(compute(world.snapshot(), NODE))
        for step in steps:
            world.apply(step)
            verdicts = compute(world.snapshot(), NODE)
            await prog.apply(verdicts)
            fresh = FakeKernel()
            await Programmer(fresh, log_denied=True).apply(verdicts)
            assert _ours(k) == _ours(fresh), step

    asyncio.run(run())


async def test_a_change_to_one_pod_rewrites_only_its_chains():
    world = World([("x", {"podSelector": {}, "ingress": []}), ("y", {"podSelector": {}, "ingress": []})])
    k = FakeKernel()
    prog = Programmer(k)
    await prog.apply(compute(world.snapshot(), NODE))
    texts: list[str] = []
    real = k.iptables_restore

    async def spy(text: str) -> None:
        texts.append(text)
        await real(text)

    k.iptables_restore = spy
    world.apply(("add-policy", ("y", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]})))
    await prog.apply(compute(world.snapshot(), NODE))
    declared = [ln[1:].split()[0] for ln in texts[-1].splitlines() if ln.startswith(":")]
    assert declared == [r.pod_chains("y/a")[0]], texts[-1]
    assert k.forward(ip("x/a"), ip("y/a"), "TCP", 80) and not k.forward(ip("x/a"), ip("y/a"), "TCP", 81)


async def test_engines_with_and_without_incremental_program_the_same_kernel():
    """The engine wiring: the same informer events to an incremental engine and a full-recompute
    one leave their kernels identical after every sync, admin policies included."""
    from podnet.kube.testing import FakeInformer
    from podnet.policy.engine import Engine

    world = World([("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}}]}]})])
    sides = []
    for incremental in (True, False):
        k = FakeKernel()
        eng = Engine([Programmer(k)], NODE, incremental=incremental)
        infs = [FakeInformer() for _ in range(5)]
        eng.attach(*infs)
        sides.append((eng, k, infs))

    def feed() -> None:
        snap = world.snapshot()
        for _eng, _k, (pols, pods, nss, anps, banps) in sides:
            for inf, objs in ((pols, snap.policies), (pods, snap.pods), (nss, snap.namespaces),
                              (anps, [a for a in snap.admin if a.kind == "AdminNetworkPolicy"]),
                              (banps, [a for a in snap.admin if a.kind != "AdminNetworkPolicy"])):
                keys = {o.key for o in objs}
                for key in [k for k in inf.store if k not in keys]:
                    inf.delete(key)
                for o in objs:
                    inf.set(o)
                if not inf.has_synced:
                    inf.synced()

    steps = [("nothing",), ("toggle-admin", 0), ("move-ip", "x/c"), ("relabel-pod", "x/b", {"pod": "a"}),
             ("toggle-admin", 2), ("relabel-ns", "y", {"team": "t"}), ("toggle-admin", 1), ("delete-pod", "y/b"),
             ("add-policy", ("y", {"podSelector": {}, "policyTypes": ["Egress"]})), ("toggle-admin", 0)]
    for step in steps:
        world.apply(step)
        feed()
        for eng, _k, _i in sides:
            assert await eng.sync(), eng.last_error
        assert _ours(sides[0][1]) == _ours(sides[1][1]), step
        assert sides[0][0].verdicts == sides[1][0].verdicts == compute(world.snapshot(), NODE), step


async def test_engine_writes_only_members_for_a_peer_change_and_recovers_from_a_failed_write():
    from podnet.kube.testing import FakeInformer
    from podnet.policy.engine import Engine

    world = World([FROM_C, DENY_Y])
    k = FakeKernel()
    eng = Engine([Programmer(k)], NODE)
    pols, pods, nss = FakeInformer(), FakeInformer(), FakeInformer()
    eng.attach(pols, pods, nss)

    def feed() -> None:
        snap = world.snapshot()
        for inf, objs in ((pols, snap.policies), (pods, snap.pods), (nss, snap.namespaces)):
            for o in objs:
                inf.set(o)
            if not inf.has_synced:
                inf.synced()

    feed()
    assert await eng.sync()
    k.calls.clear()
    world.apply(("move-ip", "x/c"))
    feed()
    assert await eng.sync() and k.calls == ["ipset_update"]
    assert k.forward(world.pods["x/c"]["ip"], ip("x/a"), "TCP", 80)
    world.apply(("move-ip", "x/c"))
    feed()
    k.fail_next = "ipset_update"
    assert not await eng.sync()  # the previous rules stay; the next sync re-reads and rewrites
    assert not k.forward(world.pods["x/c"]["ip"], ip("x/a"), "TCP", 80)
    k.calls.clear()
    assert await eng.sync()
    assert "iptables_restore" in k.calls and k.forward(world.pods["x/c"]["ip"], ip("x/a"), "TCP", 80)
    fresh = FakeKernel()
    await Programmer(fresh).apply(compute(world.snapshot(), NODE))
    assert _ours(k) == _ours(fresh)
