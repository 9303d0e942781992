"""The ReplicaSet controller as a pure function: (ReplicaSet, its Pods, now) -> actions.

Follows kube-controller-manager's pkg/controller/replicaset/replica_set.go:

- the pods a ReplicaSet owns are those whose controller ownerReference carries its uid; of those,
  the active ones (not Succeeded/Failed, not being deleted: ``controller.FilterActivePods``) count;
- fewer active pods than ``spec.replicas``: create the difference from the template
  (``generateName: <rs>-``, the template's labels, which carry ``pod-template-hash`` for a
  Deployment's ReplicaSet, the ReplicaSet as controller), each with a ``SuccessfulCreate`` event
  ("Created pod: NAME"); upstream creates in slow-start batches against a lagging cache, the lab's
  store is never stale, so all are created at once;
- more: delete the surplus, ranked as ``getPodsToDelete`` ranks them (controller.ActivePods):
  unassigned before assigned, Pending before Unknown before Running, not ready before ready, ready
  for less time before longer, more restarts before fewer, newer before older; each with a
  ``SuccessfulDelete`` event ("Deleted pod: NAME");
- status (``calculateStatus``): replicas (active pods), fullyLabeledReplicas (those carrying every
  template label), readyReplicas, availableReplicas (ready for ``minReadySeconds``),
  observedGeneration; a pod ready but not yet available asks for a :class:`Requeue`.

Adoption of orphans and release of pods whose labels stop matching (the ControllerRefManager) happen
before this function runs (:func:`~.workloads.claims`, applied by :mod:`.appcontrollers`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver.workloads import (
    Action, Create, Delete, EventSpec, Requeue, Update, generation, involved, is_active, pod_available, pod_ready,
    pod_from_template, ready_since,
)

__all__ = ["reconcile_replicaset", "deletion_order", "replicaset_status", "COMPONENT"]

COMPONENT = "replicaset-controller"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _rank(pod: Mapping[str, Any]) -> tuple:
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod["metadata"]
    ready = pod_ready(pod)
    since = ready_since(pod) if ready else None
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ()
                   if isinstance(c, dict))
    return (
        bool(spec.get("nodeName")),                     # unassigned first
        _PHASE_RANK.get(status.get("phase") or "Pending", 0),
        ready,                                          # not ready first
        -(since or 0.0) if ready else 0.0,              # ready for less time first
        -restarts,                                      # more restarts first
        _neg_text(meta.get("creationTimestamp") or ""),  # newer first
        meta["name"],
    )


def _neg_text(s: str) -> tuple[int, ...]:
    """A sort key ordering RFC 3339 times newest first."""
    return tuple(-ord(c) for c in s)


def deletion_order(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods in the order a scale-down deletes them."""
    return sorted(pods, key=_rank)


def _owned(rs: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    uid = rs["metadata"].get("uid")
    return [p for p in pods if any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid
                                   for r in p["metadata"].get("ownerReferences") or ())]


def replicaset_status(rs: Mapping[str, Any], active: list[Mapping[str, Any]], now: float) -> dict[str, Any]:
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    status = dict(rs.get("status") or {})
    status.update({
        "replicas": len(active),
        "fullyLabeledReplicas": sum(1 for p in active if all(
            (p["metadata"].get("labels") or {}).get(k) == v for k, v in template_labels.items())),
        "readyReplicas": sum(1 for p in active if pod_ready(p)),
        "availableReplicas": sum(1 for p in active if pod_available(p, min_ready, now)),
        "observedGeneration": generation(rs),
    })
    for zero_omitted in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
        if not status[zero_omitted]:
            del status[zero_omitted]  # omitempty, as kube-apiserver serialises them
    return status


def reconcile_replicaset(rs: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: float) -> list[Action]:
    meta, spec = rs["metadata"], rs.get("spec") or {}
    ns, name = meta.get("namespace", "default"), meta["name"]
    if meta.get("deletionTimestamp"):
        return []
    active = [p for p in _owned(rs, pods) if is_active(p)]
    want = spec.get("replicas", 1)
    want = want if isinstance(want, int) and not isinstance(want, bool) and want >= 0 else 1
    actions: list[Action] = []
    ref = involved(rs)
    if len(active) < want:
        template = spec.get("template") or {}
        for _ in range(want - len(active)):
            actions.append(Create("pods", pod_from_template(rs, template),
                                  EventSpec(ref, "SuccessfulCreate", "Created pod: {name}", COMPONENT)))
    elif len(active) > want:
        for p in deletion_order(active)[: len(active) - want]:
            actions.append(Delete("pods", ns, p["metadata"]["name"], p["metadata"].get("uid", ""),
                                  EventSpec(ref, "SuccessfulDelete", "Deleted pod: {name}", COMPONENT)))
    status = replicaset_status(rs, active, now)
    if status != (rs.get("status") or {}):
        actions.append(Update("replicasets", ns, name, status=status))
    min_ready = int(spec.get("minReadySeconds") or 0)
    waits = [since + min_ready - now for p in active if (since := ready_since(p)) is not None
             and since + min_ready > now]
    if min_ready > 0 and waits:
        actions.append(Requeue("replicasets", ns, name, max(0.0, min(waits)) + 0.01))
    return actions
