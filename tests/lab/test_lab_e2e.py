"""The CI end-to-end tests: up (2 nodes x 2 pods on the default flat underlay) with podnet installed
only from deploy/podnet.yaml, check (every row passes, the node pair on host-gw, no API call of
podnet's daemons refused), draw, down, nothing left.

Also: kubectl against the lab's kubeconfig, ``down`` after a crash (every
lab process SIGKILLed) leaving nothing behind, and a killed pod container
restarted by the kubelet in the same sandbox. Root only; each lab has a
random name, and ``down`` runs in a finally block.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podnet.host import procs
from podnet.netlab.lab.teardown import leftovers

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODNET = str(Path(sys.executable).parent / "podnet")


def podnet(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PODNET, "lab", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab():
    name = "t" + secrets.token_hex(3)
    try:
        yield name
    finally:
        podnet("down", "--name", name, timeout=60)


def _installed_from_manifest(lab: str, up_stdout: str) -> None:
    """podnet runs only as deploy/podnet.yaml's workloads: every part says so, each node's CNI config
    is the one the DaemonSet's install container wrote into the node's own /etc/cni/net.d, and
    podnet's daemons are processes of the node pods' containers (no lab-spawned podnet process)."""
    for part, how in (("cni", "podnet-cni from podnet.yaml (DaemonSet kube-system/podnet-node)"),
                      ("proxy", "podnet-proxy from podnet.yaml (DaemonSet kube-system/podnet-node)"),
                      ("policy", "podnet-policy from podnet.yaml (DaemonSet kube-system/podnet-node)"),
                      ("dns", "podnet-dns from podnet.yaml (Deployment kube-system/podnet-dns)")):
        assert f"  {part:8s}: {how}" in up_stdout, up_stdout
    for n in (f"{lab}-n1", f"{lab}-n2"):
        net_d = Path("/var/lib/podnet") / lab / "nodes" / n / "root/etc/cni/net.d"
        assert [f.name for f in net_d.iterdir()] == ["10-podnet.conflist"]
    spawned = {f.stem for f in (Path("/run/podnet") / lab / "pids").glob("*.pid")}
    assert not {s for s in spawned if s.startswith(("cni-", "proxy-", "policy-", "dns"))}, spawned


def _api_refusals(lab: str) -> list[str]:
    """Lines of podnet's container logs that report an API call refused (401/403)."""
    bad = []
    for f in (Path("/run/podnet") / lab / "logs" / "pods").glob("kube-system_podnet-*/*/*.log"):
        bad += [f"{f.parent.name}: {line}" for line in f.read_text(errors="replace").splitlines()
                if "forbidden" in line.lower() or "unauthorized" in line.lower()]
    return bad


