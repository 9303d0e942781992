"""The lab's scheduler: binds Pods without ``spec.nodeName`` to a Node (kube-scheduler's part).

A post-commit hook on the :class:`~podnet.netlab.apiserver.apistore.Store`, like the
controllers in :mod:`podnet.netlab.apiserver.controllers`. Guarantees:

- only Pods with no ``spec.nodeName``, not being deleted, and whose
  ``spec.schedulerName`` is empty or ``default-scheduler`` are bound; a Pod is
  bound at most once (a bound Pod is never moved);
- a Node is feasible when it is not being deleted, not ``spec.unschedulable``,
  not marked NotReady, has a pod CIDR (the network can place the Pod), its
  labels match the Pod's ``spec.nodeSelector`` and its required node affinity, and
  the Pod tolerates every NoSchedule/NoExecute taint of the Node (:mod:`.nodematch`); among feasible Nodes the one
  with the fewest bound, unfinished Pods wins, ties broken by name, so the
  outcome is deterministic;
- each binding records kube-scheduler's Event (reason ``Scheduled``, ``Successfully assigned
  <namespace>/<pod> to <node>``, from ``default-scheduler``);
- a Pod with no feasible Node stays Pending with a ``PodScheduled=False``
  condition (reason ``Unschedulable``) and is retried whenever a Node is added
  or changes, as kube-scheduler requeues on Node events.

Not modelled: resources, preferred affinity, pod (anti-)affinity, topology spread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from podnet.netlab.apiserver.apistore import Event, Store
from podnet.netlab.apiserver.nodematch import affinity_matches, untolerated_taint
from podnet.netlab.apiserver.workloads import EventSpec

__all__ = ["PodScheduler", "choose_node"]

log = logging.getLogger("podnet.netlab.apiserver.scheduler")

DEFAULT_SCHEDULER = "default-scheduler"


def _ready(node: dict[str, Any]) -> bool:
    for c in (node.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") != "False"
    return True  # no condition reported: the lab's nodes do not heartbeat


def feasible(node: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether ``pod`` may run on ``node`` (see the module docstring)."""
    spec = node.get("spec") or {}
    if node["metadata"].get("deletionTimestamp") or spec.get("unschedulable") or not spec.get("podCIDR"):
        return False
    if not _ready(node):
        return False
    labels = node["metadata"].get("labels") or {}
    pod_spec = pod.get("spec") or {}
    wanted = pod_spec.get("nodeSelector") or {}
    if not all(labels.get(k) == v for k, v in wanted.items()):
        return False
    return affinity_matches(node, pod_spec) and untolerated_taint(node, pod_spec.get("tolerations") or ()) is None


def choose_node(pod: dict[str, Any], nodes: list[dict[str, Any]], load: dict[str, int]) -> str | None:
    """The feasible node with the fewest pods (``load``), ties by name; None when none is feasible."""
    names = [n["metadata"]["name"] for n in nodes if feasible(n, pod)]
    return min(names, key=lambda name: (load.get(name, 0), name), default=None)


def _pending(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and not pod["metadata"].get("deletionTimestamp")
            and spec.get("schedulerName", DEFAULT_SCHEDULER) in ("", DEFAULT_SCHEDULER))


class PodScheduler:
    """Binds pending Pods as they are created, and retries them on Node events."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.record: Callable[[EventSpec, str], None] | None = None
        """Where the ``Scheduled`` Event of each binding goes (the server's event recorder)."""

    def resync(self) -> None:
        for pod in list(self.store.items("pods")):
            if _pending(pod):
                self._schedule(pod)

    def hook(self, ev: Event) -> None:
        if ev.plural == "pods" and ev.type == "ADDED" and _pending(ev.obj):
            self._schedule(ev.obj)
        elif ev.plural == "nodes" and ev.type != "DELETED":
            self.resync()

    def _load(self) -> dict[str, int]:
        load: dict[str, int] = {}
        for pod in self.store.items("pods"):
            node = (pod.get("spec") or {}).get("nodeName")
            if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                load[node] = load.get(node, 0) + 1
        return load

    def _schedule(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        current = self.store.get("pods", meta.get("namespace", "default"), meta["name"])
        if current is None or not _pending(current):
            return
        node = choose_node(current, list(self.store.items("nodes")), self._load())
        status = dict(current.get("status") or {})
        others = [c for c in status.get("conditions") or () if isinstance(c, dict) and c.get("type") != "PodScheduled"]
        if node is None:
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0 nodes are available: no node is ready, schedulable, has a pod CIDR, "
                               "matches the pod's nodeSelector and node affinity and has no taint it does "
                               "not tolerate"}
            status.setdefault("phase", "Pending")
            self.store.update("pods", {**current, "status": {**status, "conditions": [*others, cond]}})
            return
        status["conditions"] = [*others, {"type": "PodScheduled", "status": "True"}]
        self.store.update("pods", {**current, "spec": {**(current.get("spec") or {}), "nodeName": node},
                                   "status": status})
        ns = meta.get("namespace", "default")
        log.info("pod %s/%s: bound to %s", ns, meta["name"], node)
        if self.record is not None:
            involved = {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": meta["name"],
                        "uid": current["metadata"].get("uid", "")}
            self.record(EventSpec(involved, "Scheduled", f"Successfully assigned {ns}/{meta['name']} to {node}",
                                  "default-scheduler"), meta["name"])
