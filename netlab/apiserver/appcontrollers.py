"""The thin loop that runs the workload controllers inside the API server process.

:class:`WorkloadControllers` is a post-commit hook on the
:class:`~podnet.netlab.apiserver.apistore.Store`, like the controllers of :mod:`.controllers`.
Every event marks the objects it concerns as dirty (a Deployment, ReplicaSet or DaemonSet; the
ReplicaSet or DaemonSet controlling a Pod; the Deployment controlling a ReplicaSet; every DaemonSet
on a Node change; the ReplicaSets and DaemonSets of a namespace where a ServiceAccount appears, since
a pod create refused for want of it may now pass; the Endpoints of each Service selecting a Pod, and of
a changed Service); the dirty queue is then drained synchronously, each key reconciled by its pure controller
(:mod:`.replicasets`, :mod:`.deployments`, :mod:`.daemonsets`, :mod:`.endpoints`) from the store as
it is at that moment (after the workload claimed its dependents: orphans matching its selector adopted,
owned ones no longer matching released, as the ControllerRefManager does), and the returned actions
applied. Writes made while draining mark further keys
dirty, so a Deployment converges within the write that triggered it as far as it can without a
kubelet (new pods stay unready until someone marks them Ready). A drain stops after
:data:`MAX_RECONCILES` reconciles (a controller bug must not hang the server) and logs it.

Garbage collection: when a Deployment, ReplicaSet or DaemonSet is deleted, the ReplicaSets and Pods
whose ownerReferences name its uid are deleted right after it (background propagation, also when
Foreground is asked; a dependent deleted this way cascades in turn). Pods are deleted at once, without
a grace period. A delete with ``propagationPolicy: Orphan`` first removes the owner from its
dependents' ownerReferences (:func:`orphan_dependents`, what the garbage collector's orphan
finalizer does), so they stay.

Events: the controllers' events (SuccessfulCreate, FailedCreate with the refused create's message,
SuccessfulDelete, ScalingReplicaSet) are stored as core/v1 Events named ``<object>.<hex nanoseconds>``,
as client-go's recorder names them, with ``source.component`` and ``reportingComponent`` the
controller's name; the oldest beyond ``max_events`` are deleted (kube-apiserver expires them after an
hour instead).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import time
from collections import deque
from typing import Any, Callable

from podnet.kube.objects import format_rfc3339_nano
from podnet.netlab.apiserver.apistore import Event, Store, StatusError, rfc3339
from podnet.netlab.apiserver.daemonsets import reconcile_daemonset
from podnet.netlab.apiserver.deployments import reconcile_deployment
from podnet.netlab.apiserver.endpoints import desired_endpoints
from podnet.netlab.apiserver.endpointslices import TRIGGER_TIME_ANNOTATION, TriggerTimeTracker, selector_matches
from podnet.netlab.apiserver.replicasets import reconcile_replicaset
from podnet.netlab.apiserver.workloads import (
    Action, Adopt, Create, Delete, EventSpec, Release, Requeue, Update, claims, controller_of,
)
from podnet.netlab.apiserver.workloads import selector_matches as workload_selects

__all__ = ["WorkloadControllers", "MAX_RECONCILES", "orphan_dependents"]

log = logging.getLogger("podnet.netlab.apiserver.appcontrollers")

MAX_RECONCILES = 20_000
RESYNC_PASSES = 10
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_OWNER_KINDS = {"deployments", "replicasets", "daemonsets"}
_CONTROLLED = {"ReplicaSet": "replicasets", "DaemonSet": "daemonsets", "Deployment": "deployments"}

Key = tuple[str, str, str]  # (what, namespace, name); what: a workload plural or "endpoints"


def _pod_view(pod: dict[str, Any] | None) -> tuple:
    """What the workload and Endpoints controllers read of a pod: a change elsewhere (a container's
    state, a kubelet heartbeat of the same condition) reconciles nothing."""
    if pod is None:
        return ()
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ready = next(((c.get("status"), c.get("lastTransitionTime")) for c in status.get("conditions") or ()
                  if isinstance(c, dict) and c.get("type") == "Ready"), None)
    return (meta.get("labels"), meta.get("ownerReferences"), meta.get("deletionTimestamp"), spec.get("nodeName"),
            spec.get("hostname"), spec.get("subdomain"), spec.get("containers"), status.get("phase"),
            status.get("podIP"), status.get("podIPs"), ready)


class WorkloadControllers:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time, max_events: int = 1000) -> None:
        self.store = store
        self._clock = clock
        self._dirty: dict[Key, None] = {}
        self._draining = False
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._events: deque[tuple[str, str]] = deque()
        self.max_events = max_events
        self.trigger_times = TriggerTimeTracker()
        self.reconciles = 0
        self.pod_admission: Callable[[dict[str, Any]], None] | None = None
        """Mutating admission every Pod a controller creates passes (the server's ServiceAccount plugin)."""

    # ------------------------------------------------------------------ triggers

    def resync(self) -> None:
        """Converge everything stored (startup): every workload, every Service's Endpoints, orphans.

        It may run before :meth:`hook` is installed, so its own writes mark nothing: it passes over
        everything again until a pass writes nothing (at most :data:`RESYNC_PASSES` passes)."""
        self._collect_orphans()
        for _ in range(RESYNC_PASSES):
            rv = self.store.rv
            for plural in ("deployments", "replicasets", "daemonsets"):
                for obj in self.store.items(plural):
                    self._mark(plural, obj)
            for svc in self.store.items("services"):
                self._mark("endpoints", svc)
            self._drain()
            if self.store.rv == rv:
                return

    def hook(self, ev: Event) -> None:
        if ev.plural in _OWNER_KINDS:
            if ev.type == "DELETED":
                self._collect(ev.obj)
            else:
                self._mark(ev.plural, ev.obj)
            if ev.plural == "replicasets":
                for obj in (ev.old, ev.obj):
                    self._mark_controller(obj)
                self._mark_claimers(("deployments",), ev)
        elif ev.plural == "pods":
            if ev.type == "MODIFIED" and _pod_view(ev.old) == _pod_view(ev.obj):
                return  # nothing any of these controllers reads changed
            for obj in (ev.old, ev.obj):
                self._mark_controller(obj)
            self._mark_claimers(("replicasets", "daemonsets"), ev)
            ns = ev.obj["metadata"].get("namespace", "")
            before = ((ev.old or {}).get("metadata") or {}).get("labels")
            now = ev.obj["metadata"].get("labels")
            for svc in self.store.items("services", ns):
                sel = (svc.get("spec") or {}).get("selector")
                if selector_matches(sel, now) or selector_matches(sel, before):
                    self._mark("endpoints", svc)
        elif ev.plural == "nodes":
            for ds in self.store.items("daemonsets"):
                self._mark("daemonsets", ds)
        elif ev.plural == "serviceaccounts" and ev.type == "ADDED":
            # a pod create refused for want of this account can now pass
            ns = ev.obj["metadata"].get("namespace", "")
            for plural in ("replicasets", "daemonsets"):
                for obj in self.store.items(plural, ns):
                    self._mark(plural, obj)
        elif ev.plural == "services":
            self._mark("endpoints", ev.obj)
            if ev.type == "DELETED":
                self.trigger_times.forget(ev.obj["metadata"].get("namespace", ""), ev.obj["metadata"]["name"])
        elif ev.plural == "endpoints" and not self._draining:
            # someone else wrote or deleted one: put it back if its Service has a selector (ours)
            meta = ev.obj["metadata"]
            svc = self.store.get("services", meta.get("namespace", ""), meta["name"])
            if svc is None or not (svc.get("spec") or {}).get("selector"):
                return
            self._mark("endpoints", ev.obj)
        else:
            return
        self._drain()

    def _mark(self, what: str, obj: dict[str, Any] | None) -> None:
        if obj is not None:
            self._dirty[(what, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = None

    def _mark_controller(self, obj: dict[str, Any] | None) -> None:
        ref = controller_of(obj) if obj is not None else None
        if ref is not None and ref.get("kind") in _CONTROLLED and ref.get("name"):
            self._dirty[(_CONTROLLED[ref["kind"]], obj["metadata"].get("namespace", ""), ref["name"])] = None

    def _mark_claimers(self, plurals: tuple[str, ...], ev: Event) -> None:
        """An orphan appeared or changed: the workloads whose selector matches it may adopt it."""
        if ev.type == "DELETED" or controller_of(ev.obj) is not None:
            return
        labels = ev.obj["metadata"].get("labels")
        for plural in plurals:
            for owner in self.store.items(plural, ev.obj["metadata"].get("namespace", "")):
                if workload_selects((owner.get("spec") or {}).get("selector"), labels):
                    self._mark(plural, owner)

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            n = 0
            while self._dirty:
                key = next(iter(self._dirty))
                del self._dirty[key]
                n += 1
                if n > MAX_RECONCILES:
                    log.error("workload controllers did not converge after %d reconciles; dropping %d keys",
                              MAX_RECONCILES, len(self._dirty) + 1)
                    self._dirty.clear()
                    break
                try:
                    self._reconcile(key)
                except Exception:  # a controller bug must not break the write that triggered it
                    log.exception("reconcile of %s %s/%s failed", *key)
        finally:
            self._draining = False

    # ------------------------------------------------------------------ reconcile

    def _reconcile(self, key: Key) -> None:
        what, ns, name = key
        self.reconciles += 1
        now = self._clock()
        if what == "endpoints":
            self._sync_endpoints(ns, name)
            return
        obj = self.store.get(what, ns, name)
        if obj is None:
            return
        dependents = "replicasets" if what == "deployments" else "pods"
        for a in claims(obj, dependents, list(self.store.items(dependents, ns)), active_only=what == "replicasets"):
            self._apply(a)
        pods = list(self.store.items("pods", ns))
        if what == "replicasets":
            actions = reconcile_replicaset(obj, pods, now)
        elif what == "deployments":
            uid = obj["metadata"].get("uid")
            all_rs = list(self.store.items("replicasets", ns))
            owned = [r for r in all_rs if (controller_of(r) or {}).get("uid") == uid]
            actions = reconcile_deployment(obj, owned, pods, {r["metadata"]["name"] for r in all_rs}, rfc3339(now))
        else:
            actions = reconcile_daemonset(obj, pods, list(self.store.items("nodes")), now)
        for a in actions:
            self._apply(a)

    def _sync_endpoints(self, ns: str, name: str) -> None:
        svc = self.store.get("services", ns, name)
        current = self.store.get("endpoints", ns, name)
        if svc is None:
            if current is not None:
                self.store.delete("endpoints", ns, name)
            return
        pods = list(self.store.items("pods", ns))
        want = desired_endpoints(svc, pods)
        if want is None:
            return
        selector = (svc.get("spec") or {}).get("selector")
        trigger = self.trigger_times.compute(
            svc, [p for p in pods if selector_matches(selector, p["metadata"].get("labels"))])
        if current is not None and current.get("subsets") == want.get("subsets") and (
                current["metadata"].get("labels") == want["metadata"]["labels"]):
            return
        annotations = {k: v for k, v in ((current or {}).get("metadata", {}).get("annotations") or {}).items()
                       if k != TRIGGER_TIME_ANNOTATION}
        if trigger:
            annotations[TRIGGER_TIME_ANNOTATION] = format_rfc3339_nano(trigger)
        meta = {**((current or {}).get("metadata") or {}), **want["metadata"]}
        if annotations:
            meta["annotations"] = annotations
        else:
            meta.pop("annotations", None)
        body = {**want, "metadata": meta}
        if current is None:
            self.store.create("endpoints", body)
        else:
            self.store.update("endpoints", body)

    # ------------------------------------------------------------------ side effects

    def _apply(self, a: Action) -> None:
        if isinstance(a, Create):
            obj = copy.deepcopy(dict(a.obj)) if a.plural == "pods" and self.pod_admission else dict(a.obj)
            meta = obj["metadata"] = dict(obj["metadata"])
            try:
                if a.plural == "pods" and self.pod_admission is not None:
                    self.pod_admission(obj)  # before the name is generated, as kube-apiserver admits
                if not meta.get("name"):
                    meta["name"] = self._free_name(a.plural, meta.get("namespace", ""), meta.pop("generateName", ""))
                created = self.store.create(a.plural, obj)
            except StatusError as e:
                log.warning("create %s %s/%s: %s", a.plural, meta.get("namespace", ""),
                            meta.get("name") or meta.get("generateName", ""), e.message)
                if a.event is not None:
                    self._record(EventSpec(a.event.involved, "FailedCreate", f"Error creating: {e.message}",
                                           a.event.component, "Warning"), "")
                return
            self._record(a.event, created["metadata"]["name"])
        elif isinstance(a, Delete):
            current = self.store.get(a.plural, a.namespace, a.name)
            if current is None or (a.uid and current["metadata"].get("uid") != a.uid):
                return
            self.store.delete(a.plural, a.namespace, a.name)
            self._record(a.event, a.name)
        elif isinstance(a, Update):
            current = self.store.get(a.plural, a.namespace, a.name)
            if current is None:
                return
            new = dict(current)
            if a.spec is not None:
                new["spec"] = {**(current.get("spec") or {}), **a.spec}
            if a.annotations is not None:
                ann = dict(current["metadata"].get("annotations") or {})
                for k, v in a.annotations.items():
                    if v is None:
                        ann.pop(k, None)
                    else:
                        ann[k] = v
                new["metadata"] = {**current["metadata"], "annotations": ann}
            if a.status is not None:
                new["status"] = dict(a.status)
            if self.store.update(a.plural, new) is not current:
                self._record(a.event, a.name)
        elif isinstance(a, Requeue):
            self._requeue_later((a.plural, a.namespace, a.name), a.after)
        elif isinstance(a, (Adopt, Release)):
            current = self.store.get(a.plural, a.namespace, a.name)
            if current is None or current["metadata"].get("uid") != a.uid:
                return
            refs = [r for r in current["metadata"].get("ownerReferences") or ()
                    if not (isinstance(r, dict) and r.get("uid") == (a.owner_uid if isinstance(a, Release)
                                                                     else a.owner.get("uid")))]
            if isinstance(a, Adopt):
                if controller_of(current) is not None:
                    return  # someone else adopted it meanwhile
                refs.append(dict(a.owner))
            meta = {**current["metadata"], "ownerReferences": refs}
            if not refs:
                del meta["ownerReferences"]
            self.store.update(a.plural, {**current, "metadata": meta})

    def _requeue_later(self, key: Key, after: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self._dirty[key] = None
            self._drain()

        self._timers[key] = loop.call_later(after, fire)

    def _free_name(self, plural: str, ns: str, prefix: str) -> str:
        while True:
            name = prefix[:58] + "".join(secrets.choice(_ALPHABET) for _ in range(5))
            if self.store.get(plural, ns, name) is None:
                return name

    def record(self, spec: EventSpec | None, name: str) -> None:
        """Store ``spec`` as a core/v1 Event (``{name}`` in its message replaced by ``name``); the oldest
        recorded Events go once more than ``max_events`` are kept."""
        self._record(spec, name)

    def _record(self, spec: EventSpec | None, name: str) -> None:
        if spec is None:
            return
        ref = dict(spec.involved)
        ns = ref.get("namespace") or "default"
        now = self._clock()
        stamp = rfc3339(now)
        ev_name = f"{ref['name']}.{time.time_ns():x}"
        while self.store.get("events", ns, ev_name) is not None:
            ev_name += "x"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": ev_name, "namespace": ns},
            "involvedObject": ref,
            "reason": spec.reason,
            "message": spec.message.replace("{name}", name),
            "source": {"component": spec.component},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1, "type": spec.type,
            "eventTime": None, "reportingComponent": spec.component, "reportingInstance": "",
        }
        if self.store.get("namespaces", "", ns) is None:
            return
        self.store.create("events", event)
        self._events.append((ns, ev_name))
        while len(self._events) > self.max_events:
            old_ns, old_name = self._events.popleft()
            if self.store.get("events", old_ns, old_name) is not None:
                self.store.delete("events", old_ns, old_name)

    # ------------------------------------------------------------------ garbage collection

    def _dependents(self, ns: str, uid: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for plural in ("replicasets", "pods"):
            for obj in self.store.items(plural, ns):
                refs = obj["metadata"].get("ownerReferences") or ()
                if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                    out.append((plural, obj))
        return out

    def _collect(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"].get("uid")
        if not uid:
            return
        for plural, obj in self._dependents(owner["metadata"].get("namespace", ""), uid):
            if self.store.get(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) is not None:
                self.store.delete(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def _collect_orphans(self) -> None:
        """Dependents whose controlling Deployment, ReplicaSet or DaemonSet is gone (a restart lost the event)."""
        uids = {o["metadata"].get("uid") for p in _OWNER_KINDS for o in self.store.items(p)}
        for plural in ("replicasets", "pods"):
            for obj in list(self.store.items(plural)):
                ref = controller_of(obj)
                if ref is not None and ref.get("kind") in _CONTROLLED and ref.get("uid") not in uids:
                    self.store.delete(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def orphan_dependents(store: Store, plural: str, owner: dict[str, Any]) -> int:
    """Remove ``owner`` (a Deployment, ReplicaSet or DaemonSet) from the ownerReferences of the
    ReplicaSets and Pods in its namespace; returns how many were released. The owner is first marked
    as being deleted, so its own controller stands down instead of replacing what it releases."""
    uid = owner["metadata"].get("uid")
    if not owner["metadata"].get("deletionTimestamp"):
        marked = {**owner["metadata"], "deletionTimestamp": rfc3339(time.time())}
        owner = store.update(plural, {**owner, "metadata": marked})
    released = 0
    for plural in ("replicasets", "pods"):
        for obj in list(store.items(plural, owner["metadata"].get("namespace", ""))):
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if not (isinstance(r, dict) and r.get("uid") == uid)]
            if uid and len(kept) != len(refs):
                meta = {**obj["metadata"], "ownerReferences": kept}
                if not kept:
                    del meta["ownerReferences"]
                store.update(plural, {**obj, "metadata": meta})
                released += 1
    return released
