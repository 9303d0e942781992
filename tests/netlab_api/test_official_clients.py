"""The official ``kubernetes`` Python client against the lab API server.

The objects are what the lab writes: the Node from the lab kubelet's ``node_object`` and a
Pod whose status is built by the kubelet's ``container_status``, so a field the API marks
required and the lab omits fails deserialisation here.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from podnet.kube import resources as r
from podnet.netlab.node.kubelet import container_status, node_object

k8s = pytest.importorskip("kubernetes")
from kubernetes import client as kc  # noqa: E402
from kubernetes import watch as kw  # noqa: E402


def official(url: str, token: str | None = None) -> kc.ApiClient:
    cfg = kc.Configuration()
    cfg.host = url
    if token:
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
    return kc.ApiClient(cfg)


POD = {"metadata": {"name": "web-1", "labels": {"app": "web"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}
SERVICE = {"metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
EMPTY_SERVICE = {"metadata": {"name": "nobody"},
                 "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}


async def populate(client) -> None:
    await client.create(r.NODES, node_object("n1", "192.168.77.11"))
    await client.create(r.SERVICES, SERVICE, namespace="default")
    await client.create(r.SERVICES, EMPTY_SERVICE, namespace="default")
    await client.create(r.PODS, POD, namespace="default")
    status = {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
              "hostIP": "192.168.77.11", "hostIPs": [{"ip": "192.168.77.11"}], "startTime": "2026-01-01T00:00:00Z",
              "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"}],
              "containerStatuses": [container_status(POD, "pnlabc", ready=True, started=True, restart_count=1,
                                                     state={"running": {"startedAt": "2026-01-01T00:00:01Z"}},
                                                     lastState={"terminated": {"exitCode": 3, "reason": "Error"}})]}
    await client.patch(r.PODS, "web-1", {"status": status}, "default", subresource="status")


async def test_list_and_read_every_kind_the_lab_writes(lab_api, client):
    await populate(client)

    def read_all():
        api = official(lab_api.url)
        core, disc = kc.CoreV1Api(api), kc.DiscoveryV1Api(api)
        pods = core.list_pod_for_all_namespaces()
        nodes = core.list_node()
        pod = core.read_namespaced_pod("web-1", "default")
        svcs = core.list_service_for_all_namespaces()
        slices = disc.list_endpoint_slice_for_all_namespaces()
        nss = core.list_namespace()
        return pods, nodes, pod, svcs, slices, nss

    pods, nodes, pod, svcs, slices, nss = await asyncio.to_thread(read_all)
    assert [p.metadata.name for p in pods.items] == ["web-1"]
    cs = pod.status.container_statuses[0]
    assert cs.image == "nginx" and cs.image_id.startswith("podnet-lab://") and "@sha256:" in cs.image_id
    assert cs.restart_count == 1 and cs.last_state.terminated.exit_code == 3
    info = nodes.items[0].status.node_info
    assert info.kernel_version and info.boot_id and info.machine_id is not None and info.system_uuid is not None
    assert {s.metadata.name for s in svcs.items} == {"web", "nobody"}
    assert {s.metadata.labels["kubernetes.io/service-name"] for s in slices.items} >= {"web", "nobody"}
    assert "default" in {n.metadata.name for n in nss.items}


async def test_watch_of_pods_gets_events(lab_api, client):
    await populate(client)
    got: list[tuple[str, str, str]] = []
    seen_added = threading.Event()

    def watch():
        w = kw.Watch()
        core = kc.CoreV1Api(official(lab_api.url))
        for ev in w.stream(core.list_namespaced_pod, "default", timeout_seconds=20):
            got.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.labels.get("v", "")))
            seen_added.set()
            if ev["type"] == "MODIFIED" and ev["object"].metadata.labels.get("v") == "2":
                w.stop()

    t = asyncio.create_task(asyncio.to_thread(watch))
    assert await asyncio.to_thread(seen_added.wait, 20)
    await client.patch(r.PODS, "web-1", {"metadata": {"labels": {"v": "2"}}}, "default")
    await asyncio.wait_for(t, 30)
    assert got[0] == ("ADDED", "web-1", "")
    assert got[-1] == ("MODIFIED", "web-1", "2")


async def test_kubernetes_asyncio_lists_reads_and_watches(lab_api, client):
    ac = pytest.importorskip("kubernetes_asyncio.client")
    aw = pytest.importorskip("kubernetes_asyncio.watch")
    await populate(client)
    async with ac.ApiClient(ac.Configuration(host=lab_api.url)) as api:
        core = ac.CoreV1Api(api)
        pods = await core.list_pod_for_all_namespaces()
        assert pods.items[0].status.container_statuses[0].image_id.startswith("podnet-lab://")
        nodes = await core.list_node()
        assert nodes.items[0].status.node_info.boot_id is not None
        pod = await core.read_namespaced_pod("web-1", "default")
        assert pod.status.container_statuses[0].restart_count == 1
        got = []
        w = aw.Watch()
        async for ev in w.stream(core.list_namespaced_pod, "default", timeout_seconds=20):
            got.append((ev["type"], ev["object"].metadata.name, (ev["object"].metadata.labels or {}).get("v", "")))
            if ev["type"] == "ADDED":
                await client.patch(r.PODS, "web-1", {"metadata": {"labels": {"v": "2"}}}, "default")
            if ev["type"] == "MODIFIED":
                w.stop()
        assert got == [("ADDED", "web-1", ""), ("MODIFIED", "web-1", "2")]


async def test_lightkube_lists_and_reads(lab_api, client):
    lk = pytest.importorskip("lightkube")
    from lightkube.resources.core_v1 import Node, Pod

    await populate(client)
    cfg = lk.KubeConfig.from_dict({
        "clusters": [{"name": "l", "cluster": {"server": lab_api.url}}],
        "users": [{"name": "l", "user": {"token": "unused-by-this-server"}}],
        "contexts": [{"name": "l", "context": {"cluster": "l", "user": "l", "namespace": "default"}}],
        "current-context": "l"})
    api = lk.AsyncClient(config=cfg)
    try:
        pods = [p async for p in api.list(Pod, namespace=lk.ALL_NS)]
        assert pods[0].status.containerStatuses[0].imageID.startswith("podnet-lab://")
        nodes = [n async for n in api.list(Node)]
        assert nodes[0].status.nodeInfo.kernelVersion
        pod = await api.get(Pod, "web-1")
        assert pod.status.containerStatuses[0].restartCount == 1
    finally:
        await api.close()
