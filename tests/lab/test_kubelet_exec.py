"""``kubectl exec`` and ``kubectl cp`` into a real lab pod: the command sees what the container sees.

One node namespace (``s5ex-*``, with an uplink to a second one; both removed in ``finally``) holds
a lab API server on the node's loopback and a lab Kubelet (reference bridge + host-local CNI, IPAM
state in tmp_path): the test's thread enters it for the session (and returns after), so kubectl,
started from there, reaches the server inside the node namespace.
The pod's namespace is ``pnl-s5ex<hex>-p<k>``; the kubelet removes it and the test sweeps it after
a failure. Nothing touches the root namespace's network.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from pathlib import Path

import pytest

from podnet.host.netns import NetnsPool, sweep
from podnet.host.nsenter import inside
from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.node.kubelet import Kubelet

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
CNI_DIR = "/usr/lib/cni"
NODE_IP = "192.168.98.1"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not Path(f"{CNI_DIR}/bridge").exists(), reason="reference CNI plugins not installed"),
    pytest.mark.skipif(not KUBECTL, reason="kubectl not installed"),
    pytest.mark.timeout(180),
]

# the container writes a marker into its own root (an overlay: the host never sees it) and waits
CONTAINER = {"name": "main", "image": "busybox", "workingDir": "/tmp",
             "command": ["sh", "-c", "echo made-in-container > /tmp/s5ex-marker; exec sleep 300"],
             "env": [{"name": "GREETING", "value": "hello-from-spec"}]}


def _conflist(tmp: Path) -> dict:
    return {"cniVersion": "1.0.0", "name": "s5ex", "plugins": [
        {"type": "bridge", "bridge": "s5ex0", "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.98.0.0/24"}]], "dataDir": str(tmp / "ipam")}}]}


async def _kubectl(server: str, home: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


async def _running(client: ApiClient, name: str) -> dict:
    """The pod once its container runs and it has an IP (polled; bounded)."""
    p: dict = {}
    for _ in range(600):
        p = await client.get(r.PODS, name, "default")
        st = p.get("status") or {}
        if st.get("podIP") and any("running" in (c.get("state") or {}) for c in st.get("containerStatuses") or ()):
            return p
        await asyncio.sleep(0.05)
    raise AssertionError(f"pod {name} never ran: {json.dumps(p.get('status'))[:2000]}")


async def _lab_session(tmp: Path, node: str, body):
    run = tmp / "run"
    async with LabApiServer(bookmark_interval=0.2, pod_log_dir=run / "logs" / "pods") as api:
        async with ApiClient.from_url(api.url) as client:
            k = Kubelet(client, node, NODE_IP, lab="s5ex", run_dir=run, cni_bin_dir=CNI_DIR,
                        cni_conf_dir=str(tmp / "net.d"), ca_file=None, sa_token_dir=tmp / "tokens")
            await k.register()
            task = asyncio.create_task(k.run())
            try:
                await client.create(r.PODS, {"metadata": {"name": "web"}, "spec": {
                    "nodeName": node, "containers": [CONTAINER]}}, namespace="default")
                pod = await _running(client, "web")
                return await body(api.url, pod)
            finally:
                for key in list(k.pods):
                    await k.stop_pod(key)
                task.cancel()
                await k.shutdown()


@pytest.fixture
def node(tmp_path):
    pool = NetnsPool("s5ex-")
    name = "s5ex" + secrets.token_hex(3)
    try:
        ns = pool.netns()
        pool.veth(ns, "up0", pool.netns("o"), "o0")  # the node's uplink, to a namespace of its own
        ns.ip("addr", "add", f"{NODE_IP}/24", "dev", "up0")
        (tmp_path / "net.d").mkdir()
        (tmp_path / "net.d" / "10-s5ex.conflist").write_text(json.dumps(_conflist(tmp_path)))
        yield ns, name
    finally:
        pool.close()
        sweep(f"pnl-{name}-")


def test_kubectl_exec_and_cp_in_a_lab_pod(node, tmp_path):
    """Each named case is one kubectl call against the same running pod; all are checked, then reported."""
    ns, name = node
    local = tmp_path / "to-pod.txt"
    local.write_text("sent-by-kubectl-cp\n")
    back = tmp_path / "from-pod.txt"

    async def body(url: str, pod: dict) -> dict:
        ip = pod["status"]["podIP"]
        cases = [  # (name, kubectl args, stdin, expected (rc, stdout, stderr) or a check of them)
            ("pod-address", ["exec", "web", "--", "ip", "-o", "-4", "addr", "show", "eth0"], None,
             lambda rc, out, err: rc == 0 and f" {ip}/" in out),
            ("container-root", ["exec", "web", "--", "cat", "/tmp/s5ex-marker"], None,
             (0, "made-in-container\n", "")),
            ("container-env-and-workdir", ["exec", "web", "--", "sh", "-c", "echo $GREETING $HOSTNAME $(pwd)"],
             None, (0, "hello-from-spec web /tmp\n", "")),
            ("stdin-piped", ["exec", "-i", "web", "--", "cat"], b"hi\n", (0, "hi\n", "")),
            ("stderr-apart", ["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"], None, (0, "out\n", "err\n")),
            ("exit-code", ["exec", "web", "--", "sh", "-c", "exit 3"], None,
             (3, "", "command terminated with exit code 3\n")),
            ("cp-in", ["cp", str(local), "web:/tmp/s5ex-copied.txt"], None, lambda rc, out, err: rc == 0),
            ("cp-landed-in-the-container", ["exec", "web", "--", "cat", "/tmp/s5ex-copied.txt"], None,
             (0, "sent-by-kubectl-cp\n", "")),
            ("cp-out", ["cp", "web:/tmp/s5ex-marker", str(back)], None, lambda rc, out, err: rc == 0),
        ]
        results = {}
        for case, args, stdin, want in cases:
            got = await _kubectl(url, tmp_path, *args, stdin=stdin)
            ok = want(*got) if callable(want) else got == want
            results[case] = (ok, got)
        return results

    with inside(ns.name):  # this thread, and every process it starts, in the node's namespace until the end
        results = asyncio.run(_lab_session(tmp_path, name, body))
    failed = {case: got for case, (ok, got) in results.items() if not ok}
    assert not failed, failed
    assert back.read_text() == "made-in-container\n"
    assert not Path("/tmp/s5ex-marker").exists() and not Path("/tmp/s5ex-copied.txt").exists()  # never on the host
