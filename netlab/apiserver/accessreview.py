"""SelfSubjectAccessReview: ``kubectl auth can-i`` asks the server whether the caller may do something.

``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`` with ``spec.resourceAttributes``
(namespace, verb, group, resource, subresource, name) or ``spec.nonResourceAttributes`` (path, verb)
answers 201 with ``status.allowed`` (and ``reason``), decided by the server's own authorizer for the
authenticated user, as kube-apiserver's pkg/registry/authorization/selfsubjectaccessreview does.
Every authenticated user may ask (upstream's ``system:basic-user`` role). A server without an
authorizer allows everything, and says so.
"""

from __future__ import annotations

from typing import Any

from podnet.netlab.apiserver import authz
from podnet.netlab.apiserver.apistore import StatusError

__all__ = ["PATH", "review"]

PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def review(authorizer: Any, user: Any, body: Any) -> dict[str, Any]:
    """The answered review for ``body`` by ``user`` (None: an unauthenticated server)."""
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise StatusError(400, "BadRequest", "the body must be a SelfSubjectAccessReview with a spec")
    spec = body["spec"]
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if bool(res) == bool(non):
        msg = "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or resourceAttributes " \
              "must be specified"
        raise StatusError(422, "Invalid", f'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: {msg}',
                          kind="SelfSubjectAccessReview", group="authorization.k8s.io")
    if authorizer is None or user is None:
        status: dict[str, Any] = {"allowed": True, "reason": "the server authorises every request"}
    else:
        if res:
            a = authz.Attributes(user.name, user.groups, str(res.get("verb", "")), str(res.get("group", "")),
                                 str(res.get("resource", "")), str(res.get("subresource", "")),
                                 str(res.get("namespace", "")), str(res.get("name", "")))
        else:
            a = authz.Attributes(user.name, user.groups, str(non.get("verb", "")), path=str(non.get("path", "")))
        d = authorizer.authorize(a)
        status = {"allowed": d.allowed}
        if d.reason:
            status["reason"] = d.reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}
