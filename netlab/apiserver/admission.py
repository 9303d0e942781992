"""Admission after authorisation: NodeRestriction and RBAC escalation prevention.

:class:`Admission` sees every create, update (PUT, PATCH, apply; main resource or subresource) and
delete with the authenticated user, the object as it would be stored and the stored one, and refuses
with kube-apiserver's 403 Status (``<resource> "<name>" is forbidden: <why>``, as
``admission.NewForbidden`` words it).

NodeRestriction (plugin/pkg/admission/noderestriction/admission.go), for users that are nodes
(:func:`.nodeauthz.node_name`):

- Node: only its own (``node "<n>" is not allowed to modify node "<m>"``), never its taints, and no
  ``node-restriction.kubernetes.io/`` label nor a kubernetes.io/k8s.io label outside the kubelet's
  own set (:func:`forbidden_labels`), at create or update;
- Pod: create is refused (the lab has no mirror pods: ``pod does not have "kubernetes.io/config.mirror"
  annotation, node "<n>" can only create mirror pods``); delete only of pods bound to the node;
  ``pods/status`` only of pods bound to the node; the Pod itself (lab only: the netns annotation the lab
  kubelet writes) only for pods bound to the node and only a change of ``metadata.annotations``;
- TokenRequest (``serviceaccounts/token``): must be bound to a Pod of ``v1`` with a uid, that pod must
  exist with that uid and be bound to the node.

Escalation prevention (pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/policybased):
a Role or ClusterRole may be written only by a user in ``system:masters``, one allowed ``escalate`` on it,
or one who already holds every permission it grants (:func:`.authz.uncovered`; a Role's in its namespace
plus cluster-wide); a RoleBinding or ClusterRoleBinding only by a user in ``system:masters``, one allowed
``bind`` on the referenced role, or one who holds every permission of that role. An update that
leaves a role's rules, or a binding's roleRef and subjects, unchanged grants nothing new and passes
(upstream passes only changes of the garbage-collection fields). A binding to a role that does not
exist grants nothing and passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from podnet.netlab.apiserver import authz
from podnet.netlab.apiserver.apistore import StatusError, Store
from podnet.netlab.apiserver.nodeauthz import node_name

__all__ = ["Admission", "AdmissionRequest", "forbidden"]

MASTERS = "system:masters"


@dataclass(frozen=True)
class AdmissionRequest:
    user: str
    groups: tuple[str, ...]
    operation: str  # CREATE, UPDATE, DELETE
    api_group: str
    resource: str
    namespace: str
    name: str
    subresource: str = ""
    obj: Mapping[str, Any] | None = None
    old: Mapping[str, Any] | None = None


def forbidden(r: AdmissionRequest, why: str) -> StatusError:
    qualified = f"{r.resource}.{r.api_group}" if r.api_group else r.resource
    named = f' "{r.name}"' if r.name else ""
    return StatusError(403, "Forbidden", f"{qualified}{named} is forbidden: {why}", kind=r.resource, name=r.name,
                       group=r.api_group)


class Admission:
    """``authorizer``: the server's authorizer (for ``escalate``/``bind``); ``rbac``: an object whose
    ``policy`` is the current RBAC :class:`.authz.Policy`."""

    def __init__(self, store: Store, authorizer: Any, rbac: Any) -> None:
        self.store, self.authorizer, self.rbac = store, authorizer, rbac

    def admit(self, r: AdmissionRequest) -> None:
        node = node_name(r.user, r.groups)
        if node is not None:
            self._node_restriction(node, r)
        if r.api_group == authz.RBAC_GROUP and r.operation in ("CREATE", "UPDATE"):
            self._no_escalation(r)

    # ------------------------------------------------------------------ NodeRestriction

    def _node_restriction(self, node: str, r: AdmissionRequest) -> None:
        if r.api_group:
            return
        if r.resource == "nodes":
            self._node_node(node, r)
        elif r.resource == "pods":
            self._node_pod(node, r)
        elif r.resource == "serviceaccounts" and r.subresource == "token" and r.operation == "CREATE":
            self._node_token(node, r)

    def _node_node(self, node: str, r: AdmissionRequest) -> None:
        new_labels = ((r.obj or {}).get("metadata") or {}).get("labels") or {}
        old_labels = ((r.old or {}).get("metadata") or {}).get("labels") or {}
        bad = forbidden_labels(new_labels, old_labels)
        if r.operation == "CREATE" and bad:
            raise forbidden(r, f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
        if r.name != node:
            raise forbidden(r, f'node "{node}" is not allowed to modify node "{r.name}"')
        if r.operation == "UPDATE":
            if ((r.obj or {}).get("spec") or {}).get("taints") != ((r.old or {}).get("spec") or {}).get("taints"):
                raise forbidden(r, f'node "{node}" is not allowed to modify taints')
            if bad:
                raise forbidden(r, f'is not allowed to modify labels: {", ".join(bad)}')

    def _node_pod(self, node: str, r: AdmissionRequest) -> None:
        bound = ((r.old or {}).get("spec") or {}).get("nodeName") == node
        if r.subresource == "status":
            if r.operation == "UPDATE" and not bound:
                raise forbidden(r, f'node "{node}" can only update pod status for pods with spec.nodeName set '
                                   f"to itself")
            return
        if r.subresource:
            return
        if r.operation == "CREATE":
            raise forbidden(r, f'pod does not have "kubernetes.io/config.mirror" annotation, node "{node}" can only '
                               f"create mirror pods")
        if r.operation == "DELETE":
            if not bound:
                raise forbidden(r, f'node "{node}" can only delete pods with spec.nodeName set to itself')
            return
        if not bound or _without_annotations(r.obj) != _without_annotations(r.old):
            raise forbidden(r, f'unexpected operation "{r.operation}", node "{node}" can only create and delete '
                               f"mirror pods")

    def _node_token(self, node: str, r: AdmissionRequest) -> None:
        ref = ((r.obj or {}).get("spec") or {}).get("boundObjectRef") or {}
        if ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod" or not ref.get("name"):
            raise forbidden(r, "node requested token not bound to a pod")
        if not ref.get("uid"):
            raise forbidden(r, "node requested token with a pod binding without a uid")
        pod = self.store.get("pods", r.namespace, ref["name"])
        if pod is None:
            raise StatusError(404, "NotFound", f'pods "{ref["name"]}" not found', kind="pods", name=ref["name"])
        if pod["metadata"].get("uid") != ref["uid"]:
            raise forbidden(r, f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                               f"record. The object might have been deleted and then recreated")
        if (pod.get("spec") or {}).get("nodeName") != node:
            raise forbidden(r, "node requested token bound to a pod scheduled on a different node")

    # ------------------------------------------------------------------ RBAC escalation

    def _no_escalation(self, r: AdmissionRequest) -> None:
        if MASTERS in r.groups or r.subresource:
            return
        obj, old = r.obj or {}, r.old or {}
        if r.resource in ("roles", "clusterroles"):
            if old and old.get("rules") == obj.get("rules"):
                return
            if self._allowed(r, "escalate", r.resource, r.name):
                return
            requested = _rules(obj)
        elif r.resource in ("rolebindings", "clusterrolebindings"):
            ref = obj.get("roleRef") or {}
            if old and old.get("roleRef") == ref and old.get("subjects") == obj.get("subjects"):
                return
            role_res = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            if self._allowed(r, "bind", role_res, ref.get("name", "")):
                return
            requested = authz.role_rules(self.rbac.policy, ref.get("kind", ""), ref.get("name", ""), r.namespace)
        else:
            return
        held = authz.user_rules(self.rbac.policy, r.user, r.groups, r.namespace)
        missing = authz.uncovered(held, requested)
        if missing:
            groups = r.groups if authz.AUTHENTICATED in r.groups else (*r.groups, authz.AUTHENTICATED)
            raise forbidden(r, authz.escalation_message(r.user, groups, missing))

    def _allowed(self, r: AdmissionRequest, verb: str, resource: str, name: str) -> bool:
        a = authz.Attributes(r.user, r.groups, verb, authz.RBAC_GROUP, resource, "", r.namespace, name)
        return self.authorizer.authorize(a).allowed


KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone", "topology.kubernetes.io/region"})
"""The kubernetes.io labels a kubelet may set (k8s.io/kubelet/pkg/apis well_known_labels.go)."""


def _under(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def forbidden_labels(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """The added, changed or removed labels a node may not touch, sorted (getForbiddenLabels):
    ``node-restriction.kubernetes.io/`` ones, and kubernetes.io/k8s.io ones outside the kubelet's set
    and the ``kubelet.kubernetes.io``/``node.kubernetes.io`` namespaces."""
    modified = {k for k in set(new) | set(old) if new.get(k) != old.get(k) or (k in new) != (k in old)}
    out = set()
    for label in modified:
        ns = label.rpartition("/")[0] if "/" in label else ""
        if _under(ns, "node-restriction.kubernetes.io"):
            out.add(label)
        elif (_under(ns, "kubernetes.io") or _under(ns, "k8s.io")) and not (
                label in KUBELET_LABELS or _under(ns, "kubelet.kubernetes.io") or _under(ns, "node.kubernetes.io")):
            out.add(label)
    return sorted(out)


def _rules(doc: Mapping[str, Any]) -> tuple[authz.Rule, ...]:
    try:
        return authz.rules_of(doc)
    except ValueError:
        return ()


def _without_annotations(obj: Mapping[str, Any] | None) -> Any:
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("annotations", "resourceVersion", "managedFields", "generation")}
    return {**obj, "metadata": meta}
