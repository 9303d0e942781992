"""REST semantics of the lab API server, over HTTP with the podnet client."""

from __future__ import annotations

import json

import aiohttp
import pytest

from podnet.kube import resources as r
from podnet.kube.client import JSON_PATCH, STRATEGIC_MERGE_PATCH, ApiClient, ApiError
from podnet.kube.watch import watch_events, WatchExpired
from podnet.netlab.apiserver.server import LabApiServer


def svc(name, ns="default", labels=None, port=80, **spec):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"ports": [{"name": "http", "port": port}], **spec}}


def pod(name, ns="default", labels=None, node="n1", ip=None, ready=True, **spec):
    body = {"metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c"}], **spec}, "status": {}}
    if ip:
        body["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                          "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return body


async def test_default_namespaces_exist(client):
    items, rv = await client.list(r.NAMESPACES)
    names = {i["metadata"]["name"] for i in items}
    assert {"default", "kube-system"} <= names
    assert int(rv) >= len(names)


async def test_create_get_fills_metadata(client):
    out = await client.create(r.SERVICES, svc("a"), namespace="default")
    meta = out["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    got = await client.get(r.SERVICES, "a", namespace="default")
    assert got == out
    assert got["kind"] == "Service" and got["apiVersion"] == "v1"


async def test_resource_versions_increase_globally(client):
    a = await client.create(r.SERVICES, svc("a"), namespace="default")
    n = await client.create(r.NODES, {"metadata": {"name": "n1"}})
    b = await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"x": "y"}}}, namespace="default")
    rvs = [int(a["metadata"]["resourceVersion"]), int(n["metadata"]["resourceVersion"]),
           int(b["metadata"]["resourceVersion"])]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert b["metadata"]["generation"] == 1  # metadata-only change
    c = await client.patch(r.SERVICES, "a", {"spec": {"sessionAffinity": "ClientIP"}}, namespace="default")
    assert c["metadata"]["generation"] == 2


async def test_generate_name(client):
    body = {"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]}}
    a = await client.create(r.SERVICES, body, namespace="default")
    b = await client.create(r.SERVICES, body, namespace="default")
    assert a["metadata"]["name"].startswith("web-") and len(a["metadata"]["name"]) == 9
    assert a["metadata"]["name"] != b["metadata"]["name"]


@pytest.mark.parametrize(
    "body, code, reason",
    [
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 0}]}}, 422, "Invalid", id="port-zero"),
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80, "protocol": "ICMP"}]}}, 422,
                     "Invalid", id="unknown-protocol"),
        pytest.param({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 80}]}}, 422, "Invalid",
                     id="not-dns-label"),
        pytest.param({"metadata": {"name": "x\ny"}, "spec": {"ports": [{"port": 80}]}}, 422, "Invalid",
                     id="newline-in-name"),
        pytest.param({"metadata": {"name": "1x"}, "spec": {"ports": [{"port": 80}]}}, 422, "Invalid",
                     id="dns1035-leading-digit"),
        pytest.param({"metadata": {"name": "x"}, "spec": {}}, 422, "Invalid", id="no-ports"),
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}}, 422, "Invalid",
                     id="unnamed-multi-port"),
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}], "externalIPs": ["80 -j ACCEPT"]}},
                     422, "Invalid", id="injection-in-external-ip"),
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}], "clusterIP": "10.96.0.300"}},
                     422, "Invalid", id="invalid-cluster-ip"),
        pytest.param({"metadata": {}, "spec": {"ports": [{"port": 80}]}}, 422, "Invalid", id="no-name"),
        pytest.param({"kind": "Pod", "metadata": {"name": "x"}}, 400, "BadRequest", id="wrong-kind"),
        pytest.param({"metadata": {"name": "x", "namespace": "other"}, "spec": {"ports": [{"port": 80}]}}, 400,
                     "BadRequest", id="namespace-mismatch"),
        pytest.param([1, 2], 400, "BadRequest", id="not-an-object"),
    ],
)
async def test_create_errors_are_status_objects(client, body, code, reason):
    with pytest.raises(ApiError) as e:
        await client.request("POST", "/api/v1/namespaces/default/services", body=body)
    assert e.value.code == code
    assert e.value.status["kind"] == "Status" and e.value.status["reason"] == reason
    assert e.value.status["code"] == code and e.value.message
    assert "Traceback" not in e.value.message


