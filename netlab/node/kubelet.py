"""The lab kubelet: runs the Pods bound to one node as network namespaces and containers.

One process per node, started by ``lab up`` inside the node's network namespace (entered with
setns, so the root mount namespace and its ``/var/run/netns`` stay visible). In the order a real
kubelet and runtime follow:

1. register the Node (InternalIP, Hostname, Ready; nodeInfo from :mod:`.hostinfo`);
2. keep the Pods bound to this node in a :class:`podnet.kube.informer.Informer` (a list+watch
   with the field selector ``spec.nodeName=<node>``, kube's backoff); every add, update and
   delete goes to :meth:`Kubelet.observe`, which makes one worker task per pod converge it;
   :meth:`Kubelet.sync_once` is one finite list-and-converge step for tests;
3. start a pod: the sandbox netns ``pnl-<node>-p<k>`` with its resolv.conf (named on the Pod by
   the ``podnet.io/netns`` annotation) and CNI ADD with the pod's hostPorts as portMappings
   (:mod:`.sandbox`), or the node's own netns for ``hostNetwork: true`` (no CNI); report the
   IPs; write the volumes (:mod:`.volumes`); run the init containers one at a time, each to
   completion, in order; then start every container. Each container is a process in its own
   mount namespace (:mod:`.launch`) running what its spec and image say (:mod:`.images`), with
   its /etc/resolv.conf per ``dnsPolicy`` and its env (:mod:`.podspec`: values, the downward
   API, ConfigMap and Secret keys, envFrom, and
   ``KUBERNETES_SERVICE_HOST``/``_PORT`` naming the API server this kubelet uses, so podnet's
   in-cluster discovery works inside);
   A sandbox that cannot be made is torn down, recorded (FailedCreatePodSandBox) and retried
   after 1 s doubling to 30 s while the pod stays Pending;
4. probe each container as kubelet does (:mod:`.probes`): a startup probe first, then liveness
   and readiness, from initialDelaySeconds every periodSeconds with the thresholds; a failed
   startup or liveness probe kills the container; Ready is every container ready. One lab
   deviation, for speed: until a readiness probe first passes it is tried every 100 ms, not
   every periodSeconds, so a pod is Ready as soon as it answers (failures before the first pass
   change nothing: the container starts not ready);
5. a container that exits (or is killed) makes the pod not Ready at once; per
   ``spec.restartPolicy`` (Always, the default; OnFailure; Never) it is restarted in the same
   sandbox (same netns and IP, no CNI ADD) after kubelet's crash-loop back-off (10 s doubling to
   300 s, reset after 10 min of running; ``--crashloop-backoff-base``/``-max`` scale it for a lab),
   with ``restartCount``/``lastState.terminated``/``waiting: CrashLoopBackOff`` reported, or, once
   no container will run again, the pod ends Succeeded (all exited 0) or Failed;
6. when a Pod is deleted (or gets a deletionTimestamp): stop its containers, CNI DEL, remove the
   netns and the pod's files, and confirm a graceful delete with grace 0.

Along the way it records kubelet's Events on the Pod (:mod:`.events`: Pulled, Created, Started,
Killing, BackOff, Unhealthy), rate-limited per pod, so ``kubectl describe pod`` shows its life;
readiness failures are recorded only after the probe first passed (before that the lab probes
every 100 ms, see 4.). While a pod runs, its configMap/secret/downwardAPI/projected volumes are
synced every ``volume_sync_period`` seconds (:func:`.volumes.refresh`), tokens renewed at 80 % of
their life.

Where things live: the node's "host" file system for hostPath volumes is ``--root-dir``
(default ``<run-dir>/nodes/<node>/root``); each pod's volumes and launch plans are under
``<run-dir>/nodes/<node>/pods/<uid>``; each running pod's record is
``<run-dir>/pods/<node>/<netns or host-uid>.json`` (read by ``lab check`` and ``lab draw``; a
hostNetwork pod's names the node's netns, as its ``podnet.io/netns`` annotation does);
container output goes to kubelet's log layout under ``<run-dir>/logs/pods`` (:mod:`.podlogs`),
one file per container instance, which the API server's pods/log reads.

Service-account tokens come from the TokenRequest API (``serviceaccounts/<sa>/token``, bound to
the pod). Where it gives none (an API server without it, a missing ServiceAccount, a refusal),
the token is read from ``--sa-token-dir`` (``<namespace>_<serviceaccount>.token``, written by
whoever set the lab up), else the token file is empty and the container's API calls answer 401.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from podnet.host import loop as hostloop, procs
from podnet.host.podman import Store as PodmanStore
from podnet.kube import objects as o
from podnet.kube import resources as r
from podnet.kube.backoff import Backoff
from podnet.kube.client import ApiClient, ApiError, TRANSPORT_ERRORS
from podnet.kube.informer import Informer
from podnet.netlab.node import events, images, podlogs, podman, podspec, probes, volumes
from podnet.kube.names import NETNS_ANNOTATION
from podnet.netlab.node.hostinfo import system_info
from podnet.netlab.node.podspec import ConfigError, Container, PodSpec
from podnet.netlab.node.sandbox import Sandbox, stop_process

log = logging.getLogger("podnet.lab.kubelet")

__all__ = ["Kubelet", "BoundPod", "KUBELET_PODS", "ContainerRun", "PodRun", "image_id", "container_status",
           "node_object", "main", "NETNS_ANNOTATION"]

FAST_PROBE = 0.1
"""Seconds between readiness/startup attempts until the first pass (see the module docstring)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_object(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": _now()}],
            "nodeInfo": system_info(),
        },
    }


