"""The ``scale`` subresource of Deployments and ReplicaSets (autoscaling/v1 Scale), as pure functions.

As kube-apiserver's registry/apps/*/storage ScaleREST: GET answers a Scale built from the object
(metadata name, namespace, uid, resourceVersion, creationTimestamp; ``spec.replicas``;
``status.replicas`` and ``status.selector`` as text); PUT takes a Scale (its
``metadata.resourceVersion``, when set, must be current: 409 otherwise) and PATCH patches the
Scale (merge, strategic merge or JSON patch, as ``kubectl scale`` sends a merge patch
``{"spec":{"replicas":N}}``); either writes only ``spec.replicas`` to the object.
A replicas value that is not a non-negative integer is kube-apiserver's 422
(``Scale.autoscaling "NAME" is invalid: spec.replicas: ...``).
"""

from __future__ import annotations

from typing import Any, Mapping

from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from podnet.netlab.apiserver.workloads import selector_string

__all__ = ["scale_of", "with_replicas", "patched_scale"]


def scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": selector_string(spec.get("selector"))},
    }


def with_replicas(obj: Mapping[str, Any], scale: Any) -> dict[str, Any]:
    """``obj`` with ``spec.replicas`` from the Scale ``scale``; StatusError 400/422 for a bad Scale."""
    if not isinstance(scale, dict):
        raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
    name = obj["metadata"]["name"]
    replicas = (scale.get("spec") or {}).get("replicas", 0) if isinstance(scale.get("spec") or {}, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        detail = (f"Invalid value: {replicas}: must be greater than or equal to 0" if isinstance(replicas, int)
                  else "Invalid value: must be an integer")
        raise StatusError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: {detail}',
                          kind="Scale", name=name, group="autoscaling",
                          causes=[{"reason": "FieldValueInvalid", "message": detail, "field": "spec.replicas"}])
    return {**obj, "spec": {**(obj.get("spec") or {}), "replicas": replicas}}


def patched_scale(obj: Mapping[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
    """The Scale of ``obj`` with ``patch`` applied."""
    current = scale_of(obj)
    try:
        if content_type == "application/merge-patch+json":
            return merge_patch(current, patch)
        if content_type == "application/strategic-merge-patch+json":
            return strategic_merge_patch(current, patch)
        if content_type == "application/json-patch+json":
            return json_patch(current, patch)
    except PatchError as e:
        raise StatusError(422, "Invalid", f"the patch could not be applied: {e}") from None
    raise StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format; accepted media "
                      "types include: application/json-patch+json, application/merge-patch+json, "
                      "application/strategic-merge-patch+json")
