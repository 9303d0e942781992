"""policy/engine.py and the podnet-policy CLI surface, with fake informers and the fake kernel."""

from __future__ import annotations

import asyncio

import pytest

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.policy.cli import parse_duration, parser
from podnet.policy.engine import Engine
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod, raw_policy

DENY_X = raw_policy("x", "deny", {"podSelector": {}, "ingress": []})


def setup_engine(**kw):
    k = FakeKernel()
    eng = Engine([Programmer(k)], "node-a", **kw)
    pols, pods, nss = FakeInformer(), FakeInformer(), FakeInformer()
    eng.attach(pols, pods, nss)
    for n in ("x", "y"):
        nss.set(parse_namespace(raw_ns(n)))
    pods.set(parse_policy_pod(raw_pod("x", "a", "10.1.0.1")))
    pods.set(parse_policy_pod(raw_pod("y", "a", "10.1.1.1", node="node-b")))
    return eng, k, pols, pods, nss


async def test_no_sync_before_every_informer_synced():
    eng, k, pols, pods, nss = setup_engine()
    pols.synced(), pods.synced()
    assert not await eng.sync() and k.calls == []
    nss.synced()
    assert await eng.sync()


async def test_policy_add_label_change_and_delete_take_effect():
    eng, k, pols, pods, nss = setup_engine()
    for i in (pols, pods, nss):
        i.synced()
    pols.set(parse_network_policy(DENY_X))
    assert await eng.sync()
    assert not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
    allow = raw_policy("x", "allow", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]})
    pols.set(parse_network_policy(allow))
    await eng.sync()
    assert not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
    nss.set(parse_namespace(raw_ns("y", team="t")))
    await eng.sync()
    assert k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
    pods.set(parse_policy_pod(raw_pod("y", "a", "10.1.1.7", node="node-b")))  # the peer's IP changes
    await eng.sync()
    assert k.forward("10.1.1.7", "10.1.0.1", "tcp", 80) and not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
    pols.delete("x/allow"), pols.delete("x/deny")
    await eng.sync()
    assert k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)


async def test_run_paces_bursts_into_few_syncs_and_stops():
    eng, k, pols, pods, nss = setup_engine(min_sync_period=0.05)
    for i in (pols, pods, nss):
        i.synced()
    stop = asyncio.Event()
    task = asyncio.create_task(eng.run(stop))
    for n in range(50):
        pols.set(parse_network_policy(raw_policy("x", f"p{n}", {"podSelector": {}, "ingress": []})))
        await asyncio.sleep(0)
    for _ in range(200):
        if eng.syncs and not eng._dirty.is_set():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert 1 <= eng.syncs <= 5
    assert not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)


async def test_failed_sync_is_counted_and_retried():
    eng, k, pols, pods, nss = setup_engine()
    for i in (pols, pods, nss):
        i.synced()
    pols.set(parse_network_policy(DENY_X))
    k.fail_next = "ipset_restore"
    await eng.sync()  # no sets needed: succeeds without calling ipset
    k.fail_next = "iptables_restore"
    pols.set(parse_network_policy(raw_policy("x", "deny", {"podSelector": {}, "policyTypes": ["Egress"]})))
    assert not await eng.sync() and eng.last_error
    assert await eng.sync() and eng.last_error is None


@pytest.mark.parametrize("text, seconds", [
    pytest.param("100ms", 0.1, id="ms"), pytest.param("1m30s", 90.0, id="m-s"), pytest.param("2.5s", 2.5, id="fraction"),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("argv", [
    pytest.param(["--min-sync-period", "1d"], id="unsupported-unit"),
    pytest.param(["--ip-family", "5"], id="bad-family"),
    pytest.param(["--metrics-bind-address", "localhost"], id="no-port"),
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2 and "podnet-policy: error:" in capsys.readouterr().err


async def test_metrics_after_sync():
    from prometheus_client import REGISTRY

    eng, k, pols, pods, nss = setup_engine()
    for i in (pols, pods, nss):
        i.synced()
    before = REGISTRY.get_sample_value("podnet_policy_programming_latency_seconds_count") or 0
    pols.set(parse_network_policy(DENY_X))
    assert await eng.sync()
    assert REGISTRY.get_sample_value("podnet_policy_policies") == 1
    assert REGISTRY.get_sample_value("podnet_policy_isolated_pods") == 1
    # the ESTABLISHED returns, the pod's dispatch and its DROP, the pending-set drops (2 in FORWARD, 1 in INPUT)
    assert REGISTRY.get_sample_value("podnet_policy_programmed_rules", {"family": "4"}) == 7
    assert REGISTRY.get_sample_value("podnet_policy_programming_latency_seconds_count") == before + 1
    assert not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
    assert await eng.collect_denied() == {"x/a": 1}
    assert REGISTRY.get_sample_value("podnet_policy_denied_packets", {"namespace": "x", "pod": "a"}) == 1