async def test_not_json_body_is_400(lab_api):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{lab_api.url}/api/v1/namespaces/default/services", data=b"{nope") as resp:
            assert resp.status == 400
            assert (await resp.json())["reason"] == "BadRequest"


@pytest.mark.parametrize(
    "method, path, code",
    [
        pytest.param("GET", "/api/v1/namespaces/default/services/missing", 404, id="get-missing"),
        pytest.param("DELETE", "/api/v1/namespaces/default/services/missing", 404, id="delete-missing"),
        pytest.param("GET", "/api/v1/widgets", 404, id="unknown-resource"),
        pytest.param("GET", "/api/v1/namespaces/default/nodes/x", 404, id="cluster-scoped-in-namespace"),
        pytest.param("POST", "/api/v1/namespaces/nope/services", 404, id="create-in-missing-namespace"),
        pytest.param("PUT", "/api/v1/namespaces/default/services", 405, id="put-collection"),
        pytest.param("GET", "/api/v1/namespaces/default/services?labelSelector=a+in+(", 400, id="bad-selector"),
        pytest.param("GET", "/api/v1/services?fieldSelector=spec.clusterIP%3D1", 400, id="unsupported-field"),
    ],
)
async def test_error_statuses(client, method, path, code):
    body = svc("x", ns="nope") if method == "POST" else None
    with pytest.raises(ApiError) as e:
        await client.request(method, path, body=body)
    assert e.value.code == code and e.value.status["kind"] == "Status"


async def test_create_conflict_409(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        await client.create(r.SERVICES, svc("a"), namespace="default")
    assert e.value.code == 409 and e.value.reason == "AlreadyExists"


async def test_replace_with_stale_resource_version_is_409(client):
    first = await client.create(r.SERVICES, svc("a"), namespace="default")
    newer = await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"v": "1"}}}, namespace="default")
    stale = {**first, "metadata": {**first["metadata"], "labels": {"v": "stale"}}}
    with pytest.raises(ApiError) as e:
        await client.replace(r.SERVICES, stale, namespace="default")
    assert e.value.code == 409 and e.value.reason == "Conflict"
    ok = await client.replace(r.SERVICES, {**newer, "metadata": {**newer["metadata"], "labels": {"v": "2"}}})
    assert ok["metadata"]["labels"] == {"v": "2"}
    # Without a resourceVersion, PUT is unconditional; the clusterIP is carried over.
    body = svc("a", labels={"v": "3"})
    out = await client.replace(r.SERVICES, body, namespace="default")
    assert out["spec"]["clusterIP"] == first["spec"]["clusterIP"]


async def test_merge_patch_semantics(client):
    await client.create(r.SERVICES, svc("a", labels={"keep": "1", "drop": "1"}), namespace="default")
    out = await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"drop": None, "new": "1"}}},
                             namespace="default")
    assert out["metadata"]["labels"] == {"keep": "1", "new": "1"}


