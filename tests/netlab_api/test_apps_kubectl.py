"""The real kubectl against the lab API server's workload controllers: create deployment, scale,
rollout status/restart, apply of a Deployment + Service + ConfigMap manifest, DaemonSets, Endpoints,
events in describe, cascading delete, and the scale subresource on the wire.

No kubelet runs: :class:`Kubelet` plays one through the API, as the lab kubelet does, marking each
pod bound to a node Running and Ready with an IP (a PATCH of ``pods/NAME/status``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil

import pytest

from podnet.kube.client import ApiError

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")

APPS = "/apis/apps/v1/namespaces/default"


async def kubectl(server: str, home, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    return proc.returncode, out.decode(), err.decode()


class Kubelet:
    """Marks bound pods Running and Ready, polling the API (as a kubelet's status manager would write)."""

    def __init__(self, client) -> None:
        self.client = client
        self.next_ip = 10

    async def run(self) -> None:
        while True:
            pods = (await self.client.request("GET", "/api/v1/pods"))["items"]
            for p in pods:
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in (p.get("status") or {}).get("conditions") or ())
                if p["spec"].get("nodeName") and not ready and not p["metadata"].get("deletionTimestamp"):
                    self.next_ip += 1
                    ip = f"10.244.0.{self.next_ip}"
                    with contextlib.suppress(ApiError):
                        await self.client.request(
                            "PATCH", f"/api/v1/namespaces/{p['metadata']['namespace']}/pods/{p['metadata']['name']}"
                            "/status", content_type="application/merge-patch+json",
                            body={"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
                                {"type": "Ready", "status": "True", "lastTransitionTime": "2027-01-15T08:00:00Z"}]}})
            await asyncio.sleep(0.05)


