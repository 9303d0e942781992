"""`kubectl apply -f deploy/podnet.yaml` against the lab API server (HTTPS, an admin token, RBAC on):
every document is created, listed, unchanged on re-apply, and removed by `kubectl delete -f`.

The lab API server's DaemonSet and Deployment controllers act on them (no kubelet runs here, so their
pods stay Pending); the test checks the objects, not the workloads."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import kubeconfig_text, make_pki

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
ADMIN = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",))}


def _manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture
async def kubectl(tmp_path):
    make_pki(tmp_path, ["127.0.0.1"])
    async with LabApiServer(authenticator=TokenAuthenticator(ADMIN),
                            tls=(tmp_path / "apiserver.crt", tmp_path / "apiserver.key"),
                            policy=policy_from_yaml("")) as api:  # RBAC on; only built-in roles are seeded
        kc = tmp_path / "admin.kubeconfig"
        kc.write_text(kubeconfig_text("t", api.url, "admin-tok", (tmp_path / "ca.crt").read_text()))

        async def run(*args: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--kubeconfig", str(kc), *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode()

        yield run


def _expected() -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every document of deploy/podnet.yaml."""
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in _manifest().docs()}


def _listed(out: str) -> set[tuple[str, str, str]]:
    return {(i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in json.loads(out)["items"]}


def _versions(out: str) -> dict[tuple[str, str, str], str]:
    return {(i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]): i["metadata"]["resourceVersion"]
            for i in json.loads(out)["items"]}


_GROUPS = {"DaemonSet": "apps", "Deployment": "apps", "PodDisruptionBudget": "policy",
           "ClusterRole": "rbac.authorization.k8s.io", "ClusterRoleBinding": "rbac.authorization.k8s.io"}


def _printed(kind: str, name: str) -> str:
    """kubectl's ``resource.group/name``."""
    group = _GROUPS.get(kind)
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


async def test_apply_get_reapply_delete(kubectl):
    manifest = str(_manifest().MANIFEST)
    expected = _expected()
    assert {k for k, _, _ in expected} >= {"DaemonSet", "Deployment", "ConfigMap", "ServiceAccount",
                                           "PodDisruptionBudget", "ClusterRole", "ClusterRoleBinding", "Service"}

    rc, out, err = await kubectl("apply", "-f", manifest)
    assert rc == 0, err
    created = [line for line in out.splitlines() if line.endswith(" created")]
    assert len(created) == len(expected), out

    rc, out_json, err = await kubectl("get", "ds,deploy,cm,sa,pdb,clusterrole,clusterrolebinding,svc", "-A",
                                      "-o", "json")
    assert rc == 0, err
    listed = _listed(out_json)
    assert expected <= listed, expected - listed

    rc, out, err = await kubectl("get", "ds,deploy,cm,sa,pdb,clusterrole,clusterrolebinding", "-A")
    assert rc == 0, err
    for kind, ns, name in expected - {k for k in expected if k[0] == "Service"}:
        assert any(name in line and (not ns or line.startswith(ns)) for line in out.splitlines()), (kind, name, out)

    versions = _versions(out_json)
    rc, out, err = await kubectl("apply", "-f", manifest)
    assert rc == 0, err
    lines = out.splitlines()
    # kubectl always sends a patch for a PodDisruptionBudget (spec.selector's patch strategy is
    # "replace", so its computed patch is never empty) and prints "configured" as it does against
    # kube-apiserver; the server stores nothing new for it either.
    assert sorted(lines) == sorted(
        f"{_printed(kind, name)} {'configured' if kind == 'PodDisruptionBudget' else 'unchanged'}"
        for kind, _, name in expected), out
    rc, out, err = await kubectl("get", "ds,deploy,cm,sa,pdb,clusterrole,clusterrolebinding,svc", "-A", "-o", "json")
    assert rc == 0, err
    assert _versions(out) == versions, "a re-apply changed an object"

    rc, out, err = await kubectl("delete", "-f", manifest)
    assert rc == 0, err
    assert len([line for line in out.splitlines() if line.endswith(" deleted")]) == len(expected), out

    rc, out, err = await kubectl("get", "ds,deploy,cm,sa,pdb,clusterrole,clusterrolebinding,svc", "-A", "-o", "json")
    assert rc == 0, err
    assert not expected & _listed(out)
