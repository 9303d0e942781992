"""Lab controllers over HTTP: ClusterIP/NodePort allocation, node pod CIDRs, EndpointSlices."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError
from podnet.netlab.apiserver.server import LabApiServer

MANAGED = "endpointslice.kubernetes.io/managed-by"


def svc(name, ns="default", ports=None, **spec):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}


def pod(name, ip, labels=None, ready=True, node="n1", ns="default", container_ports=None, **spec):
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels if labels is not None else {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": container_ports or []}], **spec},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def slices_of(client, name, ns="default"):
    items, _ = await client.list(r.ENDPOINT_SLICES, namespace=ns, label_selector=f"kubernetes.io/service-name={name}")
    return items


def endpoints(slices):
    return sorted(
        (e["addresses"][0], e["conditions"]["ready"], e["conditions"]["serving"], e["conditions"]["terminating"])
        for s in slices for e in s["endpoints"] or ()
    )


# ------------------------------------------------------------------------- ClusterIP


async def test_cluster_ips_are_unique_and_in_range(client):
    ips = []
    for i in range(20):
        out = await client.create(r.SERVICES, svc(f"s{i}"), namespace="default")
        ips.append(out["spec"]["clusterIP"])
        assert out["spec"]["clusterIPs"] == [out["spec"]["clusterIP"]]
        assert out["spec"]["ipFamilies"] == ["IPv4"]
    assert len(set(ips)) == 20
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12") for ip in ips)
    assert "10.96.0.10" not in ips  # dynamic IPs stay out of the static band


@pytest.mark.parametrize(
    "cluster_ip, ok",
    [
        pytest.param("10.96.0.10", True, id="free-static-ip"),
        pytest.param("10.97.3.4", True, id="free-ip"),
        pytest.param("10.80.0.1", False, id="outside-range"),
        pytest.param("fd00::1", False, id="family-not-configured"),
    ],
)
async def test_explicit_cluster_ip(client, cluster_ip, ok):
    if ok:
        out = await client.create(r.SERVICES, svc("a", clusterIP=cluster_ip), namespace="default")
        assert out["spec"]["clusterIP"] == cluster_ip
    else:
        with pytest.raises(ApiError) as e:
            await client.create(r.SERVICES, svc("a", clusterIP=cluster_ip), namespace="default")
        assert e.value.code == 422


async def test_taken_cluster_ip_is_422_and_freed_on_delete(client):
    await client.create(r.SERVICES, svc("a", clusterIP="10.96.0.10"), namespace="default")
    with pytest.raises(ApiError) as e:
        await client.create(r.SERVICES, svc("b", clusterIP="10.96.0.10"), namespace="default")
    assert e.value.code == 422 and "10.96.0.10" in e.value.message
    await client.delete(r.SERVICES, "a", namespace="default")
    out = await client.create(r.SERVICES, svc("b", clusterIP="10.96.0.10"), namespace="default")
    assert out["spec"]["clusterIP"] == "10.96.0.10"


async def test_failed_create_releases_its_allocation(client):
    bad = svc("a", clusterIP="10.96.0.20", type="NodePort")
    bad["spec"]["ports"][0]["protocol"] = "XTP"
    with pytest.raises(ApiError):
        await client.create(r.SERVICES, bad, namespace="default")
    out = await client.create(r.SERVICES, svc("a", clusterIP="10.96.0.20"), namespace="default")
    assert out["spec"]["clusterIP"] == "10.96.0.20"


async def test_cluster_ip_is_immutable(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        await client.patch(r.SERVICES, "a", {"spec": {"clusterIP": "10.96.0.99", "clusterIPs": ["10.96.0.99"]}},
                           namespace="default")
    assert e.value.code == 422


@pytest.mark.parametrize(
    "spec, cluster_ips",
    [
        pytest.param({"clusterIP": "None"}, ["None"], id="headless"),
        pytest.param({"type": "ExternalName", "externalName": "example.com"}, None, id="external-name"),
    ],
)
async def test_services_without_cluster_ip(client, spec, cluster_ips):
    out = await client.create(r.SERVICES, svc("a", **spec), namespace="default")
    assert out["spec"].get("clusterIPs") == cluster_ips


async def test_dual_stack():
    async with LabApiServer(service_cidr_v6="fd00:10:96::/112") as api, ApiClient.from_url(api.url) as client:
        out = await client.create(r.SERVICES, svc("a", ipFamilyPolicy="PreferDualStack"), namespace="default")
        assert out["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
        v4, v6 = out["spec"]["clusterIPs"]
        assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:96::/112") and ":" not in v4
        out = await client.create(r.SERVICES, svc("b", ipFamilies=["IPv6"]), namespace="default")
        assert ":" in out["spec"]["clusterIP"]


async def test_require_dual_stack_without_v6_range_is_422(client):
    with pytest.raises(ApiError) as e:
        await client.create(r.SERVICES, svc("a", ipFamilyPolicy="RequireDualStack"), namespace="default")
    assert e.value.code == 422


# ------------------------------------------------------------------------- NodePort


async def test_node_ports_allocated_kept_and_released(client):
    out = await client.create(r.SERVICES, svc("a", type="NodePort"), namespace="default")
    np = out["spec"]["ports"][0]["nodePort"]
    assert 30000 <= np <= 32767
    # A PUT that omits nodePort keeps it (kubectl replace/apply).
    out = await client.replace(r.SERVICES, svc("a", type="NodePort"), namespace="default")
    assert out["spec"]["ports"][0]["nodePort"] == np
    # Back to ClusterIP releases it; another Service can then ask for it.
    out = await client.patch(r.SERVICES, "a", {"spec": {"type": "ClusterIP"}}, namespace="default")
    assert "nodePort" not in out["spec"]["ports"][0]
    body = svc("b", type="NodePort")
    body["spec"]["ports"][0]["nodePort"] = np
    out = await client.create(r.SERVICES, body, namespace="default")
    assert out["spec"]["ports"][0]["nodePort"] == np


@pytest.mark.parametrize(
    "node_port, ok",
    [
        pytest.param(30080, True, id="free"),
        pytest.param(29999, False, id="below-range"),
        pytest.param(32768, False, id="above-range"),
    ],
)
async def test_explicit_node_port(client, node_port, ok):
    body = svc("a", type="NodePort")
    body["spec"]["ports"][0]["nodePort"] = node_port
    if ok:
        out = await client.create(r.SERVICES, body, namespace="default")
        assert out["spec"]["ports"][0]["nodePort"] == node_port
    else:
        with pytest.raises(ApiError) as e:
            await client.create(r.SERVICES, body, namespace="default")
        assert e.value.code == 422


async def test_node_port_conflict_and_clusterip_type(client):
    body = svc("a", type="NodePort")
    body["spec"]["ports"][0]["nodePort"] = 30500
    await client.create(r.SERVICES, body, namespace="default")
    body["metadata"]["name"] = "b"
    with pytest.raises(ApiError) as e:
        await client.create(r.SERVICES, body, namespace="default")
    assert e.value.code == 422
    body["metadata"]["name"], body["spec"]["type"] = "c", "ClusterIP"
    with pytest.raises(ApiError) as e:
        await client.create(r.SERVICES, body, namespace="default")
    assert e.value.code == 422


async def test_load_balancer_local_gets_health_check_node_port(client):
    out = await client.create(r.SERVICES, svc("lb", type="LoadBalancer", externalTrafficPolicy="Local"),
                              namespace="default")
    hc = out["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc != out["spec"]["ports"][0]["nodePort"]
    out = await client.patch(r.SERVICES, "lb", {"spec": {"externalTrafficPolicy": "Cluster"}}, namespace="default")
    assert "healthCheckNodePort" not in out["spec"]
    out = await client.create(r.SERVICES, svc("np", type="NodePort", externalTrafficPolicy="Local"),
                              namespace="default")
    assert "healthCheckNodePort" not in out["spec"]  # as in Kubernetes: LoadBalancer only


async def test_allocations_survive_restart(tmp_path):
    state = tmp_path / "s.json"
    async with LabApiServer(state_path=state) as api, ApiClient.from_url(api.url) as client:
        a = await client.create(r.SERVICES, svc("a", type="NodePort"), namespace="default")
    async with LabApiServer(state_path=state) as api, ApiClient.from_url(api.url) as client:
        b = await client.create(r.SERVICES, svc("b", type="NodePort"), namespace="default")
        assert b["spec"]["clusterIP"] != a["spec"]["clusterIP"]
        assert b["spec"]["ports"][0]["nodePort"] != a["spec"]["ports"][0]["nodePort"]
        assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])


# ------------------------------------------------------------------------- node CIDRs


async def test_node_pod_cidrs():
    async with LabApiServer(cluster_cidr="10.100.0.0/24", node_cidr_mask=26) as api, \
            ApiClient.from_url(api.url) as client:
        for n in ("n1", "n2", "n3"):
            await client.create(r.NODES, {"metadata": {"name": n}})
        cidrs = {n: (await client.get(r.NODES, n))["spec"]["podCIDR"] for n in ("n1", "n2", "n3")}
        assert cidrs == {"n1": "10.100.0.0/26", "n2": "10.100.0.64/26", "n3": "10.100.0.128/26"}
        assert (await client.get(r.NODES, "n1"))["spec"]["podCIDRs"] == ["10.100.0.0/26"]
        await client.delete(r.NODES, "n2")
        assert list(api.node_cidrs.allocator.allocated()) == ["10.100.0.0/26", "10.100.0.128/26"]
        for n in ("n4", "n5", "n6"):
            await client.create(r.NODES, {"metadata": {"name": n}})
        got = [(await client.get(r.NODES, n))["spec"].get("podCIDR") for n in ("n4", "n5", "n6")]
        # Round-robin like kube-controller-manager's cidrset: n2's released range comes round again;
        # when the cluster CIDR is exhausted a Node simply gets none.
        assert got == ["10.100.0.192/26", "10.100.0.64/26", None]


async def test_explicit_node_pod_cidr_is_kept_and_reserved(client):
    await client.create(r.NODES, {"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.0.0/24"}})
    await client.create(r.NODES, {"metadata": {"name": "b"}})
    assert (await client.get(r.NODES, "a"))["spec"]["podCIDR"] == "10.244.0.0/24"
    assert (await client.get(r.NODES, "b"))["spec"]["podCIDR"] == "10.244.1.0/24"


# ------------------------------------------------------------------------- EndpointSlices


async def test_endpoint_slice_follows_pods(client):
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("w1", "10.244.1.5"), namespace="default")
    await client.create(r.PODS, pod("w2", "10.244.1.6", ready=False), namespace="default")
    await client.create(r.PODS, pod("other", "10.244.1.7", labels={"app": "db"}), namespace="default")
    await client.create(r.PODS, {**pod("noip", "10.244.1.8"), "status": {"phase": "Pending"}}, namespace="default")
    done = pod("done", "10.244.1.9")
    done["status"]["phase"] = "Succeeded"
    await client.create(r.PODS, done, namespace="default")
    slices = await slices_of(client, "web")
    assert len(slices) == 1
    sl = slices[0]
    assert sl["metadata"]["labels"][MANAGED] == "endpointslice-controller.k8s.io"
    assert sl["metadata"]["ownerReferences"][0]["name"] == "web"
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert endpoints(slices) == [("10.244.1.5", True, True, False), ("10.244.1.6", False, False, False)]
    ep = next(e for e in sl["endpoints"] if e["addresses"] == ["10.244.1.5"])
    assert ep["nodeName"] == "n1" and ep["targetRef"]["kind"] == "Pod" and ep["targetRef"]["name"] == "w1"
    assert r.convert(r.ENDPOINT_SLICES, sl) is not None  # what the controller writes, podnet accepts

    # Readiness flips, pods go away.
    p = await client.get(r.PODS, "w2", namespace="default")
    p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    await client.replace(r.PODS, p, subresource="status")
    assert endpoints(await slices_of(client, "web"))[1] == ("10.244.1.6", True, True, False)
    await client.delete(r.PODS, "w1", namespace="default")
    assert endpoints(await slices_of(client, "web")) == [("10.244.1.6", True, True, False)]
    # Relabelling a pod out of the selector removes it.
    await client.patch(r.PODS, "w2", {"metadata": {"labels": {"app": "gone"}}}, namespace="default")
    slices = await slices_of(client, "web")
    assert len(slices) == 1 and not slices[0]["endpoints"]  # the placeholder slice stays
    await client.delete(r.SERVICES, "web", namespace="default")
    assert await slices_of(client, "web") == []


async def test_terminating_pod(client):
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("w1", "10.244.1.5"), namespace="default")
    await client.request("DELETE", "/api/v1/namespaces/default/pods/w1", params={"gracePeriodSeconds": "30"})
    assert endpoints(await slices_of(client, "web")) == [("10.244.1.5", False, True, True)]


async def test_publish_not_ready_addresses(client):
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}, publishNotReadyAddresses=True),
                        namespace="default")
    await client.create(r.PODS, pod("w1", "10.244.1.5", ready=False), namespace="default")
    assert endpoints(await slices_of(client, "web")) == [("10.244.1.5", True, True, False)]


async def test_hostname_only_with_matching_subdomain(client):
    await client.create(r.SERVICES, svc("db", selector={"app": "web"}, clusterIP="None"), namespace="default")
    await client.create(r.PODS, pod("a", "10.244.1.5", hostname="db-0", subdomain="db"), namespace="default")
    await client.create(r.PODS, pod("b", "10.244.1.6", hostname="db-1", subdomain="other"), namespace="default")
    (sl,) = await slices_of(client, "db")
    by_ip = {e["addresses"][0]: e.get("hostname") for e in sl["endpoints"]}
    assert by_ip == {"10.244.1.5": "db-0", "10.244.1.6": None}
    assert "service.kubernetes.io/headless" in sl["metadata"]["labels"]


async def test_named_target_port_resolution(client):
    ports = [{"name": "http", "port": 80, "targetPort": "web"}]
    await client.create(r.SERVICES, svc("web", ports=ports, selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("a", "10.244.1.5", container_ports=[{"name": "web", "containerPort": 8080}]),
                        namespace="default")
    await client.create(r.PODS, pod("b", "10.244.1.6", container_ports=[{"name": "web", "containerPort": 9090}]),
                        namespace="default")
    slices = await slices_of(client, "web")
    by_port = {s["ports"][0]["port"]: [e["addresses"][0] for e in s["endpoints"]] for s in slices}
    assert by_port == {8080: ["10.244.1.5"], 9090: ["10.244.1.6"]}


async def test_at_most_100_endpoints_per_slice(client):
    await client.create(r.SERVICES, svc("big", selector={"app": "web"}), namespace="default")
    for i in range(230):
        await client.create(r.PODS, pod(f"p{i:03d}", f"10.244.{i // 200}.{i % 200 + 1}"), namespace="default")
    slices = await slices_of(client, "big")
    assert sorted(len(s["endpoints"]) for s in slices) == [30, 100, 100]
    assert len(endpoints(slices)) == 230


async def test_selectorless_service_gets_no_slices_and_user_slices_stay(client):
    await client.create(r.SERVICES, svc("ext"), namespace="default")
    user = {"metadata": {"name": "ext-1", "labels": {"kubernetes.io/service-name": "ext"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}], "ports": [{"port": 80}]}
    await client.create(r.ENDPOINT_SLICES, user, namespace="default")
    slices = await slices_of(client, "ext")
    assert [s["metadata"]["name"] for s in slices] == ["ext-1"]


async def test_zone_from_node_label(client):
    await client.create(r.NODES, {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}})
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("a", "10.244.1.5"), namespace="default")
    (sl,) = await slices_of(client, "web")
    assert sl["endpoints"][0]["zone"] == "z1"


async def test_slices_converge_after_restart(tmp_path):
    state = tmp_path / "s.json"
    async with LabApiServer(state_path=state) as api, ApiClient.from_url(api.url) as client:
        await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
        await client.create(r.PODS, pod("a", "10.244.1.5"), namespace="default")
        before = await slices_of(client, "web")
    async with LabApiServer(state_path=state) as api, ApiClient.from_url(api.url) as client:
        assert await slices_of(client, "web") == before  # nothing rewritten at startup
        await client.create(r.PODS, pod("b", "10.244.1.6"), namespace="default")
        after = await slices_of(client, "web")
        assert [s["metadata"]["name"] for s in after] == [s["metadata"]["name"] for s in before]
        assert len(endpoints(after)) == 2


async def test_kubernetes_service_is_opt_in():
    async with LabApiServer() as api, ApiClient.from_url(api.url) as client:
        assert (await client.list(r.SERVICES))[0] == []
    async with LabApiServer(kubernetes_service="192.0.2.5:6443") as api, ApiClient.from_url(api.url) as client:
        svc_ = await client.get(r.SERVICES, "kubernetes", namespace="default")
        assert svc_["spec"]["clusterIP"] == "10.96.0.1" and svc_["spec"]["ports"][0]["port"] == 443
        (sl,) = await slices_of(client, "kubernetes")
        assert sl["endpoints"][0]["addresses"] == ["192.0.2.5"] and sl["ports"][0]["port"] == 6443
        assert r.convert(r.ENDPOINT_SLICES, sl) is not None


async def test_service_changes_update_slices_in_place(client):
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("a", "10.244.1.5"), namespace="default")
    (before,) = await slices_of(client, "web")
    await client.patch(r.SERVICES, "web", {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090}]}},
                       namespace="default")
    (after,) = await slices_of(client, "web")
    assert after["metadata"]["name"] == before["metadata"]["name"]  # updated, not replaced
    assert after["ports"] == [{"name": "http", "port": 9090, "protocol": "TCP"}]
    # A selector that matches nothing leaves the placeholder; ExternalName removes the slices.
    await client.patch(r.SERVICES, "web", {"spec": {"selector": {"app": "none"}}}, namespace="default")
    (empty,) = await slices_of(client, "web")
    assert not empty["endpoints"]
    await client.patch(r.SERVICES, "web", {"spec": {"type": "ExternalName", "externalName": "example.com",
                                                    "clusterIP": None, "clusterIPs": None}}, namespace="default")
    assert await slices_of(client, "web") == []


async def test_dual_stack_service_gets_a_slice_per_family():
    async with LabApiServer(service_cidr_v6="fd00:10:96::/112") as api, ApiClient.from_url(api.url) as client:
        await client.create(r.SERVICES, svc("web", selector={"app": "web"}, ipFamilyPolicy="RequireDualStack"),
                            namespace="default")
        p = pod("a", "10.244.1.5")
        p["status"]["podIPs"] = [{"ip": "10.244.1.5"}, {"ip": "fd00:244::5"}]
        await client.create(r.PODS, p, namespace="default")
        slices = await slices_of(client, "web")
        got = sorted((s["addressType"], s["endpoints"][0]["addresses"][0]) for s in slices)
        assert got == [("IPv4", "10.244.1.5"), ("IPv6", "fd00:244::5")]
        assert all(r.convert(r.ENDPOINT_SLICES, s) is not None for s in slices)


async def test_user_edits_to_managed_slices_are_reverted(client):
    await client.create(r.SERVICES, svc("web", selector={"app": "web"}), namespace="default")
    await client.create(r.PODS, pod("a", "10.244.1.5"), namespace="default")
    (sl,) = await slices_of(client, "web")
    await client.patch(r.ENDPOINT_SLICES, sl["metadata"]["name"], {"endpoints": [{"addresses": ["192.0.2.66"]}]},
                       namespace="default")
    (sl,) = await slices_of(client, "web")
    assert [e["addresses"] for e in sl["endpoints"]] == [["10.244.1.5"]]
    await client.delete(r.ENDPOINT_SLICES, sl["metadata"]["name"], namespace="default")
    (recreated,) = await slices_of(client, "web")
    assert [e["addresses"] for e in recreated["endpoints"]] == [["10.244.1.5"]]
