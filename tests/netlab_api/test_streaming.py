"""kubectl exec / attach / port-forward against the lab: a Status naming the pod's netns, and the
netns in ``kubectl get pods -o wide``."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiError
from podnet.netlab.apiserver.streaming import no_streaming
from podnet.netlab.apiserver.tables import NETNS_ANNOTATION, table

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")

POD = {"metadata": {"name": "web-1", "annotations": {NETNS_ANNOTATION: "pnl-lab-n1-p3"}},
       "spec": {"nodeName": "lab-n1", "containers": [{"name": "c", "image": "x"}]}}


@pytest.mark.parametrize("sub,command,words", [
    pytest.param("exec", ["ls", "-l", "/a b"], "ip netns exec pnl-lab-n1-p3 ls -l '/a b'", id="exec-quoted"),
    pytest.param("exec", [], "ip netns exec pnl-lab-n1-p3 sh", id="exec-default-shell"),
    pytest.param("portforward", [], "ip netns exec pnl-lab-n1 CLIENT 10.244.0.5 PORT", id="port-forward"),
    pytest.param("attach", [], "kubectl logs -f web-1", id="attach"),
])
def test_status_names_the_command(sub, command, words):
    pod = {**POD, "status": {"podIP": "10.244.0.5"}}
    e = no_streaming(pod, sub, command)
    assert e.code == 400 and e.reason == "BadRequest" and words in e.message and "pnl-lab-n1-p3" in e.message


def test_pod_without_netns():
    e = no_streaming({"metadata": {"name": "p"}, "spec": {}}, "exec", ["id"])
    assert e.code == 400 and "no network namespace yet" in e.message


@pytest.mark.parametrize("annotations,want", [
    pytest.param({NETNS_ANNOTATION: "pnl-lab-n1-p3"}, "pnl-lab-n1-p3", id="annotated"),
    pytest.param({}, "<none>", id="not-yet"),
])
def test_wide_table_has_the_netns(annotations, want):
    pod = {"metadata": {"name": "p", "annotations": annotations, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {}}
    t = table("pods", [pod], 0.0)
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names[-1] == "Netns" and t["columnDefinitions"][-1]["priority"] == 1
    assert t["rows"][0]["cells"][-1] == want


async def test_exec_over_http_is_a_status(lab_api, client):
    await client.create(r.PODS, POD, namespace="default")
    with pytest.raises(ApiError) as e:
        await client.request("POST", r.PODS.path("default", "web-1") + "/exec?command=id&stdout=true")
    assert e.value.code == 400 and "ip netns exec pnl-lab-n1-p3 id" in str(e.value)


async def kubectl(server: str, home, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@needs_kubectl
@pytest.mark.parametrize("args,words", [
    pytest.param(["exec", "web-1", "--", "cat", "/etc/hostname"], "ip netns exec pnl-lab-n1-p3 cat /etc/hostname",
                 id="exec"),
    pytest.param(["port-forward", "pod/web-1", "18080:8080"], "ip netns exec pnl-lab-n1 CLIENT 10.244.0.5 PORT",
                 id="port-forward"),
])
async def test_kubectl_gets_the_netns_command(lab_api, client, tmp_path, args, words):
    await client.create(r.PODS, POD, namespace="default")
    await client.patch(r.PODS, "web-1", {"status": {"phase": "Running", "podIP": "10.244.0.5"}}, "default",
                       subresource="status")
    rc, out, err = await kubectl(lab_api.url, tmp_path, *args)
    assert rc != 0
    assert words in err, err


@needs_kubectl
async def test_kubectl_get_pods_wide_shows_the_netns(lab_api, client, tmp_path):
    await client.create(r.PODS, POD, namespace="default")
    rc, out, err = await kubectl(lab_api.url, tmp_path, "get", "pods", "-o", "wide")
    assert rc == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[-1] == "NETNS" and row.split()[-1] == "pnl-lab-n1-p3"
