"""Granted-but-never-used RBAC permissions: the pure report (grants x recorded use -> rows), the recorder's
bound, the table, ``GET /debug/podnet/rbac-usage`` on an in-process API server (admin only), and
``podnet lab rbac-report``'s wiring."""

from __future__ import annotations

import argparse
import json

import aiohttp
import pytest

from podnet.netlab.apiserver import authz
from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.rbacusage import (PATH, Row, UsageLog, render, report, report_document,
                                               rows_from_document)
from podnet.netlab.apiserver.server import LabApiServer

RBAC = "rbac.authorization.k8s.io"
SA = "system:serviceaccount:kube-system:agent"
SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:kube-system", authz.AUTHENTICATED)


def _cluster_role(name, rules):
    return {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


def _role(ns, name, rules):
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules}


def _binding(name, role, subjects, ns="", role_kind="ClusterRole"):
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role}, "subjects": subjects}


def _sa(name="agent", ns="kube-system"):
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


READ_SERVICES = {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}
CREATE_EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}


def _req(verb, resource, *, group="", sub="", ns="", name="", user=SA, groups=SA_GROUPS, path=""):
    return authz.Attributes(user, groups, verb, group, resource, sub, ns, name, path)


def _uses(policy, requests):
    """Record each request as the API server does (only allowed ones count)."""
    log = UsageLog()
    for a in requests:
        log.record(a, authz.authorize(policy, a))
    return log.uses()


def _summary(rows):
    """(subject, role, rule, apiGroup, resource-or-url, verb) -> uses."""
    return {(r.subject, r.role, r.rule_index, r.api_group, r.resource or r.url, r.verb): r.uses for r in rows}


AGENT = "ServiceAccount:kube-system/agent"
OTHER = "ServiceAccount:kube-system/other"


@pytest.mark.parametrize("docs,requests,expected", [
    pytest.param([_cluster_role("r", [READ_SERVICES, CREATE_EVENTS]), _binding("b", "r", [_sa()])], [],
                 {(AGENT, "ClusterRole/r", 0, "", "services", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "list"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "watch"): 0,
                  (AGENT, "ClusterRole/r", 1, "", "events", "create"): 0},
                 id="nothing-used-every-item-listed"),
    pytest.param([_cluster_role("r", [READ_SERVICES, CREATE_EVENTS]), _binding("b", "r", [_sa()])],
                 [_req("list", "services"), _req("list", "services"), _req("watch", "services", ns="default")],
                 {(AGENT, "ClusterRole/r", 0, "", "services", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "list"): 2,
                  (AGENT, "ClusterRole/r", 0, "", "services", "watch"): 1,
                  (AGENT, "ClusterRole/r", 1, "", "events", "create"): 0},
                 id="list-and-watch-used-get-and-events-not"),
    pytest.param([_cluster_role("r", [READ_SERVICES, CREATE_EVENTS]), _binding("b", "r", [_sa()])],
                 [_req("delete", "services", name="x"), _req("list", "pods")],
                 {(AGENT, "ClusterRole/r", 0, "", "services", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "list"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "watch"): 0,
                  (AGENT, "ClusterRole/r", 1, "", "events", "create"): 0},
                 id="denied-requests-count-for-nothing"),
    pytest.param([_cluster_role("r", [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}]),
                  _binding("b", "r", [_sa()])],
                 [_req("get", "pods", sub="log", ns="default", name="p")],
                 {(AGENT, "ClusterRole/r", 0, "", "pods", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "pods/log", "get"): 1},
                 id="subresource-is-its-own-item"),
    pytest.param([_cluster_role("r", [READ_SERVICES, {"apiGroups": [""], "resources": ["services"],
                                                      "verbs": ["list"]}]),
                  _binding("b", "r", [_sa()])],
                 [_req("list", "services")],
                 {(AGENT, "ClusterRole/r", 0, "", "services", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "services", "list"): 1,
                  (AGENT, "ClusterRole/r", 0, "", "services", "watch"): 0,
                  (AGENT, "ClusterRole/r", 1, "", "services", "list"): 0},
                 id="only-the-first-matching-rule-counts-redundant-rule-unused"),
    pytest.param([_cluster_role("r", [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]),
                  _binding("b", "r", [_sa()])],
                 [_req("create", "deployments", group="apps", ns="default"),
                  _req("get", "daemonsets", group="apps", ns="default", name="d")],
                 {(AGENT, "ClusterRole/r", 0, "apps", "*", "*"): 2},
                 id="wildcards-count-every-request-they-allow"),
    pytest.param([_role("app", "r", [READ_SERVICES]), _binding("b", "r", [_sa()], ns="app", role_kind="Role")],
                 [_req("get", "services", ns="app", name="s"), _req("list", "services", ns="other")],
                 {(AGENT, "Role/app/r", 0, "", "services", "get"): 1,
                  (AGENT, "Role/app/r", 0, "", "services", "list"): 0,
                  (AGENT, "Role/app/r", 0, "", "services", "watch"): 0},
                 id="rolebinding-counts-only-its-namespace"),
    pytest.param([_cluster_role("r", [CREATE_EVENTS]), _binding("b", "r", [_sa(), _sa("other")])],
                 [_req("create", "events", ns="default")],
                 {(AGENT, "ClusterRole/r", 0, "", "events", "create"): 1,
                  (OTHER, "ClusterRole/r", 0, "", "events", "create"): 0},
                 id="one-binding-two-subjects-counted-apart"),
    pytest.param([_cluster_role("r", [CREATE_EVENTS]),
                  _binding("b", "r", [{"kind": "Group", "name": "system:serviceaccounts", "apiGroup": RBAC}])],
                 [_req("create", "events", ns="default")],
                 {("Group:system:serviceaccounts", "ClusterRole/r", 0, "", "events", "create"): 1},
                 id="group-subject-counts-its-members"),
    pytest.param([_cluster_role("r", [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"],
                                       "verbs": ["get", "update"]}]), _binding("b", "r", [_sa()])],
                 [_req("get", "configmaps", ns="kube-system", name="cfg"),
                  _req("get", "configmaps", ns="kube-system", name="else")],
                 {(AGENT, "ClusterRole/r", 0, "", "configmaps", "get"): 1,
                  (AGENT, "ClusterRole/r", 0, "", "configmaps", "update"): 0},
                 id="resource-names-only-the-named-object"),
    pytest.param([_cluster_role("r", [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
                  _binding("b", "r", [_sa()])],
                 [_req("get", "", path="/debug/pprof")],
                 {(AGENT, "ClusterRole/r", 0, "", "/metrics", "get"): 0,
                  (AGENT, "ClusterRole/r", 0, "", "/debug/*", "get"): 1},
                 id="non-resource-urls"),
])
def test_report(docs, requests, expected):
    policy = authz.policy_from_documents(docs, builtins=False)
    assert _summary(report(policy, _uses(policy, requests))) == expected


