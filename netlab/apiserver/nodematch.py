"""Whether a pod may go on a node: taints against tolerations, and required node affinity. Pure.

Shared by the scheduler (:mod:`.scheduler`) and the DaemonSet controller (:mod:`.daemonsets`),
following k8s.io/api core/v1 and component-helpers/scheduling/corev1:

- :func:`tolerates` is ``Toleration.ToleratesTaint``: an empty effect matches every effect; an
  empty key with ``Exists`` matches every taint; ``Exists`` ignores the value, ``Equal`` (the
  default operator) compares it;
- :func:`untolerated_taint` is the first NoSchedule or NoExecute taint no toleration matches
  (PreferNoSchedule never blocks), as the TaintToleration filter checks;
- :func:`affinity_matches` is ``nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)``:
  ``requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`` are ORed, a term's
  ``matchExpressions`` (In, NotIn, Exists, DoesNotExist, Gt, Lt on labels) and ``matchFields``
  (``metadata.name`` In/NotIn) ANDed, an empty term matches nothing; no required affinity matches
  every node. Preferred affinity only ranks nodes upstream and is ignored here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["tolerates", "untolerated_taint", "affinity_matches"]


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    op = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return op == "Exists"
    if toleration.get("key") != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(node: Mapping[str, Any], tolerations: Iterable[Any]) -> Mapping[str, Any] | None:
    tols = [t for t in tolerations if isinstance(t, dict)]
    for taint in (node.get("spec") or {}).get("taints") or ():
        if not isinstance(taint, dict) or taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tols):
            return taint
    return None


def _requirement(values: Mapping[str, str], req: Mapping[str, Any]) -> bool:
    key, op, wanted = req.get("key"), req.get("operator"), req.get("values") or []
    has = key in values
    if op == "In":
        return has and values[key] in wanted
    if op == "NotIn":
        return not has or values[key] not in wanted
    if op == "Exists":
        return has
    if op == "DoesNotExist":
        return not has
    if op in ("Gt", "Lt") and has and len(wanted) == 1:
        try:
            have, bound = int(values[key]), int(wanted[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _term(node: Mapping[str, Any], term: Any) -> bool:
    if not isinstance(term, dict):
        return False
    exprs = [e for e in term.get("matchExpressions") or () if isinstance(e, dict)]
    fields = [f for f in term.get("matchFields") or () if isinstance(f, dict)]
    if not exprs and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    name = {"metadata.name": node["metadata"]["name"]}
    return all(_requirement(labels, e) for e in exprs) and all(
        f.get("key") == "metadata.name" and f.get("operator") in ("In", "NotIn") and _requirement(name, f)
        for f in fields)


def affinity_matches(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not isinstance(required, dict):
        return True
    return any(_term(node, t) for t in required.get("nodeSelectorTerms") or ())
