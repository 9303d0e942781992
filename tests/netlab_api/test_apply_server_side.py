"""Server-side apply (application/apply-patch+yaml, kubectl apply --server-side): create if absent,
managedFields per manager, 409 conflicts with kube-apiserver's message, --force-conflicts, removal of
fields a manager stops applying."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import aiohttp
import pytest
import yaml

from podnet.netlab.apiserver.apply import field_set, fields_v1, paths_of, plan_apply

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
CM = "/api/v1/namespaces/default/configmaps"
SVC = "/api/v1/namespaces/default/services"
APPLY = "application/apply-patch+yaml"


async def apply(api, path, doc, manager="m", force=False) -> tuple[int, dict]:
    q = "&".join(x for x in [f"fieldManager={manager}" if manager else "", "force=true" if force else ""] if x)
    async with aiohttp.ClientSession() as s:
        async with s.patch(f"{api.url}{path}?{q}", data=yaml.safe_dump(doc),
                           headers={"Content-Type": APPLY}) as resp:
            return resp.status, await resp.json(content_type=None)


def cm(**data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def managers(obj):
    return {e["manager"]: e for e in obj["metadata"]["managedFields"]}


async def test_apply_creates_and_records_managed_fields(lab_api):
    code, obj = await apply(lab_api, f"{CM}/c", cm(a="1"), "alice")
    assert code == 201, obj
    assert obj["data"] == {"a": "1"}
    entry = managers(obj)["alice"]
    assert entry["operation"] == "Apply" and entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}}


async def test_field_manager_required(lab_api):
    code, status = await apply(lab_api, f"{CM}/c", cm(a="1"), manager="")
    assert code == 422
    assert status["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                                 'for apply patch')


async def test_conflict_force_and_sharing(lab_api):
    assert (await apply(lab_api, f"{CM}/c", cm(a="1", b="x"), "alice"))[0] == 201
    code, status = await apply(lab_api, f"{CM}/c", cm(a="2"), "bob")
    assert code == 409
    assert status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "alice": .data.a'
    assert status["details"]["causes"] == [{"type": "FieldManagerConflict", "message": 'conflict with "alice"',
                                            "field": ".data.a"}]
    code, status = await apply(lab_api, f"{CM}/c", cm(a="2", b="y"), "bob")
    assert code == 409
    assert status["message"] == ('Apply failed with 2 conflicts: conflicts with "alice":\n- .data.a\n- .data.b')
    # the same value is shared, not a conflict
    code, obj = await apply(lab_api, f"{CM}/c", cm(b="x"), "bob")
    assert code == 200, obj
    assert {"f:b": {}} == managers(obj)["bob"]["fieldsV1"]["f:data"]
    assert managers(obj)["alice"]["fieldsV1"]["f:data"] == {"f:a": {}, "f:b": {}}
    # --force-conflicts moves the field
    code, obj = await apply(lab_api, f"{CM}/c", cm(a="2", b="x"), "bob", force=True)
    assert code == 200 and obj["data"] == {"a": "2", "b": "x"}
    assert managers(obj)["alice"]["fieldsV1"]["f:data"] == {"f:b": {}}
    assert managers(obj)["bob"]["fieldsV1"]["f:data"] == {"f:a": {}, "f:b": {}}


async def test_fields_left_out_are_removed_unless_shared(lab_api):
    await apply(lab_api, f"{CM}/c", cm(a="1", b="2", c="3"), "alice")
    await apply(lab_api, f"{CM}/c", cm(c="3"), "bob")
    code, obj = await apply(lab_api, f"{CM}/c", cm(a="1"), "alice")
    assert code == 200
    assert obj["data"] == {"a": "1", "c": "3"}  # b removed; c stays, bob owns it


async def test_keyed_lists_merge_by_key(lab_api):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "s"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    assert (await apply(lab_api, f"{SVC}/s", svc, "alice"))[0] == 201
    svc2 = {**svc, "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}
    code, obj = await apply(lab_api, f"{SVC}/s", svc2, "bob")
    assert code == 200, obj
    assert sorted(p["port"] for p in obj["spec"]["ports"]) == [80, 443]
    assert obj["spec"]["clusterIP"]  # allocated fields survive
    assert 'k:{"port":443}' in managers(obj)["bob"]["fieldsV1"]["f:spec"]["f:ports"]


@pytest.mark.parametrize("doc,paths", [
    pytest.param({"metadata": {"name": "x", "labels": {"a": "b"}}}, {("f:metadata", "f:labels", "f:a")},
                 id="labels-not-name"),
    pytest.param({"spec": {"containers": [{"name": "c", "image": "i"}]}},
                 {("f:spec", "f:containers", 'k:{"name":"c"}', "."),
                  ("f:spec", "f:containers", 'k:{"name":"c"}', "f:name"),
                  ("f:spec", "f:containers", 'k:{"name":"c"}', "f:image")}, id="keyed-list"),
    pytest.param({"spec": {"args": ["a", "b"]}}, {("f:spec", "f:args")}, id="atomic-list"),
    pytest.param({"status": {"phase": "x"}, "spec": {"a": 1}}, {("f:spec", "f:a")}, id="status-left-out"),
])
def test_field_sets(doc, paths):
    got = field_set(doc, status=False)
    assert got == paths
    assert paths_of(fields_v1(got)) == got


def test_update_manager_is_named_with_its_api_version():
    live = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "managedFields": [
        {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}}]}, "spec": {"replicas": 1}}
    with pytest.raises(Exception) as e:
        plan_apply(live, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                          "spec": {"replicas": 3}}, "ci", force=False)
    assert str(e.value) == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'


CM_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  color: %s
"""


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_apply_server_side(lab_api, tmp_path):
    async def kubectl(*args, stdin=None):
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--server", lab_api.url, *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await kubectl("apply", "--server-side", "-f", "-", stdin=CM_YAML % "red")
    assert rc == 0, err
    assert "configmap/web serverside-applied" in out
    rc, out, err = await kubectl("apply", "--server-side", "--field-manager", "other", "-f", "-",
                                 stdin=CM_YAML % "blue")
    assert rc != 0
    assert 'conflict with "kubectl"' in err and ".data.color" in err
    rc, out, err = await kubectl("apply", "--server-side", "--field-manager", "other", "--force-conflicts",
                                 "-f", "-", stdin=CM_YAML % "blue")
    assert rc == 0, err
    rc, out, err = await kubectl("get", "configmap", "web", "-o", "json", "--show-managed-fields")
    obj = json.loads(out)
    assert obj["data"] == {"color": "blue"}
    assert {e["manager"] for e in obj["metadata"]["managedFields"]} == {"other"}


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_apply_conflicts_with_kubectl_create(lab_api, tmp_path):
    async def kubectl(*args):
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--server", lab_api.url, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    rc, _, err = await kubectl("create", "configmap", "web", "--from-literal=color=red")
    assert rc == 0, err
    obj = lab_api.store.get("configmaps", "default", "web")
    assert [(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]] == [("kubectl-create", "Update")]
    code, status = await apply(lab_api, f"{CM}/web", {**cm(color="blue"), "metadata": {"name": "web"}}, "ci")
    assert code == 409
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.color'
    # the same value is no conflict; then a PATCH by another manager takes the field over
    code, obj = await apply(lab_api, f"{CM}/web", {**cm(color="red"), "metadata": {"name": "web"}}, "ci")
    assert code == 200, obj
    rc, _, err = await kubectl("patch", "configmap", "web", "-p", '{"data":{"color":"green"}}')
    assert rc == 0, err
    code, status = await apply(lab_api, f"{CM}/web", {**cm(color="red"), "metadata": {"name": "web"}}, "ci")
    assert code == 409
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.color'


def test_plain_writes_record_nothing_and_status_is_its_own():
    from podnet.netlab.apiserver.apply import record_update

    old = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Pending"}}
    new = {**old, "status": {"phase": "Running"}}
    record_update(new, old, "kubelet", sub="status", has_status=True)
    assert new["metadata"]["managedFields"][0]["fieldsV1"] == {"f:status": {"f:phase": {}}}
    assert new["metadata"]["managedFields"][0]["subresource"] == "status"
    assert "managedFields" not in old["metadata"]


async def test_reapplying_the_same_config_writes_nothing(lab_api):
    code, first = await apply(lab_api, f"{CM}/c", cm(a="1"), "alice")
    assert code == 201
    await apply(lab_api, f"{CM}/c", cm(b="2"), "bob")
    code, second = await apply(lab_api, f"{CM}/c", cm(a="1"), "alice")
    assert code == 200
    code, third = await apply(lab_api, f"{CM}/c", cm(a="1"), "alice")
    assert third["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    assert third["metadata"]["managedFields"] == second["metadata"]["managedFields"]