async def test_strategic_merge_patch_merges_ports_by_port(client):
    body = svc("a")
    body["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": 8080},
                             {"name": "https", "port": 443, "targetPort": 8443}]
    await client.create(r.SERVICES, body, namespace="default")
    patch = {"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                      "ports": [{"port": 443, "targetPort": 9443}]}}
    out = await client.patch(r.SERVICES, "a", patch, namespace="default", content_type=STRATEGIC_MERGE_PATCH)
    assert [(p["name"], p["port"], p["targetPort"]) for p in out["spec"]["ports"]] == [
        ("http", 80, 8080), ("https", 443, 9443)]
    assert "$setElementOrder/ports" not in out["spec"]


async def test_json_patch(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    out = await client.patch(r.SERVICES, "a", [{"op": "add", "path": "/metadata/labels/x", "value": "1"}],
                             namespace="default", content_type=JSON_PATCH)
    assert out["metadata"]["labels"] == {"x": "1"}


async def test_unsupported_patch_type_is_415(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        await client.patch(r.SERVICES, "a", {}, namespace="default", content_type="application/x-unknown-patch+json")
    assert e.value.code == 415


async def test_invalid_patch_result_is_422_and_changes_nothing(client):
    before = await client.create(r.SERVICES, svc("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        await client.patch(r.SERVICES, "a", {"spec": {"ports": [{"port": 80, "protocol": "XTP"}]}},
                           namespace="default")
    assert e.value.code == 422
    assert await client.get(r.SERVICES, "a", namespace="default") == before


async def test_status_subresource(client):
    await client.create(r.SERVICES, svc("lb", type="LoadBalancer"), namespace="default")
    # Status through the main resource is ignored...
    out = await client.patch(r.SERVICES, "lb", {"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}},
                             namespace="default")
    assert not (out.get("status") or {}).get("loadBalancer")
    # ...and spec through /status is ignored.
    out = await client.patch(r.SERVICES, "lb", {"spec": {"sessionAffinity": "ClientIP"},
                                                "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}},
                             namespace="default", subresource="status")
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "1.2.3.4"}]
    assert out["spec"]["sessionAffinity"] == "None"
    await client.create(r.NODES, {"metadata": {"name": "n1"}})
    node = await client.get(r.NODES, "n1")  # the podCIDR controller has updated it since
    node["status"] = {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
    out = await client.replace(r.NODES, node, subresource="status")
    assert out["status"]["addresses"][0]["address"] == "192.168.1.10"


@pytest.mark.parametrize(
    "selector, expected",
    [
        pytest.param("app=web", {"a", "b"}, id="equals"),
        pytest.param("app==web", {"a", "b"}, id="double-equals"),
        pytest.param("app!=web", {"c", "d"}, id="not-equals-includes-missing"),
        pytest.param("app in (web,db)", {"a", "b", "c"}, id="in"),
        pytest.param("app notin (web)", {"c", "d"}, id="notin"),
        pytest.param("tier", {"b"}, id="exists"),
        pytest.param("!tier", {"a", "c", "d"}, id="not-exists"),
        pytest.param("app=web,tier=front", {"b"}, id="and"),
        pytest.param("app=web,!tier", {"a"}, id="and-not-exists"),
    ],
)
async def test_label_selectors(client, selector, expected):
    for name, labels in (("a", {"app": "web"}), ("b", {"app": "web", "tier": "front"}), ("c", {"app": "db"}),
                         ("d", {})):
        await client.create(r.SERVICES, svc(name, labels=labels), namespace="default")
    items, _ = await client.list(r.SERVICES, label_selector=selector)
    assert {i["metadata"]["name"] for i in items} == expected


async def test_field_selectors_and_namespaces(client):
    await client.create(r.NAMESPACES, {"metadata": {"name": "other"}})
    await client.create(r.SERVICES, svc("a"), namespace="default")
    await client.create(r.SERVICES, svc("a", ns="other"), namespace="other")
    await client.create(r.SERVICES, svc("b", ns="other"), namespace="other")
    assert len((await client.list(r.SERVICES))[0]) == 3
    assert len((await client.list(r.SERVICES, namespace="other"))[0]) == 2
    items, _ = await client.list(r.SERVICES, field_selector="metadata.name=a")
    assert {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items} == {("default", "a"), ("other", "a")}
    items, _ = await client.list(r.SERVICES, field_selector="metadata.namespace!=default")
    assert len(items) == 2
    await client.create(r.PODS, pod("p1", node="n1"), namespace="default")
    await client.create(r.PODS, pod("p2", node="n2"), namespace="default")
    items, _ = await client.list(r.PODS, field_selector="spec.nodeName=n2")
    assert [i["metadata"]["name"] for i in items] == ["p2"]


async def test_paged_list_is_complete(client):
    for i in range(5):
        await client.create(r.SERVICES, svc(f"s{i}"), namespace="default")
    page = await client.request("GET", "/api/v1/services", params={"limit": "2"})
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    items, rv = await client.list(r.SERVICES, limit=2)
    assert [i["metadata"]["name"] for i in items] == [f"s{i}" for i in range(5)]


async def test_delete_namespace_deletes_its_objects(client):
    await client.create(r.NAMESPACES, {"metadata": {"name": "tmp"}})
    await client.create(r.SERVICES, svc("a", ns="tmp"), namespace="tmp")
    await client.delete(r.NAMESPACES, "tmp")
    assert (await client.list(r.SERVICES, namespace="tmp"))[0] == []


async def test_finalizers_hold_deletion(client):
    body = svc("a")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await client.create(r.SERVICES, body, namespace="default")
    out = await client.delete(r.SERVICES, "a", namespace="default")
    assert out["metadata"]["deletionTimestamp"]
    assert (await client.get(r.SERVICES, "a", namespace="default"))["metadata"]["deletionTimestamp"]
    await client.patch(r.SERVICES, "a", {"metadata": {"finalizers": None}}, namespace="default")
    with pytest.raises(ApiError) as e:
        await client.get(r.SERVICES, "a", namespace="default")
    assert e.value.code == 404


# ------------------------------------------------------------------------- watch


async def _collect(client, res, rv, n, **kw):
    out = []
    async for ev in watch_events(client, res, resource_version=rv, timeout_seconds=5, **kw):
        out.append(ev)
        if len(out) >= n:
            break
    return out


async def test_watch_resumes_from_resource_version(client):
    a = await client.create(r.SERVICES, svc("a"), namespace="default")
    await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    await client.delete(r.SERVICES, "a", namespace="default")
    events = await _collect(client, r.SERVICES, a["metadata"]["resourceVersion"], 2)
    assert [e.type for e in events] == ["MODIFIED", "DELETED"]
    rvs = [int(e.resource_version) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(a["metadata"]["resourceVersion"])


async def test_watch_without_version_starts_with_current_objects(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    events = await _collect(client, r.SERVICES, "", 1)
    assert events[0].type == "ADDED" and events[0].object["metadata"]["name"] == "a"


async def test_watch_selector_transitions(client):
    s = await client.create(r.SERVICES, svc("a", labels={"app": "web"}), namespace="default")
    rv = s["metadata"]["resourceVersion"]
    await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"app": "db"}}}, namespace="default")
    await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"app": "web"}}}, namespace="default")
    events = await _collect(client, r.SERVICES, rv, 2, label_selector="app=web")
    assert [e.type for e in events] == ["DELETED", "ADDED"]


