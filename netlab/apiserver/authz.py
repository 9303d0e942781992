"""RBAC authorisation, as kube-apiserver's ``--authorization-mode RBAC``: request attributes -> allow/deny.

Pure: :func:`policy_from_documents` turns Role, ClusterRole, RoleBinding and ClusterRoleBinding
documents (rbac.authorization.k8s.io/v1, as in deploy/podnet.yaml) into a frozen :class:`Policy`;
:func:`authorize` decides one request's :class:`Attributes` against it. Matching is the RBAC
authorizer's (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac, ``rbac.go`` and
``pkg/apis/rbac/v1/evaluation_helpers.go``):

- verbs, apiGroups, resources: the request's value or ``*``; a resource request names
  ``resource`` or ``resource/subresource`` (``pods/log``), and a rule's ``*/subresource``
  matches that subresource of every resource;
- resourceNames: empty matches every name, else the request must name one of them (a list or
  watch names an object only through a ``metadata.name`` field selector, as kube-apiserver's
  RequestInfo does);
- nonResourceURLs: exact, ``*``, or a prefix ending in ``*``;
- a ClusterRoleBinding applies to every request, a RoleBinding only to requests in its own
  namespace (its roleRef a ClusterRole, or a Role of that namespace); subjects are User, Group
  or ServiceAccount (``system:serviceaccount:<ns>:<name>``, the namespace defaulting to the
  RoleBinding's).

Every authenticated user is also in ``system:authenticated`` (kube-apiserver's authenticated
group adder). Built in, besides whatever documents are loaded (:data:`BUILTIN_DOCUMENTS`):

- ``cluster-admin`` bound to ``system:masters`` (kube-apiserver's bootstrap policy), so the
  admin kubeconfig may do anything;
- ``system:discovery`` bound to ``system:authenticated``: the discovery and OpenAPI paths;
- ``system:node`` bound to ``system:nodes``: what the lab kubelet calls, and nothing it does not
  (register and patch its Node; list and watch Pods; patch a Pod's status and its netns
  annotation; confirm a Pod's deletion). kube-apiserver authorises kubelets with the Node
  authorizer (each kubelet limited to its own Node and the Pods bound to it) plus the
  NodeRestriction admission plugin; neither is implemented here: any ``system:nodes`` member
  may do the above to any Node or Pod.

A deny answers 403 with kube-apiserver's Status (:func:`forbidden_status`): the message
``<resource> "<name>" is forbidden: User "<user>" cannot <verb> resource "<resource>" in API group
"<group>" in the namespace "<ns>"`` (``at the cluster scope`` without a namespace; the leading
resource is ``resource.group`` for a named group, the name part absent when the request names
no object; ``forbidden: User "<user>" cannot <verb> path "<path>"`` for a non-resource path),
as apimachinery's ``NewForbidden`` and the responsewriters' ``forbiddenMessage`` build it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["Attributes", "Rule", "Policy", "Decision", "policy_from_documents", "policy_from_yaml", "authorize",
           "forbidden_status", "resource_verb", "AUTHENTICATED", "BUILTIN_DOCUMENTS"]

AUTHENTICATED = "system:authenticated"
RBAC_GROUP = "rbac.authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it. ``resource`` empty: a non-resource request on ``path``."""
    user: str
    groups: tuple[str, ...]
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()

    def allows(self, a: Attributes) -> bool:
        if not ("*" in self.verbs or a.verb in self.verbs):
            return False
        if not a.is_resource:
            return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                       for u in self.non_resource_urls)
        if not ("*" in self.api_groups or a.api_group in self.api_groups):
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not ("*" in self.resources or combined in self.resources
                or (a.subresource and f"*/{a.subresource}" in self.resources)):
            return False
        return not self.resource_names or a.name in self.resource_names


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""

    def applies(self, user: str, groups: tuple[str, ...], binding_ns: str) -> bool:
        if self.kind == "User":
            return user == self.name
        if self.kind == "Group":
            return self.name in groups
        return user == f"{SA_PREFIX}{self.namespace or binding_ns}:{self.name}"


