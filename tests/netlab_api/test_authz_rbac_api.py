"""RBAC from the API: Roles and bindings written through the lab API server change what is authorised
on the next request; built-in roles are seeded into the store; escalation prevention as kube-apiserver."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl

import aiohttp
import pytest

from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import Rule, compact_string, policy_from_documents, uncovered
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import kubeconfig_text, make_pki

RBAC = "/apis/rbac.authorization.k8s.io/v1"
RG = "rbac.authorization.k8s.io"
TOKENS = {"admin": User("kubernetes-admin", "a", ("system:masters",)),
          "bob": User("bob", "b", ()),
          "carol": User("carol", "c", ())}


@pytest.fixture
async def api():
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy_from_documents([])) as api:
        yield api


async def call(api, method, path, token, body=None, ssl_ctx=None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers=headers, ssl=ssl_ctx,
                             data=json.dumps(body) if body is not None else None) as resp:
            return resp.status, await resp.json(content_type=None)


def role(name, rules, ns=None, kind="Role"):
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": f"{RG}/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(name, role_kind, role_name, user, ns=None, kind="RoleBinding"):
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": f"{RG}/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": RG, "kind": role_kind, "name": role_name},
            "subjects": [{"apiGroup": RG, "kind": "User", "name": user}]}


READ_PODS = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


async def test_builtin_roles_are_seeded(api):
    code, crs = await call(api, "GET", f"{RBAC}/clusterroles", "admin")
    assert code == 200
    names = {i["metadata"]["name"]: i for i in crs["items"]}
    assert {"cluster-admin", "system:discovery", "system:node"} <= set(names)
    assert names["cluster-admin"]["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
    code, crbs = await call(api, "GET", f"{RBAC}/clusterrolebindings", "admin")
    assert {"cluster-admin", "system:discovery"} <= {i["metadata"]["name"] for i in crbs["items"]}


async def test_rolebinding_through_the_api_takes_effect_on_the_next_request(api):
    assert (await call(api, "GET", "/api/v1/namespaces/default/pods", "bob"))[0] == 403
    assert (await call(api, "POST", f"{RBAC}/namespaces/default/roles", "admin",
                       role("pod-reader", READ_PODS, "default")))[0] == 201
    assert (await call(api, "POST", f"{RBAC}/namespaces/default/rolebindings", "admin",
                       binding("bob-reads", "Role", "pod-reader", "bob", "default")))[0] == 201
    assert (await call(api, "GET", "/api/v1/namespaces/default/pods", "bob"))[0] == 200
    # a RoleBinding grants in its own namespace only
    assert (await call(api, "GET", "/api/v1/namespaces/kube-system/pods", "bob"))[0] == 403
    assert (await call(api, "DELETE", f"{RBAC}/namespaces/default/rolebindings/bob-reads", "admin"))[0] == 200
    assert (await call(api, "GET", "/api/v1/namespaces/default/pods", "bob"))[0] == 403


async def test_editing_a_role_changes_the_grant(api):
    await call(api, "POST", f"{RBAC}/clusterroles", "admin", role("svc", [], kind="ClusterRole"))
    await call(api, "POST", f"{RBAC}/clusterrolebindings", "admin",
               binding("bob-svc", "ClusterRole", "svc", "bob", kind="ClusterRoleBinding"))
    assert (await call(api, "GET", "/api/v1/services", "bob"))[0] == 403
    code, _ = await call(api, "PUT", f"{RBAC}/clusterroles/svc", "admin",
                         role("svc", [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}],
                              kind="ClusterRole"))
    assert code == 200
    assert (await call(api, "GET", "/api/v1/services", "bob"))[0] == 200


@pytest.mark.parametrize("grant_bob,path,body,code", [
    pytest.param([], f"{RBAC}/namespaces/default/roles", role("r", READ_PODS, "default"), 403,
                 id="role-no-rbac-write"),
    pytest.param([{"apiGroups": [RG], "resources": ["roles"], "verbs": ["create"]}],
                 f"{RBAC}/namespaces/default/roles", role("r", READ_PODS, "default"), 403,
                 id="role-escalation-refused"),
    pytest.param([{"apiGroups": [RG], "resources": ["roles"], "verbs": ["create"]}, *READ_PODS],
                 f"{RBAC}/namespaces/default/roles", role("r", READ_PODS, "default"), 201,
                 id="role-within-held-permissions"),
    pytest.param([{"apiGroups": [RG], "resources": ["roles"], "verbs": ["create", "escalate"]}],
                 f"{RBAC}/namespaces/default/roles", role("r", READ_PODS, "default"), 201,
                 id="role-with-escalate"),
    pytest.param([{"apiGroups": [RG], "resources": ["rolebindings"], "verbs": ["create"]}],
                 f"{RBAC}/namespaces/default/rolebindings",
                 binding("b", "ClusterRole", "cluster-admin", "carol", "default"), 403,
                 id="binding-escalation-refused"),
    pytest.param([{"apiGroups": [RG], "resources": ["rolebindings"], "verbs": ["create"]},
                  {"apiGroups": [RG], "resources": ["clusterroles"], "verbs": ["bind"],
                   "resourceNames": ["cluster-admin"]}],
                 f"{RBAC}/namespaces/default/rolebindings",
                 binding("b", "ClusterRole", "cluster-admin", "carol", "default"), 201,
                 id="binding-with-bind"),
])
async def test_escalation_prevention(api, grant_bob, path, body, code):
    await call(api, "POST", f"{RBAC}/clusterroles", "admin", role("bob-role", grant_bob, kind="ClusterRole"))
    await call(api, "POST", f"{RBAC}/clusterrolebindings", "admin",
               binding("bob-role", "ClusterRole", "bob-role", "bob", kind="ClusterRoleBinding"))
    got, status = await call(api, "POST", path, "bob", body)
    assert got == code, status
    if code == 403 and grant_bob:
        kind = body["kind"].lower() + "s"
        assert status["reason"] == "Forbidden"
        assert status["message"].startswith(
            f'{kind}.{RG} "{body["metadata"]["name"]}" is forbidden: user "bob" (groups=["system:authenticated"]) '
            f"is attempting to grant RBAC permissions not currently held:\n")


def test_escalation_message_lists_missing_rules():
    held = [Rule(frozenset({"get"}), frozenset({""}), frozenset({"pods"}))]
    wanted = [Rule(frozenset({"get", "list"}), frozenset({""}), frozenset({"pods", "pods/log"}))]
    missing = uncovered(held, wanted)
    assert [compact_string(r) for r in missing] == [
        '{APIGroups:[""], Resources:["pods"], Verbs:["list"]}',
        '{APIGroups:[""], Resources:["pods/log"], Verbs:["get"]}',
        '{APIGroups:[""], Resources:["pods/log"], Verbs:["list"]}',
    ]


@pytest.mark.parametrize("owner,wanted,covered", [
    pytest.param([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
                 {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}, True, id="star"),
    pytest.param([{"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}],
                 {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]}, True, id="star-subresource"),
    pytest.param([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]}],
                 {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, False, id="names-narrower"),
    pytest.param([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
                 {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]}, True,
                 id="names-wider"),
    pytest.param([{"nonResourceURLs": ["/metrics*"], "verbs": ["get"]}],
                 {"nonResourceURLs": ["/metrics/x"], "verbs": ["get"]}, True, id="url-prefix"),
])
def test_covers(owner, wanted, covered):
    from podnet.netlab.apiserver.authz import rules_of

    o = rules_of({"kind": "ClusterRole", "rules": owner})
    w = rules_of({"kind": "ClusterRole", "rules": [wanted]})
    assert (uncovered(o, w) == []) is covered



KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_create_role_and_rolebinding(tmp_path):
    """kubectl (HTTPS, tokens) as a cluster admin would: bob is refused, then allowed once bound."""
    make_pki(tmp_path, ["127.0.0.1"])
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy_from_documents([]),
                            tls=(tmp_path / "apiserver.crt", tmp_path / "apiserver.key")) as api:
        ca = (tmp_path / "ca.crt").read_text()
        for who in ("admin", "bob"):
            (tmp_path / f"{who}.kubeconfig").write_text(kubeconfig_text("t", api.url, who, ca))

        async def kubectl(who, *args):
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--kubeconfig", str(tmp_path / f"{who}.kubeconfig"), *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out.decode(), err.decode()

        rc, _, err = await kubectl("bob", "get", "pods")
        assert rc != 0
        assert ('pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace '
                '"default"') in err
        rc, _, err = await kubectl("admin", "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods")
        assert rc == 0, err
        rc, _, err = await kubectl("admin", "create", "rolebinding", "bob-reads", "--role=pod-reader", "--user=bob")
        assert rc == 0, err
        rc, out, err = await kubectl("bob", "get", "pods")
        assert rc == 0, err
        # bob may not hand himself more: creating a binding needs RBAC write rights, and then no escalation
        rc, _, err = await kubectl("bob", "create", "clusterrolebinding", "bob-admin", "--clusterrole=cluster-admin",
                                   "--user=bob")
        assert rc != 0 and "forbidden" in err


async def test_adding_a_subject_to_a_binding_is_checked(api):
    """A user allowed to update bindings may not add himself to a cluster-admin binding."""
    await call(api, "POST", f"{RBAC}/clusterroles", "admin", role(
        "binding-editor", [{"apiGroups": [RG], "resources": ["clusterrolebindings"], "verbs": ["get", "update"]}],
        kind="ClusterRole"))
    await call(api, "POST", f"{RBAC}/clusterrolebindings", "admin",
               binding("bob-edits", "ClusterRole", "binding-editor", "bob", kind="ClusterRoleBinding"))
    await call(api, "POST", f"{RBAC}/clusterrolebindings", "admin",
               binding("admins", "ClusterRole", "cluster-admin", "carol", kind="ClusterRoleBinding"))
    code, b = await call(api, "GET", f"{RBAC}/clusterrolebindings/admins", "bob")
    assert code == 200
    b["subjects"].append({"apiGroup": RG, "kind": "User", "name": "bob"})
    code, status = await call(api, "PUT", f"{RBAC}/clusterrolebindings/admins", "bob", b)
    assert code == 403, status
    assert "is attempting to grant RBAC permissions not currently held" in status["message"]
    b["subjects"].pop()
    b["metadata"]["labels"] = {"team": "a"}
    assert (await call(api, "PUT", f"{RBAC}/clusterrolebindings/admins", "bob", b))[0] == 200


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_auth_can_i(tmp_path):
    make_pki(tmp_path, ["127.0.0.1"])
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy_from_documents([]),
                            tls=(tmp_path / "apiserver.crt", tmp_path / "apiserver.key")) as api:
        (tmp_path / "bob.kubeconfig").write_text(
            kubeconfig_text("t", api.url, "bob", (tmp_path / "ca.crt").read_text()))

        async def can_i(*args):
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--kubeconfig", str(tmp_path / "bob.kubeconfig"), "auth", "can-i", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert not err, err.decode()
            return proc.returncode, out.decode().strip()

        assert await can_i("list", "pods") == (1, "no")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        assert (await call(api, "POST", f"{RBAC}/namespaces/default/roles", "admin",
                           role("pod-reader", READ_PODS, "default"), ctx))[0] == 201
        assert (await call(api, "POST", f"{RBAC}/namespaces/default/rolebindings", "admin",
                           binding("bob-reads", "Role", "pod-reader", "bob", "default"), ctx))[0] == 201
        assert await can_i("list", "pods") == (0, "yes")
        assert await can_i("list", "pods", "-n", "kube-system") == (1, "no")
        assert await can_i("get", "/api") == (0, "yes")  # system:discovery


@pytest.mark.parametrize("token,spec,code,allowed", [
    pytest.param("bob", {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}}, 201,
                 False, id="denied"),
    pytest.param("admin", {"resourceAttributes": {"verb": "delete", "group": "apps", "resource": "deployments"}},
                 201, True, id="admin"),
    pytest.param("bob", {"nonResourceAttributes": {"verb": "get", "path": "/version"}}, 201, True, id="non-resource"),
    pytest.param("bob", {}, 422, None, id="neither"),
    pytest.param("bob", {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get"}}, 422, None,
                 id="both"),
])
async def test_self_subject_access_review(api, token, spec, code, allowed):
    got, review = await call(api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token,
                             {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                              "spec": spec})
    assert got == code, review
    if allowed is not None:
        assert review["kind"] == "SelfSubjectAccessReview" and review["spec"] == spec
        assert review["status"]["allowed"] is allowed
