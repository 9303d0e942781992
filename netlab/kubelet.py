"""The lab kubelet: runs the Pods bound to one node, as network namespaces.

One process per node, started by ``lab up`` inside the node's network
namespace (entered with setns, so the root mount namespace and its
``/var/run/netns`` stay visible). It plays the kubelet's part that networking
depends on, in the order a real kubelet and runtime follow:

1. register the Node (InternalIP, Hostname, Ready) as kubelet does;
2. list+watch Pods; for each Pod with ``spec.nodeName`` == this node:
   create the sandbox netns ``pnl-<node>-p<k>`` with its resolv.conf, run CNI
   ADD through the plugin chain from the conf dir (:mod:`podnet.netlab.cniexec`),
   report ``status.podIP(s)``/``hostIP``/``phase Running``, start the
   container (its ``command``+``args`` or, by default, the lab pod server) in
   the netns, probe readiness from the node (``readinessProbe`` httpGet or
   tcpSocket; default: TCP to the pod server's HTTP port) and report the
   ``Ready`` condition;
3. when a Pod is deleted: stop its process, CNI DEL, remove the netns.

Pods are handled concurrently, each by one task; events for one pod are
serialised by its task. State of each running pod is written to
``<run-dir>/pods/<node>/<netns>.json`` so ``lab down`` can clean up after a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError, TRANSPORT_ERRORS
from podnet.kube.watch import WatchExpired, watch_events
from podnet.netlab import cniexec
from podnet.netlab.netns import NETNS_ETC, run

log = logging.getLogger("podnet.lab.kubelet")

__all__ = ["Kubelet", "pod_command", "readiness_target", "node_object", "main"]

PODSERVER_HTTP = 8080


def node_object(name: str, ip: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now}],
        },
    }


def pod_command(pod: dict[str, Any], python: str = sys.executable) -> list[str]:
    """What runs in the pod: the first container's command+args, else the lab pod server."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    c = containers[0]
    if c.get("command"):
        return [str(x) for x in c["command"]] + [str(x) for x in c.get("args") or ()]
    return [python, "-P", "-m", "podnet.netlab.podserver", "--name", pod["metadata"]["name"]]


