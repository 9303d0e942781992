"""RBAC from the API: the authorizer reads Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
from the store, as kube-apiserver's RBAC authorizer reads them from its informers.

At start :func:`seed` writes the built-in bootstrap roles (:data:`.authz.BUILTIN_DOCUMENTS`, labelled
``kubernetes.io/bootstrapping: rbac-defaults`` and annotated ``rbac.authorization.kubernetes.io/autoupdate:
"true"`` as kube-apiserver's bootstrap policy is) and any documents the server was given
(``--rbac-file``, deploy/podnet.yaml in a lab) into the store, leaving objects that already exist (a
persisted state file) alone. :class:`StorePolicy` keeps the :class:`.authz.Policy` built from the store
and drops it on every RBAC write (a post-commit hook), so the next request after ``kubectl create
rolebinding`` is decided with it. Invalid stored documents are skipped and logged, never fatal.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver import authz
from podnet.netlab.apiserver.apistore import Event, Store

__all__ = ["StorePolicy", "seed", "RBAC_PLURALS"]

log = logging.getLogger("podnet.netlab.apiserver.rbacstore")

RBAC_PLURALS = {"clusterroles": "ClusterRole", "clusterrolebindings": "ClusterRoleBinding", "roles": "Role",
                "rolebindings": "RoleBinding"}
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
BOOTSTRAP_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


class StorePolicy:
    """The RBAC authorizer over the store's RBAC objects (built lazily, dropped on every RBAC write)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._policy: authz.Policy | None = None
        store.hooks.append(self.hook)

    def hook(self, ev: Event) -> None:
        if ev.plural in RBAC_PLURALS:
            self._policy = None

    @property
    def policy(self) -> authz.Policy:
        if self._policy is None:
            docs = [obj for plural in RBAC_PLURALS for obj in self.store.items(plural)]
            self._policy = authz.policy_from_documents(docs, builtins=False, strict=False)
        return self._policy

    def authorize(self, a: authz.Attributes) -> authz.Decision:
        return authz.authorize(self.policy, a)


def seed(registry: Any, documents: Iterable[Mapping[str, Any]]) -> int:
    """Create the built-in roles and ``documents``' RBAC objects that the store lacks; returns how many."""
    from podnet.netlab.apiserver.apikinds import KINDS

    made = 0
    plural_of = {k: p for p, k in RBAC_PLURALS.items()}
    builtin = [_bootstrap(d) for d in authz.BUILTIN_DOCUMENTS]
    for doc in [*builtin, *documents]:
        plural = plural_of.get(doc.get("kind", ""))
        if plural is None:
            continue
        meta = doc.get("metadata") or {}
        if registry.store.get(plural, meta.get("namespace") or "", meta.get("name") or "") is not None:
            continue
        kind = KINDS[plural]
        registry.commit_create(kind, registry.prepare_create(kind, dict(doc), meta.get("namespace")))
        made += 1
    return made


def _bootstrap(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = dict(doc["metadata"])
    meta["labels"] = {**BOOTSTRAP_LABELS, **(meta.get("labels") or {})}
    meta["annotations"] = {**BOOTSTRAP_ANNOTATIONS, **(meta.get("annotations") or {})}
    return {**doc, "metadata": meta}
