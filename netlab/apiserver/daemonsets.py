"""The DaemonSet controller as a pure function: (DaemonSet, its Pods, Nodes, now) -> actions.

Follows kube-controller-manager's pkg/controller/daemon (daemon_controller.go, update.go), simplified:

- a Node should run the daemon pod (``NodeShouldRunDaemonPod``) unless it is being deleted, the
  template's ``nodeSelector`` or required node affinity (:mod:`.nodematch`) does not match it, or
  it has a NoSchedule/NoExecute taint that neither the template's tolerations nor the tolerations
  every daemon pod gets
  (node.kubernetes.io/not-ready and unreachable NoExecute; disk-pressure, memory-pressure,
  pid-pressure, unschedulable NoSchedule; network-unavailable NoSchedule for hostNetwork pods)
  tolerate. ``spec.unschedulable`` is therefore tolerated, as upstream;
- the pod is bound by setting ``spec.nodeName`` directly (no scheduler), labelled
  ``controller-revision-hash`` with the template's hash (:func:`~.workloads.template_hash`,
  standing in for the ControllerRevision upstream stores); a Node that should run it and has
  none gets one (SuccessfulCreate), failed pods are deleted (and replaced on the next pass),
  extra pods on a Node (oldest kept) and pods on Nodes that should not run them or no longer
  exist are deleted (SuccessfulDelete);
- RollingUpdate (``rollingUpdate``), maxSurge 0: old-hash pods that are not available go
  first, then available ones while fewer than maxUnavailable (int, or a percentage of the
  desired count rounded up; 0 and 0 mean 1) daemon pods are unavailable; a deleted pod is
  recreated from the new template on the next pass. maxSurge > 0 (a percentage rounded up): a new
  pod starts next to the old one on at most maxSurge nodes at a time (at once where the old pod is
  unavailable) and the old pod goes when the new one is available; maxUnavailable is then not
  used. OnDelete replaces nothing;
- status: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
  numberAvailable, numberUnavailable, updatedNumberScheduled, observedGeneration.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver.nodematch import affinity_matches, untolerated_taint
from podnet.netlab.apiserver.workloads import (
    Action, Create, Delete, EventSpec, Requeue, Update, generation, involved, is_active, pod_available,
    pod_from_template, pod_ready, ready_since, scaled_value, template_hash,
)

__all__ = ["reconcile_daemonset", "should_run", "HASH_LABEL", "COMPONENT"]

COMPONENT = "daemonset-controller"
HASH_LABEL = "controller-revision-hash"

_DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
_HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                            "effect": "NoSchedule"}


def should_run(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    """Whether a daemon pod with ``pod_spec`` belongs on ``node`` (see the module docstring)."""
    if node["metadata"].get("deletionTimestamp"):
        return False
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    if not affinity_matches(node, pod_spec):
        return False
    tolerations = [t for t in pod_spec.get("tolerations") or () if isinstance(t, dict)]
    tolerations += list(_DAEMON_TOLERATIONS)
    if pod_spec.get("hostNetwork"):
        tolerations.append(_HOST_NETWORK_TOLERATION)
    return untolerated_taint(node, tolerations) is None


def _age_key(p: Mapping[str, Any]) -> tuple[str, str]:
    return p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]


def reconcile_daemonset(ds: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]],
                        now: float) -> list[Action]:
    meta, spec = ds["metadata"], ds.get("spec") or {}
    ns, name = meta.get("namespace", "default"), meta["name"]
    if meta.get("deletionTimestamp"):
        return []
    uid = meta.get("uid")
    owned = [p for p in pods if any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid
                                    for r in p["metadata"].get("ownerReferences") or ())]
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    current_hash = template_hash(template, (ds.get("status") or {}).get("collisionCount"))
    min_ready = int(spec.get("minReadySeconds") or 0)
    ref = involved(ds)
    created = EventSpec(ref, "SuccessfulCreate", "Created pod: {name}", COMPONENT)
    deleted = EventSpec(ref, "SuccessfulDelete", "Deleted pod: {name}", COMPONENT)

    def delete(p: Mapping[str, Any]) -> Delete:
        return Delete("pods", ns, p["metadata"]["name"], p["metadata"].get("uid", ""), deleted)

    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for p in owned:
        if not p["metadata"].get("deletionTimestamp"):
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
    strategy = spec.get("updateStrategy") or {}
    rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
    ru = strategy.get("rollingUpdate") or {}

    def is_new(p: Mapping[str, Any]) -> bool:
        return (p["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash

    actions: list[Action] = []
    desired_nodes: list[str] = []
    node_names = set()
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        node_name = node["metadata"]["name"]
        node_names.add(node_name)
        here = sorted(by_node.get(node_name, []), key=_age_key)
        if not should_run(node, pod_spec):
            actions.extend(delete(p) for p in here)
            continue
        desired_nodes.append(node_name)
        failed = [p for p in here if (p.get("status") or {}).get("phase") == "Failed"]
        actions.extend(delete(p) for p in failed)
        alive = [p for p in here if p not in failed]
        if not alive:
            actions.append(Create("pods", pod_from_template(ds, template, extra_labels={HASH_LABEL: current_hash},
                                                            node_name=node_name), created))
        if rolling and ru.get("maxSurge") not in (None, 0, "0%"):
            # surging: at most the oldest new pod and the oldest old pod stay
            keep = [next((p for p in alive if is_new(p)), None), next((p for p in alive if not is_new(p)), None)]
            actions.extend(delete(p) for p in alive if p not in keep)
        else:
            actions.extend(delete(p) for p in alive[1:])
    for node_name, here in by_node.items():
        if node_name not in node_names:
            actions.extend(delete(p) for p in here)
    # status, from the pods as they are now
    on_desired = {n: sorted((p for p in by_node.get(n, []) if is_active(p)), key=_age_key) for n in desired_nodes}
    first = {n: ps[0] for n, ps in on_desired.items() if ps}
    desired = len(desired_nodes)
    available = sum(1 for p in first.values() if pod_available(p, min_ready, now))
    status = {
        **(ds.get("status") or {}),
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": len(first),
        "numberMisscheduled": sum(len(ps) for n, ps in by_node.items() if n not in on_desired),
        "numberReady": sum(1 for p in first.values() if pod_ready(p)),
        "numberAvailable": available,
        "numberUnavailable": desired - available,
        "updatedNumberScheduled": sum(1 for p in first.values()
                                      if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash),
        "observedGeneration": generation(ds),
    }
    for omit in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
        if not status[omit]:
            del status[omit]  # omitempty in apps/v1 DaemonSetStatus
    # rolling update: only when nothing else is in flight this pass
    if not actions and rolling:
        try:
            max_surge = scaled_value(ru.get("maxSurge", 0), desired, True)
            max_unavailable = scaled_value(ru.get("maxUnavailable", 1), desired, True)
        except ValueError:
            max_surge, max_unavailable = 0, 1
        if max_surge > 0:
            actions.extend(_surge(ds, template, on_desired, desired_nodes, is_new, max_surge, min_ready, now, delete,
                                  created, current_hash))
        else:
            max_unavailable = max_unavailable or 1
            unavailable = desired - available
            for n in desired_nodes:
                p = first.get(n)
                if p is None or is_new(p):
                    continue
                if not pod_available(p, min_ready, now):
                    actions.append(delete(p))
                elif unavailable < max_unavailable:
                    actions.append(delete(p))
                    unavailable += 1
    if status != (ds.get("status") or {}):
        actions.append(Update("daemonsets", ns, name, status=status))
    if min_ready > 0:
        waits = [s + min_ready - now for p in first.values() if (s := ready_since(p)) is not None
                 and s + min_ready > now]
        if waits:
            actions.append(Requeue("daemonsets", ns, name, min(waits) + 0.01))
    return actions


def _surge(ds: Mapping[str, Any], template: Mapping[str, Any], on_node: Mapping[str, list[Mapping[str, Any]]],
           nodes: list[str], is_new: Any, max_surge: int, min_ready: int, now: float, delete: Any,
           created: EventSpec, current_hash: str) -> list[Action]:
    """update.go rollingUpdate with maxSurge > 0: a new pod next to an old one, on at most maxSurge
    nodes at a time (at once where the old pod is unavailable); the old pod goes once the new one is
    available."""
    surging, candidates, replace_now, out = 0, [], [], []
    for n in nodes:
        pods = on_node.get(n) or []
        new = next((p for p in pods if is_new(p)), None)
        old = next((p for p in pods if not is_new(p)), None)
        if old is None:
            continue
        if new is None:
            if not pod_available(old, min_ready, now):
                replace_now.append(n)
            else:
                candidates.append(n)
        elif not pod_available(new, min_ready, now):
            surging += 1
        else:
            out.append(delete(old))
    room = max(0, min(max_surge - surging, len(candidates)))
    for n in replace_now + candidates[:room]:
        out.append(Create("pods", pod_from_template(ds, template, extra_labels={HASH_LABEL: current_hash},
                                                    node_name=n), created))
    return out
