"""deploy/podnet.yaml's node DaemonSet pod, run by the lab kubelet on one node namespace.

The pod is built from the DaemonSet's template (bound to the node, as the DaemonSet controller
binds it) next to the manifest's ConfigMaps and ServiceAccount on an HTTPS lab API server (a lab
CA, a certificate for 127.0.0.1), so its containers find the API by in-cluster discovery: the
KUBERNETES_SERVICE_* env, the TokenRequest token and the CA of the projected volume. The init
container installs the statically linked plugin (built here and given to the kubelet as a file
of podnet's image) into the node's own /opt/cni/bin; then the CNI daemon, the proxy and the
policy engine start and their readiness probes pass; then an ordinary pod gets its address from
that CNI (the kubelet execs the installed plugin with the node's view of host paths).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import ipaddress
import shutil
import sys
from pathlib import Path

import pytest

from podnet.cni import install
from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.kube.kubeconfig import ClientConfig
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import make_pki
from podnet.netlab.node.kubelet import Kubelet


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


HERE = Path(__file__).resolve().parent
m = _load("podnet_tests_deploy_manifest", HERE.parent / "deploy" / "manifest.py")
kn = _load("podnet_tests_lab_kubelet_netns", HERE / "test_kubelet_netns.py")
pool, node = kn.pool, kn.node  # the node-namespace fixtures

HAVE_STATIC_CC = bool(shutil.which("gcc")) and any(Path(p).exists() for p in (
    "/usr/lib/x86_64-linux-gnu/libc.a", "/usr/lib/aarch64-linux-gnu/libc.a", "/usr/lib/libc.a"))
pytestmark = [*kn.pytestmark[:2], pytest.mark.timeout(240),
              pytest.mark.skipif(not HAVE_STATIC_CC, reason="needs gcc and libc6-dev (libc.a) for the static shim")]


def node_pod(node_name: str) -> dict:
    ds = m.find("DaemonSet", "podnet-node")
    tmpl = copy.deepcopy(ds["spec"]["template"])
    spec = tmpl["spec"]
    spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"podnet-node-{node_name}", "namespace": "kube-system",
                         "labels": tmpl["metadata"]["labels"]}, "spec": spec}


def state(p: dict, name: str, init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((c for c in (p.get("status") or {}).get(key) or () if c["name"] == name), {})


def test_node_daemonset_pod_starts_its_containers(node, tmp_path):
    ns, name, _ = node
    image = tmp_path / "image"
    (image / "usr/lib/podnet").mkdir(parents=True)
    install.build_shim(image / "usr/lib/podnet/podnet-cni-static", static=True)
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki, ["127.0.0.1"])

    async def body():
        run = tmp_path / "run"
        async with LabApiServer(bookmark_interval=0.2, pod_log_dir=run / "logs" / "pods",
                                tls=(pki / "apiserver.crt", pki / "apiserver.key")) as api:
            cfg = ClientConfig(server=api.url, ca_file=str(pki / "ca.crt"))
            async with ApiClient(cfg) as client:
                for d in m.docs():
                    if d["kind"] in ("ConfigMap", "ServiceAccount") and d["metadata"].get("namespace") == "kube-system":
                        plural = {"ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts"}[d["kind"]]
                        await client.request("POST", f"/api/v1/namespaces/kube-system/{plural}", body=d)
                root = run / "nodes" / name / "root"
                k = Kubelet(client, name, kn.NODE_IP, lab="t", run_dir=run, cni_bin_dir=str(root / "opt/cni/bin"),
                            cni_conf_dir=str(root / "etc/cni/net.d"), backoff_base=0.5, backoff_max=2.0,
                            ca_file=pki / "ca.crt", image_dir=image, api_url=api.url, cni_node_view=True)
                await k.register()
                task = asyncio.create_task(k.run())
                pod_name = f"podnet-node-{name}"
                try:
                    await client.create(r.PODS, node_pod(name))
                    p: dict = {}
                    for _ in range(1200):  # bounded: 60 s
                        p = await client.get(r.PODS, pod_name, "kube-system")
                        if all(state(p, c).get("ready") for c in ("cni-daemon", "proxy", "policy")):
                            break
                        await asyncio.sleep(0.05)
                    restarts = {c: k.runs[f"kube-system/{pod_name}"].runs[c].restart_count
                                for c in ("install-cni", "cni-daemon", "proxy", "policy")}
                    # a pod on the network podnet's DaemonSet installed: CNI ADD through the plugin
                    # in the node's /opt/cni/bin, which reaches the daemon's /run/podnet/cni.sock
                    web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                           "spec": {"nodeName": name, "containers": [
                               {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}
                    await client.create(r.PODS, web)
                    w: dict = {}
                    for _ in range(600):  # bounded: 30 s
                        w = await client.get(r.PODS, "web", "default")
                        if state(w, "web").get("ready"):
                            break
                        await asyncio.sleep(0.05)
                    node_obj = await client.get(r.NODES, name)
                    return p, restarts, w, node_obj
                finally:
                    for key in list(k.pods):
                        await k.stop_pod(key)
                    task.cancel()
                    await k.shutdown()

    p, restarts, web, node_obj = kn.run_in(ns.name, body())
    root = tmp_path / "run/nodes" / name / "root"
    logs = {c.name: sorted(c.glob("*.log")) for c in (tmp_path / "run/logs/pods").glob("*/*")}
    why = {c: f[-1].read_text()[-1500:] for c, f in logs.items() if f}
    assert state(p, "install-cni", init=True).get("state", {}).get("terminated", {}).get("reason") == "Completed", why
    assert (root / "opt/cni/bin/podnet-cni").is_file()
    assert [f.name for f in (root / "etc/cni/net.d").iterdir()] and (root / "run/podnet/cni.sock").exists()
    for c in ("cni-daemon", "proxy", "policy"):
        assert "running" in state(p, c).get("state", {}), (c, p.get("status"), why)
        assert state(p, c)["ready"] is True, (c, why)
    assert restarts == {"install-cni": 0, "cni-daemon": 0, "proxy": 0, "policy": 0}, why
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
    cidr = ipaddress.ip_network(node_obj["spec"]["podCIDR"])
    assert state(web, "web").get("ready") is True, (web.get("status"), why)
    assert ipaddress.ip_address(web["status"]["podIP"]) in cidr  # addressed by podnet's IPAM