# ---------------------------------------------------------------- the informer's view of a Pod


@dataclass(frozen=True)
class BoundPod:
    """A Pod as the kubelet's informer keeps it: validated at kube's boundary (``parse_pod``),
    with the raw object for the spec. Two values are equal when the kubelet would do the same
    thing for both (same uid, spec and deletion state), so status-only updates are dropped."""

    key: str
    uid: str
    deleting: bool
    fingerprint: str
    raw: Mapping[str, Any] = field(compare=False, hash=False)


def parse_bound_pod(raw: Mapping[str, Any]) -> BoundPod:
    p = o.parse_pod(raw)
    return BoundPod(p.key, p.uid, p.deleting, json.dumps(raw.get("spec") or {}, sort_keys=True), raw)


KUBELET_PODS = r.Resource("/api/v1", "pods", "Pod", True, parse_bound_pod)


# ---------------------------------------------------------------- per-container and per-pod state


@dataclass
class ContainerRun:
    c: Container
    init: bool = False
    proc: Any = None
    restart_count: int = 0
    backoff: float = 0.0                 # the last crash-loop back-off delay (0: none yet)
    started_at: float = 0.0              # clock() when the current instance started
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_terminated: dict[str, Any] | None = None
    ready: bool = False
    started: bool = False                # the startup probe passed (or there is none)


@dataclass
class PodRun:
    spec: PodSpec
    sb: Sandbox
    runs: dict[str, ContainerRun]
    phase: str = "Pending"
    start_time: str = ""
    ready_since: str = ""
    initialized: bool = False
    message: str = ""
    dirs: dict[str, Path] = field(default_factory=dict)
    task: asyncio.Task | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(cr.ready for cr in self.runs.values() if not cr.init)


def image_id(pod: Mapping[str, Any]) -> str:
    """``imageID`` of the pod's first container (see :func:`podnet.netlab.node.images.image_id`)."""
    return images.image_id(podspec.parse(pod).containers[0])


def _container_status(cr: ContainerRun, sandbox_id: str) -> dict[str, Any]:
    """One entry of ``containerStatuses``; containerID names the instance (sandbox, container, restart)."""
    st = {"name": cr.c.name, "image": cr.c.image or "podnet/podserver:lab", "imageID": images.image_id(cr.c),
          "containerID": f"podnet-lab://{sandbox_id}-{cr.c.name}-{cr.restart_count}", "ready": cr.ready,
          "started": "running" in cr.state and cr.started, "restartCount": cr.restart_count,
          "state": cr.state}
    if cr.last_terminated:
        st["lastState"] = {"terminated": cr.last_terminated}
    return st


def container_status(pod: Mapping[str, Any], container_id: str, *, ready: bool, started: bool, restart_count: int,
                     **extra: Any) -> dict[str, Any]:
    """One ``containerStatuses`` entry of the pod's first container, with every field the API marks
    required (name, image, imageID, ready, restartCount) plus containerID and started."""
    c = podspec.parse(pod).containers[0]
    st = {"name": c.name, "image": c.image or "podnet-lab", "imageID": images.image_id(c),
          "containerID": f"podnet-lab://{container_id}", "ready": ready, "started": started,
          "restartCount": restart_count}
    st.update(extra)
    return st


def pod_status(pr: PodRun, host_ip: str) -> dict[str, Any]:
    """The Pod's ``status`` from the kubelet's state of it."""
    ready = pr.ready
    cond = lambda t, ok, since="": {"type": t, "status": "True" if ok else "False",  # noqa: E731
                                    **({"lastTransitionTime": since} if since else {})}
    containers_ready = all(cr.ready for cr in pr.runs.values() if not cr.init)
    st: dict[str, Any] = {
        "phase": pr.phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pr.sb.ips[0] if pr.sb.ips else None, "podIPs": [{"ip": ip} for ip in pr.sb.ips],
        "startTime": pr.start_time,
        "conditions": [cond("PodScheduled", True), cond("Initialized", pr.initialized),
                       cond("ContainersReady", containers_ready), cond("Ready", ready, pr.ready_since)],
        "containerStatuses": [_container_status(cr, pr.sb.container_id) for cr in pr.runs.values() if not cr.init],
    }
    inits = [_container_status(cr, pr.sb.container_id) for cr in pr.runs.values() if cr.init]
    if inits:
        st["initContainerStatuses"] = inits
    if pr.message:
        st["message"] = pr.message
    return st


# ---------------------------------------------------------------- the kubelet


