"""The real kubectl against the lab API server (discovery, get, apply, patch, delete)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest

from podnet.kube import resources as r

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")

pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")

SERVICE_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: %d
  - name: https
    port: 443
    targetPort: 8443
"""

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  nodeName: n1
  containers:
  - name: c
    image: example
"""


async def kubectl(server: str, home, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_get_apply_patch_delete(lab_api, client, tmp_path):
    url = lab_api.url
    rc, out, err = await kubectl(url, tmp_path, "get", "svc", "-A")
    assert rc == 0, err
    assert "No resources found" in err + out

    manifest = tmp_path / "svc.yaml"
    manifest.write_text(SERVICE_YAML % 8080)
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", str(manifest))
    assert rc == 0, err
    assert "service/web created" in out
    created = await client.get(r.SERVICES, "web", namespace="default")
    assert "kubectl.kubernetes.io/last-applied-configuration" in created["metadata"]["annotations"]

    # Re-apply with a change: GET, then a strategic merge PATCH that must keep everything else.
    manifest.write_text(SERVICE_YAML % 9090)
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", str(manifest))
    assert rc == 0, err
    assert "service/web configured" in out
    after = await client.get(r.SERVICES, "web", namespace="default")
    assert [(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in after["spec"]["ports"]] == [
        ("http", 80, 9090, "TCP"), ("https", 443, 8443, "TCP")]
    assert after["spec"]["clusterIP"] == created["spec"]["clusterIP"]

    rc, out, err = await kubectl(url, tmp_path, "get", "svc", "-A")
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row.split()[:6] == ["default", "web", "ClusterIP", created["spec"]["clusterIP"], "<none>",
                               "80/TCP,443/TCP"]
    rc, out, err = await kubectl(url, tmp_path, "get", "svc", "web", "-o", "json")
    assert rc == 0 and json.loads(out)["spec"]["clusterIP"] == created["spec"]["clusterIP"]

    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", "-", stdin=POD_YAML)
    assert rc == 0, err
    rc, out, err = await kubectl(url, tmp_path, "get", "po,endpointslices,nodes,ns")
    assert rc == 0, err
    assert "web-1" in out and "endpointslice.discovery.k8s.io/web-" in out

    rc, out, err = await kubectl(url, tmp_path, "patch", "svc", "web", "-p", '{"spec":{"type":"NodePort"}}')
    assert rc == 0, err
    patched = await client.get(r.SERVICES, "web", namespace="default")
    assert all(30000 <= p["nodePort"] <= 32767 for p in patched["spec"]["ports"])

    rc, out, err = await kubectl(url, tmp_path, "delete", "-f", str(manifest))
    assert rc == 0, err
    assert 'service "web" deleted' in out
    rc, out, err = await kubectl(url, tmp_path, "get", "svc", "web")
    assert rc != 0 and "NotFound" in err


async def test_kubectl_reports_validation_errors(lab_api, tmp_path):
    bad = (SERVICE_YAML % 8080).replace("port: 443", "port: 70000")
    rc, out, err = await kubectl(lab_api.url, tmp_path, "apply", "-f", "-", stdin=bad)
    assert rc != 0
    assert "is invalid" in err and "70000" in err


async def test_kubectl_create_namespace_and_service_protobuf(lab_api, client, tmp_path):
    """`kubectl create` uses typed clients, which send protobuf bodies."""
    rc, out, err = await kubectl(lab_api.url, tmp_path, "create", "namespace", "shop")
    assert rc == 0, err
    assert (await client.get(r.NAMESPACES, "shop"))["metadata"]["name"] == "shop"
    rc, out, err = await kubectl(lab_api.url, tmp_path, "create", "service", "nodeport", "web", "--tcp=80:http",
                                 "-n", "shop")
    assert rc == 0, err
    svc = await client.get(r.SERVICES, "web", namespace="shop")
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (80, "http", "TCP")
    assert 30000 <= port["nodePort"] <= 32767 and svc["spec"]["selector"] == {"app": "web"}


TYPO_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: typo}
spec:
  selector: {app: web}
  foo: 1
  ports:
  - {port: 80, prot: TCP}
"""
TYPO_ERROR = ('Error from server (BadRequest): error when creating "STDIN": Service in version "v1" cannot be handled '
              'as a Service: strict decoding error: unknown field "spec.foo", unknown field "spec.ports[0].prot"')


@pytest.mark.parametrize(
    "args, rc, stderr_lines",
    [
        pytest.param(["apply", "-f", "-"], 1, [TYPO_ERROR], id="apply-strict-by-default"),
        pytest.param(["create", "-f", "-"], 1, [TYPO_ERROR], id="create-strict-by-default"),
        pytest.param(["apply", "--validate=warn", "-f", "-"], 0,
                     ['Warning: unknown field "spec.foo"', 'Warning: unknown field "spec.ports[0].prot"'],
                     id="apply-validate-warn"),
        pytest.param(["apply", "--validate=false", "-f", "-"], 0, [], id="apply-validate-false-ignores"),
    ],
)
async def test_kubectl_field_validation(lab_api, client, tmp_path, args, rc, stderr_lines):
    """kubectl's --validate maps onto fieldValidation; the lab answers exactly as kube-apiserver."""
    code, out, err = await kubectl(lab_api.url, tmp_path, *args, stdin=TYPO_YAML)
    assert code == rc, err
    assert err.strip().splitlines() == stderr_lines
    if rc == 0:
        stored = await client.get(r.SERVICES, "typo", namespace="default")
        assert "foo" not in stored["spec"] and "prot" not in stored["spec"]["ports"][0]