@pytest.fixture
async def kubelet(client):
    for name in ("n1", "n2"):
        await client.request("POST", "/api/v1/nodes", body={"metadata": {"name": name}})
    task = asyncio.create_task(Kubelet(client).run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


async def test_create_deployment_scale_rollout_status_describe(lab_api, client, kubelet, tmp_path):
    url = lab_api.url
    rc, out, err = await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx:1.27", "--replicas=3",
                                 "--port=80")
    assert (rc, out.strip()) == (0, "deployment.apps/web created"), err
    rc, out, err = await kubectl(url, tmp_path, "rollout", "status", "deployment/web", "--timeout=50s")
    assert rc == 0 and 'deployment "web" successfully rolled out' in out, (out, err)
    rc, out, err = await kubectl(url, tmp_path, "get", "deploy,rs")
    assert rc == 0, err
    table = rows(out)
    assert table[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] and table[1][:4] == [
        "deployment.apps/web", "3/3", "3", "3"], out
    assert table[2] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"] and table[3][1:4] == ["3", "3", "3"], out
    assert table[3][0].startswith("replicaset.apps/web-")

    rc, out, err = await kubectl(url, tmp_path, "scale", "deployment/web", "--replicas=1")
    assert (rc, out.strip()) == (0, "deployment.apps/web scaled"), err
    rc, out, err = await kubectl(url, tmp_path, "rollout", "status", "deployment/web", "--timeout=50s")
    assert rc == 0, err
    pods = (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]
    assert len(pods) == 1 and pods[0]["spec"]["containers"][0]["image"] == "nginx:1.27"

    rc, out, err = await kubectl(url, tmp_path, "describe", "deployment", "web")
    assert rc == 0, err
    assert "Scaled up replica set web-" in out and "from 0 to 3" in out and "from 3 to 1" in out, out
    assert "NewReplicaSetAvailable" in out and "MinimumReplicasAvailable" in out, out
    rc, out, err = await kubectl(url, tmp_path, "describe", "rs")
    assert rc == 0 and "SuccessfulCreate" in out and "SuccessfulDelete" in out, out


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-conf}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - {name: http, containerPort: 8080}
        envFrom:
        - configMapRef: {name: web-conf}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"""


async def test_apply_manifest_endpoints_rollout_restart(lab_api, client, kubelet, tmp_path):
    url = lab_api.url
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", "-", stdin=MANIFEST)
    assert rc == 0, err
    assert sorted(out.split("\n")[:-1]) == ["configmap/web-conf created", "deployment.apps/web created",
                                            "service/web created"], out
    rc, out, err = await kubectl(url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s")
    assert rc == 0, err
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", "-", stdin=MANIFEST)
    assert rc == 0 and "deployment.apps/web unchanged" in out, (out, err)

    rc, out, err = await kubectl(url, tmp_path, "get", "endpoints", "web", "-o", "json")
    assert rc == 0, err
    (subset,) = json.loads(out)["subsets"]
    assert len(subset["addresses"]) == 2 and subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    rc, out, err = await kubectl(url, tmp_path, "get", "endpoints")
    assert rc == 0, err
    header, *lines = rows(out)
    assert header == ["NAME", "ENDPOINTS", "AGE"]
    web = next(line for line in lines if line[0] == "web")
    assert sorted(web[1].split(",")) == sorted(f"{a['ip']}:8080" for a in subset["addresses"]), out

    before = {r["metadata"]["name"] for r in (await client.request("GET", f"{APPS}/replicasets"))["items"]}
    rc, out, err = await kubectl(url, tmp_path, "rollout", "restart", "deployment/web")
    assert (rc, out.strip()) == (0, "deployment.apps/web restarted"), err
    rc, out, err = await kubectl(url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s")
    assert rc == 0 and "successfully rolled out" in out, (out, err)
    rss = {r["metadata"]["name"]: r for r in (await client.request("GET", f"{APPS}/replicasets"))["items"]}
    (old,) = before
    (new,) = set(rss) - before
    assert rss[old]["spec"]["replicas"] == 0 and rss[new]["spec"]["replicas"] == 2
    assert rss[new]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    restarted = rss[new]["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in restarted
    deploy = await client.request("GET", f"{APPS}/deployments/web")
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    pods = (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]
    assert len(pods) == 2 and all(p["metadata"]["labels"]["pod-template-hash"] == new.rsplit("-", 1)[1] for p in pods)

    rc, out, err = await kubectl(url, tmp_path, "delete", "deployment", "web")
    assert rc == 0, err
    assert (await client.request("GET", f"{APPS}/replicasets"))["items"] == []
    assert (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"] == []
    ep = await client.request("GET", "/api/v1/namespaces/default/endpoints/web")
    assert "subsets" not in ep


DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      tolerations: [{operator: Exists}]
      containers:
      - {name: agent, image: "agent:%s"}
"""


async def test_daemonset_rollout(lab_api, client, kubelet, tmp_path):
    url = lab_api.url
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", "-", stdin=DAEMONSET % "1")
    assert rc == 0, err
    rc, out, err = await kubectl(url, tmp_path, "-n", "kube-system", "rollout", "status", "ds/agent", "--timeout=50s")
    assert rc == 0 and 'daemon set "agent" successfully rolled out' in out, (out, err)
    rc, out, err = await kubectl(url, tmp_path, "-n", "kube-system", "get", "ds")
    assert rc == 0, err
    header, row = rows(out)
    assert header[:6] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE"]
    assert row[:6] == ["agent", "2", "2", "2", "2", "2"], out

    await client.request("POST", "/api/v1/nodes", body={"metadata": {"name": "n3"}})
    rc, out, err = await kubectl(url, tmp_path, "apply", "-f", "-", stdin=DAEMONSET % "2")
    assert rc == 0, err
    rc, out, err = await kubectl(url, tmp_path, "-n", "kube-system", "rollout", "status", "ds/agent", "--timeout=50s")
    assert rc == 0, (out, err)
    pods = (await client.request("GET", "/api/v1/namespaces/kube-system/pods"))["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2", "n3"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"agent:2"}


