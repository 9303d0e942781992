"""The Deployment controller as a pure function: (Deployment, its ReplicaSets, pods, now) -> actions.

Follows kube-controller-manager's pkg/controller/deployment (sync.go, rolling.go, recreate.go,
util/deployment_util.go). Each call takes one step and the driver calls again on every change
of the Deployment, its ReplicaSets or their pods, as the upstream sync loop does:

- the new ReplicaSet is the owned one whose template equals the Deployment's ignoring the
  ``pod-template-hash`` label (``EqualIgnoreHash``); the others are old. A missing new one is
  created as ``<deployment>-<hash>`` with ``pod-template-hash=<hash>`` added to its selector,
  labels and template labels (:func:`~.workloads.template_hash`: a stable hash, not upstream's
  spew hash); a name taken by another ReplicaSet bumps ``status.collisionCount``;
- revisions: the new ReplicaSet gets ``deployment.kubernetes.io/revision`` = 1 + the highest old
  revision (when it has less), and the Deployment the same annotation; the new ReplicaSet carries
  the Deployment's other annotations (``kubernetes.io/change-cause``...), not
  last-applied-configuration; ScalingReplicaSet events record every scale ("Scaled up replica set
  X from A to B"), with the ``deployment.kubernetes.io/desired-replicas`` and ``max-replicas``
  annotations;
- RollingUpdate: maxSurge rounded up and maxUnavailable rounded down from percentages of
  ``spec.replicas``, both 0 meaning maxUnavailable 1 (``ResolveFenceposts``); the new
  ReplicaSet grows to at most replicas + maxSurge pods in all (``NewRSNewReplicas``); old ones
  shrink first by their unhealthy pods, then while more than replicas - maxUnavailable pods are
  available (``reconcileOldReplicaSets``). A new ReplicaSet above ``spec.replicas`` is cut down
  to it. A change of ``spec.replicas`` (an active ReplicaSet's desired-replicas annotation differs:
  ``isScalingEvent``) is a scale, not a rollout step: several active ReplicaSets are resized in
  proportion (``scale``/``GetProportion``), as for a paused Deployment;
- Recreate: old ReplicaSets to 0, wait until none of their pods runs, then the new one to
  ``spec.replicas``;
- once complete (updated = replicas = available = spec.replicas, generation observed), old
  ReplicaSets at 0 beyond ``revisionHistoryLimit`` are deleted, lowest revision first;
- status (``calculateStatus``/``syncRolloutStatus``): observedGeneration, replicas,
  updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas (zeros omitted, as
  apps/v1 serialises them), collisionCount, the Available condition (MinimumReplicasAvailable
  when available >= replicas - maxUnavailable) and Progressing (NewReplicaSetCreated,
  ReplicaSetUpdated, then NewReplicaSetAvailable; ProgressDeadlineExceeded after
  ``progressDeadlineSeconds`` without progress, a :class:`~.workloads.Requeue` asking to look again
  then). A condition keeps its times while its status and reason stay (``SetDeploymentCondition``),
  except that progress refreshes Progressing's lastUpdateTime, as ``syncRolloutStatus`` does;
- a paused Deployment rolls nothing out, it only scales; Progressing is Unknown with
  DeploymentPaused, then DeploymentResumed (``checkPausedConditions``).
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver.workloads import (
    Action, Create, Delete, EventSpec, Requeue, Update, generation, involved, owner_ref, parse_time, scaled_value,
    template_hash,
)

__all__ = ["reconcile_deployment", "resolve_fenceposts", "new_rs_replicas", "REVISION", "HASH_LABEL", "COMPONENT",
           "equal_ignore_hash"]

COMPONENT = "deployment-controller"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
_NO_DEADLINE = 2 ** 31 - 1
"""progressDeadlineSeconds of math.MaxInt32: no deadline (HasProgressDeadline)."""
MAX = "deployment.kubernetes.io/max-replicas"


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _replicas(rs: Mapping[str, Any]) -> int:
    return _int((rs.get("spec") or {}).get("replicas"), 0)


def _st(rs: Mapping[str, Any], field: str) -> int:
    return _int((rs.get("status") or {}).get(field), 0)


def _revision(rs: Mapping[str, Any]) -> int:
    raw = (rs["metadata"].get("annotations") or {}).get(REVISION, "")
    return int(raw) if raw.isdigit() else 0


def _created(rs: Mapping[str, Any]) -> tuple[str, str]:
    return rs["metadata"].get("creationTimestamp") or "", rs["metadata"]["name"]


def _strip_hash(template: Mapping[str, Any] | None) -> dict[str, Any]:
    t = copy.deepcopy(dict(template or {}))
    meta = t.get("metadata")
    if isinstance(meta, dict):
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
        meta = {k: v for k, v in meta.items() if k not in ("labels", "creationTimestamp")}
        if labels:
            meta["labels"] = labels
        t["metadata"] = meta
        if not meta:
            del t["metadata"]
    return t


def equal_ignore_hash(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """deploymentutil.EqualIgnoreHash."""
    return _strip_hash(a) == _strip_hash(b)


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """deploymentutil.ResolveFenceposts: (surge, unavailable); ValueError for a bad value."""
    surge = scaled_value(0 if max_surge is None else max_surge, desired, True)
    unavailable = scaled_value(0 if max_unavailable is None else max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def new_rs_replicas(desired: int, surge: int, all_replicas: int, new_replicas: int) -> int:
    """deploymentutil.NewRSNewReplicas for RollingUpdate: ``all_replicas`` counts every ReplicaSet's
    spec.replicas (the new one's included)."""
    max_total = desired + surge
    if all_replicas >= max_total:
        return new_replicas
    return new_replicas + min(max_total - all_replicas, desired - new_replicas)


def _scale(d: Mapping[str, Any], rs: Mapping[str, Any], to: int, desired: int, surge: int) -> Update:
    was = _replicas(rs)
    verb = "up" if to > was else "down"
    meta = rs["metadata"]
    return Update("replicasets", meta.get("namespace", "default"), meta["name"], spec={"replicas": to},
                  annotations={DESIRED: str(desired), MAX: str(desired + surge)},
                  event=EventSpec(involved(d), "ScalingReplicaSet",
                                  f"Scaled {verb} replica set {meta['name']} from {was} to {to}", COMPONENT))


def _condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
               now: str) -> list[dict[str, Any]]:
    """deploymentutil.SetDeploymentCondition: unchanged when status and reason are the same."""
    current = next((c for c in conditions if c.get("type") == ctype), None)
    if current is not None and current.get("status") == status and current.get("reason") == reason:
        return conditions
    new = {"type": ctype, "status": status, "lastUpdateTime": now,
           "lastTransitionTime": current["lastTransitionTime"] if current is not None
           and current.get("status") == status and current.get("lastTransitionTime") else now,
           "reason": reason, "message": message}
    return [c for c in conditions if c.get("type") != ctype] + [new]


