"""RBAC in the lab API server: deploy/podnet.yaml's rules enforced over HTTPS (403 with kube-apiserver's
Status body), kubectl with a component's kubeconfig, and ``podnet lab apiserver``'s authorisation flags."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl

import aiohttp
import pytest

from podnet.netlab.apiserver.authn import UNAUTHORIZED, TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.server import LabApiServer, rbac_policy
from podnet.netlab.lab.credentials import SA_GROUPS, kubeconfig_text, make_pki, rbac_manifest

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
NODE_SA = "system:serviceaccount:kube-system:podnet-node"
DNS_SA = "system:serviceaccount:kube-system:podnet-dns"
TOKENS = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",)),
          "node-tok": User(NODE_SA, "cni-n1", SA_GROUPS),
          "dns-tok": User(DNS_SA, "dns", SA_GROUPS),
          "kubelet-tok": User("system:node:n1", "kubelet-n1", ("system:nodes",))}
POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_pki(d, ["127.0.0.1"])
    return d


@pytest.fixture
async def api(pki):
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key"),
                            policy=policy_from_yaml(rbac_manifest().read_text())) as api:
        yield api


async def _call(api, pki, method: str, path: str, token: str | None, body=None,
                ctype: str = "application/json") -> tuple[int, dict]:
    headers = {"Content-Type": ctype} | ({"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers=headers, ssl=ctx,
                             data=json.dumps(body) if body is not None else None) as resp:
            text = await resp.read()
            return resp.status, json.loads(text) if text.startswith(b"{") else {}


def _forbidden(message: str, details: dict) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403}


@pytest.mark.parametrize("token,method,path,body,ctype,code", [
    pytest.param("node-tok", "GET", "/api/v1/services", None, "", 200, id="node-list-services"),
    pytest.param("node-tok", "GET", "/apis/discovery.k8s.io/v1/endpointslices", None, "", 200,
                 id="node-list-endpointslices"),
    pytest.param("node-tok", "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1", None, "", 200,
                 id="node-list-own-node"),
    pytest.param("node-tok", "GET", "/api", None, "", 200, id="node-discovery"),
    pytest.param("node-tok", "GET", "/apis/discovery.k8s.io/v1", None, "", 200, id="node-group-discovery"),
    pytest.param("node-tok", "POST", "/api/v1/namespaces/default/pods", POD, "application/json", 403,
                 id="node-create-pod"),
    pytest.param("node-tok", "DELETE", "/api/v1/namespaces/default/services", None, "", 403,
                 id="node-deletecollection"),
    pytest.param("dns-tok", "GET", "/api/v1/namespaces/default/services", None, "", 200, id="dns-list-services"),
    pytest.param("dns-tok", "GET", "/api/v1/pods", None, "", 403, id="dns-list-pods"),
    pytest.param("kubelet-tok", "GET", "/api/v1/pods", None, "", 200, id="kubelet-list-pods"),
    pytest.param("kubelet-tok", "GET", "/api/v1/services", None, "", 200, id="kubelet-list-services"),
    pytest.param("kubelet-tok", "GET", "/apis/apps/v1/deployments", None, "", 403, id="kubelet-list-deployments"),
    pytest.param("admin-tok", "POST", "/api/v1/namespaces/default/pods", POD, "application/json", 201,
                 id="admin-create-pod"),
    pytest.param(None, "GET", "/api/v1/services", None, "", 401, id="anonymous"),
    pytest.param(None, "GET", "/healthz", None, "", 200, id="anonymous-healthz"),
])
async def test_decisions_over_http(api, pki, token, method, path, body, ctype, code):
    status, got = await _call(api, pki, method, path, token, body, ctype or "application/json")
    assert status == code
    if code == 401:
        assert got == UNAUTHORIZED
    if code == 403:
        assert got["reason"] == "Forbidden" and got["code"] == 403


@pytest.mark.parametrize("token,method,path,body,ctype,want", [
    pytest.param("node-tok", "POST", "/api/v1/namespaces/default/pods", POD, "application/json",
                 _forbidden('pods is forbidden: User "system:serviceaccount:kube-system:podnet-node" cannot create '
                            'resource "pods" in API group "" in the namespace "default"', {"kind": "pods"}),
                 id="create-pod"),
    pytest.param("dns-tok", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"a": "b"}}},
                 "application/merge-patch+json",
                 _forbidden('nodes "n1" is forbidden: User "system:serviceaccount:kube-system:podnet-dns" cannot '
                            'patch resource "nodes" in API group "" at the cluster scope',
                            {"name": "n1", "kind": "nodes"}), id="patch-node"),
    pytest.param("dns-tok", "GET", "/api/v1/namespaces/default/pods/p/log", None, "",
                 _forbidden('pods "p" is forbidden: User "system:serviceaccount:kube-system:podnet-dns" cannot get '
                            'resource "pods/log" in API group "" in the namespace "default"',
                            {"name": "p", "kind": "pods"}), id="pod-log"),
    pytest.param("dns-tok", "GET", "/apis/networking.k8s.io/v1/networkpolicies?watch=1", None, "",
                 _forbidden('networkpolicies.networking.k8s.io is forbidden: User '
                            '"system:serviceaccount:kube-system:podnet-dns" cannot watch resource "networkpolicies" '
                            'in API group "networking.k8s.io" at the cluster scope',
                            {"group": "networking.k8s.io", "kind": "networkpolicies"}), id="watch-group"),
])
async def test_forbidden_bodies(api, pki, token, method, path, body, ctype, want):
    assert await _call(api, pki, method, path, token, body, ctype or "application/json") == (403, want)


async def test_denied_write_changes_nothing(api, pki):
    status, _ = await _call(api, pki, "POST", "/api/v1/namespaces/default/pods", "node-tok", POD)
    assert status == 403
    assert api.store.get("pods", "default", "p") is None


async def test_node_sa_patches_a_node(api, pki):
    await _call(api, pki, "POST", "/api/v1/nodes", "kubelet-tok", {"metadata": {"name": "n1"}})
    status, got = await _call(api, pki, "PATCH", "/api/v1/nodes/n1", "node-tok",
                              {"metadata": {"annotations": {"podnet.io/vtep-mac": "02:00:00:00:00:01"}}},
                              "application/merge-patch+json")
    assert status == 200
    assert got["metadata"]["annotations"]["podnet.io/vtep-mac"] == "02:00:00:00:00:01"


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_with_a_component_kubeconfig(api, pki, tmp_path):
    kc = tmp_path / "cni.kubeconfig"
    kc.write_text(kubeconfig_text("t", api.url, "node-tok", (pki / "ca.crt").read_text()))

    async def kubectl(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(kc), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await kubectl("get", "svc", "-A")
    assert rc == 0, err
    rc, out, err = await kubectl("run", "x", "--image=nginx")
    assert rc != 0
    assert ('Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:kube-system:podnet-node" '
            'cannot create resource "pods" in API group "" in the namespace "default"') in err
    rc, out, err = await kubectl("get", "secrets")
    assert rc != 0 and "secrets" in err


@pytest.mark.parametrize("mode,rbac_file,error", [
    pytest.param("AlwaysAllow", "x.yaml", "--rbac-file needs --authorization-mode RBAC", id="file-without-rbac"),
])
def test_flag_mismatch(mode, rbac_file, error):
    with pytest.raises(ValueError, match=error):
        rbac_policy(mode, rbac_file)


def test_flags_build_the_policy():
    assert rbac_policy("AlwaysAllow", None) is None
    assert rbac_policy("RBAC", None).documents == ()  # only the built-in roles are seeded
    assert rbac_policy("Node,RBAC", None) is not None
    policy = rbac_policy("RBAC", str(rbac_manifest()))
    assert {"podnet-node", "podnet-dns"} <= set(policy.cluster_roles)


def test_policy_needs_an_authenticator():
    with pytest.raises(ValueError, match="needs an authenticator"):
        LabApiServer(policy=policy_from_yaml(rbac_manifest().read_text()))


@pytest.mark.parametrize("query,code", [
    pytest.param("?fieldSelector=metadata.name%3Dn1", 200, id="selector-names-the-allowed-node"),
    pytest.param("?fieldSelector=metadata.name%3D%3Dn1", 200, id="double-equals"),
    pytest.param("?fieldSelector=metadata.name%3Dn2", 403, id="selector-names-another-node"),
    pytest.param("", 403, id="no-selector"),
])
async def test_list_named_by_field_selector(pki, query, code):
    from podnet.netlab.apiserver.authz import policy_from_documents

    rbac = "rbac.authorization.k8s.io"
    docs = [{"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": "own-node"},
             "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"], "resourceNames": ["n1"]}]},
            {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "own-node"},
             "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "own-node"},
             "subjects": [{"kind": "User", "name": "system:node:n1"}]}]
    async with LabApiServer(authenticator=TokenAuthenticator({"t": User("system:node:n1", "u")}),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key"),
                            policy=policy_from_documents(docs)) as api:
        status, _ = await _call(api, pki, "GET", "/api/v1/nodes" + query, "t")
    assert status == code
