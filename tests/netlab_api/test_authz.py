"""RBAC decisions of the lab API server (pure): the manifest deploy/podnet.yaml's rules as the lab loads
them, the built-in roles (system:masters, discovery; system:node bound to no one), RBAC matching semantics, the verb
mapping and kube-apiserver's 403 Status bodies."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.netlab.apiserver.authz import (Attributes, authorize, forbidden_status, policy_from_documents,
                                           policy_from_yaml, resource_verb)
from podnet.netlab.lab.credentials import SA_GROUPS, rbac_manifest

ROOT = Path(__file__).resolve().parents[2]
NODE_SA = "system:serviceaccount:kube-system:podnet-node"
DNS_SA = "system:serviceaccount:kube-system:podnet-dns"
ADMIN, MASTERS = "kubernetes-admin", ("system:masters",)
KUBELET, NODES = "system:node:n1", ("system:nodes",)


@pytest.fixture(scope="module")
def manifest_policy():
    return policy_from_yaml(rbac_manifest().read_text())


def test_packaged_manifest_is_deploy_manifest():
    assert rbac_manifest().read_bytes() == (ROOT / "deploy" / "podnet.yaml").read_bytes()


def _a(user, groups, verb, group, resource, ns="", name="", sub=""):
    return Attributes(user, groups, verb, group, resource, sub, ns, name)


@pytest.mark.parametrize("attrs,allowed", [
    # podnet-node: the calls cni/, proxy/ and policy/ make
    pytest.param(_a(NODE_SA, SA_GROUPS, "list", "", "services"), True, id="node-list-services"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "watch", "", "services"), True, id="node-watch-services"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "list", "discovery.k8s.io", "endpointslices"), True,
                 id="node-list-endpointslices"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "watch", "", "nodes"), True, id="node-watch-nodes"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "get", "", "nodes", name="n1"), True, id="node-get-node"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "patch", "", "nodes", name="n1"), True, id="node-patch-node"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "watch", "", "pods"), True, id="node-watch-pods"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "list", "", "namespaces"), True, id="node-list-namespaces"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "watch", "networking.k8s.io", "networkpolicies"), True,
                 id="node-watch-networkpolicies"),
    # podnet-node: what it must not do
    pytest.param(_a(NODE_SA, SA_GROUPS, "create", "", "pods", ns="default"), False, id="node-no-create-pods"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "get", "", "secrets", ns="kube-system", name="s"), False,
                 id="node-no-get-secrets"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "delete", "", "nodes", name="n1"), False, id="node-no-delete-nodes"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "patch", "", "nodes", name="n1", sub="status"), False,
                 id="node-no-patch-node-status"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "get", "", "services", ns="default", name="s"), False,
                 id="node-no-get-service"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "list", "discovery.k8s.io", "services"), False,
                 id="node-wrong-group"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "get", "", "pods", ns="default", name="p", sub="log"), False,
                 id="node-no-pod-logs"),
    # podnet-dns
    pytest.param(_a(DNS_SA, SA_GROUPS, "list", "", "services"), True, id="dns-list-services"),
    pytest.param(_a(DNS_SA, SA_GROUPS, "watch", "discovery.k8s.io", "endpointslices"), True,
                 id="dns-watch-endpointslices"),
    pytest.param(_a(DNS_SA, SA_GROUPS, "watch", "", "namespaces"), True, id="dns-watch-namespaces"),
    pytest.param(_a(DNS_SA, SA_GROUPS, "patch", "", "nodes", name="n1"), False, id="dns-no-patch-nodes"),
    pytest.param(_a(DNS_SA, SA_GROUPS, "list", "", "pods"), False, id="dns-no-list-pods"),
    # another service account is bound to nothing
    pytest.param(_a("system:serviceaccount:default:default", SA_GROUPS, "list", "", "services"), False,
                 id="default-sa-nothing"),
    pytest.param(_a("system:serviceaccount:default:podnet-node", SA_GROUPS, "list", "", "services"), False,
                 id="same-name-other-namespace"),
    # admin: system:masters may do anything
    pytest.param(_a(ADMIN, MASTERS, "create", "", "pods", ns="default"), True, id="admin-create-pods"),
    pytest.param(_a(ADMIN, MASTERS, "get", "", "secrets", ns="kube-system", name="s"), True, id="admin-secrets"),
    pytest.param(_a(ADMIN, MASTERS, "deletecollection", "apps", "deployments", ns="x"), True, id="admin-any-group"),
    pytest.param(_a("mallory", (), "list", "", "pods"), False, id="unbound-user"),
    # kubelets: RBAC binds system:node to no one; the Node authorizer decides (test_authz_node.py)
    pytest.param(_a(KUBELET, NODES, "watch", "", "pods"), False, id="kubelet-nothing-from-rbac"),
])
def test_manifest_decisions(manifest_policy, attrs, allowed):
    assert authorize(manifest_policy, attrs).allowed is allowed


@pytest.mark.parametrize("user,groups,path,verb,allowed", [
    pytest.param(NODE_SA, SA_GROUPS, "/api", "get", True, id="discovery-api"),
    pytest.param(DNS_SA, SA_GROUPS, "/apis/discovery.k8s.io/v1", "get", True, id="discovery-group"),
    pytest.param("mallory", (), "/openapi/v3", "get", True, id="any-authenticated-openapi"),
    pytest.param(NODE_SA, SA_GROUPS, "/api", "post", False, id="discovery-read-only"),
    pytest.param(NODE_SA, SA_GROUPS, "/metrics", "get", False, id="metrics"),
    pytest.param(ADMIN, MASTERS, "/metrics", "get", True, id="admin-metrics"),
])
def test_non_resource_decisions(manifest_policy, user, groups, path, verb, allowed):
    assert authorize(manifest_policy, Attributes(user, groups, verb, path=path)).allowed is allowed


def _rbac(kind, name, ns="", **body):
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, **body}


def _bind(kind, name, ns, role_kind, role, subjects):
    return _rbac(kind, name, ns, roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                 subjects=subjects)


SEMANTICS = policy_from_documents([
    _rbac("ClusterRole", "logs", rules=[{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]),
    _rbac("ClusterRole", "any-status", rules=[{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}]),
    _rbac("ClusterRole", "one-cm", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"],
                                           "resourceNames": ["cfg"]}]),
    _rbac("ClusterRole", "star", rules=[{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]),
    _rbac("Role", "svc-reader", "team", rules=[{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]),
    _bind("ClusterRoleBinding", "logs", "", "ClusterRole", "logs", [{"kind": "User", "name": "alice"}]),
    _bind("ClusterRoleBinding", "any-status", "", "ClusterRole", "any-status", [{"kind": "Group", "name": "ops"}]),
    _bind("RoleBinding", "one-cm", "team", "ClusterRole", "one-cm", [{"kind": "ServiceAccount", "name": "app"}]),
    _bind("RoleBinding", "star", "team", "ClusterRole", "star", [{"kind": "User", "name": "bob"}]),
    _bind("RoleBinding", "svc", "team", "Role", "svc-reader", [{"kind": "User", "name": "carol"}]),
])
APP = "system:serviceaccount:team:app"


@pytest.mark.parametrize("attrs,allowed", [
    pytest.param(_a("alice", (), "get", "", "pods", "x", "p", "log"), True, id="subresource-rule"),
    pytest.param(_a("alice", (), "get", "", "pods", "x", "p"), False, id="subresource-rule-not-resource"),
    pytest.param(_a("dave", ("ops",), "patch", "apps", "deployments", "x", "d", "status"), True,
                 id="star-slash-subresource"),
    pytest.param(_a("dave", ("ops",), "patch", "apps", "deployments", "x", "d"), False,
                 id="star-slash-not-main-resource"),
    pytest.param(_a("dave", (), "patch", "", "pods", "x", "p", "status"), False, id="group-subject-needs-group"),
    pytest.param(_a(APP, (), "get", "", "configmaps", "team", "cfg"), True, id="resource-name"),
    pytest.param(_a(APP, (), "get", "", "configmaps", "team", "other"), False, id="other-resource-name"),
    pytest.param(_a(APP, (), "list", "", "configmaps", "team"), False, id="resource-name-list-unnamed"),
    pytest.param(_a(APP, (), "list", "", "configmaps", "team", "cfg"), True, id="resource-name-list-field-selector"),
    pytest.param(_a(APP, (), "get", "", "configmaps", "other", "cfg"), False, id="rolebinding-own-namespace-only"),
    pytest.param(_a(APP, (), "get", "", "configmaps", "", "cfg"), False, id="rolebinding-not-cluster-wide"),
    pytest.param(_a("bob", (), "delete", "apps", "daemonsets", "team", "d"), True, id="star-verbs-resources"),
    pytest.param(_a("bob", (), "delete", "", "pods", "team", "p"), False, id="star-resources-one-group"),
    pytest.param(_a("carol", (), "get", "", "services", "team", "s"), True, id="role-in-namespace"),
    pytest.param(_a("carol", (), "list", "", "services", "team"), False, id="role-verbs"),
])
def test_rbac_semantics(attrs, allowed):
    assert authorize(SEMANTICS, attrs).allowed is allowed


@pytest.mark.parametrize("docs,words", [
    pytest.param([_rbac("ClusterRole", "r", rules=[{"resources": ["pods"]}])], "verbs: Required value", id="no-verbs"),
    pytest.param([_rbac("Role", "r", rules=[])], "metadata.namespace: Required value", id="role-without-namespace"),
    pytest.param([_rbac("ClusterRole", "r", "ns", rules=[])], "not namespaced", id="clusterrole-namespaced"),
    pytest.param([_bind("ClusterRoleBinding", "b", "", "Role", "r", [])], "roleRef.kind: Unsupported value",
                 id="crb-to-role"),
    pytest.param([_bind("ClusterRoleBinding", "b", "", "ClusterRole", "r", [{"kind": "ServiceAccount",
                                                                            "name": "sa"}])],
                 r"subjects\[0\].namespace: Required value", id="crb-sa-without-namespace"),
    pytest.param([_rbac("ClusterRole", "r", rules=[{"verbs": ["get"], "resources": ["pods"],
                                                    "nonResourceURLs": ["/x"]}])],
                 "both regular resources and non-resource URLs", id="mixed-rule"),
])
def test_bad_documents(docs, words):
    with pytest.raises(ValueError, match=words):
        policy_from_documents(docs)


@pytest.mark.parametrize("method,named,watch,verb", [
    pytest.param("GET", True, False, "get", id="get"),
    pytest.param("GET", False, False, "list", id="list"),
    pytest.param("GET", False, True, "watch", id="watch"),
    pytest.param("POST", False, False, "create", id="create"),
    pytest.param("PUT", True, False, "update", id="update"),
    pytest.param("PATCH", True, False, "patch", id="patch"),
    pytest.param("DELETE", True, False, "delete", id="delete"),
    pytest.param("DELETE", False, False, "deletecollection", id="deletecollection"),
])
def test_verbs(method, named, watch, verb):
    assert resource_verb(method, named=named, watch=watch) == verb


@pytest.mark.parametrize("attrs,message,details", [
    pytest.param(_a(NODE_SA, SA_GROUPS, "create", "", "pods", "default"),
                 'pods is forbidden: User "system:serviceaccount:kube-system:podnet-node" cannot create resource '
                 '"pods" in API group "" in the namespace "default"', {"kind": "pods"}, id="namespaced-unnamed"),
    pytest.param(_a(NODE_SA, SA_GROUPS, "get", "", "secrets", "kube-system", "s"),
                 'secrets "s" is forbidden: User "system:serviceaccount:kube-system:podnet-node" cannot get resource '
                 '"secrets" in API group "" in the namespace "kube-system"', {"name": "s", "kind": "secrets"},
                 id="namespaced-named"),
    pytest.param(_a(DNS_SA, SA_GROUPS, "patch", "", "nodes", name="n1"),
                 'nodes "n1" is forbidden: User "system:serviceaccount:kube-system:podnet-dns" cannot patch resource '
                 '"nodes" in API group "" at the cluster scope', {"name": "n1", "kind": "nodes"}, id="cluster-scope"),
    pytest.param(_a("u", (), "list", "discovery.k8s.io", "endpointslices"),
                 'endpointslices.discovery.k8s.io is forbidden: User "u" cannot list resource "endpointslices" in '
                 'API group "discovery.k8s.io" at the cluster scope', {"group": "discovery.k8s.io",
                                                                        "kind": "endpointslices"}, id="group"),
    pytest.param(_a("u", (), "get", "", "pods", "default", "p", "log"),
                 'pods "p" is forbidden: User "u" cannot get resource "pods/log" in API group "" in the namespace '
                 '"default"', {"name": "p", "kind": "pods"}, id="subresource"),
    pytest.param(Attributes("u", (), "get", path="/metrics"), 'forbidden: User "u" cannot get path "/metrics"', None,
                 id="non-resource"),
])
def test_forbidden_status(attrs, message, details):
    want = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "code": 403}
    if details:
        want["details"] = details
    assert forbidden_status(attrs) == want
