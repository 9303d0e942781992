"""The lab kubelet: runs the Pods bound to one node, as network namespaces.

One process per node, started by ``lab up`` inside the node's network
namespace (entered with setns, so the root mount namespace and its
``/var/run/netns`` stay visible). It plays the kubelet's part that networking
depends on, in the order a real kubelet and runtime follow:

1. register the Node (InternalIP, Hostname, Ready) as kubelet does;
2. list+watch Pods; for each Pod with ``spec.nodeName`` == this node:
   create the sandbox netns ``pnl-<node>-p<k>`` with its resolv.conf (named on the Pod
   by the ``podnet.io/netns`` annotation), run CNI
   ADD through the plugin chain from the conf dir (:mod:`podnet.netlab.node.cniexec`),
   report ``status.podIP(s)``/``hostIP``/``phase Running``, start the
   container (its ``command``+``args`` or, by default, the lab pod server) in
   the netns, probe readiness from the node (``readinessProbe`` httpGet or
   tcpSocket; default: TCP to the pod server's HTTP port) and report the
   ``Ready`` condition;
3. when a Pod is deleted (or gets a deletionTimestamp: graceful delete): stop its
   process, CNI DEL, remove the netns, and confirm a graceful delete with grace 0;
4. a container that exits by itself makes its pod not Ready at once; per
   ``spec.restartPolicy`` (Always, the default; OnFailure; Never) it is restarted
   in the same sandbox (same netns and IP, no new CNI ADD) after kubelet's
   crash-loop back-off (10 s doubling to 300 s, reset after 10 min of running),
   with ``restartCount``/``lastState.terminated``/``waiting: CrashLoopBackOff``
   reported, or the pod ends Succeeded (exit 0) / Failed.

Pods are handled concurrently, each by one task; events for one pod are
serialised by its task. State of each running pod is written to
``<run-dir>/pods/<node>/<netns>.json`` so ``lab down`` can clean up after a crash; container
output goes to kubelet's log layout under ``<run-dir>/logs/pods`` (:mod:`podnet.netlab.node.podlogs`),
one file per container instance, which the API server's pods/log reads.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError, TRANSPORT_ERRORS
from podnet.kube.watch import WatchExpired, watch_events
from podnet.netlab.node import podlogs
from podnet.netlab.node.hostinfo import system_info
from podnet.netlab.node.sandbox import Sandbox

log = logging.getLogger("podnet.lab.kubelet")

__all__ = ["Kubelet", "pod_command", "image_id", "container_status", "readiness_target", "node_object", "main"]

PODSERVER_HTTP = 8080
NETNS_ANNOTATION = "podnet.io/netns"
"""Names a running pod's network namespace; the lab API server's tables and exec answers read it."""
_PODSERVER_FILE = str(Path(__file__).with_name("podserver.py"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
            "nodeInfo": system_info(),
        },
    }


def pod_command(pod: dict[str, Any], python: str = sys.executable) -> list[str]:
    """What runs in the pod: the first container's command+args, else the lab pod server."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    c = containers[0]
    if c.get("command"):
        return [str(x) for x in c["command"]] + [str(x) for x in c.get("args") or ()]
    return [python, "-P", "-m", "podnet.netlab.node.podserver", "--name", pod["metadata"]["name"]]


def image_id(pod: dict[str, Any], python: str = sys.executable) -> str:
    """``containerStatuses[].imageID``: the content digest of what the container actually runs.

    The lab pulls no image: the container runs the lab pod server module or its ``command``'s
    executable from the host, so the ID is ``podnet-lab://<file>@sha256:<digest of that file>``
    (kubelet's form is ``<repository>@sha256:<digest>``). An executable not found on PATH gives
    ``podnet-lab://<command>`` with no digest.
    """
    cmd = pod_command(pod, python)
    if cmd[0] == python and cmd[1:4] == ["-P", "-m", "podnet.netlab.node.podserver"]:
        path = _PODSERVER_FILE
    else:
        found = shutil.which(cmd[0])
        if found is None:
            return f"podnet-lab://{cmd[0]}"
        path = os.path.realpath(found)
    try:
        return f"podnet-lab://{path}@sha256:{_sha256(path)}"
    except OSError:
        return f"podnet-lab://{path}"


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: str) -> str:
    st = os.stat(path)
    return _sha256_cached(path, st.st_mtime_ns, st.st_size)


