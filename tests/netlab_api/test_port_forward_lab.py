"""``kubectl port-forward`` to a real lab pod: the bytes come from a server bound to the pod's own loopback.

A node namespace (``s5pf-*``, removed in ``finally``) holds a lab API server on its loopback and a
lab Kubelet (reference bridge + host-local CNI, IPAM state in tmp_path). The test's thread enters
it for the session, so kubectl and the HTTP client run there too. The pod's container serves HTTP
on 127.0.0.1:8080 of the pod's namespace (``pnl-s5pf<hex>-p<k>``, removed by the kubelet, swept
after a failure), which nothing but a dial inside that namespace reaches. The root namespace's
network is not touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
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

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not Path(f"{CNI_DIR}/bridge").exists(), reason="reference CNI plugins not installed"),
    pytest.mark.skipif(not KUBECTL or not shutil.which("busybox"), reason="kubectl and busybox needed"),
    pytest.mark.timeout(180),
]

SERVER = {"name": "web", "image": "busybox", "command": ["sh", "-c",
          "mkdir -p /tmp/s5pf-www && echo served-on-pod-loopback > /tmp/s5pf-www/index.html && "
          "exec busybox httpd -f -p 127.0.0.1:8080 -h /tmp/s5pf-www"]}


def _get(port: int, attempts: int = 100) -> bytes:
    """The page, once the container's server listens (bounded retries: it starts after the container runs)."""
    for _ in range(attempts - 1):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as resp:
                return resp.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as resp:
        return resp.read()


async def _forward_and_fetch(url: str, home: Path) -> tuple[bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", url, "port-forward", "pod/web", ":8080", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        return await asyncio.to_thread(_get, port), line
    finally:
        proc.kill()
        await proc.wait()


async def _session(tmp: Path, node: str) -> tuple[bytes, str]:
    run = tmp / "run"
    async with LabApiServer(pod_log_dir=run / "logs" / "pods") as api, ApiClient.from_url(api.url) as client:
        kubelet = Kubelet(client, node, "192.168.97.1", lab="s5pf", run_dir=run, cni_bin_dir=CNI_DIR,
                          cni_conf_dir=str(tmp / "net.d"), ca_file=None, sa_token_dir=tmp / "tokens")
        await kubelet.register()
        running = asyncio.create_task(kubelet.run())
        try:
            await client.create(r.PODS, {"metadata": {"name": "web"}, "spec": {"nodeName": node,
                                                                                "containers": [SERVER]}},
                                namespace="default")
            for _ in range(600):  # until the container runs (bounded)
                statuses = ((await client.get(r.PODS, "web", "default")).get("status") or {}).get(
                    "containerStatuses") or ()
                if any("running" in (s.get("state") or {}) for s in statuses):
                    break
                await asyncio.sleep(0.05)
            return await _forward_and_fetch(api.url, tmp)
        finally:
            await _stop(kubelet, running)


async def _stop(kubelet: Kubelet, running: asyncio.Task) -> None:
    """Every pod stopped (the kubelet removes its namespace), then the kubelet itself."""
    await asyncio.gather(*(kubelet.stop_pod(key) for key in list(kubelet.pods)))
    running.cancel()
    await kubelet.shutdown()


def test_kubectl_port_forward_to_a_lab_pod(tmp_path):
    name = "s5pf" + secrets.token_hex(3)
    pool = NetnsPool("s5pf-")
    try:
        ns = pool.netns()
        pool.veth(ns, "up0", pool.netns("o"), "o0")
        ns.ip("addr", "add", "192.168.97.1/24", "dev", "up0")
        (tmp_path / "net.d").mkdir()
        (tmp_path / "net.d" / "10-s5pf.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": "s5pf", "plugins": [
                {"type": "bridge", "bridge": "s5pf0", "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.97.0.0/24"}]],
                          "dataDir": str(tmp_path / "ipam")}}]}))
        with inside(ns.name):  # this thread and what it starts, in the node's namespace until the end
            page, line = asyncio.run(_session(tmp_path, name))
    finally:
        pool.close()
        sweep(f"pnl-{name}-")
    assert line.startswith("Forwarding from 127.0.0.1:") and line.rstrip().endswith("-> 8080")
    assert page == b"served-on-pod-loopback\n"
