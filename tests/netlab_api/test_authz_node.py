"""The Node authorizer and NodeRestriction: a kubelet (``system:node:<n>`` in ``system:nodes``) reads what
its pods reference and modifies only its own Node and the pods bound to it, with kube-apiserver's 403s."""

from __future__ import annotations

import json

import aiohttp
import pytest

from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import Attributes, policy_from_documents
from podnet.netlab.apiserver.nodeauthz import node_name
from podnet.netlab.apiserver.server import LabApiServer

TOKENS = {"admin": User("kubernetes-admin", "a", ("system:masters",)),
          "n1": User("system:node:n1", "k1", ("system:nodes",)),
          "n2": User("system:node:n2", "k2", ("system:nodes",)),
          "fake": User("system:node:n1", "f", ())}
NS = "/api/v1/namespaces/default"


def pod(name, node, sa="default", cm="", secret=""):
    c = {"name": "c", "image": "x"}
    spec = {"nodeName": node, "serviceAccountName": sa, "containers": [c]}
    if cm:
        spec["volumes"] = [{"name": "v", "configMap": {"name": cm}}]
    if secret:
        c["env"] = [{"name": "E", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]
    return {"metadata": {"name": name}, "spec": spec}


async def call(api, method, path, token, body=None, ctype="application/json") -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers=headers,
                             data=json.dumps(body) if body is not None else None) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def api():
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy_from_documents([]),
                            controllers=False) as api:
        for path, body in [
            ("/api/v1/nodes", {"metadata": {"name": "n1"}}),
            ("/api/v1/nodes", {"metadata": {"name": "n2"}}),
            (f"{NS}/serviceaccounts", {"metadata": {"name": "app"}}),
            (f"{NS}/serviceaccounts", {"metadata": {"name": "default"}}),
            (f"{NS}/configmaps", {"metadata": {"name": "cm1"}, "data": {"a": "b"}}),
            (f"{NS}/configmaps", {"metadata": {"name": "other"}, "data": {"a": "b"}}),
            (f"{NS}/secrets", {"metadata": {"name": "s1"}, "data": {"k": "dg=="}}),
            (f"{NS}/secrets", {"metadata": {"name": "other"}, "data": {"k": "dg=="}}),
            (f"{NS}/pods", pod("p1", "n1", "app", cm="cm1", secret="s1")),
            (f"{NS}/pods", pod("p2", "n2")),
        ]:
            code, got = await call(api, "POST", path, "admin", body)
            assert code == 201 or (code == 409 and path.endswith("/serviceaccounts")), got  # "default" may exist
        yield api


def _uid(api, name):
    return api.store.get("pods", "default", name)["metadata"]["uid"]


MERGE = "application/merge-patch+json"
NO_REL = "no relationship found between node 'n1' and this object"
RESTRICTED = "node-restriction.kubernetes.io/x"
ROLE_LABEL = "node-role.kubernetes.io/control-plane"


