"""The Node authorizer (``--authorization-mode Node``): what a kubelet may read, decided by its pods.

As kube-apiserver's plugin/pkg/auth/authorizer/node (``node_authorizer.go``): a user named
``system:node:<name>`` in the group ``system:nodes`` is a node. For a node:

- secrets and configmaps: ``get``/``list``/``watch`` of one named object (a list or watch names it
  through a ``metadata.name`` field selector) in a namespace, only when some pod bound to the node
  (``spec.nodeName``) references it: volumes (``secret``, ``configMap``, ``projected`` sources), env
  ``valueFrom``, ``envFrom``, ``imagePullSecrets``; anything else is denied with "no relationship found
  between node '<n>' and this object";
- ``serviceaccounts/token``: ``create`` only for a service account some pod on the node runs as;
- everything else: the static node rules (:data:`.authz.NODE_RULES`, bootstrappolicy.NodeRules) and
  nothing more. Which Node and which Pods a kubelet may modify is NodeRestriction's business
  (:mod:`.admission`), as upstream.

Upstream walks a graph kept by informers; the lab scans the store's pods on each such request (labs hold
hundreds of pods, not hundreds of thousands). Not done: persistent volume claims, resource claims,
leases and CSINodes (the lab serves none of them), and v1.32's AuthorizeNodeWithSelectors (a node's pod
list limited to ``spec.nodeName=<n>``).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from podnet.netlab.apiserver import authz
from podnet.netlab.apiserver.apistore import Store

__all__ = ["NodeAuthorizer", "node_name", "NODES_GROUP"]

NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"


def node_name(user: str, groups: tuple[str, ...]) -> str | None:
    """The node a user is (NodeIdentity), or None."""
    if NODES_GROUP not in groups or not user.startswith(NODE_PREFIX):
        return None
    return user[len(NODE_PREFIX):]


def _refs(pod: Mapping[str, Any], kind: str) -> Iterator[str]:
    """Names of the ``kind`` ("secret", "configmap", "serviceaccount") objects a pod references."""
    spec = pod.get("spec") or {}
    if kind == "serviceaccount":
        yield spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        return
    key_ref, from_ref = ("secretKeyRef", "secretRef") if kind == "secret" else ("configMapKeyRef", "configMapRef")
    for v in spec.get("volumes") or ():
        if kind == "secret" and isinstance(v.get("secret"), Mapping):
            yield v["secret"].get("secretName", "")
        if kind == "configmap" and isinstance(v.get("configMap"), Mapping):
            yield v["configMap"].get("name", "")
        for src in (v.get("projected") or {}).get("sources") or ():
            ref = src.get("secret" if kind == "secret" else "configMap")
            if isinstance(ref, Mapping):
                yield ref.get("name", "")
    for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        for e in c.get("env") or ():
            ref = (e.get("valueFrom") or {}).get(key_ref)
            if isinstance(ref, Mapping):
                yield ref.get("name", "")
        for e in c.get("envFrom") or ():
            ref = e.get(from_ref)
            if isinstance(ref, Mapping):
                yield ref.get("name", "")
    if kind == "secret":
        for s in spec.get("imagePullSecrets") or ():
            yield s.get("name", "")


class NodeAuthorizer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._rules = authz.rules_of({"kind": "ClusterRole", "metadata": {"name": "system:node"},
                                      "rules": list(authz.NODE_RULES)})

    def related(self, node: str, kind: str, namespace: str, name: str) -> bool:
        """Some pod bound to ``node`` in ``namespace`` references the ``kind`` object ``name``."""
        return any((p.get("spec") or {}).get("nodeName") == node and name in _refs(p, kind)
                   for p in self.store.items("pods", namespace))

    def authorize(self, a: authz.Attributes) -> authz.Decision:
        node = node_name(a.user, a.groups)
        if node is None:
            return authz.Decision(False, "")
        if not node:
            return authz.Decision(False, "unknown node")
        if a.is_resource and a.api_group == "" and a.resource in ("secrets", "configmaps"):
            return self._read_namespaced(node, a, a.resource[:-1])
        if a.is_resource and a.api_group == "" and a.resource == "serviceaccounts":
            if a.verb != "create" or not a.name:
                return authz.Decision(False, "can only create tokens for individual service accounts")
            if a.subresource != "token":
                return authz.Decision(False, "can only create token subresource of serviceaccount")
            return self._related(node, a, "serviceaccount")
        if any(r.allows(a) for r in self._rules):
            return authz.Decision(True, "")
        return authz.Decision(False, "")

    def _read_namespaced(self, node: str, a: authz.Attributes, kind: str) -> authz.Decision:
        if a.verb not in ("get", "list", "watch"):
            return authz.Decision(False, "can only read resources of this type")
        if a.subresource:
            return authz.Decision(False, "cannot read subresource")
        if not a.namespace:
            return authz.Decision(False, "can only read namespaced object of this type")
        return self._related(node, a, kind)

    def _related(self, node: str, a: authz.Attributes, kind: str) -> authz.Decision:
        if not a.name:
            return authz.Decision(False, "No Object name found")
        if self.related(node, kind, a.namespace, a.name):
            return authz.Decision(True, "")
        return authz.Decision(False, f"no relationship found between node '{node}' and this object")
