"""The lab EndpointSlice controller's last-change-trigger-time, as the real controller sets it."""

from __future__ import annotations

import pytest

from podnet.kube import resources as r
from podnet.kube.objects import LAST_CHANGE_TRIGGER_TIME, parse_rfc3339_ns
from podnet.netlab.apiserver.endpointslices import TriggerTimeTracker

CREATED = "2030-01-01T00:00:00Z"
T1 = "2030-01-01T00:00:05.123456789Z"
T2 = "2030-01-01T00:00:07Z"
T3 = "2030-01-01T00:00:09.5Z"


def service(created=CREATED, name="web"):
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created}}


def pod(name, ready_at=None):
    cond = {"type": "Ready", "status": "True"}
    if ready_at:
        cond["lastTransitionTime"] = ready_at
    return {"metadata": {"name": name}, "status": {"conditions": [cond]}}


ns = parse_rfc3339_ns

TRACKER = [
    ("first-sync-is-service-creation", [[pod("a", T1)]], [ns(CREATED)]),
    ("nothing-changed-is-zero", [[pod("a", T1)], [pod("a", T1)]], [ns(CREATED), 0]),
    ("new-ready-pod", [[], [pod("a", T1)]], [ns(CREATED), ns(T1)]),
    ("earliest-of-changed", [[pod("a", T1)], [pod("a", T3), pod("b", T2)]], [ns(CREATED), ns(T2)]),
    ("unchanged-pod-does-not-count", [[pod("a", T1)], [pod("a", T1), pod("b", T3)]], [ns(CREATED), ns(T3)]),
    ("pod-without-transition-time", [[], [pod("a")]], [ns(CREATED), 0]),
    ("pod-gone-is-zero", [[pod("a", T1)], []], [ns(CREATED), 0]),
]


@pytest.mark.parametrize("rounds,want", [c[1:] for c in TRACKER], ids=[c[0] for c in TRACKER])
def test_trigger_time_tracker(rounds, want):
    t = TriggerTimeTracker()
    assert [t.compute(service(), pods) for pods in rounds] == want


def test_tracker_forgets_deleted_service():
    t = TriggerTimeTracker()
    assert t.compute(service(), [pod("a", T1)]) == ns(CREATED)
    t.forget("default", "web")
    assert t.compute(service(), [pod("a", T1)]) == ns(CREATED)  # a new Service again


def api_pod(name, ip, ready, at):
    return {
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": at}]},
    }


async def annotation(client):
    items, _ = await client.list(r.ENDPOINT_SLICES, namespace="default", label_selector="kubernetes.io/service-name=web")
    assert len(items) == 1
    return (items[0]["metadata"].get("annotations") or {}).get(LAST_CHANGE_TRIGGER_TIME), items[0]


async def test_controller_writes_trigger_time_of_the_change(client):
    out = await client.create(r.SERVICES, {"metadata": {"name": "web", "namespace": "default"},
                                           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
                              namespace="default")
    created, _ = await annotation(client)
    assert created == out["metadata"]["creationTimestamp"]  # a new Service: its creation time

    await client.create(r.PODS, api_pod("a", "10.244.0.5", True, T1), namespace="default")
    got, raw = await annotation(client)
    assert got == T1  # the pod's Ready transition, nanoseconds kept
    assert r.convert(r.ENDPOINT_SLICES, raw).last_change_trigger_time == pytest.approx(ns(T1) / 1e9)

    current = await client.get(r.PODS, "a", namespace="default")
    current["status"]["conditions"][0].update(status="False", lastTransitionTime=T3)
    await client.replace(r.PODS, current, namespace="default", subresource="status")
    got, raw = await annotation(client)
    assert got == T3  # the pod turned not ready at T3
    assert [e["conditions"]["ready"] for e in raw["endpoints"]] == [False]

    await client.delete(r.PODS, "a", namespace="default")
    got, raw = await annotation(client)
    assert got is None  # no pod/service trigger moved: the annotation is removed, as upstream