def _status(d: Mapping[str, Any], new_rs: Mapping[str, Any] | None, all_rss: list[Mapping[str, Any]],
            max_unavailable: int, now: str, created: str | None) -> dict[str, Any]:
    spec, old_status = d.get("spec") or {}, d.get("status") or {}
    desired = _int(spec.get("replicas"), 1)
    available = sum(_st(r, "availableReplicas") for r in all_rss)
    counts = {
        "observedGeneration": generation(d),
        "replicas": sum(_st(r, "replicas") for r in all_rss),
        "updatedReplicas": _st(new_rs, "replicas") if new_rs is not None else 0,
        "readyReplicas": sum(_st(r, "readyReplicas") for r in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, sum(_replicas(r) for r in all_rss) - available),
    }
    status: dict[str, Any] = {k: v for k, v in counts.items() if v}
    if "collisionCount" in old_status:
        status["collisionCount"] = old_status["collisionCount"]
    conditions = [dict(c) for c in old_status.get("conditions") or () if isinstance(c, dict)]
    if available >= desired - max_unavailable:
        conditions = _condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                                "Deployment has minimum availability.", now)
    else:
        conditions = _condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                                "Deployment does not have minimum availability.", now)
    complete = (counts["updatedReplicas"] == desired and counts["replicas"] == desired and available == desired
                and counts["observedGeneration"] >= generation(d))
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), {})
    if (d.get("spec") or {}).get("paused"):
        return {**status, "conditions": _condition(conditions, "Progressing", "Unknown", "DeploymentPaused",
                                                   "Deployment is paused", now)}
    if progressing.get("reason") == "DeploymentPaused":
        conditions = _condition(conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed",
                                now)
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), {})
    what = (f'ReplicaSet "{new_rs["metadata"]["name"]}"' if new_rs is not None
            else f'Deployment "{d["metadata"]["name"]}"')
    deadline = spec.get("progressDeadlineSeconds")
    settled = counts["replicas"] == counts["updatedReplicas"] and progressing.get("reason") == "NewReplicaSetAvailable"
    if created is not None:
        conditions = _condition(conditions, "Progressing", "True", "NewReplicaSetCreated",
                                f'Created new replica set "{created}"', now)
    elif isinstance(deadline, int) and deadline != _NO_DEADLINE and not settled:
        if complete:
            conditions = _condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                    f"{what} has successfully progressed.", now)
        elif _progressing(old_status, counts):  # progress refreshes lastUpdateTime, the deadline's start
            kept = progressing.get("lastTransitionTime") if progressing.get("status") == "True" else None
            conditions = [c for c in conditions if c.get("type") != "Progressing"] + [
                {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": kept or now,
                 "reason": "ReplicaSetUpdated", "message": f"{what} is progressing."}]
        elif _timed_out(progressing, deadline, now):
            conditions = _condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                                    f"{what} has timed out progressing.", now)
    if conditions:
        status["conditions"] = conditions
    return status