async def test_watch_bookmarks(client, lab_api):
    s = await client.create(r.SERVICES, svc("a"), namespace="default")
    await client.create(r.NODES, {"metadata": {"name": "n9"}})
    events = await _collect(client, r.SERVICES, s["metadata"]["resourceVersion"], 1)
    assert events[0].type == "BOOKMARK"
    assert int(events[0].resource_version) == lab_api.store.rv


async def test_watch_timeout_ends_stream(client):
    s = await client.create(r.SERVICES, svc("a"), namespace="default")
    events = []
    async for ev in watch_events(client, r.SERVICES, resource_version=s["metadata"]["resourceVersion"],
                                 timeout_seconds=1, allow_bookmarks=False):
        events.append(ev)
    assert events == []


async def test_watch_compacted_version_is_410():
    async with LabApiServer(history=2) as api, ApiClient.from_url(api.url) as client:
        first = await client.create(r.SERVICES, svc("a"), namespace="default")
        for i in range(3):
            await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"i": str(i)}}}, namespace="default")
        with pytest.raises(WatchExpired):
            await _collect(client, r.SERVICES, first["metadata"]["resourceVersion"], 1)
        # Raw wire format: HTTP 200, then one ERROR event holding a 410 Status.
        async with aiohttp.ClientSession() as s:
            url = f"{api.url}/api/v1/services?watch=1&resourceVersion={first['metadata']['resourceVersion']}"
            async with s.get(url) as resp:
                assert resp.status == 200
                line = json.loads((await resp.content.readline()).decode())
        assert line["type"] == "ERROR" and line["object"]["code"] == 410 and line["object"]["kind"] == "Status"