def container_status(pod: dict[str, Any], container_id: str, *, ready: bool, started: bool, restart_count: int,
                     **extra: Any) -> dict[str, Any]:
    """One ``containerStatuses`` entry of the pod's first container, with every field the API marks
    required (name, image, imageID, ready, restartCount) plus containerID and started."""
    c = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    st = {"name": c.get("name", "main"), "image": c.get("image", "podnet-lab"), "imageID": image_id(pod),
          "containerID": f"podnet-lab://{container_id}", "ready": ready, "started": started,
          "restartCount": restart_count}
    st.update(extra)
    return st


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




class Kubelet:
    """Reconciles the Pods bound to one node with sandboxes on it (see the module docstring)."""

    def __init__(self, client: ApiClient, node: str, node_ip: str, *, lab: str, run_dir: Path,
                 cni_bin_dir: str, cni_conf_dir: str, cluster_dns: str = "10.96.0.10",
                 backoff_base: float = 10.0, backoff_max: float = 300.0, backoff_reset: float = 600.0,
                 clock=time.monotonic, sleep=asyncio.sleep) -> None:
        self.client, self.node, self.node_ip, self.lab = client, node, node_ip, lab
        self.run_dir = run_dir
        self.state_dir = run_dir / "pods" / node
        self.log_root = run_dir / "logs" / "pods"
        self.cni_path, self.cni_conf_dir = cni_bin_dir, Path(cni_conf_dir)
        self.cluster_dns = cluster_dns
        self.pods: dict[str, Sandbox] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.wanted: dict[str, dict[str, Any]] = {}
        self.used_index: set[int] = set()
        self.backoff_base, self.backoff_max, self.backoff_reset = backoff_base, backoff_max, backoff_reset
        self.clock, self.sleep = clock, sleep

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
        """The lowest free ``pnl-<node>-p<k>``."""
        k = 1
        while k in self.used_index:
            k += 1
        self.used_index.add(k)
        return f"pnl-{self.node}-p{k}"

    def resolv_conf(self, namespace: str) -> str:
        return (
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {self.cluster_dns}\noptions ndots:5\n"
        )

    async def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.client.patch(r.PODS, name, {"status": status}, ns, subresource="status")
        except ApiError as e:
            if not e.is_not_found:
                raise

    async def _annotate_netns(self, ns: str, name: str, netns: str) -> None:
        """Name the pod's network namespace on the Pod (``kubectl get pods -o wide`` shows it)."""
        try:
            await self.client.patch(r.PODS, name, {"metadata": {"annotations": {NETNS_ANNOTATION: netns}}}, ns)
        except ApiError as e:
            if not e.is_not_found:
                raise

    async def start_pod(self, pod: dict[str, Any]) -> None:
        """Sandbox, CNI ADD, report IPs, start the container, probe, report Ready."""
        meta = pod["metadata"]
        ns, name, uid = meta.get("namespace", "default"), meta["name"], meta.get("uid", "")
        key = f"{ns}/{name}"
        netns = self._netns_name()
        sb = Sandbox(key, uid, netns, f"pnl{uid.replace('-', '')[:20] or netns}")
        self.pods[key] = sb
        t0 = time.monotonic()
        sb.create(self.resolv_conf(ns))
        self._save(sb)
        await self._annotate_netns(ns, name, netns)
        await sb.attach(self.cni_path, self.cni_conf_dir)
        self._save(sb)
        log.info("pod %s: netns %s ips %s (CNI ADD %.0f ms)", key, netns, sb.ips, (time.monotonic() - t0) * 1000)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await self._patch_status(ns, name, {
            "phase": "Running", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": sb.ips[0] if sb.ips else None, "podIPs": [{"ip": ip} for ip in sb.ips],
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": started},
                           {"type": "PodScheduled", "status": "True"}],
        })
        await self._start_container(pod, sb)
        await self._probe_and_report(key, sb, pod, t0)
        sb.monitor = asyncio.create_task(self._monitor(key, sb, pod))

    async def _start_container(self, pod: dict[str, Any], sb: Sandbox) -> None:
        ns, name = sb.namespace_name
        c = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        log_path = podlogs.container_log(self.log_root, ns, name, sb.uid, c.get("name", "main"), sb.restart_count)
        await sb.start(pod_command(pod), log_path)
        sb.started_at = self.clock()
        self._save(sb)

    def _container_status(self, pod: dict[str, Any], sb: Sandbox, ready: bool, **extra: Any) -> list[dict[str, Any]]:
        return [container_status(pod, sb.container_id, ready=ready,
                                 started=sb.proc is not None and sb.proc.returncode is None,
                                 restart_count=sb.restart_count, **extra)]

    async def _probe_and_report(self, key: str, sb: Sandbox, pod: dict[str, Any], t0: float) -> None:
        ns, name = sb.namespace_name
        await sb.wait_ready(readiness_target(pod))
        # The moment Ready turned true (second precision, as metav1.Time): the EndpointSlice
        # controller takes its last-change-trigger-time from it.
        became_ready = _now()
        await self._patch_status(ns, name, {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": became_ready},
                           {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": self._container_status(
                pod, sb, True, state={"running": {"startedAt": became_ready}}, **self._last_state(sb)),
        })
        sb.ready = True
        log.info("pod %s ready after %.0f ms", key, (time.monotonic() - t0) * 1000)

    @staticmethod
    def _last_state(sb: Sandbox) -> dict[str, Any]:
        last = sb.last_terminated
        return {"lastState": {"terminated": last}} if last else {}

    def next_backoff(self, sb: Sandbox) -> float:
        """kubelet's crash-loop back-off: base, doubling to the max; reset after a long enough run."""
        ran = self.clock() - sb.started_at
        if sb.backoff <= 0 or ran >= self.backoff_reset:
            sb.backoff = self.backoff_base
        else:
            sb.backoff = min(sb.backoff * 2, self.backoff_max)
        return sb.backoff

    async def _monitor(self, key: str, sb: Sandbox, pod: dict[str, Any]) -> None:
        """Watch the container; on exit report not Ready at once, then restart it per ``restartPolicy``
        in the same sandbox (same netns and IP, no CNI ADD) after the crash-loop back-off."""
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        ns, name = key.split("/", 1)
        while True:
            assert sb.proc is not None
            rc = await sb.proc.wait()
            if self.pods.get(key) is not sb:
                return  # we stopped it
            sb.ready = False
            log.warning("pod %s: container exited with %s", key, rc)
            term = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error", "finishedAt": _now()}
            restart = policy == "Always" or (policy == "OnFailure" and rc != 0)
            try:
                if not restart:
                    await self._patch_status(ns, name, {
                        "phase": "Succeeded" if rc == 0 else "Failed", "message": f"container exited with {rc}",
                        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()},
                                       {"type": "ContainersReady", "status": "False"},
                                       {"type": "PodScheduled", "status": "True"}],
                        "containerStatuses": self._container_status(pod, sb, False, state={"terminated": term}),
                    })
                    return
                delay = self.next_backoff(sb)
                sb.last_terminated = term
                await self._patch_status(ns, name, {
                    "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()},
                                   {"type": "ContainersReady", "status": "False"},
                                   {"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": self._container_status(
                        pod, sb, False, state={"waiting": {"reason": "CrashLoopBackOff", "message":
                                               f"back-off {delay:g}s restarting failed container"}},
                        lastState={"terminated": term}),
                })
            except (ApiError, *TRANSPORT_ERRORS) as e:
                log.warning("pod %s: cannot report the exit: %s", key, e)
                if not restart:
                    return
            await self.sleep(delay)
            if self.pods.get(key) is not sb:
                return  # deleted while backing off
            sb.restart_count += 1
            log.info("pod %s: restarting the container (restart %d) after %.1f s", key, sb.restart_count, delay)
            try:
                await self._start_container(pod, sb)
            except OSError as e:  # cannot even start it: the old exit status stands, back off again
                log.warning("pod %s: restart failed: %s", key, e)
                continue
            try:
                await self._probe_and_report(key, sb, pod, time.monotonic())
            except (RuntimeError, TimeoutError) as e:
                log.warning("pod %s: not ready after restart: %s", key, e)
            except (ApiError, *TRANSPORT_ERRORS) as e:
                log.warning("pod %s: cannot report ready: %s", key, e)

    async def _confirm_delete(self, pod: dict[str, Any]) -> None:
        """After a graceful delete, tell the API the pod is gone (as kubelet does, with grace 0)."""
        meta = pod["metadata"]
        path = r.PODS.path(meta.get("namespace", "default"), meta["name"])
        try:
            await self.client.request("DELETE", path, body={"apiVersion": "v1", "kind": "DeleteOptions",
                                                            "gracePeriodSeconds": 0})
        except ApiError as e:
            if not e.is_not_found:
                log.warning("pod %s: confirming the delete: %s", meta["name"], e)

    async def stop_pod(self, key: str) -> None:
        """Undo the sandbox (process, CNI DEL, netns), forget the pod."""
        sb = self.pods.pop(key, None)
        if sb is None:
            return
        if sb.monitor is not None and sb.monitor is not asyncio.current_task():
            sb.monitor.cancel()  # also cancels a restart waiting in back-off
            try:
                await sb.monitor
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for problem in await sb.destroy():
            log.warning("pod %s: %s", key, problem)
        (self.state_dir / f"{sb.netns}.json").unlink(missing_ok=True)
        podlogs.remove_pod(self.log_root, *sb.namespace_name, sb.uid)
        self.used_index.discard(int(sb.netns.rsplit("-p", 1)[1]))
        log.info("pod %s stopped (netns %s removed)", key, sb.netns)

    def _save(self, sb: Sandbox) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{sb.netns}.json").write_text(json.dumps(sb.record()))

    # ------------------------------------------------------------------ reconcile

    async def _pod_worker(self, key: str) -> None:
        """Converge one pod to what the API last said; returns when they agree."""
        try:
            while True:
                want = self.wanted.get(key)
                have = self.pods.get(key)
                if want is None or want["metadata"].get("deletionTimestamp"):
                    if have is not None:
                        await self.stop_pod(key)
                        continue
                    if want is not None:
                        await self._confirm_delete(want)
                    return
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

    def observe(self, pod: dict[str, Any] | None, key: str) -> None:
        """One step of the watch loop: record the wanted state of pod ``key`` (None: gone) and make sure
        one worker task converges it; a worker already running for ``key`` picks up the new state."""
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
                        self.observe(p, key)
                for key in list(self.wanted):
                    if key not in seen:
                        self.observe(None, key)
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
                        self.observe(None if ev.type == "DELETED" else p, key)
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
    client = ApiClient.from_flags(master=a.master, kubeconfig=a.kubeconfig)
    k = Kubelet(client, a.node, a.node_ip, lab=a.lab, run_dir=Path(a.run_dir),
                cni_bin_dir=a.cni_bin_dir, cni_conf_dir=a.cni_conf_dir, cluster_dns=a.cluster_dns)
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
    ap.add_argument("--kubeconfig", help="credentials (a bearer token) for the API server; --master wins for the URL")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--cni-bin-dir", required=True)
    ap.add_argument("--cni-conf-dir", required=True)
    ap.add_argument("--cluster-dns", default="10.96.0.10")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.netns:
        from podnet.host.nsenter import enter
        enter(a.netns)
    asyncio.run(_amain(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
