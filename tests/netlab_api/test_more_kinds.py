"""The kinds the lab API server stores as given (ConfigMap, Secret, ServiceAccount, Event, apps/v1,
RBAC, policy/v1 PodDisruptionBudget): REST verbs, watch, discovery, and kube-apiserver's
validation of names, scopes, ConfigMap/Secret keys, sizes and base64."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil

import aiohttp
import pytest



async def call(api, method: str, path: str, body=None, ctype: str = "application/json"):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers={"Content-Type": ctype},
                             data=json.dumps(body) if body is not None else None) as resp:
            text = await resp.read()
            if "watch=1" in path:
                return resp.status, text.decode()
            return resp.status, json.loads(text)


# (collection path in namespace "default" or cluster-scoped, kind, a valid body's spec-like part)
KINDS = [
    pytest.param("/api/v1/namespaces/default/configmaps", "ConfigMap", {"data": {"a.conf": "x=1"}}, id="configmap"),
    pytest.param("/api/v1/namespaces/default/secrets", "Secret", {"data": {"token": "aGk="}}, id="secret"),
    pytest.param("/api/v1/namespaces/default/serviceaccounts", "ServiceAccount", {}, id="serviceaccount"),
    pytest.param("/api/v1/namespaces/default/events", "Event",
                 {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "type": "Normal"}, id="event"),
    # apps/v1 kinds have controllers that write status and pods: tests/netlab_api/test_apps_*.py
    pytest.param("/apis/rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole",
                 {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}, id="clusterrole"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding",
                 {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}},
                 id="clusterrolebinding"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", "Role", {"rules": []}, id="role"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", "RoleBinding",
                 {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}},
                 id="rolebinding"),
    pytest.param("/apis/policy/v1/namespaces/default/poddisruptionbudgets", "PodDisruptionBudget",
                 {"spec": {"minAvailable": 1}}, id="poddisruptionbudget"),
]


@pytest.mark.parametrize("collection,kind,extra", KINDS)
async def test_verbs_and_watch(lab_api, collection, kind, extra):
    name = "system:x" if kind.startswith("Cluster") else "obj-1"
    code, created = await call(lab_api, "POST", collection, {"metadata": {"name": name, "labels": {"a": "b"}}, **extra})
    assert code == 201, created
    assert created["kind"] == kind and created["metadata"]["uid"]
    for k, val in extra.items():
        assert created[k] == val
    rv = created["metadata"]["resourceVersion"]

    code, got = await call(lab_api, "GET", f"{collection}/{name}")
    assert (code, got) == (200, created)
    code, listed = await call(lab_api, "GET", f"{collection}?labelSelector=a%3Db")
    assert code == 200 and listed["kind"] == kind + "List" and [i["metadata"]["name"] for i in listed["items"]] == [name]

    code, patched = await call(lab_api, "PATCH", f"{collection}/{name}", {"metadata": {"labels": {"c": "d"}}},
                               "application/merge-patch+json")
    assert code == 200 and patched["metadata"]["labels"] == {"a": "b", "c": "d"}
    replaced_body = {**patched, "metadata": {**patched["metadata"], "annotations": {"n": "1"}}}
    code, replaced = await call(lab_api, "PUT", f"{collection}/{name}", replaced_body)
    assert code == 200 and replaced["metadata"]["annotations"] == {"n": "1"}

    code, gone = await call(lab_api, "DELETE", f"{collection}/{name}")
    assert code == 200 and gone["metadata"]["name"] == name
    code, _ = await call(lab_api, "GET", f"{collection}/{name}")
    assert code == 404

    code, text = await call(lab_api, "GET", f"{collection}?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    assert code == 200
    events = [json.loads(line) for line in text.splitlines() if line]
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert all(e["object"]["kind"] == kind for e in events)


async def test_discovery_lists_the_groups_and_resources(lab_api):
    code, groups = await call(lab_api, "GET", "/apis")
    assert code == 200
    assert {"apps", "rbac.authorization.k8s.io", "policy"} <= {g["name"] for g in groups["groups"]}
    code, apps = await call(lab_api, "GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["daemonsets"]["shortNames"] == ["ds"] and by_name["daemonsets"]["namespaced"]
    assert by_name["deployments"]["categories"] == ["all"] and "deployments/status" in by_name
    code, rbac = await call(lab_api, "GET", "/apis/rbac.authorization.k8s.io/v1")
    assert {r["name"]: r["namespaced"] for r in rbac["resources"]} == {
        "clusterrolebindings": False, "clusterroles": False, "rolebindings": True, "roles": True}
    code, core = await call(lab_api, "GET", "/api/v1")
    assert {"configmaps", "secrets", "serviceaccounts", "events"} <= {r["name"] for r in core["resources"]}


def _cm(name="c", **rest):
    return {"metadata": {"name": name}, **rest}


# kube-apiserver's texts (apimachinery/pkg/util/validation: IsDNS1123Subdomain, IsConfigMapKey)
SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
             "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
CONFIG_KEY = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
              "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


@pytest.mark.parametrize("collection,body,message,field", [
    pytest.param("/api/v1/namespaces/default/configmaps", _cm("Bad_Name"),
                 f'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN}',
                 "metadata.name", id="configmap-name-not-subdomain"),
    pytest.param("/apis/apps/v1/namespaces/default/deployments", _cm("a" * 254),
                 f'Deployment.apps "{"a" * 254}" is invalid: metadata.name: Invalid value: "{"a" * 254}": '
                 "must be no more than 253 characters", "metadata.name", id="deployment-name-too-long"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/clusterroles", _cm("a/b"),
                 """ClusterRole.rbac.authorization.k8s.io "a/b" is invalid: metadata.name: Invalid value: "a/b": may not contain '/'""",
                 "metadata.name", id="rbac-name-slash"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", _cm(".."),
                 """Role.rbac.authorization.k8s.io ".." is invalid: metadata.name: Invalid value: "..": may not be '..'""",
                 "metadata.name", id="rbac-name-dotdot"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", _cm("a%2"),
                 """ClusterRoleBinding.rbac.authorization.k8s.io "a%2" is invalid: metadata.name: Invalid value: "a%2": may not contain '%'""",
                 "metadata.name", id="rbac-name-percent"),
    pytest.param("/api/v1/namespaces/default/configmaps", _cm(data={"a b": "x"}),
                 f'ConfigMap "c" is invalid: data[a b]: Invalid value: "a b": {CONFIG_KEY}',
                 "data[a b]", id="configmap-key-charset"),
    pytest.param("/api/v1/namespaces/default/configmaps", _cm(data={"..a": "x"}),
                 """ConfigMap "c" is invalid: data[..a]: Invalid value: "..a": must not start with '..'""",
                 "data[..a]", id="configmap-key-dotdot-prefix"),
    pytest.param("/api/v1/namespaces/default/configmaps", _cm(data={"k": "x"}, binaryData={"k": "eA=="}),
                 'ConfigMap "c" is invalid: data[k]: Invalid value: "k": duplicate of key present in binaryData',
                 "data[k]", id="configmap-key-in-both"),
    pytest.param("/api/v1/namespaces/default/configmaps",
                 _cm(data={"k": "x" * (1024 * 1024 - 1)}, binaryData={"b": "eHg="}),
                 'ConfigMap "c" is invalid: []: Too long: may not be more than 1048576 bytes', "[]",
                 id="configmap-too-large"),
    pytest.param("/api/v1/namespaces/default/secrets",
                 _cm(data={"k": base64.b64encode(b"x" * (1024 * 1024)).decode(), "j": "eA=="}),
                 'Secret "c" is invalid: data: Too long: may not be more than 1048576 bytes', "data",
                 id="secret-too-large"),
    pytest.param("/api/v1/namespaces/default/secrets", _cm(data={".": "eA=="}),
                 """Secret "c" is invalid: data[.]: Invalid value: ".": must not be '.'""", "data[.]",
                 id="secret-key-dot"),
])
async def test_refused_with_422(lab_api, collection, body, message, field):
    code, status = await call(lab_api, "POST", collection, body)
    assert code == 422, status
    assert status["kind"] == "Status" and status["reason"] == "Invalid" and status["code"] == 422
    assert status["message"] == message
    kind, _, group = message.split(" ", 1)[0].partition(".")
    detail = message.split(" is invalid: ", 1)[1].removeprefix(field + ": ")
    assert status["details"] == {"name": body["metadata"]["name"], "kind": kind, **({"group": group} if group else {}),
                                 "causes": [{"reason": "FieldValueTooLong" if "Too long" in detail
                                             else "FieldValueInvalid", "message": detail, "field": field}]}


@pytest.mark.parametrize("collection,body", [
    pytest.param("/api/v1/namespaces/default/configmaps", _cm(data={"k": "x" * (1024 * 1024 - 1)},
                                                             binaryData={"b": "eA=="}), id="configmap"),
    pytest.param("/api/v1/namespaces/default/secrets",
                 _cm(data={"k": base64.b64encode(b"x" * (1024 * 1024)).decode()}), id="secret"),
])
async def test_data_at_the_size_limit_is_accepted(lab_api, collection, body):
    """The limit counts the values' bytes (decoded for binaryData and Secret data), not the keys."""
    code, out = await call(lab_api, "POST", collection, body)
    assert code == 201, out