def test_report_keeps_resource_names_and_binding():
    policy = authz.policy_from_documents([
        _cluster_role("r", [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["b", "a"],
                             "verbs": ["get"]}]),
        _binding("bind", "r", [_sa()])], builtins=False)
    assert report(policy, ()) == [Row(AGENT, "ClusterRoleBinding/bind", "ClusterRole/r", 0, "", "configmaps", "get",
                                      ("a", "b"), "", 0)]


def test_node_authorizer_allows_count_under_no_binding():
    policy = authz.policy_from_documents([_cluster_role("r", [READ_SERVICES]), _binding("b", "r", [_sa()])],
                                         builtins=False)
    log = UsageLog()
    a = _req("list", "services")
    log.record(a, authz.Decision(True, ""))  # an allow without an RBAC match, as the Node authorizer's
    assert [u.binding for u, _ in log.uses()] == [None]
    assert all(r.uses == 0 for r in report(policy, log.uses()))


def test_usage_log_is_bounded():
    policy = authz.policy_from_documents([_cluster_role("r", [READ_SERVICES]), _binding("b", "r", [_sa()])],
                                         builtins=False)
    log = UsageLog(max_keys=1)
    for a in (_req("list", "services"), _req("list", "services"), _req("get", "services", name="s")):
        log.record(a, authz.authorize(policy, a))
    assert [n for _, n in log.uses()] == [2] and log.dropped == 1


def test_document_round_trip_and_table():
    policy = authz.policy_from_documents([_cluster_role("r", [READ_SERVICES]), _binding("b", "r", [_sa()])],
                                         builtins=False)
    rows = report(policy, _uses(policy, [_req("list", "services")]))
    assert rows_from_document(json.loads(json.dumps(report_document(rows)))) == rows
    table = render(rows, unused_only=True).splitlines()
    assert table[0].split() == ["SUBJECT", "ROLE", "RULE", "APIGROUP", "RESOURCE", "VERB", "USES"]
    assert [line.split()[5] for line in table[1:]] == ["get", "watch"]
    assert all(line.endswith("0 (never used)") for line in table[1:])
    assert len(render(rows).splitlines()) == 4


# --------------------------------------------------------------------------- the API server

TOKENS = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",)),
          "agent-tok": User(SA, "agent", SA_GROUPS[:2])}


async def _get(api, path, token):
    async with aiohttp.ClientSession() as s:
        async with s.get(api.url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json(content_type=None)


async def test_api_server_reports_what_a_service_account_never_used():
    policy = authz.policy_from_documents([_cluster_role("agent", [READ_SERVICES, CREATE_EVENTS]),
                                          _binding("agent", "agent", [_sa()])])
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy, controllers=False) as api:
        assert (await _get(api, "/api/v1/services", "agent-tok"))[0] == 200
        # authorised before the lookup, as kube-apiserver does: a get of a missing object is a use
        assert (await _get(api, "/api/v1/namespaces/default/services/nosuch", "agent-tok"))[0] == 404
        assert (await _get(api, "/api/v1/pods", "agent-tok"))[0] == 403
        status, body = await _get(api, PATH, "agent-tok")
        assert status == 403 and body["reason"] == "Forbidden"
        assert body["message"] == f'forbidden: User "{SA}" cannot get path "{PATH}"'
        status, body = await _get(api, PATH, "admin-tok")
    assert status == 200 and body["kind"] == "RBACUsageReport"
    mine = {(r["resource"], r["verb"]): r["uses"] for r in body["rows"] if r["subject"] == AGENT}
    assert mine == {("services", "list"): 1, ("services", "get"): 1, ("services", "watch"): 0,
                    ("events", "create"): 0}
    admin = [r for r in body["rows"] if r["subject"] == "Group:system:masters" and r["nonResourceURL"] == "*"]
    assert [r["uses"] for r in admin] == [1]  # the report request itself, allowed by cluster-admin's "*"


def test_rbac_report_verb_without_a_lab(capsys):
    from podnet.netlab.commands import cli, lab_rbac_report

    assert "rbac-report" in cli.LAB_VERBS
    p = argparse.ArgumentParser()
    lab_rbac_report.add_arguments(p)
    assert lab_rbac_report.run(p.parse_args(["--lab", "nosuchlab9"])) == 1
    assert "no running lab 'nosuchlab9'" in capsys.readouterr().err
