"""What the lab's workload controllers share: actions as data, pod templates, readiness, hashing.

The ReplicaSet, Deployment and DaemonSet controllers (:mod:`.replicasets`, :mod:`.deployments`,
:mod:`.daemonsets`) and the v1 Endpoints controller (:mod:`.endpoints`) are pure functions from a
snapshot of objects to a list of actions (:class:`Create`, :class:`Delete`, :class:`Update`,
:class:`Requeue`, and :class:`Adopt`/:class:`Release` from :func:`claims`); :mod:`.appcontrollers`
applies them to the store. Everything here is pure.

Guarantees:

- :func:`template_hash` is a stable hash of a pod template: FNV-32a over the template's canonical
  JSON (sorted keys, no spaces), then the collision count as 8 little-endian bytes when set, then
  ``rand.SafeEncodeString`` of the decimal digits, as upstream's ``controller.ComputeHash``
  (pkg/controller/controller_utils.go) encodes it. Upstream hashes a spew dump of the Go struct,
  which Python cannot reproduce, so the lab's hashes differ from a real cluster's, but are
  equally stable: the same template always gives the same ``pod-template-hash``.
- :func:`scaled_value` is apimachinery's ``intstr.GetScaledValueFromIntOrPercent``: an int as is,
  ``"N%"`` of a total rounded up or down as asked, anything else a :class:`ValueError`.
- :func:`pod_available` is ``podutil.IsPodAvailable``: Ready, and Ready for ``minReadySeconds``
  (by the Ready condition's lastTransitionTime) when that is positive.
- :func:`defaults` fills what kube-apiserver's defaulting fills for apps/v1 Deployment, ReplicaSet and
  DaemonSet (pkg/apis/apps/v1/defaults.go) and the pod template (replicas 1, RollingUpdate 25%/25% for
  Deployments, maxUnavailable 1 / maxSurge 0 for DaemonSets, revisionHistoryLimit 10,
  progressDeadlineSeconds 600, restartPolicy, dnsPolicy, schedulerName, terminationGracePeriodSeconds,
  container terminationMessagePath/Policy, imagePullPolicy, port protocols).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["Create", "Delete", "Update", "Requeue", "Adopt", "Release", "claims", "EventSpec", "Action",
           "template_hash", "scaled_value",
           "pod_ready", "pod_available", "ready_since", "is_active", "controller_of", "owner_ref", "involved",
           "selector_matches", "selector_string", "defaults", "WORKLOAD_PLURALS", "parse_time", "generation",
           "pod_from_template"]

WORKLOAD_PLURALS = ("deployments", "replicasets", "daemonsets")
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
"""apimachinery's rand.SafeEncodeString alphabet (no vowels, no 0/1/3)."""


@dataclass(frozen=True)
class EventSpec:
    """A core/v1 Event to record about ``involved`` (its kind, name, namespace, uid, apiVersion).
    ``{name}`` in ``message`` is replaced by the name of the object the action created or deleted."""

    involved: Mapping[str, str]
    reason: str
    message: str
    component: str
    type: str = "Normal"


@dataclass(frozen=True)
class Create:
    plural: str
    obj: Mapping[str, Any]
    """``metadata.generateName`` set and no name: the driver picks one as kube-apiserver would."""
    event: EventSpec | None = None


@dataclass(frozen=True)
class Delete:
    plural: str
    namespace: str
    name: str
    uid: str = ""
    """When set, the object is deleted only if it still has this uid."""
    event: EventSpec | None = None


@dataclass(frozen=True)
class Update:
    """Merge into the current object: ``spec`` keys replaced, annotations set (None removes one),
    ``status`` replaced when given. Nothing changed: nothing written."""

    plural: str
    namespace: str
    name: str
    spec: Mapping[str, Any] | None = None
    annotations: Mapping[str, str | None] | None = None
    status: Mapping[str, Any] | None = None
    event: EventSpec | None = None


@dataclass(frozen=True)
class Requeue:
    """Reconcile this object again after ``after`` seconds (a pod becomes available with time)."""

    plural: str
    namespace: str
    name: str
    after: float


@dataclass(frozen=True)
class Adopt:
    """Add ``owner`` (an ownerReference with controller true) to the object with ``uid``."""

    plural: str
    namespace: str
    name: str
    uid: str
    owner: Mapping[str, Any]


@dataclass(frozen=True)
class Release:
    """Remove the ownerReference to ``owner_uid`` from the object with ``uid``."""

    plural: str
    namespace: str
    name: str
    uid: str
    owner_uid: str


Action = Create | Delete | Update | Requeue | Adopt | Release


def claims(owner: Mapping[str, Any], plural: str, candidates: Iterable[Mapping[str, Any]],
           active_only: bool) -> list[Action]:
    """The ControllerRefManager's claim (ClaimPods, ClaimReplicaSets): objects matching the owner's
    selector with no controller (and not being deleted; active pods only for ``active_only``) are
    adopted, owned ones that no longer match are released. An owner being deleted adopts nothing."""
    meta = owner["metadata"]
    uid, selector = meta.get("uid"), (owner.get("spec") or {}).get("selector")
    out: list[Action] = []
    for c in candidates:
        cmeta = c["metadata"]
        ref = controller_of(c)
        matches = selector_matches(selector, cmeta.get("labels"))
        if ref is None and matches and not meta.get("deletionTimestamp") and not cmeta.get("deletionTimestamp") and (
                not active_only or is_active(c)):
            out.append(Adopt(plural, cmeta.get("namespace", ""), cmeta["name"], cmeta.get("uid", ""), owner_ref(owner)))
        elif ref is not None and ref.get("uid") == uid and not matches:
            out.append(Release(plural, cmeta.get("namespace", ""), cmeta["name"], cmeta.get("uid", ""), uid))
    return out


