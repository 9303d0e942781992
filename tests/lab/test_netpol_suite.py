"""The netpol suite's pure parts and its prober: case selection, ipBlock fields, the truth-table
picture, and netpol_probe against a real pod server on 127.0.0.1. Also: the suite's policy health
port is the one the installed manifest's policy container serves."""

from __future__ import annotations

import asyncio
import json

import pytest

from podnet.netlab.check import netpol_admin_cases, netpol_cases, netpol_probe
from podnet.netlab.check.netpol_suite import CaseResult, render_case, select_cases
from podnet.netlab.lab import install, parts
from podnet.netlab.node.podserver import PodServer


@pytest.mark.parametrize("patterns, want", [
    pytest.param([], len(netpol_cases.CASES) + len(netpol_cases.UPDATE_CASES) + len(netpol_admin_cases.ADMIN_CASES),
                 id="none-means-all"),
    pytest.param(["(b)?anp-.*|integration-.*"], len(netpol_admin_cases.ADMIN_CASES), id="admin-cases"),
    pytest.param(["banp-.*"], 4, id="banp-cases"),
    pytest.param(["allow-ingress-from-updated-.*"], 2, id="update-cases"),
    pytest.param(["default-deny-ingress"], 1, id="exact-id"),
    pytest.param(["default-deny"], 0, id="full-match-not-prefix"),
    pytest.param(["named-port-.*"], 4, id="regex"),
    pytest.param(["default-deny-ingress", "default-deny-all"], 2, id="repeated"),
])
def test_select_cases(patterns, want):
    assert len(select_cases(patterns)) == want


def test_case_ids_are_unique_and_policy_names_fit():
    ids = [c.id for c in [*netpol_cases.CASES, *netpol_cases.UPDATE_CASES]]
    assert len(ids) == len(set(ids)) == 34
    assert all(len(f"{i[:50]}-9") <= 63 for i in ids)


@pytest.mark.parametrize("policies, ips, want", [
    pytest.param([("x", {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["{y/b}/32"]}}]}]})],
                 {"y/b": "10.244.1.7"},
                 [("x", {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.1.7/32"]}}]}]})],
                 id="except-field-filled"),
    pytest.param([("x", {"podSelector": {"matchLabels": {"pod": "a"}}})], {},
                 [("x", {"podSelector": {"matchLabels": {"pod": "a"}}})], id="no-field-unchanged"),
])
def test_resolve(policies, ips, want):
    assert netpol_cases.resolve(policies, ips) == want


def test_resolve_of_an_unknown_pod_raises():
    with pytest.raises(KeyError):
        netpol_cases.resolve([("x", {"c": "{q/q}/32"})], {})


def test_every_ipblock_case_names_only_model_pods():
    fields = {p: "10.0.0.1" for p in netpol_cases.ALL}
    for c in [*netpol_cases.CASES, *netpol_admin_cases.ADMIN_CASES]:
        netpol_cases.resolve(c.policies, fields)  # a KeyError names a pod outside the model
        netpol_cases.resolve([("", a) for a in c.admin], fields)


def test_admin_cases_are_unique_and_their_objects_are_valid():
    from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
    every = [c.id for c in [*netpol_cases.CASES, *netpol_cases.UPDATE_CASES, *netpol_admin_cases.ADMIN_CASES]]
    assert len(every) == len(set(every))
    fields = {p: "10.0.0.1" for p in netpol_cases.ALL}
    kinds = {"AdminNetworkPolicy": parse_admin_network_policy,
             "BaselineAdminNetworkPolicy": parse_baseline_admin_network_policy}
    for c in netpol_admin_cases.ADMIN_CASES:
        assert c.admin, c.id
        names = [a["metadata"]["name"] for a in c.admin]
        assert len(names) == len(set(names)), c.id  # one case's objects coexist in the cluster
        for _, raw in netpol_cases.resolve([("", a) for a in c.admin], fields):
            kinds[raw["kind"]](raw)  # raises on anything the lab API server would refuse