def _timed_out(progressing: Mapping[str, Any], deadline: int, now: str) -> bool:
    """deploymentutil.DeploymentTimedOut: no progress for ``progressDeadlineSeconds`` since the
    Progressing condition's lastUpdateTime."""
    if not progressing or progressing.get("reason") == "NewReplicaSetAvailable":
        return False
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return True
    since, at = parse_time(progressing.get("lastUpdateTime")), parse_time(now)
    return since is not None and at is not None and since + deadline < at


def _stuck_for(spec: Mapping[str, Any], status: Mapping[str, Any], now: str) -> float | None:
    """requeueStuckDeployment: seconds until the progress deadline of a rollout under way, if any."""
    deadline = spec.get("progressDeadlineSeconds")
    cond = next((c for c in status.get("conditions") or () if c.get("type") == "Progressing"), None)
    if not isinstance(deadline, int) or deadline == _NO_DEADLINE or cond is None or cond.get("reason") in (
            "NewReplicaSetAvailable", "ProgressDeadlineExceeded", "DeploymentPaused"):
        return None
    since, at = parse_time(cond.get("lastUpdateTime")), parse_time(now)
    if since is None or at is None:
        return None
    return max(0.0, since + deadline - at) + 1.0


def _progressing(old: Mapping[str, Any], new: Mapping[str, int]) -> bool:
    """deploymentutil.DeploymentProgressing."""
    old_old = _int(old.get("replicas")) - _int(old.get("updatedReplicas"))
    new_old = new["replicas"] - new["updatedReplicas"]
    return (new["updatedReplicas"] > _int(old.get("updatedReplicas")) or new_old < old_old
            or new["readyReplicas"] > _int(old.get("readyReplicas"))
            or new["availableReplicas"] > _int(old.get("availableReplicas")))


_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION,
               "deployment.kubernetes.io/revision-history",
               DESIRED, MAX, "deprecated.deployment.rollback.to"}