def test_up_check_down_leaves_nothing(lab, tmp_path):
    up = podnet("up", "--name", lab, "--nodes", "2", "--pods-per-node", "2")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "is up" in up.stdout
    _installed_from_manifest(lab, up.stdout)

    # kubectl with the kubeconfig lab up wrote: get, create, apply, delete
    kc = f"/run/podnet/{lab}/kubeconfig"
    env = dict(os.environ, KUBECONFIG=kc, HOME=str(tmp_path))
    kubectl = shutil.which("kubectl")
    if kubectl:
        def k(*a: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([kubectl, *a], capture_output=True, text=True, env=env, input=stdin, timeout=60)
        got = k("get", "pods", "-o", "json")
        assert got.returncode == 0, got.stderr
        assert len(json.loads(got.stdout)["items"]) == 4
        ds = json.loads(k("-n", "kube-system", "get", "daemonset", "podnet-node", "-o", "json").stdout)
        assert (ds["status"]["desiredNumberScheduled"], ds["status"]["numberReady"]) == (2, 2), ds["status"]
        dep = json.loads(k("-n", "kube-system", "get", "deployment", "podnet-dns", "-o", "json").stdout)
        assert dep["status"].get("readyReplicas") == dep["spec"]["replicas"], dep["status"]
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kc-test"},
               "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 9000}]}}
        assert k("create", "-f", "-", stdin=json.dumps(svc)).returncode == 0
        svc["metadata"]["labels"] = {"applied": "yes"}
        ap = k("apply", "-f", "-", stdin=json.dumps(svc))
        assert ap.returncode == 0, ap.stderr
        es = k("get", "endpointslices", "-l", "kubernetes.io/service-name=kc-test", "-o", "json")
        assert es.returncode == 0, es.stderr
        assert k("delete", "service", "kc-test").returncode == 0
        # a Pod created with kubectl is run by the lab kubelet: sandbox, CNI, Ready
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kc-pod", "labels": {"app": "kc"}},
               "spec": {"nodeName": f"{lab}-n2", "containers": [{"name": "main", "image": "podserver"}]}}
        assert k("create", "-f", "-", stdin=json.dumps(pod)).returncode == 0
        waited = k("wait", "--for=condition=Ready", "pod/kc-pod", "--timeout=60s")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        ip = json.loads(k("get", "pod", "kc-pod", "-o", "json").stdout)["status"]["podIP"]
        assert ip.startswith("10.244.")
        # a selectorless Service with a hand-written EndpointSlice: create, get, delete
        manual = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "kc-manual-1", "labels": {"kubernetes.io/service-name": "kc-manual"}},
                  "addressType": "IPv4", "endpoints": [{"addresses": [ip]}], "ports": [{"port": 9000}]}
        made = k("create", "-f", "-", stdin=json.dumps(manual))
        assert made.returncode == 0, made.stderr
        assert k("get", "endpointslice", "kc-manual-1").returncode == 0
        assert k("delete", "endpointslice", "kc-manual-1").returncode == 0
        # a graceful delete: the kubelet tears the sandbox down and confirms with grace 0
        assert k("delete", "pod", "kc-pod", "--grace-period=30", "--wait=false").returncode == 0
        gone = k("wait", "--for=delete", "pod/kc-pod", "--timeout=15s")  # < grace: only the kubelet can end it
        assert gone.returncode == 0, gone.stdout + gone.stderr

    check = podnet("check", "--name", lab, "--wide", timeout=300)
    print(check.stdout)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "FAIL" not in check.stdout
    # the flat underlay (the default): the node pair shares one subnet, so the daemon picks host-gw
    pair = next(line for line in check.stdout.splitlines() if line.startswith("n1->n2 pod->pod, same subnet"))
    assert "  pass  " in pair and f"daemon on {lab}-n1: host-gw;" in pair, pair
    svg = tmp_path / "lab.svg"
    drawn = podnet("draw", "--lab", lab, "-o", str(svg))
    assert drawn.returncode == 0, drawn.stderr
    text = svg.read_text()
    assert f"→ {lab}-n2: host-gw" in text and f"netns pnl-{lab}-n1-p" in text
    # the daemons run with deploy/'s ServiceAccounts (TokenRequest tokens, RBAC on): nothing refused
    assert _api_refusals(lab) == []

    down = podnet("down", "--name", lab, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(lab) == []


def test_down_after_crash_leaves_nothing(lab):
    up = podnet("up", "--name", lab, "--nodes", "1", "--pods-per-node", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    pids = procs.find_lab_processes(lab)
    assert len(pids) >= 4  # apiserver, dnsmasq, kubelet, pod servers...
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited between the scan and the kill (a child of one already killed, a short-lived helper)
    (Path("/run/podnet") / lab / "pids").exists() and shutil.rmtree(Path("/run/podnet") / lab / "pids")
    assert leftovers(lab)  # the crash left netns and files
    down = podnet("down", "--name", lab, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(lab) == []


def test_up_refuses_existing_lab(lab):
    up = podnet("up", "--name", lab, "--nodes", "1", "--pods-per-node", "0")
    assert up.returncode == 0, up.stdout + up.stderr
    again = podnet("up", "--name", lab, "--nodes", "1")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_down_of_unknown_lab_is_a_no_op(tmp_path):
    from podnet.netlab.lab.teardown import down
    gone = down("tnever", run_root=tmp_path / "run", data_root=tmp_path / "data")
    assert (gone.processes, gone.netns, gone.paths) == ([], [], [])
    assert leftovers("tnever", run_root=tmp_path / "run", data_root=tmp_path / "data") == []


def _ready(pod: dict) -> str | None:
    return next((c["status"] for c in pod["status"].get("conditions") or () if c["type"] == "Ready"), None)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_killed_container_restarts_in_same_sandbox(lab, tmp_path):
    """A lab pod's server process killed: Ready goes False, kubelet restarts it in the same sandbox
    (same netns, same IP), restartCount 1, and it answers again."""
    up = podnet("up", "--name", lab, "--nodes", "1", "--pods-per-node", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    run = Path(f"/run/podnet/{lab}")
    env = dict(os.environ, KUBECONFIG=str(run / "kubeconfig"), HOME=str(tmp_path))

    def k(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *a], capture_output=True, text=True, env=env, timeout=60)

    pods = json.loads(k("get", "pods", "-o", "json").stdout)["items"]
    target = next(p for p in pods if p["metadata"]["namespace"] == "default" and _ready(p) == "True")
    name, ip = target["metadata"]["name"], target["status"]["podIP"]
    record = next(json.loads(f.read_text()) for f in (run / "pods").glob("*/*.json")
                  if json.loads(f.read_text())["pod"] == f"default/{name}")
    pid = record["pid"]
    assert pid and procs.is_lab_process(pid, lab)
    os.kill(pid, signal.SIGKILL)

    def get() -> dict:
        return json.loads(k("get", "pod", name, "-o", "json").stdout)

    saw_not_ready = False
    for _ in range(600):  # bounded: the back-off is 10 s
        p = get()
        cs = (p["status"].get("containerStatuses") or [{}])[0]
        if _ready(p) == "False":
            saw_not_ready = True
        if cs.get("restartCount") == 1 and _ready(p) == "True":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"not restarted: {p['status']}")
    assert saw_not_ready
    assert p["status"]["podIP"] == ip
    assert cs["lastState"]["terminated"]["exitCode"] != 0
    new = next(json.loads(f.read_text()) for f in (run / "pods").glob("*/*.json")
               if json.loads(f.read_text())["pod"] == f"default/{name}")
    assert new["netns"] == record["netns"] and new["pid"] != pid and new["ips"] == record["ips"]
    # it answers again, from inside its own sandbox to its own (unchanged) pod IP
    probe = subprocess.run(["ip", "netns", "exec", new["netns"], sys.executable, "-c",
                            f"import socket; socket.create_connection(('{ip}', 8080), 5).close()"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    table = k("get", "pods", name)
    assert table.returncode == 0, table.stderr
    print(table.stdout)
