"""Server-side printing (Tables) for kubectl get."""

from __future__ import annotations

import calendar

import pytest

from podnet.kube import resources as r
from podnet.netlab.apiserver.tables import age, table, wants_table

KUBECTL_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                  "application/json")


@pytest.mark.parametrize(
    "accept, expect",
    [
        pytest.param(KUBECTL_ACCEPT, True, id="kubectl"),
        pytest.param("application/json", False, id="plain"),
        pytest.param("application/json;as=Table;v=v1beta1;g=meta.k8s.io", False, id="only-v1beta1"),
        pytest.param("", False, id="none"),
    ],
)
def test_wants_table(accept, expect):
    assert wants_table(accept) is expect


T0 = calendar.timegm((2026, 1, 1, 0, 0, 0))


@pytest.mark.parametrize(
    "seconds, expect",
    [pytest.param(5, "5s", id="s"), pytest.param(119, "119s", id="under-2m"), pytest.param(312, "5m12s", id="m-s"),
     pytest.param(1500, "25m", id="m"), pytest.param(3 * 3600 + 240, "3h4m", id="h-m"),
     pytest.param(20 * 3600, "20h", id="h"), pytest.param(3 * 86400 + 7200, "3d2h", id="d-h"),
     pytest.param(400 * 86400, "400d", id="d")],
)
def test_age(seconds, expect):
    assert age("2026-01-01T00:00:00Z", T0 + seconds) == expect


def test_service_table_rows():
    svc = {"metadata": {"name": "lb", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "selector": {"app": "web"},
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    t = table("services", [svc], T0 + 60)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)",
                                                          "Age", "Selector"]
    assert t["rows"][0]["cells"] == ["lb", "LoadBalancer", "10.96.0.9", "192.0.2.1", "80:30080/TCP", "60s", "app=web"]
    assert t["rows"][0]["object"]["metadata"]["namespace"] == "default"


def _pod(status, deleting=False):
    meta = {"name": "p", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"metadata": meta, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": status}


RUNNING = {"phase": "Running", "podIP": "10.244.0.5",
           "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]}


@pytest.mark.parametrize(
    "pod, cells",
    [
        pytest.param(_pod(RUNNING), ["1/1", "Running", 0, "10.244.0.5", "n1"], id="running"),
        pytest.param(_pod({**RUNNING, "containerStatuses": [{"name": "c", "ready": False, "restartCount": 3,
                                                             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                     ["0/1", "CrashLoopBackOff", 3, "10.244.0.5", "n1"], id="crash-loop-counts-restarts"),
        pytest.param(_pod({"phase": "Succeeded", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"reason": "Completed"}}}]}),
                     ["0/1", "Completed", 0, "<none>", "n1"], id="completed"),
        pytest.param(_pod({}), ["0/1", "Pending", 0, "<none>", "n1"], id="pending"),
        pytest.param(_pod(RUNNING, deleting=True), ["1/1", "Terminating", 0, "10.244.0.5", "n1"], id="terminating"),
    ],
)
def test_pod_table_rows(pod, cells):
    row = table("pods", [pod], T0 + 60)["rows"][0]["cells"]  # Name Ready Status Restarts Age IP Node
    assert row[1:4] + row[5:7] == cells and row[4] == "60s"


async def test_table_over_http(client):
    await client.create(r.SERVICES, {"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}}, namespace="default")
    headers_client = client._sess()
    async with headers_client.get(client.server + "/api/v1/services", headers={"Accept": KUBECTL_ACCEPT}) as resp:
        doc = await resp.json()
    assert doc["kind"] == "Table" and doc["rows"][0]["cells"][0] == "a"
    assert int(doc["metadata"]["resourceVersion"]) > 0
    # Without as=Table, the same request is a plain list.
    items, _ = await client.list(r.SERVICES)
    assert items[0]["kind"] == "Service"