def _copied_annotations(d: Mapping[str, Any]) -> dict[str, str]:
    """The Deployment's annotations its new ReplicaSet carries (copyDeploymentAnnotationsToReplicaSet),
    such as ``kubernetes.io/change-cause`` for ``kubectl rollout history``."""
    return {k: v for k, v in (d["metadata"].get("annotations") or {}).items() if k not in _NOT_COPIED}


def _new_replicaset(d: Mapping[str, Any], pod_hash: str, revision: int, replicas: int, desired: int,
                    surge: int) -> dict[str, Any]:
    spec = d.get("spec") or {}
    template = copy.deepcopy(dict(spec.get("template") or {}))
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash}
    selector = copy.deepcopy(dict(spec.get("selector") or {}))
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    rs_spec: dict[str, Any] = {"replicas": replicas, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{d['metadata']['name']}-{pod_hash}",
                         "namespace": d["metadata"].get("namespace", "default"),
                         "labels": dict(tmeta["labels"]),
                         "annotations": {**_copied_annotations(d), REVISION: str(revision), DESIRED: str(desired),
                                         MAX: str(desired + surge)},
                         "ownerReferences": [owner_ref(d)]},
            "spec": rs_spec}


def _old_pods_running(old_rss: list[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> bool:
    """recreate.go oldPodsRunning: a pod of an old ReplicaSet that is not Succeeded/Failed."""
    uids = {r["metadata"].get("uid") for r in old_rss}
    for p in pods:
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if any(isinstance(ref, dict) and ref.get("controller") and ref.get("uid") in uids
               for ref in p["metadata"].get("ownerReferences") or ()):
            return True
    return False


def _cleanup(d: Mapping[str, Any], old_rss: list[Mapping[str, Any]]) -> list[Action]:
    """cleanupDeployment: old ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
    limit = (d.get("spec") or {}).get("revisionHistoryLimit")
    if not isinstance(limit, int):
        return []
    alive = [r for r in old_rss if not r["metadata"].get("deletionTimestamp")]
    diff = len(alive) - limit
    out: list[Action] = []
    for rs in sorted(alive, key=lambda r: (_revision(r), _created(r))):
        if len(out) >= diff:
            break
        if _st(rs, "replicas") or _replicas(rs) or generation(rs) > _st(rs, "observedGeneration"):
            continue
        out.append(Delete("replicasets", rs["metadata"].get("namespace", "default"), rs["metadata"]["name"],
                          rs["metadata"].get("uid", "")))
    return out


def reconcile_deployment(d: Mapping[str, Any], rss: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                         taken_names: set[str], now: str) -> list[Action]:
    """One sync of ``d``: ``rss`` are the ReplicaSets it controls, ``pods`` the namespace's pods,
    ``taken_names`` every ReplicaSet name in the namespace, ``now`` an RFC 3339 time for conditions."""
    meta, spec = d["metadata"], d.get("spec") or {}
    ns, name = meta.get("namespace", "default"), meta["name"]
    if meta.get("deletionTimestamp"):
        return []
    rss = sorted(rss, key=_created)
    pods = list(pods)
    desired = _int(spec.get("replicas"), 1)
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
    if rolling:
        ru = strategy.get("rollingUpdate") or {}
        try:
            surge, unavailable = resolve_fenceposts(ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%"),
                                                    desired)
        except ValueError:
            return []
        max_unavailable = 0 if desired == 0 else min(unavailable, desired)
    else:
        surge, max_unavailable = 0, 0
    new_rs = next((r for r in rss if equal_ignore_hash(r.get("spec", {}).get("template"), spec.get("template"))), None)
    olds = [r for r in rss if r is not new_rs]
    actions: list[Action] = []

    def finish(created: str | None = None, new: Mapping[str, Any] | None = new_rs) -> list[Action]:
        status = _status(d, new, rss, max_unavailable, now, created)
        if status != (d.get("status") or {}):
            actions.append(Update("deployments", ns, name, status=status))
        after = _stuck_for(spec, status, now)
        if after is not None:
            actions.append(Requeue("deployments", ns, name, after))
        return actions

    if spec.get("paused"):  # sync(): scaling only, no rollout
        actions.extend(_sync_scale(d, new_rs, olds, desired, surge, rolling))
        return finish()
    revision = max((_revision(r) for r in olds), default=0) + 1
    if new_rs is None:
        if not rolling and (any(_replicas(r) for r in olds) or _old_pods_running(olds, pods)):
            pass  # Recreate: the new ReplicaSet comes once the old pods are gone
        else:
            collisions = (d.get("status") or {}).get("collisionCount")
            pod_hash = template_hash(spec.get("template") or {}, collisions)
            rs_name = f"{name}-{pod_hash}"
            if rs_name in taken_names:
                status = {**(d.get("status") or {}), "collisionCount": _int(collisions) + 1}
                return [Update("deployments", ns, name, status=status)]
            replicas = (new_rs_replicas(desired, surge, sum(_replicas(r) for r in olds), 0) if rolling
                        else desired)
            event = EventSpec(involved(d), "ScalingReplicaSet", f"Scaled up replica set {rs_name} from 0 to {replicas}",
                              COMPONENT) if replicas else None
            rs = _new_replicaset(d, pod_hash, revision, replicas, desired, surge)
            actions.append(Create("replicasets", rs, event))
            actions.append(Update("deployments", ns, name, annotations={REVISION: str(revision)}))
            return finish(created=rs_name)
    else:
        new_revision = max(_revision(new_rs), revision)
        rs_annotations = new_rs["metadata"].get("annotations") or {}
        wanted = {k: v for k, v in _copied_annotations(d).items() if rs_annotations.get(k) != v}
        if _revision(new_rs) < revision:
            wanted[REVISION] = str(revision)
        if wanted:
            actions.append(Update("replicasets", ns, new_rs["metadata"]["name"], annotations=wanted))
        if (meta.get("annotations") or {}).get(REVISION) != str(new_revision):
            actions.append(Update("deployments", ns, name, annotations={REVISION: str(new_revision)}))
    if _is_scaling_event(rss, desired):
        actions.extend(_sync_scale(d, new_rs, olds, desired, surge, rolling))
        return finish()
    if not rolling:
        active_olds = [r for r in olds if _replicas(r)]
        if active_olds:
            actions.extend(_scale(d, r, 0, desired, surge) for r in active_olds)
            return finish()
        if new_rs is None or _old_pods_running(olds, pods):
            return finish()
        if _replicas(new_rs) != desired:
            actions.append(_scale(d, new_rs, desired, desired, surge))
            return finish()
    else:
        assert new_rs is not None
        have = _replicas(new_rs)
        target = desired if have > desired else new_rs_replicas(desired, surge, sum(_replicas(r) for r in rss), have)
        if target != have:
            actions.append(_scale(d, new_rs, target, desired, surge))
            return finish()
        scaled = _scale_down_olds(d, new_rs, olds, rss, desired, surge, max_unavailable)
        if scaled:
            actions.extend(scaled)
            return finish()
    result = finish()
    status = next((a.status for a in result if isinstance(a, Update) and a.status is not None), d.get("status") or {})
    if (_int(status.get("updatedReplicas")) == desired and _int(status.get("replicas")) == desired
            and _int(status.get("availableReplicas")) == desired):
        result.extend(_cleanup(d, olds))
    return result


def _is_scaling_event(rss: list[Mapping[str, Any]], desired: int) -> bool:
    """isScalingEvent: an active ReplicaSet was sized for another ``spec.replicas``."""
    for rs in rss:
        raw = (rs["metadata"].get("annotations") or {}).get(DESIRED)
        if _replicas(rs) and raw is not None and raw != str(desired):
            return True
    return False


def _sync_scale(d: Mapping[str, Any], new_rs: Mapping[str, Any] | None, olds: list[Mapping[str, Any]], desired: int,
                surge: int, rolling: bool) -> list[Action]:
    """sync.go scale(): a lone active (or the latest) ReplicaSet takes ``spec.replicas``; a saturated new
    one leaves the old ones at 0; otherwise, for RollingUpdate, every active ReplicaSet is resized in
    proportion to its max-replicas annotation, leftovers to the largest (newest first when growing,
    oldest first when shrinking)."""
    by_age = sorted(olds, key=_created, reverse=True)
    active = [r for r in (*by_age, *([new_rs] if new_rs is not None else [])) if _replicas(r)]
    if not active:  # FindActiveOrLatest
        lone = new_rs if new_rs is not None else (by_age[0] if by_age else None)
    else:
        lone = active[0] if len(active) == 1 else None
    if lone is not None:
        return [] if _replicas(lone) == desired else [_scale(d, lone, desired, desired, surge)]
    ann = lambda r, k: (r["metadata"].get("annotations") or {}).get(k)  # noqa: E731
    if new_rs is not None and _replicas(new_rs) == desired and ann(new_rs, DESIRED) == str(desired) and _st(
            new_rs, "availableReplicas") == desired:
        return [_scale(d, r, 0, desired, surge) for r in olds if _replicas(r)]
    if not rolling:
        return []
    allowed = desired + surge if desired > 0 else 0
    to_add = allowed - sum(_replicas(r) for r in active)
    if to_add > 0:
        active.sort(key=lambda r: (-_replicas(r), tuple(-ord(c) for c in _created(r)[0]), r["metadata"]["name"]))
    elif to_add < 0:
        active.sort(key=lambda r: (-_replicas(r), _created(r)))
    sizes, added = {}, 0
    for rs in active:
        name = rs["metadata"]["name"]
        if to_add == 0:
            sizes[name] = _replicas(rs)
            continue
        raw = ann(rs, MAX)
        annotated = int(raw) if raw and raw.isdigit() else _int((d.get("status") or {}).get("replicas"))
        fraction = (int(_replicas(rs) * allowed / annotated + 0.5) - _replicas(rs)) if annotated else 0
        rest = to_add - added
        proportion = min(fraction, rest) if to_add > 0 else max(fraction, rest)
        sizes[name] = _replicas(rs) + proportion
        added += proportion
    if active and to_add:
        first = active[0]["metadata"]["name"]
        sizes[first] = max(0, sizes[first] + to_add - added)
    return [_scale(d, rs, sizes[rs["metadata"]["name"]], desired, surge) for rs in active
            if sizes[rs["metadata"]["name"]] != _replicas(rs)]


def _scale_down_olds(d: Mapping[str, Any], new_rs: Mapping[str, Any], olds: list[Mapping[str, Any]],
                     all_rss: list[Mapping[str, Any]], desired: int, surge: int, max_unavailable: int) -> list[Action]:
    """rolling.go reconcileOldReplicaSets: unhealthy pods first, then down to the availability floor."""
    if not sum(_replicas(r) for r in olds):
        return []
    min_available = desired - max_unavailable
    new_unavailable = _replicas(new_rs) - _st(new_rs, "availableReplicas")
    max_scaled_down = sum(_replicas(r) for r in all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    target = {r["metadata"]["name"]: _replicas(r) for r in olds}
    total = 0
    for rs in olds:  # cleanupUnhealthyReplicas, oldest first
        if total >= max_scaled_down:
            break
        n = rs["metadata"]["name"]
        healthy = _st(rs, "availableReplicas")
        if target[n] == 0 or target[n] == healthy:
            continue
        down = min(max_scaled_down - total, target[n] - healthy)
        target[n] -= down
        total += down
    available = sum(_st(r, "availableReplicas") for r in all_rss)
    if available > min_available:  # scaleDownOldReplicaSetsForRollingUpdate
        budget, done = available - min_available, 0
        for rs in olds:
            if done >= budget:
                break
            n = rs["metadata"]["name"]
            if target[n] == 0:
                continue
            down = min(target[n], budget - done)
            target[n] -= down
            done += down
    return [_scale(d, rs, target[rs["metadata"]["name"]], desired, surge) for rs in olds
            if target[rs["metadata"]["name"]] != _replicas(rs)]