@dataclass(frozen=True)
class Binding:
    name: str
    namespace: str  # "" for a ClusterRoleBinding
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]


@dataclass(frozen=True)
class Policy:
    cluster_roles: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    roles: Mapping[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    """(namespace, name) -> rules"""
    bindings: tuple[Binding, ...] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


# --------------------------------------------------------------------------- documents -> policy


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}: must be a list of strings")
    return tuple(v)


def _rules(doc: Mapping[str, Any], where: str) -> tuple[Rule, ...]:
    out = []
    for i, r in enumerate(doc.get("rules") or ()):
        w = f"{where}.rules[{i}]"
        if not isinstance(r, Mapping):
            raise ValueError(f"{w}: must be an object")
        verbs = _strings(r.get("verbs"), f"{w}.verbs")
        if not verbs:
            raise ValueError(f"{w}.verbs: Required value: verbs must contain at least one value")
        urls = _strings(r.get("nonResourceURLs"), f"{w}.nonResourceURLs")
        resources = _strings(r.get("resources"), f"{w}.resources")
        if urls and resources:
            raise ValueError(f"{w}: rules cannot apply to both regular resources and non-resource URLs")
        out.append(Rule(frozenset(verbs), frozenset(_strings(r.get("apiGroups"), f"{w}.apiGroups")),
                        frozenset(resources), frozenset(_strings(r.get("resourceNames"), f"{w}.resourceNames")),
                        urls))
    return tuple(out)


def _binding(doc: Mapping[str, Any], ns: str, where: str) -> Binding:
    ref = doc.get("roleRef")
    if not isinstance(ref, Mapping) or ref.get("apiGroup") != RBAC_GROUP or not ref.get("name"):
        raise ValueError(f"{where}.roleRef: must name a Role or ClusterRole of {RBAC_GROUP}")
    kind = ref.get("kind")
    if kind not in (("ClusterRole",) if not ns else ("ClusterRole", "Role")):
        raise ValueError(f"{where}.roleRef.kind: Unsupported value: {kind!r}")
    subjects = []
    for i, s in enumerate(doc.get("subjects") or ()):
        w = f"{where}.subjects[{i}]"
        if not isinstance(s, Mapping) or s.get("kind") not in ("User", "Group", "ServiceAccount") or not s.get("name"):
            raise ValueError(f"{w}: must be a User, Group or ServiceAccount with a name")
        if s["kind"] == "ServiceAccount" and not (s.get("namespace") or ns):
            raise ValueError(f"{w}.namespace: Required value")
        subjects.append(Subject(s["kind"], s["name"], s.get("namespace") or ""))
    return Binding(doc["metadata"]["name"], ns, kind, ref["name"], tuple(subjects))


def policy_from_documents(docs: Iterable[Any]) -> Policy:
    """The RBAC objects among ``docs`` (other kinds skipped) plus :data:`BUILTIN_DOCUMENTS`, as a Policy.
    ValueError naming the object for a malformed one."""
    cluster_roles: dict[str, tuple[Rule, ...]] = {}
    roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
    bindings: list[Binding] = []
    for doc in [*BUILTIN_DOCUMENTS, *docs]:
        if not isinstance(doc, Mapping) or doc.get("kind") not in RBAC_KINDS:
            continue
        if doc.get("apiVersion") != f"{RBAC_GROUP}/v1":
            raise ValueError(f"{doc['kind']}: apiVersion must be {RBAC_GROUP}/v1")
        meta = doc.get("metadata") or {}
        name, ns = meta.get("name"), meta.get("namespace") or ""
        if not name:
            raise ValueError(f"{doc['kind']}: metadata.name: Required value")
        kind = doc["kind"]
        where = f"{kind} {ns + '/' if ns else ''}{name}"
        if kind.startswith("Cluster") and ns:
            raise ValueError(f"{where}: a {kind} is not namespaced")
        if not kind.startswith("Cluster") and not ns:
            raise ValueError(f"{where}: metadata.namespace: Required value")
        if kind == "ClusterRole":
            cluster_roles[name] = _rules(doc, where)
        elif kind == "Role":
            roles[(ns, name)] = _rules(doc, where)
        else:
            bindings.append(_binding(doc, ns, where))
    return Policy(cluster_roles, roles, tuple(bindings))