@pytest.mark.parametrize("value,at", [
    pytest.param("a*b=", 1, id="bad-character"),
    pytest.param("aGk", 0, id="missing-padding"),
    pytest.param("aGVsbG8", 4, id="missing-padding-second-quantum"),
])
async def test_secret_data_must_be_base64(lab_api, value, at):
    code, status = await call(lab_api, "POST", "/api/v1/namespaces/default/secrets", _cm(data={"k": value}))
    assert code == 400, status
    assert status["reason"] == "BadRequest"
    assert status["message"] == ('Secret in version "v1" cannot be handled as a Secret: '
                                 f"illegal base64 data at input byte {at}")


async def test_secret_string_data_and_type_default(lab_api):
    code, out = await call(lab_api, "POST", "/api/v1/namespaces/default/secrets",
                           _cm(data={"a": "eA=="}, stringData={"a": "override", "b": "hi"}))
    assert code == 201, out
    assert out["type"] == "Opaque" and "stringData" not in out
    assert out["data"] == {"a": base64.b64encode(b"override").decode(), "b": "aGk="}


@pytest.mark.parametrize("method,path,code", [
    pytest.param("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/clusterroles", 404,
                 id="cluster-scoped-under-namespace"),
    pytest.param("POST", "/api/v1/namespaces/nope/configmaps", 404, id="namespace-missing"),
    pytest.param("POST", "/apis/apps/v2/namespaces/default/deployments", 404, id="unknown-version"),
])
async def test_scope(lab_api, method, path, code):
    got, status = await call(lab_api, method, path, _cm())
    assert got == code, status
    assert status["kind"] == "Status" and status["code"] == code