async def test_scale_subresource_on_the_wire(lab_api, client, tmp_path):
    rc, out, err = await kubectl(lab_api.url, tmp_path, "create", "deployment", "web", "--image=nginx",
                                 "--replicas=0")
    assert rc == 0, err
    resources = (await client.request("GET", "/apis/apps/v1"))["resources"]
    scale_res = next(r for r in resources if r["name"] == "deployments/scale")
    assert (scale_res["group"], scale_res["version"], scale_res["kind"]) == ("autoscaling", "v1", "Scale")
    scale = await client.request("GET", f"{APPS}/deployments/web/scale")
    assert (scale["kind"], scale["apiVersion"], scale["spec"], scale["status"]) == (
        "Scale", "autoscaling/v1", {"replicas": 0}, {"replicas": 0, "selector": "app=web"})
    stale = {**scale, "metadata": {**scale["metadata"], "resourceVersion": "1"}, "spec": {"replicas": 2}}
    with pytest.raises(ApiError) as e:
        await client.request("PUT", f"{APPS}/deployments/web/scale", body=stale)
    assert e.value.code == 409
    scaled = await client.request("PUT", f"{APPS}/deployments/web/scale", body={**scale, "spec": {"replicas": 2}})
    assert scaled["spec"] == {"replicas": 2}
    with pytest.raises(ApiError) as e:
        await client.request("PATCH", f"{APPS}/deployments/web/scale", body={"spec": {"replicas": -1}},
                             content_type="application/merge-patch+json")
    assert e.value.code == 422 and "spec.replicas" in e.value.message
    rc, out, err = await kubectl(lab_api.url, tmp_path, "scale", "rs", "--all", "--replicas=3")
    assert rc == 0, err
    # scaled behind its Deployment's back: the Deployment puts it back, as kube-controller-manager does
    (rs,) = (await client.request("GET", f"{APPS}/replicasets"))["items"]
    assert rs["spec"]["replicas"] == 2
    events = (await client.request("GET", "/api/v1/namespaces/default/events"))["items"]
    scaling = [e["message"].replace(rs["metadata"]["name"], "RS") for e in events if e["reason"] == "ScalingReplicaSet"]
    assert scaling == ["Scaled up replica set RS from 0 to 2", "Scaled down replica set RS from 3 to 2"]