@pytest.mark.parametrize("token,method,path,body,ctype,code,message", [
    # reads decided by the node's pods
    pytest.param("n1", "GET", f"{NS}/configmaps/cm1", None, "", 200, None, id="get-configmap-of-own-pod"),
    pytest.param("n1", "GET", f"{NS}/configmaps?fieldSelector=metadata.name%3Dcm1", None, "", 200, None,
                 id="list-configmap-by-name"),
    pytest.param("n1", "GET", f"{NS}/configmaps/other", None, "", 403,
                 'configmaps "other" is forbidden: User "system:node:n1" cannot get resource "configmaps" in API '
                 f'group "" in the namespace "default": {NO_REL}', id="get-unrelated-configmap"),
    pytest.param("n1", "GET", f"{NS}/configmaps", None, "", 403,
                 'configmaps is forbidden: User "system:node:n1" cannot list resource "configmaps" in API group "" '
                 'in the namespace "default": No Object name found', id="list-all-configmaps"),
    pytest.param("n1", "GET", f"{NS}/secrets/s1", None, "", 200, None, id="get-secret-of-own-pod"),
    pytest.param("n1", "GET", f"{NS}/secrets/other", None, "", 403, None, id="get-unrelated-secret"),
    pytest.param("n2", "GET", f"{NS}/secrets/s1", None, "", 403, None, id="get-secret-of-other-nodes-pod"),
    pytest.param("n1", "PUT", f"{NS}/configmaps/cm1", {"metadata": {"name": "cm1"}}, "", 403,
                 'configmaps "cm1" is forbidden: User "system:node:n1" cannot update resource "configmaps" in API '
                 'group "" in the namespace "default": can only read resources of this type', id="write-configmap"),
    pytest.param("n1", "GET", "/api/v1/services", None, "", 200, None, id="list-services"),
    pytest.param("n1", "GET", "/api/v1/pods", None, "", 200, None, id="list-pods"),
    pytest.param("n1", "GET", "/apis/apps/v1/deployments", None, "", 403, None, id="list-deployments"),
    pytest.param("fake", "GET", "/api/v1/pods", None, "", 403, None, id="node-name-without-group"),
    # NodeRestriction: Nodes
    pytest.param("n1", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"a": "b"}}}, MERGE, 200, None,
                 id="patch-own-node"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n2", {"metadata": {"labels": {"a": "b"}}}, MERGE, 403,
                 'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"', id="patch-other-node"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n2/status", {"status": {}}, MERGE, 403, None,
                 id="patch-other-node-status"),
    pytest.param("n1", "POST", "/api/v1/nodes", {"metadata": {"name": "n3"}}, "", 403,
                 'nodes "n3" is forbidden: node "n1" is not allowed to modify node "n3"', id="create-other-node"),
    pytest.param("n1", "POST", "/api/v1/nodes", {"metadata": {"name": "n3", "labels": {"k8s.io/x": "1"}}}, "", 403,
                 'nodes "n3" is forbidden: node "n1" is not allowed to set the following labels: k8s.io/x',
                 id="create-with-forbidden-label"),
    pytest.param("n1", "DELETE", "/api/v1/nodes/n2", None, "", 403, None, id="delete-other-node"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {RESTRICTED: "y"}}},
                 MERGE, 403, f'nodes "n1" is forbidden: is not allowed to modify labels: {RESTRICTED}',
                 id="own-node-restricted-label"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {ROLE_LABEL: ""}}},
                 MERGE, 403, 'nodes "n1" is forbidden: is not allowed to modify labels: '
                 'node-role.kubernetes.io/control-plane', id="own-node-role-label"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"kubernetes.io/arch": "amd64",
                                                                            "node.kubernetes.io/x": "y"}}},
                 MERGE, 200, None, id="own-node-kubelet-labels"),
    pytest.param("n1", "PATCH", "/api/v1/nodes/n1", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}},
                 MERGE, 403, 'nodes "n1" is forbidden: node "n1" is not allowed to modify taints',
                 id="own-node-taints"),
    # NodeRestriction: Pods
    pytest.param("n1", "PATCH", f"{NS}/pods/p1/status", {"status": {"phase": "Running"}}, MERGE, 200, None,
                 id="own-pod-status"),
    pytest.param("n1", "PATCH", f"{NS}/pods/p2/status", {"status": {"phase": "Running"}}, MERGE, 403,
                 'pods "p2" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to '
                 'itself', id="other-pod-status"),
    pytest.param("n1", "PATCH", f"{NS}/pods/p1", {"metadata": {"annotations": {"x": "y"}}}, MERGE, 200, None,
                 id="own-pod-annotation"),
    pytest.param("n1", "PATCH", f"{NS}/pods/p1", {"metadata": {"labels": {"x": "y"}}}, MERGE, 403,
                 'pods "p1" is forbidden: unexpected operation "UPDATE", node "n1" can only create and delete mirror '
                 'pods', id="own-pod-labels"),
    pytest.param("n1", "PATCH", f"{NS}/pods/p2", {"metadata": {"annotations": {"x": "y"}}}, MERGE, 403, None,
                 id="other-pod-annotation"),
    pytest.param("n1", "POST", f"{NS}/pods", pod("p3", "n1"), "", 403,
                 'pods "p3" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can '
                 'only create mirror pods', id="create-pod"),
    pytest.param("n1", "DELETE", f"{NS}/pods/p2", None, "", 403,
                 'pods "p2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself',
                 id="delete-other-pod"),
    pytest.param("n1", "DELETE", f"{NS}/pods/p1", None, "", 200, None, id="delete-own-pod"),
])
async def test_node_matrix(api, token, method, path, body, ctype, code, message):
    got, status = await call(api, method, path, token, body, ctype or "application/json")
    assert got == code, status
    if message is not None:
        assert status["message"] == message
        assert status["reason"] == "Forbidden"


@pytest.mark.parametrize("token,sa,bound,code,message", [
    pytest.param("n1", "app", "p1", 201, None, id="own-pod"),
    pytest.param("n1", "app", None, 403,
                 'serviceaccounts "app" is forbidden: node requested token not bound to a pod', id="unbound"),
    pytest.param("n1", "default", "p2", 403,
                 'serviceaccounts "default" is forbidden: User "system:node:n1" cannot create resource '
                 f'"serviceaccounts/token" in API group "" in the namespace "default": {NO_REL}',
                 id="sa-of-no-own-pod"),
    pytest.param("n2", "default", "p2", 201, None, id="other-node-own-pod"),
])
async def test_node_token_requests(api, token, sa, bound, code, message):
    spec = {"audiences": ["https://kubernetes.default.svc.cluster.local"]}
    if bound:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": bound, "uid": _uid(api, bound)}
    got, status = await call(api, "POST", f"{NS}/serviceaccounts/{sa}/token", token,
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    assert got == code, status
    if message:
        assert status["message"] == message


async def test_token_bound_to_a_pod_on_another_node(api):
    # n1 runs p1 as "app"; a pod of "app" on n2 must not get n1 a token
    await call(api, "POST", f"{NS}/pods", "admin", pod("p4", "n2", "app"))
    spec = {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p4", "uid": _uid(api, "p4")}}
    got, status = await call(api, "POST", f"{NS}/serviceaccounts/app/token", "n1", {"spec": spec})
    assert got == 403
    assert status["message"] == ('serviceaccounts "app" is forbidden: node requested token bound to a pod scheduled '
                                 'on a different node')


@pytest.mark.parametrize("user,groups,node", [
    pytest.param("system:node:n1", ("system:nodes",), "n1", id="node"),
    pytest.param("system:node:n1", (), None, id="no-group"),
    pytest.param("n1", ("system:nodes",), None, id="no-prefix"),
])
def test_node_identity(user, groups, node):
    assert node_name(user, groups) == node


def test_admin_is_not_a_node(api):
    a = Attributes("kubernetes-admin", ("system:masters",), "get", "", "secrets", "", "default", "other")
    assert api.handlers.policy.authorize(a).allowed