async def test_namespaced_body_for_cluster_scoped_kind_drops_namespace(lab_api):
    code, out = await call(lab_api, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                           {"metadata": {"name": "r", "namespace": "default"}})
    assert code == 201 and "namespace" not in out["metadata"]


async def test_deleting_a_namespace_deletes_its_stored_objects(lab_api):
    assert (await call(lab_api, "POST", "/api/v1/namespaces", {"metadata": {"name": "shop"}}))[0] == 201
    assert (await call(lab_api, "POST", "/api/v1/namespaces/shop/configmaps", _cm()))[0] == 201
    deployment = _cm("d", spec={"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}})
    assert (await call(lab_api, "POST", "/apis/apps/v1/namespaces/shop/deployments", deployment))[0] == 201
    assert (await call(lab_api, "DELETE", "/api/v1/namespaces/shop"))[0] == 200
    assert (await call(lab_api, "GET", "/api/v1/namespaces/shop/configmaps/c"))[0] == 404
    assert (await call(lab_api, "GET", "/apis/apps/v1/namespaces/shop/deployments/d"))[0] == 404


async def test_tables_for_stored_kinds(lab_api):
    await call(lab_api, "POST", "/api/v1/namespaces/default/configmaps", _cm(data={"a": "1", "b": "2"}))
    await call(lab_api, "POST", "/api/v1/namespaces/default/serviceaccounts", _cm("sa"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    async with aiohttp.ClientSession() as s:
        async with s.get(lab_api.url + "/api/v1/namespaces/default/configmaps", headers={"Accept": accept}) as r:
            cm = await r.json()
        async with s.get(lab_api.url + "/api/v1/namespaces/default/serviceaccounts", headers={"Accept": accept}) as r:
            sa = await r.json()
    assert [c["name"] for c in cm["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert cm["rows"][0]["cells"][:2] == ["c", 2]
    assert [c["name"] for c in sa["columnDefinitions"]] == ["Name", "Age"]
    assert sorted(r["cells"][0] for r in sa["rows"]) == ["default", "sa"]  # "default": the ServiceAccount controller's


KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")


async def kubectl(api, home, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", api.url, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_create_configmap_and_secret(lab_api, tmp_path):
    """`kubectl create configmap|secret generic` send protobuf bodies (typed clients)."""
    rc, out, err = await kubectl(lab_api, tmp_path, "create", "configmap", "conf", "--from-literal=a.conf=x=1",
                                 "--from-literal=b=2")
    assert (rc, out.strip()) == (0, "configmap/conf created"), err
    rc, out, err = await kubectl(lab_api, tmp_path, "create", "secret", "generic", "creds", "--from-literal=token=hi")
    assert (rc, out.strip()) == (0, "secret/creds created"), err
    code, cm = await call(lab_api, "GET", "/api/v1/namespaces/default/configmaps/conf")
    assert cm["data"] == {"a.conf": "x=1", "b": "2"}
    code, secret = await call(lab_api, "GET", "/api/v1/namespaces/default/secrets/creds")
    assert secret["data"] == {"token": "aGk="} and secret["type"] == "Opaque"
    rc, out, err = await kubectl(lab_api, tmp_path, "get", "cm,secret")
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert ["configmap/conf", "2"] == rows[1][:2] and ["secret/creds", "Opaque", "1"] == rows[3][:3], out
    rc, out, err = await kubectl(lab_api, tmp_path, "create", "configmap", "bad", "--from-literal=a b=1")
    assert rc != 0


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_get_events(lab_api, tmp_path):
    rc, out, err = await kubectl(lab_api, tmp_path, "get", "events")
    assert (rc, err.strip()) == (0, "No resources found in default namespace."), out
    code, _ = await call(lab_api, "POST", "/api/v1/namespaces/default/events",
                         {"metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "p"},
                          "reason": "Started", "message": "Started container c", "type": "Normal"})
    assert code == 201
    rc, out, err = await kubectl(lab_api, tmp_path, "get", "events", "-o", "json")
    assert rc == 0, err
    assert [(e["metadata"]["name"], e["reason"]) for e in json.loads(out)["items"]] == [("p.1", "Started")]
    rc, out, err = await kubectl(lab_api, tmp_path, "get", "ev")
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "REASON", "OBJECT", "MESSAGE", "AGE"], out
    assert row.split()[:-1] == ["p.1", "Normal", "Started", "pod/p", "Started", "container", "c"], out


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_describe_shows_the_pods_events(lab_api, tmp_path):
    """kubectl describe lists a pod's events with an involvedObject field selector."""
    code, pod = await call(lab_api, "POST", "/api/v1/namespaces/default/pods",
                           {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}})
    assert code == 201
    for name, uid in (("p.1", pod["metadata"]["uid"]), ("other.1", "another-uid")):
        code, _ = await call(lab_api, "POST", "/api/v1/namespaces/default/events",
                             {"metadata": {"name": name}, "reason": "Started", "message": f"from {name}",
                              "type": "Normal", "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default",
                                                                   "uid": uid}})
        assert code == 201
    rc, out, err = await kubectl(lab_api, tmp_path, "describe", "pod", "p")
    assert rc == 0, err
    events = out.split("Events:", 1)[1]
    assert "from p.1" in events and "from other.1" not in events, out


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_create_rbac_objects_and_service_account(lab_api, tmp_path):
    """`kubectl create clusterrole|role|rolebinding|clusterrolebinding|serviceaccount` (protobuf bodies)."""
    for args in (("clusterrole", "reader", "--verb=get,list", "--resource=pods,deployments.apps",
                  "--resource-name=x"),
                 ("clusterrole", "health", "--verb=get", "--non-resource-url=/healthz"),
                 ("role", "cm", "--verb=get", "--resource=configmaps"),
                 ("rolebinding", "cm", "--role=cm", "--serviceaccount=default:sa", "--user=bob"),
                 ("clusterrolebinding", "reader", "--clusterrole=reader", "--group=g"),
                 ("serviceaccount", "sa")):
        rc, out, err = await kubectl(lab_api, tmp_path, "create", *args)
        assert rc == 0 and out.strip().endswith(f"/{args[1]} created"), (args, out, err)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    _, reader = await call(lab_api, "GET", f"{rbac}/clusterroles/reader")
    assert reader["rules"] == [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                                "resourceNames": ["x"]},
                               {"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"],
                                "resourceNames": ["x"]}]
    _, health = await call(lab_api, "GET", f"{rbac}/clusterroles/health")
    assert health["rules"] == [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]
    _, binding = await call(lab_api, "GET", f"{rbac}/namespaces/default/rolebindings/cm")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"}
    assert binding["subjects"] == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"},
                                   {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]
    _, crb = await call(lab_api, "GET", f"{rbac}/clusterrolebindings/reader")
    assert crb["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"}]
    code, _ = await call(lab_api, "GET", "/api/v1/namespaces/default/serviceaccounts/sa")
    assert code == 200
