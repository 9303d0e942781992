"""The engine against the lab API server: real informers (list+watch) for NetworkPolicies, Pods
and Namespaces, the fake kernel; and kubectl creating a NetworkPolicy the lab server validates."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from podnet.kube import resources as res
from podnet.kube.client import ApiClient, ApiError
from podnet.netlab.apiserver.server import LabApiServer
from podnet.policy.engine import NETWORK_POLICIES, Engine, real_informers
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod, raw_policy

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")


async def until(cond, what: str, limit: int = 500) -> None:
    for _ in range(limit):  # bounded: 500 x 20 ms
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_engine_follows_the_api():
    async with LabApiServer() as api, ApiClient.from_url(api.url) as c:
        for ns, labels in (("x", {}), ("y", {"team": "t"})):
            await c.create(res.NAMESPACES, raw_ns(ns, **labels))
        await c.create(res.PODS, raw_pod("x", "a", "10.1.0.1", node="n1", labels={"pod": "a"},
                                         ports=(("http", 8080, "TCP"),)), namespace="x")
        await c.create(res.PODS, raw_pod("y", "a", "10.1.1.1", node="n2", labels={"pod": "a"}), namespace="y")
        k = FakeKernel()
        eng = Engine([Programmer(k)], "n1", min_sync_period=0.01)
        eng.attach(*real_informers(c))
        stop = asyncio.Event()
        task = asyncio.create_task(eng.run(stop))
        try:
            await until(lambda: eng.syncs >= 1, "first sync")
            assert k.forward("10.1.1.1", "10.1.0.1", "tcp", 8080)
            await c.create(NETWORK_POLICIES, raw_policy("x", "web", {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}], "ports": [{"port": "http"}]}]}),
                namespace="x")
            await until(lambda: "PODNET-NP-I-" in " ".join(k.chains), "policy programmed")
            assert k.forward("10.1.1.1", "10.1.0.1", "tcp", 8080) and not k.forward("10.1.1.1", "10.1.0.1", "tcp", 80)
            await c.patch(res.NAMESPACES, "y", {"metadata": {"labels": {"team": "other"}}})
            await until(lambda: not k.forward("10.1.1.1", "10.1.0.1", "tcp", 8080), "namespace label change")
            await c.delete(NETWORK_POLICIES, "web", namespace="x")
            await until(lambda: k.forward("10.1.1.1", "10.1.0.1", "tcp", 80), "policy delete")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_lab_server_refuses_what_kube_apiserver_refuses():
    async with LabApiServer() as api, ApiClient.from_url(api.url) as c:
        await c.create(res.NAMESPACES, raw_ns("x"))
        bad = raw_policy("x", "bad", {"podSelector": {}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]})
        with pytest.raises(ApiError) as e:
            await c.create(NETWORK_POLICIES, bad, namespace="x")
        assert e.value.code == 422


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_creates_and_lists_networkpolicy(tmp_path):
    yaml = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
    async with LabApiServer() as api, ApiClient.from_url(api.url) as c:
        await c.create(res.NAMESPACES, raw_ns("x"))

        async def kubectl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--server", api.url, *args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
            return proc.returncode, out.decode(), err.decode()

        rc, out, err = await kubectl("create", "-f", "-", stdin=yaml)
        assert rc == 0, err
        rc, out, err = await kubectl("get", "netpol", "-n", "x", "-o", "name")
        assert rc == 0 and out.strip() == "networkpolicy.networking.k8s.io/deny", (out, err)