class Kubelet:
    """Reconciles the Pods bound to one node with sandboxes on it (see the module docstring)."""

    def __init__(self, client: ApiClient, node: str, node_ip: str, *, lab: str, run_dir: Path,
                 cni_bin_dir: str, cni_conf_dir: str, cluster_dns: str = "10.96.0.10",
                 backoff_base: float = 10.0, backoff_max: float = 300.0, backoff_reset: float = 600.0,
                 root_dir: Path | None = None, ca_file: Path | None = None, sa_token_dir: Path | None = None,
                 api_url: str = "", image_dir: Path | None = None, node_netns: str | None = None,
                 cni_node_view: bool = False, clock=time.monotonic, sleep=asyncio.sleep, python: str = sys.executable,
                 informer: Informer | None = None, podman_store: PodmanStore | None = None) -> None:
        self.client, self.node, self.node_ip, self.lab = client, node, node_ip, lab
        self.podman = podman_store
        """Where podman finds podnet's image; None: every container runs through :mod:`.launch`."""
        self.run_dir = Path(run_dir)
        self.state_dir = self.run_dir / "pods" / node
        self.log_root = self.run_dir / "logs" / "pods"
        self.node_dir = self.run_dir / "nodes" / node
        self.root_dir = Path(root_dir) if root_dir else self.node_dir / "root"
        self.cni_path, self.cni_conf_dir = cni_bin_dir, Path(cni_conf_dir)
        self.cluster_dns = cluster_dns
        self.ca_file, self.sa_token_dir = ca_file, sa_token_dir
        self.api_url = api_url or (client.server if client is not None else "")
        self.python = python
        self.image_dir = image_dir
        self.node_netns = node_netns
        self.cni_node_view = cni_node_view
        self.volume_sync_period = 10.0
        """Seconds between syncs of a running pod's configMap/secret/downwardAPI/projected volumes."""
        self.sandbox_backoff_base, self.sandbox_backoff_max = 1.0, 30.0
        """Seconds before retrying a failed sandbox: doubling from base to max (:meth:`sandbox_retry_delay`)."""
        self.events = events.Recorder(self._post_event, node)
        """kubelet's Events about its pods (:mod:`.events`)."""
        self.host_dirs: dict[str, Path] = {}
        """hostPath directory -> where it lives under the node's root, for every one created so far."""
        self.pods: dict[str, Sandbox] = {}
        self.runs: dict[str, PodRun] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.wanted: dict[str, dict[str, Any]] = {}
        self.used_index: set[int] = set()
        self.backoff_base, self.backoff_max, self.backoff_reset = backoff_base, backoff_max, backoff_reset
        self.clock, self.sleep = clock, sleep
        self.informer = informer if informer is not None or client is None else Informer(
            client, KUBELET_PODS, field_selector=f"spec.nodeName={node}",
            backoff=Backoff(initial=0.2, maximum=5.0))
        if self.informer is not None:
            self.informer.add_handler(on_add=self._on_add, on_update=self._on_update, on_delete=self._on_delete)

    # ------------------------------------------------------------------ informer handlers

    def _on_add(self, p: BoundPod) -> None:
        self.observe(dict(p.raw) if self._mine(p.raw) else None, p.key)

    def _on_update(self, old: BoundPod, new: BoundPod) -> None:
        self.observe(dict(new.raw) if self._mine(new.raw) else None, new.key)

    def _on_delete(self, p: BoundPod) -> None:
        self.observe(None, p.key)

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

    # ------------------------------------------------------------------ API reads and writes

    async def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.client.patch(r.PODS, name, {"status": status}, ns, subresource="status")
        except ApiError as e:
            if not e.is_not_found:
                raise

    async def _report(self, pr: PodRun) -> None:
        """Patch the pod's status from ``pr`` (one patch at a time per pod); transport and API
        errors are logged, never raised: the next change reports again."""
        if self.runs.get(pr.spec.key) is not pr:
            return
        async with pr.lock:
            try:
                await self._patch_status(pr.spec.namespace, pr.spec.name, pod_status(pr, self.node_ip))
            except (ApiError, *TRANSPORT_ERRORS) as e:
                log.warning("pod %s: cannot report status: %s", pr.spec.key, e)

    async def _post_event(self, body: dict[str, Any]) -> None:
        await self.client.request("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body=body)

    def _event(self, pr: PodRun, reason: str, message: str, cr: ContainerRun | None = None,
               type_: str = "Normal") -> None:
        ref = {"namespace": pr.spec.namespace, "name": pr.spec.name, "uid": pr.spec.uid}
        self.events.record(ref, reason, message, type_=type_,
                           path=events.field_path(cr.c.name, cr.init) if cr is not None else "")

    def _probe_event(self, pr: PodRun, cr: ContainerRun, kind: str, outcome: probes.Outcome) -> None:
        said = probes.event_for(kind, outcome)
        if said is not None:
            self._event(pr, said[0], said[1], cr, "Warning")

    async def _annotate_netns(self, ns: str, name: str, netns: str) -> None:
        """Name the pod's network namespace on the Pod (``kubectl get pods -o wide`` shows it)."""
        try:
            await self.client.patch(r.PODS, name, {"metadata": {"annotations": {NETNS_ANNOTATION: netns}}}, ns)
        except ApiError as e:
            if not e.is_not_found:
                raise

    async def _get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.request("GET", f"/api/v1/namespaces/{ns}/{plural}/{name}")
        except ApiError as e:
            if e.is_not_found:
                return None
            raise

    async def config_map(self, ns: str, name: str) -> dict[str, str] | None:
        obj = await self._get("configmaps", ns, name)
        return None if obj is None else {k: str(v) for k, v in (obj.get("data") or {}).items()}

    async def secret(self, ns: str, name: str) -> dict[str, str] | None:
        obj = await self._get("secrets", ns, name)
        return None if obj is None else volumes.decode_secret(obj)

    async def token(self, spec: PodSpec, audience: str, expiration: int) -> str:
        """A token for the pod's ServiceAccount from the TokenRequest API, bound to the pod; the
        documented fallback (``--sa-token-dir``) where the API does not serve it."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": expiration,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": spec.name, "uid": spec.uid}}}
        path = f"/api/v1/namespaces/{spec.namespace}/serviceaccounts/{spec.service_account}/token"
        try:
            answer = await self.client.request("POST", path, body=body)
            token = str((answer.get("status") or {}).get("token") or "")
            if token:
                return token
            why = "the TokenRequest answer holds no token"
        except ApiError as e:
            why = f"TokenRequest answered {e}"
        if self.sa_token_dir is not None:
            f = Path(self.sa_token_dir) / f"{spec.namespace}_{spec.service_account}.token"
            if f.is_file():
                log.info("pod %s: %s; using %s", spec.key, why, f)
                return f.read_text().strip()
        log.warning("pod %s: %s and no token file: empty service-account token", spec.key, why)
        return ""

    def _sources(self) -> volumes.Sources:
        return volumes.Sources(self.config_map, self.secret, self.token, self.ca_file)

    def service_env(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``_PORT`` (and the docker-link forms kubelet also sets)
        naming the API server this kubelet talks to."""
        u = urlsplit(self.api_url)
        if not u.hostname:
            return {}
        port = str(u.port or (443 if u.scheme == "https" else 80))
        host = u.hostname
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": f"tcp://{host}:{port}"}

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

    def new_sandbox(self, spec: PodSpec) -> Sandbox:
        netns = None if spec.host_network else self._netns_name()
        cid = f"pnl{spec.uid.replace('-', '')[:20] or (netns or spec.name)}"
        return Sandbox(spec.key, spec.uid, netns, cid, pod_dir=self.node_dir / "pods" / (spec.uid or spec.name))

    async def start_pod(self, pod: dict[str, Any]) -> None:
        """Sandbox, CNI ADD, report IPs, volumes; then the containers run under :meth:`_run_pod`."""
        spec = podspec.parse(pod)
        sb = self.new_sandbox(spec)
        pr = PodRun(spec, sb, {c.name: ContainerRun(c, init=True) for c in spec.init_containers}
                    | {c.name: ContainerRun(c) for c in spec.containers}, start_time=_now())
        self.pods[spec.key] = sb
        self.runs[spec.key] = pr
        t0 = time.monotonic()
        sb.create(self.resolv_conf(spec.namespace))
        self._save(sb)
        if sb.netns is None and self.node_netns:
            await self._annotate_netns(spec.namespace, spec.name, self.node_netns)
        if sb.netns is not None:
            await self._annotate_netns(spec.namespace, spec.name, sb.netns)
            ports = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.lower(),
                      **({"hostIP": p.host_ip} if p.host_ip else {})} for p in spec.host_ports()]
            await sb.attach(self.cni_path, self.cni_conf_dir, {"portMappings": ports} if ports else None,
                            self._cni_prefix())
        else:
            sb.ips = [self.node_ip]
        self._save(sb)
        log.info("pod %s: netns %s ips %s (sandbox %.0f ms)", spec.key, sb.netns or "<node>", sb.ips,
                 (time.monotonic() - t0) * 1000)
        await self._report(pr)
        facts = podspec.pod_facts(spec, self.node_ip, sb.ips)
        assert sb.pod_dir is not None
        pr.dirs = await volumes.materialise(spec, sb.pod_dir, self.root_dir, self._sources(), facts)
        for name, v in spec.volumes:
            hp = v.get("hostPath")
            if isinstance(hp, Mapping) and pr.dirs.get(name, Path("/")).is_relative_to(self.root_dir):
                self.host_dirs[os.path.normpath("/" + str(hp.get("path", "/")).lstrip("/"))] = pr.dirs[name]
        pr.task = asyncio.create_task(self._run_pod(pr))

    def _cni_prefix(self) -> tuple[str, ...]:
        """With ``cni_node_view``, CNI plugins run through :mod:`.launch` seeing the node's own
        hostPath directories at their host paths (the plugin a DaemonSet installed into its
        /opt/cni/bin finds its daemon's socket at /run/podnet/cni.sock, as on a real node), and
        the real /run/netns; without it, as they are."""
        if not self.cni_node_view:
            return ()
        mounts = [{"source": str(p), "target": host} for host, p in sorted(self.host_dirs.items()) if p.is_dir()]
        mounts.append({"source": "/run/netns", "target": "/run/netns"})
        plan_path = self.node_dir / "cni-view.json"
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        (self.node_dir / "cni-scratch").mkdir(exist_ok=True)
        tmp = plan_path.with_name(plan_path.name + ".tmp")  # renamed: a plugin starting now never reads half a file
        tmp.write_text(json.dumps({"scratch": str(self.node_dir / "cni-scratch"), "mounts": mounts}))
        tmp.replace(plan_path)
        return (self.python, "-P", "-m", "podnet.netlab.node.launch", str(plan_path))

    async def _sync_volumes(self, pr: PodRun) -> None:
        """kubelet's periodic volume sync while the pod runs: every ``volume_sync_period`` seconds the
        pod's configMap, secret, downwardAPI and projected volumes are rewritten from the objects as they
        are now (atomically, only when they changed); tokens are renewed once 80 % of their life has
        passed (:func:`volumes.refresh_period`)."""
        renew_every = volumes.refresh_period(pr.spec)
        issued = self.clock()
        while True:
            await asyncio.sleep(self.volume_sync_period)
            renew = renew_every is not None and self.clock() - issued >= renew_every
            try:
                facts = podspec.pod_facts(pr.spec, self.node_ip, pr.sb.ips)
                changed = await volumes.refresh(pr.spec, pr.dirs, self._sources(), facts, renew_tokens=renew)
            except (OSError, ApiError, ConfigError, *TRANSPORT_ERRORS) as e:
                log.warning("pod %s: syncing volumes: %s", pr.spec.key, e)
                continue
            if renew:
                issued = self.clock()
            if changed:
                log.info("pod %s: volumes updated: %s", pr.spec.key, ", ".join(changed))

    async def _run_pod(self, pr: PodRun) -> None:
        """Init containers in order, each to completion; then every container, each supervised."""
        refresher = asyncio.create_task(self._sync_volumes(pr))
        try:
            for cr in [cr for cr in pr.runs.values() if cr.init]:
                if not await self._supervise(pr, cr):
                    pr.phase, pr.message = "Failed", f"init container {cr.c.name} failed"
                    await self._report(pr)
                    return
            pr.initialized, pr.phase = True, "Running"
            results = await asyncio.gather(*(self._supervise(pr, cr) for cr in pr.runs.values() if not cr.init))
            pr.phase = "Succeeded" if all(results) else "Failed"
            await self._report(pr)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one bad pod must not stop the node
            log.exception("pod %s: %s", pr.spec.key, e)
        finally:
            refresher.cancel()

    def next_backoff(self, cr: ContainerRun) -> float:
        """kubelet's crash-loop back-off: base, doubling to the max; reset after a long enough run."""
        ran = self.clock() - cr.started_at
        if cr.backoff <= 0 or ran >= self.backoff_reset:
            cr.backoff = self.backoff_base
        else:
            cr.backoff = min(cr.backoff * 2, self.backoff_max)
        return cr.backoff

    async def _env(self, pr: PodRun, c: Container) -> dict[str, str]:
        cms: dict[str, Any] = {}
        secrets: dict[str, Any] = {}
        for e in c.env_from:
            target, fetch = (cms, self.config_map) if e.source == "configMap" else (secrets, self.secret)
            target[e.name] = await fetch(pr.spec.namespace, e.name)
        for e in c.env:
            if e.source in ("configMap", "secret"):
                target, fetch = (cms, self.config_map) if e.source == "configMap" else (secrets, self.secret)
                if e.ref_name not in target:
                    target[e.ref_name] = await fetch(pr.spec.namespace, e.ref_name)
        facts = podspec.pod_facts(pr.spec, self.node_ip, pr.sb.ips)
        env = podspec.resolve_env(c, facts, cms, secrets, self.service_env())
        env.setdefault("PATH", images.path_env(c.image, self.python))
        env.setdefault("HOSTNAME", pr.spec.name)
        env.setdefault("HOME", "/root")
        if procs.LAB_ENV in os.environ:  # the lab's process marker: ``lab down`` finds every container
            env[procs.LAB_ENV] = os.environ[procs.LAB_ENV]
        return env

    async def launch_plan(self, pr: PodRun, cr: ContainerRun) -> dict[str, Any]:
        """What :mod:`podnet.netlab.node.launch` needs to start one instance of ``cr``."""
        c = cr.c
        env = await self._env(pr, c)
        argv = images.argv(c, podspec.command_line(c, env), pr.spec.name, self.python)
        assert pr.sb.pod_dir is not None
        resolv = self._resolv_file(pr)
        layer = str(self.image_dir) if self.image_dir and images.is_podnet_image(c.image) else ""
        return {"scratch": str(pr.sb.pod_dir / "containers" / c.name / "scratch"),
                "mounts": volumes.container_mounts(pr.spec, c, pr.dirs, resolv),
                "argv": argv, "env": env, "workingDir": c.working_dir, "imageLayer": layer}

    def _resolv_file(self, pr: PodRun) -> Path | None:
        """The container's /etc/resolv.conf per ``dnsPolicy``: cluster DNS for ClusterFirst
        (hostNetwork pods: only with ClusterFirstWithHostNet), else the machine's own (None)."""
        spec = pr.spec
        cluster = spec.dns_policy == "ClusterFirstWithHostNet" or (
            spec.dns_policy == "ClusterFirst" and not spec.host_network)
        if not cluster:
            return None
        if pr.sb.resolv_conf is not None:
            return pr.sb.resolv_conf
        assert pr.sb.pod_dir is not None
        f = pr.sb.pod_dir / "resolv.conf"
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(self.resolv_conf(spec.namespace))
        return f

    async def start_container(self, pr: PodRun, cr: ContainerRun) -> Any:
        """Start one instance of ``cr``; returns its process."""
        plan = await self.launch_plan(pr, cr)
        ns, name = pr.sb.namespace_name
        log_path = podlogs.container_log(self.log_root, ns, name, pr.sb.uid, cr.c.name, cr.restart_count)
        assert pr.sb.pod_dir is not None
        if self.podman is not None and images.is_podnet_image(cr.c.image):
            return await self._start_podman(pr, cr, plan, log_path)
        plan_path = pr.sb.pod_dir / "containers" / cr.c.name / f"plan-{cr.restart_count}.json"
        return await pr.sb.start_container(cr.c.name, plan, plan_path, log_path, self.python)

    async def _start_podman(self, pr: PodRun, cr: ContainerRun, plan: dict[str, Any], log_path: Path) -> Any:
        store = self.podman
        assert store is not None
        name = podman.container_name(self.lab, pr.sb.uid, cr.c.name, cr.restart_count)
        argv = podman.run_argv(store, plan, name=name, image=cr.c.image,
                               netns_path=None if pr.spec.host_network else pr.sb.netns_path,
                               hostname=self.node if pr.spec.host_network else pr.spec.name,
                               security=cr.c.security, lab=self.lab, pod=pr.spec.key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        pr.sb.container_pids.pop(cr.c.name, None)
        proc = await pr.sb.start_process(cr.c.name, argv, log_path, cleanup=lambda: podman.remove(store, name))
        asyncio.ensure_future(self._publish_podman_pid(pr, cr.c.name, store, name, proc))
        return proc

    async def _publish_podman_pid(self, pr: PodRun, container: str, store: PodmanStore, name: str, proc: Any) -> None:
        """Record the container's own pid once podman has started it (``kubectl exec`` joins that process)."""
        pid = await podman.container_pid(store, name, running=lambda: proc.returncode is None, sleep=self.sleep)
        if pid and pr.sb.procs.get(container) is proc:
            pr.sb.container_pids[container] = pid
            self._save(pr.sb)

    async def _supervise(self, pr: PodRun, cr: ContainerRun) -> bool:
        """Run ``cr`` until no restart is due; True when it finally exited 0. An init container
        returns at its first exit 0; a container with restartPolicy Always never returns by itself."""
        policy = pr.spec.restart_policy
        key = pr.spec.key
        while True:
            try:
                self._event(pr, "Pulled", f'Container image "{cr.c.image}" already present on machine', cr)
                cr.proc = await self.start_container(pr, cr)
                self._event(pr, "Created", f"Created container: {cr.c.name}", cr)
                self._event(pr, "Started", f"Started container {cr.c.name}", cr)
                cr.started_at = self.clock()
                cr.state = {"running": {"startedAt": _now()}}
                cr.started = cr.c.startup is None
                cr.ready = cr.started and self._readiness(cr) is None and not cr.init
                self._save(pr.sb)
                await self._report(pr)
                probing = None if cr.init else asyncio.create_task(self._probe(pr, cr))
                try:
                    rc = await cr.proc.wait()
                finally:
                    if probing is not None:
                        probing.cancel()
            except (ConfigError, ValueError, OSError, ApiError, *TRANSPORT_ERRORS) as e:
                config = isinstance(e, (ConfigError, ValueError))
                reason = "CreateContainerConfigError" if config else "RunContainerError"
                log.warning("pod %s: container %s: %s", key, cr.c.name, e)
                cr.state = {"waiting": {"reason": reason, "message": str(e)[:500]}}
                cr.ready = False
                await self._report(pr)
                await self.sleep(self.next_backoff(cr))
                if self.runs.get(key) is not pr:
                    return False
                continue
            if self.runs.get(key) is not pr:
                return rc == 0  # we stopped it
            cr.ready, cr.started = False, False
            log.warning("pod %s: container %s exited with %s", key, cr.c.name, rc)
            term = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error", "finishedAt": _now()}
            if cr.init and rc == 0:
                cr.state = {"terminated": term}
                await self._report(pr)
                return True
            restart = policy == "Always" and not cr.init or policy != "Never" and rc != 0
            if not restart:
                cr.state = {"terminated": term}
                if pr.phase == "Running" and pr.ready_since:
                    pr.ready_since = _now()
                await self._report(pr)
                return rc == 0
            delay = self.next_backoff(cr)
            cr.last_terminated = term
            cr.state = {"waiting": {"reason": "CrashLoopBackOff",
                                    "message": f"back-off {delay:g}s restarting failed container={cr.c.name}"}}
            self._ready_changed(pr)
            await self._report(pr)
            self._event(pr, "BackOff", f"Back-off restarting failed container {cr.c.name} in pod "
                                       f"{pr.spec.name}_{pr.spec.namespace}({pr.spec.uid})", cr, "Warning")
            await self.sleep(delay)
            if self.runs.get(key) is not pr:
                return False  # deleted while backing off
            cr.restart_count += 1
            log.info("pod %s: restarting %s (restart %d) after %.1f s", key, cr.c.name, cr.restart_count, delay)

    @staticmethod
    def _readiness(cr: ContainerRun):
        return cr.c.readiness or images.implicit_readiness(cr.c)

    def _ready_changed(self, pr: PodRun) -> None:
        pr.ready_since = _now()

    async def _probe(self, pr: PodRun, cr: ContainerRun) -> None:
        """Startup, then liveness and readiness, for one running container instance."""
        proc, c = cr.proc, cr.c
        ip = pr.sb.ips[0] if pr.sb.ips else "127.0.0.1"

        if c.startup is not None:
            p = c.startup
            st = probes.ProbeState(p, result=False)
            if p.initial_delay:
                await asyncio.sleep(p.initial_delay)
            while proc.returncode is None and st.failures < p.failure_threshold and not st.result:
                outcome = await probes.attempt(p, c.port_number(p.port), ip, proc.pid)
                self._probe_event(pr, cr, "Startup", outcome)
                st.record(outcome.passed)
                if not st.result and st.failures < p.failure_threshold:
                    await asyncio.sleep(p.period)
            if proc.returncode is not None:
                return
            if not st.result:
                log.warning("pod %s: container %s failed its startup probe; killing it", pr.spec.key, c.name)
                self._event(pr, "Killing", f"Container {c.name} failed startup probe, will be restarted", cr)
                await stop_process(proc)
                return
            cr.started = True
            if self._readiness(cr) is None:
                cr.ready = True
                self._ready_changed(pr)
            await self._report(pr)
        tasks = []
        if c.liveness is not None:
            tasks.append(asyncio.create_task(self._liveness(pr, cr, ip)))
        readiness = self._readiness(cr)
        if readiness is not None:
            tasks.append(asyncio.create_task(self._readiness_loop(pr, cr, readiness, ip)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _liveness(self, pr: PodRun, cr: ContainerRun, ip: str) -> None:
        p, proc = cr.c.liveness, cr.proc
        assert p is not None
        state = probes.ProbeState(p, result=True)
        if p.initial_delay:
            await asyncio.sleep(p.initial_delay)
        while proc.returncode is None:
            outcome = await probes.attempt(p, cr.c.port_number(p.port), ip, proc.pid)
            if proc.returncode is not None:
                return
            self._probe_event(pr, cr, "Liveness", outcome)
            if state.record(outcome.passed) and not state.result:
                log.warning("pod %s: container %s failed its liveness probe; killing it", pr.spec.key, cr.c.name)
                self._event(pr, "Killing", f"Container {cr.c.name} failed liveness probe, will be restarted", cr)
                await stop_process(proc)
                return
            await asyncio.sleep(p.period)

    async def _readiness_loop(self, pr: PodRun, cr: ContainerRun, p: podspec.Probe, ip: str) -> None:
        proc = cr.proc
        state = probes.ProbeState(p, result=False)
        if p.initial_delay:
            await asyncio.sleep(p.initial_delay)
        passed_once = False
        while proc.returncode is None:
            outcome = await probes.attempt(p, cr.c.port_number(p.port), ip, proc.pid)
            passed = outcome.passed
            if passed_once and proc.returncode is None:
                self._probe_event(pr, cr, "Readiness", outcome)
            passed_once = passed_once or passed
            if state.record(passed) and proc.returncode is None:
                cr.ready = state.result
                self._ready_changed(pr)
                await self._report(pr)
            await asyncio.sleep(FAST_PROBE if not passed_once else p.period)

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
        """Undo the sandbox (containers, CNI DEL, netns, files), forget the pod."""
        sb = self.pods.pop(key, None)
        pr = self.runs.pop(key, None)
        if sb is None:
            return
        if pr is not None and pr.task is not None and pr.task is not asyncio.current_task():
            pr.task.cancel()  # also cancels a restart waiting in back-off
            try:
                await pr.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        grace = pr.spec.grace_period if pr is not None else 2.0
        if pr is not None:
            for cr in pr.runs.values():
                if cr.proc is not None and cr.proc.returncode is None:
                    self._event(pr, "Killing", f"Stopping container {cr.c.name}", cr)
            self.events.forget(pr.spec.uid)
        for problem in await sb.destroy(grace):
            log.warning("pod %s: %s", key, problem)
        (self.state_dir / f"{self._record_name(sb)}.json").unlink(missing_ok=True)
        podlogs.remove_pod(self.log_root, *sb.namespace_name, sb.uid)
        if sb.netns is not None:
            self.used_index.discard(int(sb.netns.rsplit("-p", 1)[1]))
        log.info("pod %s stopped (netns %s removed)", key, sb.netns or "<node>")

    @staticmethod
    def _record_name(sb: Sandbox) -> str:
        return sb.netns or f"host-{sb.uid or sb.key.replace('/', '_')}"

    def _save(self, sb: Sandbox) -> None:
        """The pod's record; a hostNetwork pod's ``netns`` is the node's own (``hostNetwork``: true)."""
        rec = sb.record()
        if sb.netns is None:
            rec.update(netns=self.node_netns, hostNetwork=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{self._record_name(sb)}.json").write_text(json.dumps(rec))

    # ------------------------------------------------------------------ reconcile

    def sandbox_retry_delay(self, failures: int) -> float:
        """Seconds before another attempt after ``failures`` failed sandbox creations in a row:
        1 s doubling to 30 s (kubelet's pod workers retry a failed sync with back-off too)."""
        return min(self.sandbox_backoff_base * 2 ** (failures - 1), self.sandbox_backoff_max)

    async def _pod_worker(self, key: str) -> None:
        """Converge one pod to what the API last said; returns when they agree.

        A sandbox that cannot be made (CNI ADD fails, ...) is torn down again, recorded as a
        FailedCreatePodSandBox Event, the pod stays Pending with the error as its message, and the
        worker retries after :meth:`sandbox_retry_delay`, as kubelet does: never a Failed pod for a
        transient error (which a ReplicaSet would replace at once) and never a leaked netns.
        """
        failures = 0
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
                    failures = 0
                except Exception as e:  # noqa: BLE001 - one bad pod must not stop the node
                    failures += 1
                    delay = self.sandbox_retry_delay(failures)
                    log.error("pod %s: failed to create the pod sandbox (retry in %.1f s): %s", key, delay, e)
                    await self.stop_pod(key)  # CNI DEL, netns, files: a failed attempt leaves nothing behind
                    ns, name = key.split("/", 1)
                    self.events.record({"namespace": ns, "name": name, "uid": want["metadata"].get("uid", "")},
                                       "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}"[:1000],
                                       type_="Warning")
                    try:
                        await self._patch_status(ns, name, {"phase": "Pending", "message": str(e)[:500]})
                    except (ApiError, *TRANSPORT_ERRORS):
                        pass
                    await self.sleep(delay)
        finally:
            self.tasks.pop(key, None)

    def observe(self, pod: dict[str, Any] | None, key: str) -> None:
        """Record the wanted state of pod ``key`` (None: gone) and make sure one worker task
        converges it; a worker already running for ``key`` picks up the new state."""
        if pod is None:
            self.wanted.pop(key, None)
        else:
            self.wanted[key] = pod
        if key not in self.tasks:
            self.tasks[key] = asyncio.create_task(self._pod_worker(key))

    def _mine(self, pod: Mapping[str, Any]) -> bool:
        """Bound to this node (the field selector already says so; a server that ignored it
        must not make this kubelet run another node's pods)."""
        return (pod.get("spec") or {}).get("nodeName") == self.node

    async def sync_once(self) -> None:
        """One finite step: list this node's Pods into the informer (its handlers call
        :meth:`observe`), then wait until every pod worker has converged."""
        assert self.informer is not None
        items, rv = await self.client.list(r.PODS, field_selector=f"spec.nodeName={self.node}")
        await self.informer.replace(items, rv)
        while self.tasks:
            await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)

    async def run(self) -> None:
        """List and watch this node's Pods forever (the informer's loop)."""
        assert self.informer is not None
        await self.informer.run()

    async def shutdown(self) -> None:
        """Stop watching. Like a real kubelet, leave running pods alone (``lab down`` removes them)."""
        for t in list(self.tasks.values()):
            t.cancel()
        await self.events.drain(timeout=1.0)


async def _amain(a: argparse.Namespace) -> None:
    client = ApiClient.from_flags(master=a.master, kubeconfig=a.kubeconfig)
    k = Kubelet(client, a.node, a.node_ip, lab=a.lab, run_dir=Path(a.run_dir),
                cni_bin_dir=a.cni_bin_dir, cni_conf_dir=a.cni_conf_dir, cluster_dns=a.cluster_dns,
                backoff_base=a.crashloop_backoff_base, backoff_max=a.crashloop_backoff_max,
                root_dir=Path(a.root_dir) if a.root_dir else None,
                ca_file=Path(a.ca_file) if a.ca_file else None,
                sa_token_dir=Path(a.sa_token_dir) if a.sa_token_dir else None, api_url=a.master,
                image_dir=Path(a.image_dir) if a.image_dir else None, node_netns=a.netns,
                cni_node_view=a.cni_node_view,
                podman_store=PodmanStore(a.podman_root, a.podman_runroot) if a.runtime == "podman" else None)
    stop = hostloop.stop_on_signals()
    for _ in range(100):
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
    ap.add_argument("--root-dir", help="the node's own root for hostPath volumes (default <run-dir>/nodes/<node>/root)")
    ap.add_argument("--ca-file", help="ca.crt of service-account volumes (the lab CA); default: the kubeconfig's CA "
                                      "file when it names one")
    ap.add_argument("--sa-token-dir", help="service-account tokens <ns>_<sa>.token, used where the API server "
                                           "does not serve TokenRequest")
    ap.add_argument("--image-dir", help="files podnet's image has and the host lacks (usr/lib/podnet/...), laid "
                                        "over the host's / for containers of localhost/podnet:*")
    ap.add_argument("--cni-node-view", action="store_true",
                    help="exec CNI plugins seeing the node's hostPath directories at their host paths "
                         "(for a CNI that a DaemonSet installs; pass --cni-bin-dir/--cni-conf-dir under --root-dir)")
    ap.add_argument("--runtime", choices=("lab", "podman"), default="lab",
                    help="lab: every container through the in-process launcher over the host's files; podman: "
                         "containers of podnet's image run by podman from that image")
    ap.add_argument("--podman-root", help="podman's --root (the store holding podnet's image); default podman's own")
    ap.add_argument("--podman-runroot", help="podman's --runroot; default podman's own")
    ap.add_argument("--crashloop-backoff-base", type=float, default=10.0,
                    help="first crash-loop back-off in seconds (kubelet: 10)")
    ap.add_argument("--crashloop-backoff-max", type=float, default=300.0,
                    help="longest crash-loop back-off in seconds (kubelet: 300)")
    a = ap.parse_args(argv)
    if not a.ca_file and a.kubeconfig:
        guess = Path(a.kubeconfig).with_name("ca.crt")
        a.ca_file = str(guess) if guess.is_file() else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.netns:
        from podnet.host.nsenter import enter
        enter(a.netns)
    hostloop.run(_amain(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
