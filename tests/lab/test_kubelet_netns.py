"""The lab kubelet for real: pods in network namespaces, containers in mount namespaces.

Each test makes one node namespace (``pnt-kl-*``, removed in ``finally``) and runs, on a thread
that entered it, a lab API server on the node's loopback and a Kubelet whose CNI network is the
reference bridge + host-local + portmap plugins (IPAM state in tmp_path). Pods' namespaces are
``pnl-<node>-p<k>`` with a random node name; the kubelet removes them when a pod is deleted and
the test sweeps them after a failure. Nothing touches the root namespace's network.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from pathlib import Path

import aiohttp
import pytest

from podnet.host.netns import NetnsPool, sweep
from podnet.host.nsenter import inside
from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.node.kubelet import Kubelet

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="reference CNI plugins not installed"),
    pytest.mark.timeout(120),
]

NODE_IP, OUTSIDE_IP = "192.168.99.1", "192.168.99.2"
CNI_DIR = "/usr/lib/cni"


def conflist(tmp: Path) -> dict:
    return {"cniVersion": "1.0.0", "name": "kltest", "plugins": [
        {"type": "bridge", "bridge": "kl0", "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(tmp / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}


def run_in(netns: str, coro):
    """Run ``coro`` to completion on a fresh thread inside ``netns``; re-raise what it raised."""
    box: dict = {}

    def target():
        try:
            with inside(netns):
                box["result"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - handed back to the test thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


@pytest.fixture
def pool():
    p = NetnsPool("pnt-kl-")
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def node(tmp_path, pool):
    name = "kl" + secrets.token_hex(3)
    try:
        ns = pool.netns()
        outside = pool.netns("o")
        pool.veth(ns, "n0", outside, "o0")  # the node's uplink, and a client beyond it
        ns.ip("addr", "add", f"{NODE_IP}/24", "dev", "n0")
        outside.ip("addr", "add", f"{OUTSIDE_IP}/24", "dev", "o0")
        conf = tmp_path / "net.d"
        conf.mkdir()
        (conf / "10-kl.conflist").write_text(json.dumps(conflist(tmp_path)))
        yield ns, name, outside
    finally:
        sweep(f"pnl-{name}-")


class Harness:
    def __init__(self, k: Kubelet, client: ApiClient, tmp: Path) -> None:
        self.k, self.client, self.tmp = k, client, tmp

    async def pod(self, name: str, timeout: float = 30.0, until=None) -> dict:
        """The Pod, once ``until(pod)`` holds (polled; bounded)."""
        for _ in range(int(timeout / 0.05)):
            p = await self.client.get(r.PODS, name, "default")
            if until is None or until(p):
                return p
            await asyncio.sleep(0.05)
        raise AssertionError(f"pod {name} never reached the state: {json.dumps(p.get('status'))[:2000]}")

    def log(self, p: dict, container: str, restart: int = 0) -> str:
        m = p["metadata"]
        f = self.tmp / "run/logs/pods" / f"default_{m['name']}_{m['uid']}" / container / f"{restart}.log"
        return f.read_text() if f.exists() else ""

    async def log_line(self, p: dict, container: str, prefix: str, restart: int = 0) -> str:
        for _ in range(400):
            for line in self.log(p, container, restart).splitlines():
                if line.startswith(prefix):
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {prefix!r} in the log of {container}: {self.log(p, container, restart)!r}")


def ready(p: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", ()))


async def scenario(tmp: Path, name: str, body):
    run = tmp / "run"
    async with LabApiServer(bookmark_interval=0.2, pod_log_dir=run / "logs" / "pods") as api:
        async with ApiClient.from_url(api.url) as client:
            k = Kubelet(client, name, NODE_IP, lab="t", run_dir=run, cni_bin_dir=CNI_DIR,
                        cni_conf_dir=str(tmp / "net.d"), backoff_base=0.2, backoff_max=0.8,
                        ca_file=None, sa_token_dir=tmp / "tokens")
            await k.register()
            task = asyncio.create_task(k.run())
            try:
                return await body(Harness(k, client, tmp))
            finally:
                for key in list(k.pods):
                    await k.stop_pod(key)
                task.cancel()
                await k.shutdown()


def pod(name: str, containers: list[dict], node: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                            "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": containers, **spec}}


async def http_get(host: str, port: int) -> str:
    for _ in range(100):
        try:
            rd, wr = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
            continue
        wr.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = await asyncio.wait_for(rd.read(), 2.0)
        wr.close()
        return data.decode()
    raise AssertionError(f"nothing answers on {host}:{port}")


SHOW = ("echo NODE=$NODE_NAME; echo NS=$POD_NS; echo IP=$POD_IP; echo HOSTIP=$HOST_IP; echo CM=$FROM_CM; "
        "echo API=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; "
        "echo FILE=$(cat /etc/app/greeting); echo SANS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); "
        "echo SATOK=$(tr -cd . < /var/run/secrets/kubernetes.io/serviceaccount/token | wc -c); "
        "echo INIT=$(cat /work/order); echo HOSTPATH=$(cat /data/from-init); "
        "echo RESOLV=$(grep -c 'nameserver 10.96.0.10' /etc/resolv.conf); "
        "echo NOHOST=$(test -e /host-marker-$NODE_NAME && echo leaked || echo clean); "
        "touch /host-marker-$NODE_NAME; exec sleep 60")


def test_pod_runs_command_env_volumes_and_init_containers(node, tmp_path):
    ns, name, outside = node

    async def body(h: Harness):
        await h.client.request("POST", "/api/v1/namespaces/default/configmaps", body={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
            "data": {"greeting": "hello-from-cm", "mode": "fast"}})
        await h.client.request("POST", "/api/v1/namespaces/default/serviceaccounts", body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}})
        init = [
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo first >> /work/order"],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            {"name": "second", "image": "busybox",
             "command": ["sh", "-c", "echo second >> /work/order; echo made-by-init > /data/from-init"],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "data", "mountPath": "/data"}]}]
        main = {"name": "main", "image": "busybox", "command": ["sh", "-c"], "args": [SHOW],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
                                 {"name": "work", "mountPath": "/work"}, {"name": "data", "mountPath": "/data"}]}
        await h.client.create(r.PODS, pod("spec1", [main], name, initContainers=init, serviceAccountName="runner",
                                          volumes=[
            {"name": "cfg", "configMap": {"name": "app"}}, {"name": "work", "emptyDir": {}},
            {"name": "data", "hostPath": {"path": "/var/lib/spec1", "type": "DirectoryOrCreate"}}]))
        p = await h.pod("spec1", until=ready)
        out = {}
        for key in ("NODE", "NS", "IP", "HOSTIP", "CM", "API", "FILE", "SANS", "SATOK", "INIT", "HOSTPATH",
                    "RESOLV", "NOHOST"):
            out[key] = (await h.log_line(p, "main", key + "=")).split("=", 1)[1]
        return p, out

    p, out = run_in(ns.name, scenario(tmp_path, name, body))
    st = p["status"]
    assert out["NODE"] == name and out["NS"] == "default" and out["HOSTIP"] == NODE_IP
    assert out["IP"] == st["podIP"] and out["IP"].startswith("10.99.0.")
    assert out["CM"] == "fast" and out["FILE"] == "hello-from-cm"
    assert out["API"].startswith("127.0.0.1:")
    assert out["SANS"] == "default" and out["SATOK"] == "2"  # a JWT from the TokenRequest API
    assert out["INIT"] == "first second"  # init containers ran in order, before main
    assert out["HOSTPATH"] == "made-by-init"
    assert (tmp_path / "run/nodes" / name / "root/var/lib/spec1/from-init").read_text() == "made-by-init\n"
    assert out["RESOLV"] == "1" and out["NOHOST"] == "clean"
    assert not Path(f"/host-marker-{name}").exists()  # the container's writes never reach the host
    assert [c["state"]["terminated"]["reason"] for c in st["initContainerStatuses"]] == ["Completed", "Completed"]
    assert p["metadata"]["annotations"]["podnet.io/netns"] == f"pnl-{name}-p1"


def test_readiness_probe_gates_ready(node, tmp_path):
    ns, name, outside = node

    async def body(h: Harness):
        c = {"name": "main", "image": "busybox", "command": ["sleep", "60"],
             "readinessProbe": {"exec": {"command": ["cat", "/gate/open"]}, "periodSeconds": 1},
             "volumeMounts": [{"name": "gate", "mountPath": "/gate"}]}
        await h.client.create(r.PODS, pod("gated", [c], name, volumes=[
            {"name": "gate", "hostPath": {"path": "/gate", "type": "DirectoryOrCreate"}}]))
        running = await h.pod("gated", until=lambda p: "running" in (
            (p.get("status") or {}).get("containerStatuses") or [{"state": {}}])[0]["state"])
        checks = []
        for _ in range(5):  # the probe fails while the gate is shut: never Ready
            await asyncio.sleep(0.2)
            checks.append(ready(await h.pod("gated")))
        (h.tmp / "run/nodes" / name / "root/gate/open").write_text("ok")
        opened = await h.pod("gated", until=ready)
        return running, checks, opened

    running, checks, opened = run_in(ns.name, scenario(tmp_path, name, body))
    assert not ready(running) and checks == [False] * 5
    assert opened["status"]["containerStatuses"][0]["ready"] is True


def test_crashing_container_restarts_with_backoff_and_keeps_previous_log(node, tmp_path):
    ns, name, outside = node

    async def body(h: Harness):
        c = {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo run-$RANDOM-started; exit 3"]}
        await h.client.create(r.PODS, pod("crash", [c], name))
        p = await h.pod("crash", until=lambda p: ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                        .get("restartCount", 0) >= 2)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{h.client.server}/api/v1/namespaces/default/pods/crash/log",
                             params={"previous": "true"}) as resp:
                previous = await resp.text()
        await h.client.create(r.PODS, pod("nobin", [{"name": "main", "image": "busybox",
                                                     "command": ["no-such-binary-anywhere"]}], name,
                                          restartPolicy="Never"))
        failed = await h.pod("nobin", until=lambda p: p["status"].get("phase") == "Failed")
        return p, previous, h.log(p, "main", 0), failed, h.log(failed, "main", 0)

    p, previous, first, failed, failed_log = run_in(ns.name, scenario(tmp_path, name, body))
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 128
    assert "cannot start the container" in failed_log and "no-such-binary-anywhere" in failed_log
    cs = p["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert "started" in first
    assert previous.startswith("run-") and previous.rstrip().endswith("-started")  # kubectl logs --previous
    assert p["metadata"]["annotations"]["podnet.io/netns"] == f"pnl-{name}-p1"  # same sandbox throughout


def test_any_image_answers_on_its_declared_port_and_host_port(node, tmp_path):
    ns, name, outside = node

    async def body(h: Harness):
        c = {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8088}]}
        await h.client.create(r.PODS, pod("web", [c], name))
        p = await h.pod("web", until=ready)
        direct = await http_get(p["status"]["podIP"], 80)
        curl = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", outside.name, "curl", "-sS", "-i", "-m", "5", "--retry", "3",
            f"http://{NODE_IP}:8088/", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        via_host_port = (await curl.communicate())[0].decode().replace("\r\n", "\n")
        return direct, via_host_port

    direct, via_host_port = run_in(ns.name, scenario(tmp_path, name, body))
    assert direct.startswith("HTTP/1.1 200") and direct.endswith("web\n")
    assert via_host_port.startswith("HTTP/1.1 200") and via_host_port.endswith("\nweb\n")  # from outside the node


def test_host_network_pod_runs_in_the_node_namespace(node, tmp_path):
    ns, name, outside = node

    async def body(h: Harness):
        c = {"name": "web", "image": "nginx", "ports": [{"containerPort": 18080}]}
        await h.client.create(r.PODS, pod("hostnet", [c], name, hostNetwork=True))
        p = await h.pod("hostnet", until=ready)
        return p, await http_get(NODE_IP, 18080), sorted(os.listdir("/var/run/netns"))

    p, answer, netns_list = run_in(ns.name, scenario(tmp_path, name, body))
    assert p["status"]["podIP"] == NODE_IP and answer.endswith("hostnet\n")
    assert "podnet.io/netns" not in (p["metadata"].get("annotations") or {})
    assert not [n for n in netns_list if n.startswith(f"pnl-{name}-")]  # no sandbox netns was made


def test_failing_liveness_and_startup_probes_restart_the_container(node, tmp_path):
    ns, name, _ = node

    async def body(h: Harness):
        live = {"name": "main", "image": "busybox", "command": ["sleep", "60"],
                "livenessProbe": {"exec": {"command": ["cat", "/gate/alive"]}, "periodSeconds": 1,
                                  "failureThreshold": 2},
                "volumeMounts": [{"name": "gate", "mountPath": "/gate"}]}
        gate = h.tmp / "run/nodes" / name / "root/gate"
        gate.mkdir(parents=True)
        (gate / "alive").write_text("yes")
        await h.client.create(r.PODS, pod("live", [live], name, volumes=[
            {"name": "gate", "hostPath": {"path": "/gate", "type": "Directory"}}]))
        alive = await h.pod("live", until=ready)
        (gate / "alive").unlink()  # two failed attempts in a row: killed, then restarted
        killed = await h.pod("live", until=lambda p: p["status"]["containerStatuses"][0]["restartCount"] >= 1)
        start = {"name": "main", "image": "nginx", "ports": [{"containerPort": 80}],
                 "startupProbe": {"tcpSocket": {"port": 81}, "periodSeconds": 1, "failureThreshold": 2}}
        await h.client.create(r.PODS, pod("slow", [start], name))
        never = await h.pod("slow", until=lambda p: ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                            .get("restartCount", 0) >= 1)
        return alive, killed, never

    alive, killed, never = run_in(ns.name, scenario(tmp_path, name, body))
    assert alive["status"]["containerStatuses"][0]["restartCount"] == 0
    assert killed["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] != 0
    cs = never["status"]["containerStatuses"][0]
    assert cs["ready"] is False and not ready(never)  # never started, so never ready