def policy_from_yaml(text: str) -> Policy:
    """:func:`policy_from_documents` of a multi-document YAML manifest."""
    import yaml

    return policy_from_documents(yaml.safe_load_all(text))


# --------------------------------------------------------------------------- decision


def authorize(policy: Policy, a: Attributes) -> Decision:
    """Allowed by some binding that applies to the user and to the request's namespace, else denied."""
    groups = a.groups if AUTHENTICATED in a.groups else (*a.groups, AUTHENTICATED)
    for b in policy.bindings:
        if b.namespace and b.namespace != a.namespace:
            continue
        if not any(s.applies(a.user, groups, b.namespace) for s in b.subjects):
            continue
        rules = (policy.cluster_roles.get(b.role_name) if b.role_kind == "ClusterRole"
                 else policy.roles.get((b.namespace, b.role_name)))
        if rules and any(r.allows(a) for r in rules):
            kind = "RoleBinding" if b.namespace else "ClusterRoleBinding"
            where = f' of namespace "{b.namespace}"' if b.namespace else ""
            return Decision(True, f'RBAC: allowed by {kind} "{b.name}"{where} to {b.role_kind} "{b.role_name}"')
    return Decision(False, "")


def resource_verb(method: str, *, named: bool, watch: bool) -> str:
    """kube-apiserver's verb for a resource request: GET list/watch/get, POST create, PUT update,
    PATCH patch, DELETE delete/deletecollection."""
    m = method.upper()
    if m in ("GET", "HEAD"):
        return "watch" if watch else ("get" if named else "list")
    if m == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(m, m.lower())


def forbidden_message(a: Attributes) -> str:
    if not a.is_resource:
        return f'forbidden: User "{_q(a.user)}" cannot {a.verb} path "{_q(a.path)}"'
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    scope = (f'in the namespace "{_q(a.namespace)}"' if a.namespace else "at the cluster scope")
    why = (f'User "{_q(a.user)}" cannot {a.verb} resource "{_q(combined)}" in API group "{_q(a.api_group)}" '
           f"{scope}")
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    named = f' "{_q(a.name)}"' if a.name else ""
    return f"{qualified}{named} is forbidden: {why}"


def forbidden_status(a: Attributes) -> dict[str, Any]:
    """The 403 Status body kube-apiserver answers for a denied request."""
    details: dict[str, Any] = {}
    if a.is_resource:
        if a.name:
            details["name"] = a.name
        if a.api_group:
            details["group"] = a.api_group
        details["kind"] = a.resource
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": forbidden_message(a), "reason": "Forbidden"}
    if details:
        out["details"] = details
    out["code"] = 403
    return out


def _q(s: str) -> str:
    """Go's %q body for the printable strings Kubernetes names are made of."""
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


def _group_binding(name: str, group: str) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}]}


BUILTIN_DOCUMENTS: tuple[dict[str, Any], ...] = (
    _cluster_role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                    {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
    _group_binding("cluster-admin", "system:masters"),
    _cluster_role("system:discovery", [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi",
                                                            "/openapi/*", "/version", "/version/",
                                                            "/healthz", "/livez", "/readyz"],
                                        "verbs": ["get"]}]),
    _group_binding("system:discovery", AUTHENTICATED),
    _cluster_role("system:node", [
        # the lab kubelet: netlab/node/kubelet.py register() creates its Node, else patches its status
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["create", "get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]},
        # list+watch of Pods; delete with grace 0 confirms a graceful delete
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete", "patch"]},
        # _patch_status (pods/status); _annotate_netns patches the Pod itself (a lab-only annotation,
        # which kubelet's system:node role does not grant)
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
    ]),
    _group_binding("system:node", "system:nodes"),
)
"""Rules kube-apiserver has without any manifest, as RBAC documents (see the module docstring)."""