# --------------------------------------------------------------------------- hashing and numbers


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """The stable ``pod-template-hash`` of ``template`` (see the module docstring)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(_fnv32a(data)))


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        pct = int(value[:-1])
        return -(-pct * total // 100) if round_up else pct * total // 100
    if isinstance(value, str) and value.isdigit():
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a percentage: {value}")
    raise ValueError(f"invalid value for IntOrString: {value!r}")


# --------------------------------------------------------------------------- pods


def parse_time(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        import calendar

        return float(calendar.timegm(time.strptime(raw[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def _ready_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    c = _ready_condition(pod)
    return c is not None and c.get("status") == "True"


def ready_since(pod: Mapping[str, Any]) -> float | None:
    """When the pod became Ready (its condition's lastTransitionTime), None if unknown or not ready."""
    c = _ready_condition(pod)
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime"))


def pod_available(pod: Mapping[str, Any], min_ready_seconds: int, now: float) -> bool:
    """podutil.IsPodAvailable."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds <= now


def is_active(pod: Mapping[str, Any]) -> bool:
    """controller.IsPodActive: not Succeeded/Failed and not being deleted."""
    return ((pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not pod["metadata"].get("deletionTimestamp"))


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true`` (metav1.GetControllerOf)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_ref(owner: Mapping[str, Any]) -> dict[str, Any]:
    """metav1.NewControllerRef."""
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""),
            "name": owner["metadata"]["name"], "uid": owner["metadata"].get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


def involved(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj["metadata"]
    return {"kind": obj.get("kind", ""), "namespace": meta.get("namespace", ""), "name": meta["name"],
            "uid": meta.get("uid", ""), "apiVersion": obj.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", "")}


def generation(obj: Mapping[str, Any]) -> int:
    g = obj["metadata"].get("generation")
    return g if isinstance(g, int) else 0


# --------------------------------------------------------------------------- selectors


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A metav1.LabelSelector (matchLabels AND matchExpressions); an empty or absent one matches nothing,
    as the workload controllers treat it."""
    if not selector:
        return False
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not match_labels and not exprs:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for e in exprs:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """metav1.FormatLabelSelector-like text (the Scale subresource's ``status.selector``)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for e in (selector or {}).get("matchExpressions") or ():
        op, key, values = e.get("operator"), e.get("key"), ",".join(sorted(e.get("values") or []))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key,
                      "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(parts)


# --------------------------------------------------------------------------- defaults


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or ():
            if not isinstance(c, dict):
                continue
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = str(c.get("image") or "")
            tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
            c.setdefault("imagePullPolicy", "Always" if tagless or image.endswith(":latest") else "IfNotPresent")
            c.setdefault("resources", {})
            for p in c.get("ports") or ():
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def defaults(plural: str, obj: dict[str, Any]) -> None:
    """Fill apps/v1 defaults into ``obj`` in place (a no-op on shapes it does not understand)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict):
        if isinstance(template.get("spec"), dict):
            _default_pod_spec(template["spec"])
        meta = template.get("metadata")
        if isinstance(meta, dict):
            meta.pop("creationTimestamp", None)
    if plural in ("deployments", "replicasets"):
        spec.setdefault("replicas", 1)
    if plural == "deployments":
        strategy = spec.get("strategy")
        if not isinstance(strategy, dict) or not strategy.get("type"):
            strategy = spec["strategy"] = {**(strategy if isinstance(strategy, dict) else {}), "type": "RollingUpdate"}
        if strategy["type"] == "RollingUpdate":
            ru = strategy.get("rollingUpdate")
            ru = strategy["rollingUpdate"] = dict(ru) if isinstance(ru, dict) else {}
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    if plural == "daemonsets":
        strategy = spec.get("updateStrategy")
        if not isinstance(strategy, dict) or not strategy.get("type"):
            strategy = spec["updateStrategy"] = {**(strategy if isinstance(strategy, dict) else {}),
                                                 "type": "RollingUpdate"}
        if strategy["type"] == "RollingUpdate":
            ru = strategy.get("rollingUpdate")
            ru = strategy["rollingUpdate"] = dict(ru) if isinstance(ru, dict) else {}
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)


def pod_from_template(owner: Mapping[str, Any], template: Mapping[str, Any], *, extra_labels: Mapping[str, str] = (),
                      node_name: str | None = None) -> dict[str, Any]:
    """controller.GetPodFromTemplate: labels, annotations, spec from the template; ``generateName``
    ``<owner>-``; the owner as controller."""
    meta_t = template.get("metadata") or {}
    labels = {**(meta_t.get("labels") or {}), **dict(extra_labels)}
    meta: dict[str, Any] = {"generateName": f"{owner['metadata']['name']}-",
                            "namespace": owner["metadata"].get("namespace", "default"),
                            "labels": labels, "ownerReferences": [owner_ref(owner)]}
    if meta_t.get("annotations"):
        meta["annotations"] = dict(meta_t["annotations"])
    spec = copy.deepcopy(dict(template.get("spec") or {}))
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": "Pending"}}
