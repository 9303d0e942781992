"""OpenAPI v3 of the lab API server: kube-openapi's discovery and group-version documents, a schema per
served kind found by its group-version-kind, and ``kubectl explain`` reading them."""

from __future__ import annotations

import asyncio
import os
import shutil

import aiohttp
import pytest

from podnet.netlab.apiserver.apikinds import KINDS
from podnet.netlab.apiserver.openapi import group_version, root, schema_name

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")


def test_every_served_kind_has_a_schema_with_its_gvk():
    paths = root()["paths"]
    for k in KINDS.values():
        key = k.api_path.lstrip("/")
        assert paths[key]["serverRelativeURL"].startswith(f"/openapi/v3/{key}?hash=")
        doc = group_version(k.api_path)
        s = doc["components"]["schemas"][schema_name(k)]
        group, _, version = k.api_version.rpartition("/")
        assert s["x-kubernetes-group-version-kind"] == [{"group": group, "kind": k.kind, "version": version}]
        assert {"apiVersion", "kind", "metadata"} <= set(s["properties"])


@pytest.mark.parametrize("plural,name", [
    pytest.param("pods", "io.k8s.api.core.v1.Pod", id="core"),
    pytest.param("deployments", "io.k8s.api.apps.v1.Deployment", id="apps"),
    pytest.param("endpointslices", "io.k8s.api.discovery.v1.EndpointSlice", id="discovery"),
])
def test_schema_names_are_upstreams(plural, name):
    assert schema_name(KINDS[plural]) == name


def test_patch_operations_tell_kubectl_the_server_validates_fields():
    doc = group_version("/api/v1")
    op = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}} \
        in op["parameters"]
    assert "requestBody" not in op  # kubectl keeps its own strategic-merge metadata


def test_schema_types():
    schemas = group_version("/apis/apps/v1")["components"]["schemas"]
    spec = schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["type"] == "integer"
    containers = spec["properties"]["template"]["properties"]["spec"]["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["items"]["properties"]["ports"]["items"]["properties"]["containerPort"]["type"] == "integer"


async def test_served_over_http(lab_api):
    async with aiohttp.ClientSession() as s:
        async with s.get(lab_api.url + "/openapi/v3") as resp:
            assert resp.status == 200
            assert "apis/apps/v1" in (await resp.json())["paths"]
        async with s.get(lab_api.url + "/openapi/v3/apis/apps/v1") as resp:
            assert "io.k8s.api.apps.v1.Deployment" in (await resp.json())["components"]["schemas"]
        async with s.get(lab_api.url + "/openapi/v3/apis/nothing/v1") as resp:
            assert resp.status == 404


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
@pytest.mark.parametrize("what,lines", [
    pytest.param("pod.spec.containers", ["KIND:       Pod", "FIELD: containers <[]Object>", "image\t<string>",
                                         "ports\t<[]Object>"], id="pod-containers"),
    pytest.param("deployment.spec", ["GROUP:      apps", "KIND:       Deployment", "replicas\t<integer>",
                                     "template\t<Object>", "Number of desired pods."], id="deployment-spec"),
    pytest.param("svc.spec.ports", ["FIELD: ports <[]Object>", "targetPort\t<string>"], id="service-ports"),
    pytest.param("clusterrole.rules", ["GROUP:      rbac.authorization.k8s.io", "verbs\t<[]string>"], id="rbac-rules"),
    pytest.param("pod.spec.containers.resources", ["FIELD: resources <Object>"], id="same-name-other-type"),
])
async def test_kubectl_explain(lab_api, tmp_path, what, lines):
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", lab_api.url, "explain", what, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    for line in lines:
        assert line in text, text