@pytest.mark.parametrize("case", netpol_cases.UPDATE_CASES, ids=[u.id for u in netpol_cases.UPDATE_CASES])
def test_update_case_phases_differ_and_relabel_a_model_object(case):
    before, after = case.phases()
    assert (before.id, after.id) == (f"{case.id}/before", f"{case.id}/after")
    assert before.policies == after.policies == case.policies
    pairs = [(f, t) for f in netpol_cases.ALL for t in netpol_cases.ALL if f != t]
    assert any(before.expected(*p) != after.expected(*p) for p in pairs)  # the relabel must matter
    assert case.relabel.target in netpol_cases.ALL or case.relabel.target in netpol_cases.NAMESPACES


def _result(observed_flip: tuple[str, str] | None) -> CaseResult:
    case = next(c for c in netpol_cases.CASES if c.id == "default-deny-ingress")
    exp = {(f, t): case.expected(f, t) for f in netpol_cases.ALL for t in netpol_cases.ALL if f != t}
    obs = dict(exp)
    if observed_flip:
        obs[observed_flip] = not obs[observed_flip]
    return CaseResult(case, exp, obs, attempts=1, seconds=1.0)


def test_render_marks_exactly_the_wrong_cells():
    good, bad = _result(None), _result(("y/a", "x/b"))
    assert good.ok is True and "!" not in render_case(good)
    text = render_case(bad)
    assert bad.ok is False and bad.wrong == [("y/a", "x/b")]
    assert text.count("!") == 1 and "y/a->x/b expected blocked" in text
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("y/a") and "!" in ln)
    assert "!." in row  # observed allowed where blocked was expected


def test_skipped_case_is_neither_pass_nor_fail():
    r = CaseResult(next(c for c in netpol_cases.CASES if c.protocol == "SCTP"), skipped="SCTP")
    assert r.ok is None and "skip" in render_case(r)


async def test_probe_all_against_a_real_pod_server():
    server = await PodServer("x/a", "127.0.0.1", 0, 0, None).start()
    try:
        closed = 1  # nothing listens on tcpmux or answers UDP there
        tcp = await asyncio.to_thread(netpol_probe.probe_all, "TCP",
                                      [("127.0.0.1", server.tcp_port), ("127.0.0.1", closed)], 0.5)
        udp = await asyncio.to_thread(netpol_probe.probe_all, "UDP", [("127.0.0.1", server.udp_port)], 0.5)
    finally:
        server.close()
    assert tcp[0]["ok"] and tcp[0]["pod"] == "x/a"
    assert not tcp[1]["ok"] and tcp[1]["error"] == "refused"
    assert udp[0]["ok"] and udp[0]["pod"] == "x/a"


@pytest.mark.parametrize("argv", [
    pytest.param([], id="nothing"),
    pytest.param(["SCTP", "1", "127.0.0.1:80"], id="unknown-protocol"),
    pytest.param(["TCP", "1"], id="no-target"),
    pytest.param(["TCP", "1"] + ["127.0.0.1:80"] * 257, id="too-many-targets"),
])
def test_probe_refuses_bad_arguments(argv, capsys):
    assert netpol_probe.main(argv) == 2


def test_probe_main_prints_one_json_list(capsys):
    assert netpol_probe.main(["TCP", "0.2", "127.0.0.1:1"]) == 0
    (got,) = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert got == [{"ok": False, "error": "refused"}]


def test_lab_policy_health_port_is_the_manifests():
    """The suite probes the engine where the installed manifest's policy container serves /healthz."""
    ds = next(d for d in install.load() if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "podnet-node")
    (policy,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "policy"]
    assert policy["command"][0] == "podnet-policy"
    assert f"--metrics-bind-address=127.0.0.1:{parts.POLICY_HEALTH_PORT}" in policy["command"]
