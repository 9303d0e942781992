"""v1 Endpoints: the pure desired_endpoints table, and the controller in a lab API server (list, watch, get)."""

from __future__ import annotations

import json

import pytest

from podnet.netlab.apiserver.endpoints import SKIP_MIRROR_LABEL, desired_endpoints


def svc(name="web", ports=None, **spec):
    return {"metadata": {"name": name, "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
                     if ports is None else ports, **spec}}


def pod(name, ip, ready=True, labels=None, phase="Running", deleting=False, ports=None, **spec):
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-15T08:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}], **spec},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": "2027-01-15T08:00:00Z"}]}}


def addr(name, ip, **extra):
    return {"ip": ip, **extra, "nodeName": "n1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": name, "uid": f"uid-{name}"}}


HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize("service, pods, subsets", [
    pytest.param(svc(), [pod("b", "10.244.0.20"), pod("a", "10.244.0.3")],
                 [{"addresses": [addr("a", "10.244.0.3"), addr("b", "10.244.0.20")], "ports": HTTP}],
                 id="ready-sorted-by-ip"),
    pytest.param(svc(), [pod("a", "10.244.0.3"), pod("b", "10.244.0.4", ready=False)],
                 [{"addresses": [addr("a", "10.244.0.3")], "notReadyAddresses": [addr("b", "10.244.0.4")],
                   "ports": HTTP}], id="not-ready-addresses"),
    pytest.param(svc(publishNotReadyAddresses=True), [pod("b", "10.244.0.4", ready=False)],
                 [{"addresses": [addr("b", "10.244.0.4")], "ports": HTTP}], id="publish-not-ready"),
    pytest.param(svc(), [pod("a", "10.244.0.3", deleting=True), pod("b", "10.244.0.4", phase="Succeeded"),
                         pod("c", "10.244.0.5", labels={"app": "other"})], [], id="terminating-done-unselected"),
    pytest.param(svc(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]),
                 [pod("a", "10.244.0.3", ports=[{"name": "web", "containerPort": 8081}]),
                  pod("b", "10.244.0.4", ports=[{"name": "web", "containerPort": 9000}]), pod("c", "10.244.0.5")],
                 [{"addresses": [addr("a", "10.244.0.3")],
                   "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}]},
                  {"addresses": [addr("b", "10.244.0.4")],
                   "ports": [{"name": "http", "port": 9000, "protocol": "TCP"}]}],
                 id="named-target-port-per-pod"),
    pytest.param(svc(ports=[], clusterIP="None"), [pod("a", "10.244.0.3", hostname="a", subdomain="web")],
                 [{"addresses": [addr("a", "10.244.0.3", hostname="a")]}], id="headless-without-ports"),
])
def test_desired_endpoints(service, pods, subsets):
    ep = desired_endpoints(service, pods)
    assert ep.get("subsets", []) == subsets
    headless = service["spec"].get("clusterIP") == "None"
    assert ep["metadata"]["labels"] == {"tier": "front", SKIP_MIRROR_LABEL: "true",
                                        **({"service.kubernetes.io/headless": ""} if headless else {})}


@pytest.mark.parametrize("service", [
    pytest.param({"metadata": {"name": "x", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}},
                 id="no-selector"),
    pytest.param(svc(type="ExternalName", externalName="example.com"), id="external-name"),
])
def test_services_without_managed_endpoints(service):
    assert desired_endpoints(service, [pod("a", "10.244.0.3")]) is None


async def test_endpoints_follow_pods_and_are_served(client, lab_api):
    await client.request("POST", "/api/v1/namespaces/default/services", body=svc())
    rv = (await client.request("GET", "/api/v1/namespaces/default/endpoints"))["metadata"]["resourceVersion"]
    await client.request("POST", "/api/v1/namespaces/default/pods", body=pod("a", "10.244.0.3"))
    await client.request("POST", "/api/v1/namespaces/default/pods", body=pod("b", "10.244.0.4", ready=False))
    ep = await client.request("GET", "/api/v1/namespaces/default/endpoints/web")
    assert ep["kind"] == "Endpoints"
    # the trigger: the latest pod change (Ready's lastTransitionTime) not yet seen
    assert ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == "2027-01-15T08:00:00Z"
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.0.3"]
    assert [a["ip"] for a in ep["subsets"][0]["notReadyAddresses"]] == ["10.244.0.4"]
    listed = await client.request("GET", "/api/v1/endpoints")
    assert listed["kind"] == "EndpointsList" and [e["metadata"]["name"] for e in listed["items"]] == ["web"]

    await client.request("PATCH", "/api/v1/namespaces/default/pods/b/status",
                         content_type="application/merge-patch+json",
                         body={"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    ep = await client.request("GET", "/api/v1/namespaces/default/endpoints/web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.0.3", "10.244.0.4"]
    assert "notReadyAddresses" not in ep["subsets"][0]

    lines = []
    async for line in client.stream_lines("/api/v1/namespaces/default/endpoints",
                                          params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1"},
                                          inactivity_timeout=30):
        lines.append(json.loads(line))
    assert [e["type"] for e in lines] == ["MODIFIED", "MODIFIED", "MODIFIED"]  # a, b not ready, b ready

    await client.request("DELETE", "/api/v1/namespaces/default/services/web")
    listed = await client.request("GET", "/api/v1/namespaces/default/endpoints")
    assert listed["items"] == []


async def test_endpoints_of_others_are_left_alone_and_ours_put_back(client):
    manual = {"metadata": {"name": "db"}, "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}
    await client.request("POST", "/api/v1/namespaces/default/endpoints", body=manual)  # no Service at all
    await client.request("POST", "/api/v1/namespaces/default/services",
                         body={"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}})  # no selector
    assert (await client.request("GET", "/api/v1/namespaces/default/endpoints/db"))["subsets"] == manual["subsets"]

    await client.request("POST", "/api/v1/namespaces/default/services", body=svc())
    await client.request("POST", "/api/v1/namespaces/default/pods", body=pod("a", "10.244.0.3"))
    await client.request("PATCH", "/api/v1/namespaces/default/endpoints/web",
                         content_type="application/merge-patch+json", body={"subsets": None})
    ep = await client.request("GET", "/api/v1/namespaces/default/endpoints/web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.0.3"]
    await client.request("DELETE", "/api/v1/namespaces/default/endpoints/web")
    ep = await client.request("GET", "/api/v1/namespaces/default/endpoints/web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.0.3"]
