"""The lab scheduler: pods without spec.nodeName are bound to a feasible node, deterministically."""

from __future__ import annotations

import pytest

from podnet.kube import resources as r
from podnet.netlab.apiserver.scheduler import choose_node


def node(name, cidr="10.244.0.0/24", labels=None, unschedulable=False, ready=None, deleting=False):
    meta = {"name": name, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {} if ready is None else {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "spec": {"podCIDR": cidr, "unschedulable": unschedulable}, "status": status}


def pod(name, node_name=None, selector=None, scheduler=None, ns="default"):
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.mark.parametrize(
    "nodes, load, selector, want",
    [
        pytest.param([node("b"), node("a")], {}, None, "a", id="tie-broken-by-name"),
        pytest.param([node("a"), node("b")], {"a": 2, "b": 1}, None, "b", id="fewest-pods"),
        pytest.param([node("a", cidr=None), node("b")], {"b": 9}, None, "b", id="no-pod-cidr-infeasible"),
        pytest.param([node("a", unschedulable=True), node("b")], {"b": 9}, None, "b", id="cordoned-infeasible"),
        pytest.param([node("a", ready=False), node("b", ready=True)], {"b": 9}, None, "b", id="not-ready-infeasible"),
        pytest.param([node("a", deleting=True), node("b")], {"b": 9}, None, "b", id="deleting-infeasible"),
        pytest.param([node("a"), node("b", labels={"disk": "ssd"})], {"b": 9}, {"disk": "ssd"}, "b",
                     id="node-selector"),
        pytest.param([node("a"), node("b")], {}, {"disk": "ssd"}, None, id="selector-matches-nothing"),
        pytest.param([], {}, None, None, id="no-nodes"),
    ],
)
def test_choose_node(nodes, load, selector, want):
    assert choose_node(pod("p", selector=selector), nodes, load) == want


async def test_pods_spread_over_nodes_and_bound_pods_stay(client):
    for n in ("n1", "n2"):
        await client.create(r.NODES, {"metadata": {"name": n}})
    await client.create(r.PODS, pod("pinned", node_name="n1"), namespace="default")
    for i in range(3):
        await client.create(r.PODS, pod(f"p{i}"), namespace="default")
    items, _ = await client.list(r.PODS, namespace="default")
    placed = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in items}
    assert placed == {"pinned": "n1", "p0": "n2", "p1": "n1", "p2": "n2"}
    scheduled = {c["type"]: c["status"] for c in next(p for p in items if p["metadata"]["name"] == "p0")
                 ["status"]["conditions"]}
    assert scheduled["PodScheduled"] == "True"


async def test_unschedulable_pod_waits_for_a_matching_node(client):
    await client.create(r.NODES, {"metadata": {"name": "n1"}})
    await client.create(r.PODS, pod("gpu", selector={"gpu": "yes"}), namespace="default")
    got = await client.get(r.PODS, "gpu", namespace="default")
    assert "nodeName" not in got["spec"]
    cond = next(c for c in got["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")

    await client.create(r.NODES, {"metadata": {"name": "n2", "labels": {"gpu": "yes"}}})
    got = await client.get(r.PODS, "gpu", namespace="default")
    assert got["spec"]["nodeName"] == "n2"


async def test_other_schedulers_pods_are_left_alone(client):
    await client.create(r.NODES, {"metadata": {"name": "n1"}})
    await client.create(r.PODS, pod("custom", scheduler="my-scheduler"), namespace="default")
    got = await client.get(r.PODS, "custom", namespace="default")
    assert "nodeName" not in got["spec"]


async def test_binding_records_schedulers_event(client):
    await client.create(r.NODES, {"metadata": {"name": "n1"}})
    await client.create(r.PODS, pod("web"), namespace="default")
    await client.create(r.PODS, pod("pinned", node_name="n1"), namespace="default")
    events = (await client.request("GET", "/api/v1/namespaces/default/events"))["items"]
    got = [(e["involvedObject"]["name"], e["reason"], e["message"], e["source"]["component"], e["type"])
           for e in events if e["reason"] == "Scheduled"]
    assert got == [("web", "Scheduled", "Successfully assigned default/web to n1", "default-scheduler", "Normal")]
    web = await client.get(r.PODS, "web", "default")
    (ev,) = [e for e in events if e["reason"] == "Scheduled"]
    assert ev["involvedObject"]["uid"] == web["metadata"]["uid"] and ev["involvedObject"]["kind"] == "Pod"
