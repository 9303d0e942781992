"""The lab kubelet for real, with a cluster's service accounts and live volumes: a pod created without
serviceAccountName runs as ``default`` with the admission plugin's ``kube-api-access-*`` volume (token,
the ``kube-root-ca.crt`` CA, namespace), and a changed ConfigMap reaches the running container through
the kubelet's periodic volume sync; the kubelet records its Events of the pod's life. One node namespace (``pnt-kl-*``), removed in ``finally``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.node.kubelet import Kubelet


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


kn = _load("podnet_tests_lab_kubelet_netns", Path(__file__).resolve().parent / "test_kubelet_netns.py")
pool, node = kn.pool, kn.node  # the node-namespace fixtures
pytestmark = kn.pytestmark

CA = "-----BEGIN CERTIFICATE-----\nlab-test-ca\n-----END CERTIFICATE-----\n"
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
SHOW = (f"echo SANS=$(cat {SA}/namespace); echo SACA=$(grep -c lab-test-ca {SA}/ca.crt); "
        f"echo SATOK=$(tr -cd . < {SA}/token | wc -c); "
        "for i in $(seq 1 600); do echo CFG=$(cat /etc/app/greeting); sleep 0.1; done")


def test_default_service_account_volume_configmap_refresh_and_events(node, tmp_path):
    ns, name, _ = node

    async def body():
        run = tmp_path / "run"
        async with LabApiServer(bookmark_interval=0.2, pod_log_dir=run / "logs" / "pods", root_ca=CA) as api:
            async with ApiClient.from_url(api.url) as client:
                k = Kubelet(client, name, kn.NODE_IP, lab="t", run_dir=run, cni_bin_dir=kn.CNI_DIR,
                            cni_conf_dir=str(tmp_path / "net.d"), backoff_base=0.2, backoff_max=0.8)
                k.volume_sync_period = 0.2
                await k.register()
                task = asyncio.create_task(k.run())
                h = kn.Harness(k, client, tmp_path)
                try:
                    await client.request("POST", "/api/v1/namespaces/default/configmaps", body={
                        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                        "data": {"greeting": "before"}})
                    main = {"name": "main", "image": "busybox", "command": ["sh", "-c", SHOW],
                            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app", "readOnly": True}]}
                    await client.create(r.PODS, kn.pod("live", [main], name,
                                                       volumes=[{"name": "cfg", "configMap": {"name": "app"}}]))
                    p = await h.pod("live", until=kn.ready)
                    out = {key: (await h.log_line(p, "main", key + "=")).split("=", 1)[1]
                           for key in ("SANS", "SACA", "SATOK", "CFG")}
                    cm = await client.request("GET", "/api/v1/namespaces/default/configmaps/app")
                    cm["data"] = {"greeting": "after"}
                    await client.request("PUT", "/api/v1/namespaces/default/configmaps/app", body=cm)
                    out["CFG2"] = (await h.log_line(p, "main", "CFG=after")).split("=", 1)[1]
                    await client.request("DELETE", "/api/v1/namespaces/default/pods/live")
                    seen: list = []
                    for _ in range(400):  # bounded: 20 s
                        seen = [(e["reason"], e["message"], e["type"], e["involvedObject"].get("fieldPath"),
                                 e["source"]) for e in (await client.request(
                                     "GET", "/api/v1/namespaces/default/events"))["items"]
                                if e["involvedObject"]["name"] == "live"]
                        if any(e[0] == "Killing" for e in seen):
                            break
                        await asyncio.sleep(0.05)
                    return p, out, seen
                finally:
                    for key in list(k.pods):
                        await k.stop_pod(key)
                    task.cancel()
                    await k.shutdown()

    p, out, seen = kn.run_in(ns.name, body())
    assert p["spec"]["serviceAccountName"] == "default"
    (vol,) = [v["name"] for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    assert {"name": vol, "readOnly": True, "mountPath": SA} in p["spec"]["containers"][0]["volumeMounts"]
    assert out["SANS"] == "default" and out["SACA"] == "1"
    assert out["SATOK"] == "2"  # a JWT from the TokenRequest API for the default ServiceAccount
    assert out["CFG"] == "before" and out["CFG2"] == "after"
    src = {"component": "kubelet", "host": name}
    path = "spec.containers{main}"
    assert seen == [
        ("Pulled", 'Container image "busybox" already present on machine', "Normal", path, src),
        ("Created", "Created container: main", "Normal", path, src),
        ("Started", "Started container main", "Normal", path, src),
        ("Killing", "Stopping container main", "Normal", path, src),
    ]