async def test_set_image_history_undo(lab_api, client, kubelet, tmp_path):
    url = lab_api.url
    assert (await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx:1", "--replicas=2"))[0] == 0
    assert (await kubectl(url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s"))[0] == 0
    rc, out, err = await kubectl(url, tmp_path, "set", "image", "deploy/web", "nginx=nginx:2")
    assert rc == 0, err
    assert (await kubectl(url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s"))[0] == 0
    rc, out, err = await kubectl(url, tmp_path, "rollout", "history", "deploy/web")
    assert rc == 0, err
    assert [r[0] for r in rows(out)[2:]] == ["1", "2"], out
    rc, out, err = await kubectl(url, tmp_path, "rollout", "undo", "deploy/web")
    assert (rc, out.strip()) == (0, "deployment.apps/web rolled back"), err
    assert (await kubectl(url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s"))[0] == 0
    rss = (await client.request("GET", f"{APPS}/replicasets"))["items"]
    # the first ReplicaSet is new again, with the next revision; the second is scaled to 0 and kept
    by_image = {r["spec"]["template"]["spec"]["containers"][0]["image"]:
                (r["spec"]["replicas"], r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rss}
    assert by_image == {"nginx:1": (2, "3"), "nginx:2": (0, "2")}
    pods = (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]
    assert sorted(p["spec"]["containers"][0]["image"] for p in pods) == ["nginx:1", "nginx:1"]


@pytest.mark.parametrize("change, message", [
    pytest.param(("template-labels", {"app": "other"}),
                 'spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not '
                 'match template `labels`', id="selector-mismatch"),
    pytest.param(("replicas", -1), "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                 id="negative-replicas"),
])
async def test_invalid_deployments_are_refused(lab_api, tmp_path, change, message):
    doc = MANIFEST.split("---\n")[1]
    field, value = change
    if field == "template-labels":
        doc = doc.replace("    metadata:\n      labels: {app: web}",
                          f"    metadata:\n      labels: {json.dumps(value)}")
    else:
        doc = doc.replace("replicas: 2", f"replicas: {value}")
    rc, out, err = await kubectl(lab_api.url, tmp_path, "apply", "-f", "-", stdin=doc)
    assert rc != 0 and 'The Deployment "web" is invalid: ' + message in err, err


async def test_change_cause_shows_in_rollout_history(lab_api, client, tmp_path):
    url = lab_api.url
    assert (await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx:1"))[0] == 0
    rc, out, err = await kubectl(url, tmp_path, "annotate", "deploy/web", "kubernetes.io/change-cause=first")
    assert rc == 0, err
    assert (await kubectl(url, tmp_path, "set", "image", "deploy/web", "nginx=nginx:2"))[0] == 0
    rc, out, err = await kubectl(url, tmp_path, "annotate", "--overwrite", "deploy/web",
                                 "kubernetes.io/change-cause=to nginx 2")
    assert rc == 0, err
    rc, out, err = await kubectl(url, tmp_path, "rollout", "history", "deploy/web")
    assert rc == 0, err
    assert [line.split(None, 1) for line in out.splitlines()[2:] if line.strip()] == [
        ["1", "first"], ["2", "to nginx 2"]], out


async def test_rollout_status_reports_an_exceeded_progress_deadline(lab_api, tmp_path):
    """No kubelet: the pods never become ready, and after progressDeadlineSeconds the controller
    (woken by its own timer) says so, which ends `kubectl rollout status` with an error."""
    doc = MANIFEST.split("---\n")[1].replace("  replicas: 2\n", "  replicas: 2\n  progressDeadlineSeconds: 1\n")
    rc, out, err = await kubectl(lab_api.url, tmp_path, "apply", "-f", "-", stdin=doc)
    assert rc == 0, err
    rc, out, err = await kubectl(lab_api.url, tmp_path, "rollout", "status", "deploy/web", "--timeout=50s")
    assert rc != 0 and 'deployment "web" exceeded its progress deadline' in err, (out, err)


@pytest.mark.parametrize("cascade, left", [
    pytest.param("background", (0, 0), id="background-deletes-dependents"),
    pytest.param("foreground", (0, 0), id="foreground-deletes-dependents"),
    pytest.param("orphan", (1, 2), id="orphan-keeps-them-ownerless"),
])
async def test_delete_deployment_cascade(lab_api, client, tmp_path, cascade, left):
    url = lab_api.url
    assert (await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx", "--replicas=2"))[0] == 0
    rc, out, err = await kubectl(url, tmp_path, "delete", "deployment", "web", f"--cascade={cascade}")
    assert rc == 0, err
    rss = (await client.request("GET", f"{APPS}/replicasets"))["items"]
    pods = (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]
    assert (len(rss), len(pods)) == left
    assert all("ownerReferences" not in rs["metadata"] for rs in rss)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)


async def test_orphaned_replicaset_is_adopted_by_a_new_deployment(lab_api, client, tmp_path):
    url = lab_api.url
    assert (await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx", "--replicas=2"))[0] == 0
    before = {p["metadata"]["name"] for p in (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]}
    assert (await kubectl(url, tmp_path, "delete", "deployment", "web", "--cascade=orphan"))[0] == 0
    assert (await kubectl(url, tmp_path, "create", "deployment", "web", "--image=nginx", "--replicas=2"))[0] == 0
    (rs,) = (await client.request("GET", f"{APPS}/replicasets"))["items"]
    deploy = await client.request("GET", f"{APPS}/deployments/web")
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    after = {p["metadata"]["name"] for p in (await client.request("GET", "/api/v1/namespaces/default/pods"))["items"]}
    assert after == before and "collisionCount" not in deploy["status"]