async def test_health_and_discovery(lab_api):
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz", "/livez"):
            async with s.get(lab_api.url + path) as resp:
                assert resp.status == 200 and await resp.text() == "ok"
        async with s.get(lab_api.url + "/api/v1") as resp:
            doc = await resp.json()
        names = {x["name"]: x for x in doc["resources"]}
        assert names["services"]["shortNames"] == ["svc"] and "watch" in names["services"]["verbs"]
        assert {"pods", "nodes", "namespaces", "services/status"} <= set(names)
        async with s.get(lab_api.url + "/apis") as resp:
            groups = (await resp.json())["groups"]
        assert [g["name"] for g in groups] == ["apps", "discovery.k8s.io", "networking.k8s.io", "policy",
                                               "policy.networking.k8s.io", "rbac.authorization.k8s.io"]
        anp = next(g for g in groups if g["name"] == "policy.networking.k8s.io")
        assert anp["preferredVersion"]["version"] == "v1alpha1"
        async with s.get(lab_api.url + "/apis/discovery.k8s.io/v1") as resp:
            assert (await resp.json())["resources"][0]["name"] == "endpointslices"


async def test_several_listeners_including_a_passed_socket():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    async with LabApiServer() as api:
        pass
    api = LabApiServer()
    await api.start(["127.0.0.1:0"], sockets=[sock])
    try:
        assert len(api.urls) == 2 and f"http://127.0.0.1:{port}" in api.urls
        for url in api.urls:
            async with ApiClient.from_url(url) as c:
                assert (await c.get(r.NAMESPACES, "default"))["metadata"]["name"] == "default"
    finally:
        await api.stop()


async def test_watch_from_a_future_version_is_410(client, lab_api):
    with pytest.raises(WatchExpired):
        await _collect(client, r.SERVICES, str(lab_api.store.rv + 100), 1)


async def test_graceful_pod_delete_finishes_after_the_grace_period(client):
    await client.create(r.PODS, pod("p", ip="10.244.0.5"), namespace="default")
    out = await client.request("DELETE", "/api/v1/namespaces/default/pods/p", body={"gracePeriodSeconds": 1})
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["deletionGracePeriodSeconds"] == 1
    events = await _collect(client, r.PODS, out["metadata"]["resourceVersion"], 1, allow_bookmarks=False)
    assert events[0].type == "DELETED"


async def test_slow_watcher_is_cut_off_not_buffered_forever(lab_api):
    from podnet.netlab.apiserver.apistore import Watcher

    w = Watcher("services", max_pending=3)
    lab_api.store.subscribe(w, lab_api.store.rv)
    async with ApiClient.from_url(lab_api.url) as c:
        for i in range(5):
            await c.create(r.SERVICES, svc(f"s{i}"), namespace="default")
    assert w.overflowed and w.closed
    lab_api.store.unsubscribe(w)


async def test_dry_run_stores_nothing_and_releases_allocations(client):
    body = svc("a", clusterIP="10.96.0.50")
    out = await client.request("POST", "/api/v1/namespaces/default/services", params={"dryRun": "All"}, body=body)
    assert out["spec"]["clusterIP"] == "10.96.0.50"
    with pytest.raises(ApiError):
        await client.get(r.SERVICES, "a", namespace="default")
    out = await client.create(r.SERVICES, body, namespace="default")
    assert out["spec"]["clusterIP"] == "10.96.0.50"


async def test_watch_list_initial_events_end_bookmark(client):
    await client.create(r.SERVICES, svc("a"), namespace="default")
    await client.create(r.SERVICES, svc("b"), namespace="default")
    async with aiohttp.ClientSession() as s:
        url = f"{client.server}/api/v1/services?watch=1&sendInitialEvents=true&allowWatchBookmarks=true" \
              "&resourceVersionMatch=NotOlderThan&timeoutSeconds=5"
        async with s.get(url) as resp:
            lines = [json.loads(await resp.content.readline()) for _ in range(3)]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in lines] == [
        ("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)]
    assert lines[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
