"""AdminNetworkPolicy and BaselineAdminNetworkPolicy through an API: the lab API server serves both
kinds cluster-scoped and validates them as the CRDs do; the engine watches them when the group is served
and turns them off (one log line) when it answers 404; kubectl creates and lists them."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

import pytest

from podnet.kube import resources as res
from podnet.kube.client import ApiClient, ApiError
from podnet.netlab.apiserver.server import LabApiServer
from podnet.policy.engine import (ADMIN_NETWORK_POLICIES, BASELINE_ADMIN_NETWORK_POLICIES, Engine, admin_informers,
                                  real_informers)
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod

from .test_api import until

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
NS_Y = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}


def anp(name: str, action: str, priority: int = 10) -> dict:
    return {"metadata": {"name": name}, "spec": {"priority": priority, "subject": {"namespaces": {}},
                                                 "ingress": [{"action": action, "from": [NS_Y]}]}}


async def test_engine_follows_admin_policies_from_the_api():
    async with LabApiServer() as api, ApiClient.from_url(api.url) as c:
        for ns in ("x", "y"):
            await c.create(res.NAMESPACES, raw_ns(ns))
        await c.create(res.PODS, raw_pod("x", "a", "10.1.0.1", node="n1"), namespace="x")
        await c.create(res.PODS, raw_pod("y", "a", "10.1.1.1", node="n2"), namespace="y")
        k = FakeKernel()
        eng = Engine([Programmer(k)], "n1", min_sync_period=0.01)
        admin = await admin_informers(c)
        assert len(admin) == 2
        eng.attach(*real_informers(c), *admin)
        stop = asyncio.Event()
        task = asyncio.create_task(eng.run(stop))
        try:
            await until(lambda: eng.syncs >= 1, "first sync")
            assert k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
            await c.create(ADMIN_NETWORK_POLICIES, anp("deny-y", "Deny"))
            await until(lambda: not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80), "ANP deny programmed")
            await c.delete(ADMIN_NETWORK_POLICIES, "deny-y")
            await c.create(BASELINE_ADMIN_NETWORK_POLICIES, {"metadata": {"name": "default"}, "spec": {
                "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [NS_Y]}]}})
            await until(lambda: eng.syncs and not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
                        and "default" in [a.name for a in eng.snapshot().admin], "BANP deny programmed")
            await c.create(ADMIN_NETWORK_POLICIES, anp("allow-y", "Allow"))
            await until(lambda: k.forward("10.1.1.1", "10.1.0.1", "tcp", 80), "ANP allow over the baseline")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


BAD = [
    pytest.param(ADMIN_NETWORK_POLICIES, anp("p", "Deny", priority=1001), id="anp-priority-1001"),
    pytest.param(ADMIN_NETWORK_POLICIES, anp("p", "Reject"), id="anp-unknown-action"),
    pytest.param(BASELINE_ADMIN_NETWORK_POLICIES, {"metadata": {"name": "other"}, "spec": {"subject": {"namespaces": {}}}},
                 id="banp-not-default"),
    pytest.param(BASELINE_ADMIN_NETWORK_POLICIES, {"metadata": {"name": "default"}, "spec": {
        "subject": {"namespaces": {}}, "ingress": [{"action": "Pass", "from": [NS_Y]}]}}, id="banp-pass"),
]


@pytest.mark.parametrize("resource, body", BAD)
async def test_lab_server_refuses_what_the_crds_refuse(resource, body):
    async with LabApiServer() as api, ApiClient.from_url(api.url) as c:
        with pytest.raises(ApiError) as e:
            await c.create(resource, body)
        assert e.value.code == 422


class NotServed:
    """A client whose API answers 404 for every path (no network-policy-api CRDs installed)."""

    async def request(self, method: str, path: str, **_kw):
        raise ApiError(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"})


async def test_not_served_turns_the_feature_off_with_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="podnet.policy"):
        assert await admin_informers(NotServed()) == ()
    lines = [r.getMessage() for r in caplog.records if "AdminNetworkPolicy" in r.getMessage()]
    assert len(lines) == 1 and "404" in lines[0], lines


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_creates_and_lists_admin_policies(tmp_path):
    yaml = """\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: deny-y}
spec:
  priority: 5
  subject: {namespaces: {}}
  ingress:
  - {name: deny, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: "y"}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{networks: [192.0.2.0/24]}]}
"""
    async with LabApiServer() as api:
        async def kubectl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--server", api.url, *args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
            return proc.returncode, out.decode(), err.decode()

        rc, out, err = await kubectl("create", "-f", "-", stdin=yaml)
        assert rc == 0, err
        rc, out, err = await kubectl("get", "anp,banp", "-o", "name")
        assert rc == 0, err
        assert out.split() == ["adminnetworkpolicy.policy.networking.k8s.io/deny-y",
                               "baselineadminnetworkpolicy.policy.networking.k8s.io/default"], (out, err)