def readiness_target(pod: dict[str, Any]) -> tuple[str, int, str] | None:
    """(kind, port, path) of the readiness probe; kind is 'http' or 'tcp'; None: ready when started."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    c = containers[0]
    probe = c.get("readinessProbe")
    if probe:
        named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or () if p.get("name")}
        for kind, key in (("http", "httpGet"), ("tcp", "tcpSocket")):
            if key in probe:
                port = probe[key].get("port")
                port = named.get(port, port) if isinstance(port, str) else port
                return kind, int(port), probe[key].get("path", "/")
        return None
    if not c.get("command"):
        return "tcp", PODSERVER_HTTP, "/"
    return None


@dataclass
class RunningPod:
    key: str
    uid: str
    netns: str
    container_id: str
    ips: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False


class Kubelet:
    def __init__(self, client: ApiClient, node: str, node_ip: str, *, lab: str, run_dir: Path,
                 cni_bin_dir: str, cni_conf_dir: str) -> None:
        self.client, self.node, self.node_ip, self.lab = client, node, node_ip, lab
        self.run_dir = run_dir
        self.state_dir = run_dir / "pods" / node
        self.cni_path, self.cni_conf_dir = cni_bin_dir, Path(cni_conf_dir)
        self.pods: dict[str, RunningPod] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.wanted: dict[str, dict[str, Any]] = {}
        self.used_index: set[int] = set()

    # ------------------------------------------------------------------ node

    async def register(self) -> None:
        obj = node_object(self.node, self.node_ip)
        try:
            await self.client.create(r.NODES, obj)
        except ApiError as e:
            if not e.is_conflict:
                raise
            await self.client.patch(r.NODES, self.node, {"status": obj["status"]})
        log.info("node %s registered (InternalIP %s)", self.node, self.node_ip)

    # ------------------------------------------------------------------ pod lifecycle

    def _netns_name(self) -> str:
        k = 1
        while k in self.used_index:
            k += 1
        self.used_index.add(k)
        return f"pnl-{self.node}-p{k}"

    async def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.client.patch(r.PODS, name, {"status": status}, ns, subresource="status")
        except ApiError as e:
            if e.code in (404, 405) and not e.is_not_found:
                await self.client.patch(r.PODS, name, {"status": status}, ns)
            elif not e.is_not_found:
                raise

    async def start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta.get("namespace", "default"), meta["name"], meta.get("uid", "")
        key = f"{ns}/{name}"
        netns = self._netns_name()
        rp = RunningPod(key, uid, netns, f"pnl{uid.replace('-', '')[:20] or netns}")
        self.pods[key] = rp
        t0 = time.monotonic()
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        d = NETNS_ETC / netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(self.resolv_conf(ns))
        self._save(rp)
        net = cniexec.load_network(self.cni_conf_dir)
        rp.result = await cniexec.add(
            net, node_netns=None, cni_path=self.cni_path, container_id=rp.container_id,
            netns_path=f"/var/run/netns/{netns}", pod_namespace=ns, pod_name=name,
        )
        rp.ips = cniexec.result_ips(rp.result)
        self._save(rp)
        log.info("pod %s: netns %s ips %s (CNI ADD %.0f ms)", key, netns, rp.ips, (time.monotonic() - t0) * 1000)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await self._patch_status(ns, name, {
            "phase": "Running", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": rp.ips[0] if rp.ips else None, "podIPs": [{"ip": ip} for ip in rp.ips],
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
        })
        cmd = pod_command(pod)
        logf = open(self.run_dir / "logs" / f"pod-{ns}-{name}.log", "ab")
        rp.proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True,
        )
        logf.close()
        self._save(rp)
        await self._wait_ready(pod, rp)
        await self._patch_status(ns, name, {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started},
                           {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
        })
        rp.ready = True
        log.info("pod %s ready after %.0f ms", key, (time.monotonic() - t0) * 1000)

    def resolv_conf(self, namespace: str) -> str:
        return (
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {self.dns_ip}\noptions ndots:5\n"
        )

    dns_ip = "10.96.0.10"

    async def _wait_ready(self, pod: dict[str, Any], rp: RunningPod, timeout: float = 60.0) -> None:
        target = readiness_target(pod)
        if target is None or not rp.ips:
            return
        kind, port, path = target
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if rp.proc and rp.proc.returncode is not None:
                raise RuntimeError(f"container exited with {rp.proc.returncode}")
            try:
                rd, wr = await asyncio.wait_for(asyncio.open_connection(rp.ips[0], port), 1.0)
                ok = True
                if kind == "http":
                    wr.write(f"GET {path} HTTP/1.0\r\nHost: {rp.ips[0]}\r\n\r\n".encode())
                    line = await asyncio.wait_for(rd.readline(), 1.0)
                    ok = line.split(b" ")[1:2] and line.split(b" ")[1].startswith(b"2")
                wr.close()
                if ok:
                    return
            except (OSError, asyncio.TimeoutError, IndexError):
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not ready after {timeout:.0f} s")

    async def stop_pod(self, key: str) -> None:
        rp = self.pods.pop(key, None)
        if rp is None:
            return
        if rp.proc and rp.proc.returncode is None:
            try:
                os.killpg(rp.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(rp.proc.wait(), 2)
            except asyncio.TimeoutError:
                os.killpg(rp.proc.pid, signal.SIGKILL)
                await rp.proc.wait()
        ns, name = key.split("/", 1)
        try:
            net = cniexec.load_network(self.cni_conf_dir)
            await cniexec.delete(
                net, node_netns=None, cni_path=self.cni_path, container_id=rp.container_id,
                netns_path=f"/var/run/netns/{rp.netns}", pod_namespace=ns, pod_name=name, prev_result=rp.result,
            )
        except (cniexec.CniError, OSError) as e:
            log.warning("pod %s: CNI DEL: %s", key, e)
        run(["ip", "netns", "del", rp.netns], check=False)
        shutil.rmtree(NETNS_ETC / rp.netns, ignore_errors=True)
        (self.state_dir / f"{rp.netns}.json").unlink(missing_ok=True)
        self.used_index.discard(int(rp.netns.rsplit("-p", 1)[1]))
        log.info("pod %s stopped (netns %s removed)", key, rp.netns)

    def _save(self, rp: RunningPod) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{rp.netns}.json").write_text(json.dumps({
            "pod": rp.key, "uid": rp.uid, "netns": rp.netns, "container_id": rp.container_id, "ips": rp.ips,
            "pid": rp.proc.pid if rp.proc else None, "result": rp.result, "cni_path": self.cni_path,
            "cni_conf_dir": str(self.cni_conf_dir),
        }))

    # ------------------------------------------------------------------ reconcile

    async def _pod_worker(self, key: str) -> None:
        """Converge one pod to what the API last said; returns when they agree."""
        try:
            while True:
                want = self.wanted.get(key)
                have = self.pods.get(key)
                if want is None or want["metadata"].get("deletionTimestamp"):
                    if have is None:
                        return
                    await self.stop_pod(key)
                    continue
                if have is not None and have.uid != want["metadata"].get("uid", ""):
                    await self.stop_pod(key)
                    continue
                if have is not None:
                    return
                try:
                    await self.start_pod(want)
                except Exception as e:  # noqa: BLE001 - one bad pod must not stop the node
                    log.error("pod %s failed to start: %s", key, e)
                    ns, name = key.split("/", 1)
                    try:
                        await self._patch_status(ns, name, {"phase": "Failed", "message": str(e)[:500]})
                    except (ApiError, *TRANSPORT_ERRORS):
                        pass
        finally:
            self.tasks.pop(key, None)

    def _observe(self, pod: dict[str, Any] | None, key: str) -> None:
        if pod is None:
            self.wanted.pop(key, None)
        else:
            self.wanted[key] = pod
        if key not in self.tasks:
            self.tasks[key] = asyncio.create_task(self._pod_worker(key))

    def _mine(self, pod: dict[str, Any]) -> bool:
        return (pod.get("spec") or {}).get("nodeName") == self.node

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                items, rv = await self.client.list(r.PODS)
                seen = set()
                for p in items:
                    if self._mine(p):
                        key = f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}"
                        seen.add(key)
                        self._observe(p, key)
                for key in list(self.wanted):
                    if key not in seen:
                        self._observe(None, key)
                backoff = 0.2
                while True:
                    async for ev in watch_events(self.client, r.PODS, resource_version=rv, inactivity_timeout=120):
                        rv = ev.resource_version or rv
                        if ev.type == "BOOKMARK":
                            continue
                        p = ev.object
                        if not self._mine(p):
                            continue
                        key = f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}"
                        self._observe(None if ev.type == "DELETED" else p, key)
            except WatchExpired:
                continue
            except (ApiError, *TRANSPORT_ERRORS) as e:
                log.warning("pods watch: %s; retrying in %.1f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def shutdown(self) -> None:
        """Stop watching. Like a real kubelet, leave running pods alone (``lab down`` removes them)."""
        for t in list(self.tasks.values()):
            t.cancel()


async def _amain(a: argparse.Namespace) -> None:
    client = ApiClient.from_url(a.master)
    k = Kubelet(client, a.node, a.node_ip, lab=a.lab, run_dir=Path(a.run_dir),
                cni_bin_dir=a.cni_bin_dir, cni_conf_dir=a.cni_conf_dir)
    k.dns_ip = a.cluster_dns
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for attempt in range(100):
        try:
            await k.register()
            break
        except (ApiError, *TRANSPORT_ERRORS) as e:
            log.warning("register node: %s", e)
            await asyncio.sleep(0.2)
    main_task = asyncio.create_task(k.run())
    await stop.wait()
    main_task.cancel()
    await k.shutdown()
    await client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podnet-lab-kubelet")
    ap.add_argument("--netns", help="enter this network namespace first (setns; mount namespace unchanged)")
    ap.add_argument("--node", required=True)
    ap.add_argument("--node-ip", required=True)
    ap.add_argument("--master", required=True)
    ap.add_argument("--lab", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--cni-bin-dir", required=True)
    ap.add_argument("--cni-conf-dir", required=True)
    ap.add_argument("--cluster-dns", default="10.96.0.10")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.netns:
        from podnet.netlab.nsenter import enter
        enter(a.netns)
    asyncio.run(_amain(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
