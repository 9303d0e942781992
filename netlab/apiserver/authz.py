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
- ``system:node`` with kube-apiserver's node rules (:data:`NODE_RULES`), bound to no one, as
  upstream since v1.8: kubelets are authorised by the Node authorizer (:mod:`.nodeauthz`), which
  grants those rules, and limited by NodeRestriction (:mod:`.admission`).

The server does not keep a Policy of its own: :mod:`.rbacstore` seeds these documents into the store
and builds the Policy from the stored objects, so RBAC objects written through the API take effect.
:class:`Union` chains authorizers (``Node,RBAC``); :func:`uncovered` and :func:`escalation_message`
are RBAC's escalation check (ConfirmNoEscalation), used by :mod:`.admission`.

A deny answers 403 with kube-apiserver's Status (:func:`forbidden_status`): the message
``<resource> "<name>" is forbidden: User "<user>" cannot <verb> resource "<resource>" in API group
"<group>" in the namespace "<ns>"`` (``at the cluster scope`` without a namespace; the leading
resource is ``resource.group`` for a named group, the name part absent when the request names
no object; ``forbidden: User "<user>" cannot <verb> path "<path>"`` for a non-resource path),
as apimachinery's ``NewForbidden`` and the responsewriters' ``forbiddenMessage`` build it,
followed by ``: <reason>`` when an authorizer gave one (the Node authorizer's "no relationship found
between node '<n>' and this object").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["Attributes", "Rule", "Policy", "Decision", "Match", "Binding", "Subject", "Union", "policy_from_documents", "policy_from_yaml",
           "authorize", "forbidden_status", "resource_verb", "user_rules", "role_rules", "uncovered", "compact_string",
           "escalation_message", "rules_of", "AUTHENTICATED", "BUILTIN_DOCUMENTS", "NODE_RULES"]

log = logging.getLogger("podnet.netlab.apiserver.authz")

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
    documents: tuple[Mapping[str, Any], ...] = ()
    """The documents (besides the built-in ones) this policy was built from, to seed a store with."""

    def authorize(self, a: Attributes) -> "Decision":
        return authorize(self, a)


@dataclass(frozen=True)
class Match:
    """Where an RBAC allow came from: the first binding (in policy order) that applies, and the index of
    the first rule of its role that allows the request."""
    binding: Binding
    rule_index: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    match: Match | None = None
    """Set on an RBAC allow; None for a deny and for other authorizers' allows (the Node authorizer's)."""


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


def policy_from_documents(docs: Iterable[Any], *, builtins: bool = True, strict: bool = True) -> Policy:
    """The policy of ``docs``' RBAC documents (other kinds skipped), plus :data:`BUILTIN_DOCUMENTS` with
    ``builtins``. A bad document raises ValueError naming it; with ``strict=False`` it is skipped (logged)
    instead, as a store may hold what an older validator let through."""
    cluster_roles: dict[str, tuple[Rule, ...]] = {}
    roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
    bindings: list[Binding] = []
    own = [d for d in docs if isinstance(d, Mapping) and d.get("kind") in RBAC_KINDS]
    for doc in [*(BUILTIN_DOCUMENTS if builtins else ()), *own]:
        try:
            _add_document(doc, cluster_roles, roles, bindings)
        except (ValueError, KeyError, TypeError) as e:
            if strict:
                raise ValueError(str(e)) from None
            log.warning("RBAC document skipped: %s", e)
    return Policy(cluster_roles, roles, tuple(bindings), tuple(own))


def _add_document(doc: Mapping[str, Any], cluster_roles: dict, roles: dict, bindings: list) -> None:
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


def policy_from_yaml(text: str) -> Policy:
    """:func:`policy_from_documents` of a multi-document YAML manifest."""
    import yaml

    return policy_from_documents(yaml.safe_load_all(text))


# --------------------------------------------------------------------------- decision


def authorize(policy: Policy, a: Attributes) -> Decision:
    """Allowed by some binding that applies to the user and to the request's namespace, else denied; an
    allow carries the :class:`Match` (binding, first allowing rule) for usage accounting."""
    groups = a.groups if AUTHENTICATED in a.groups else (*a.groups, AUTHENTICATED)
    for b in policy.bindings:
        if b.namespace and b.namespace != a.namespace:
            continue
        if not any(s.applies(a.user, groups, b.namespace) for s in b.subjects):
            continue
        rules = (policy.cluster_roles.get(b.role_name) if b.role_kind == "ClusterRole"
                 else policy.roles.get((b.namespace, b.role_name)))
        index = next((i for i, r in enumerate(rules or ()) if r.allows(a)), None)
        if index is not None:
            kind = "RoleBinding" if b.namespace else "ClusterRoleBinding"
            where = f' of namespace "{b.namespace}"' if b.namespace else ""
            return Decision(True, f'RBAC: allowed by {kind} "{b.name}"{where} to {b.role_kind} "{b.role_name}"',
                            Match(b, index))
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


def forbidden_status(a: Attributes, reason: str = "") -> dict[str, Any]:
    """The 403 Status body kube-apiserver answers for a denied request; ``reason``, the authorizers'
    reasons (the Node authorizer's), follows the message after ``: `` as the responsewriters put it."""
    details: dict[str, Any] = {}
    if a.is_resource:
        if a.name:
            details["name"] = a.name
        if a.api_group:
            details["group"] = a.api_group
        details["kind"] = a.resource
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": forbidden_message(a) + (f": {reason}" if reason else ""),
                           "reason": "Forbidden"}
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


NODE_RULES: tuple[dict[str, Any], ...] = (
    # bootstrappolicy.NodeRules() as of v1.32, for what the lab serves
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["create", "get", "list", "watch", "update", "patch",
                                                         "delete"]},
    {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["update", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update", "patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
    # lab only: the lab kubelet records a pod's network namespace as an annotation on the Pod itself;
    # NodeRestriction (:mod:`.admission`) limits this to annotations of pods bound to the node
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch", "update"]},
)
"""The rules the Node authorizer grants a kubelet (kube-apiserver binds ``system:node`` to no one)."""

BUILTIN_DOCUMENTS: tuple[dict[str, Any], ...] = (
    _cluster_role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                    {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
    _group_binding("cluster-admin", "system:masters"),
    _cluster_role("system:discovery", [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi",
                                                            "/openapi/*", "/version", "/version/",
                                                            "/healthz", "/livez", "/readyz"],
                                        "verbs": ["get"]}]),
    _group_binding("system:discovery", AUTHENTICATED),
    _cluster_role("system:node", [dict(r) for r in NODE_RULES]),
)
"""Rules kube-apiserver has without any manifest, as RBAC documents (see the module docstring); seeded
into the store at start with kube-apiserver's bootstrap label and autoupdate annotation."""


# --------------------------------------------------------------------------- escalation prevention
# pkg/registry/rbac/validation/rule.go ConfirmNoEscalation and policy_comparator.go Covers: a user may
# write a Role/ClusterRole, or bind one, only when every rule it grants is covered by the rules the user
# already holds (in the binding's namespace plus cluster-wide; cluster-wide only for cluster objects).


def user_rules(policy: Policy, user: str, groups: tuple[str, ...], namespace: str) -> tuple[Rule, ...]:
    """Every rule bound to the user cluster-wide, plus (``namespace`` set) in that namespace."""
    groups = groups if AUTHENTICATED in groups else (*groups, AUTHENTICATED)
    out: list[Rule] = []
    for b in policy.bindings:
        if b.namespace and b.namespace != namespace:
            continue
        if any(s.applies(user, groups, b.namespace) for s in b.subjects):
            out += role_rules(policy, b.role_kind, b.role_name, b.namespace)
    return tuple(out)


def role_rules(policy: Policy, role_kind: str, role_name: str, namespace: str) -> tuple[Rule, ...]:
    if role_kind == "ClusterRole":
        return policy.cluster_roles.get(role_name, ())
    return policy.roles.get((namespace, role_name), ())


def _breakdown(r: Rule) -> list[Rule]:
    """One rule per (verb, group, resource, name) or (verb, url), as BreakdownRule does."""
    v = sorted(r.verbs)
    if r.non_resource_urls:
        return [Rule(frozenset({verb}), non_resource_urls=(u,)) for u in r.non_resource_urls for verb in v]
    names = sorted(r.resource_names) or [""]
    return [Rule(frozenset({verb}), frozenset({g}), frozenset({res}), frozenset({n}) if n else frozenset())
            for g in sorted(r.api_groups) for res in sorted(r.resources) for verb in v for n in names]


def _covers(owner: Rule, atom: Rule) -> bool:
    verb = next(iter(atom.verbs))
    if not ("*" in owner.verbs or verb in owner.verbs):
        return False
    if atom.non_resource_urls:
        url = atom.non_resource_urls[0]
        return any(u == "*" or u == url or (u.endswith("*") and url.startswith(u[:-1]))
                   for u in owner.non_resource_urls)
    if owner.non_resource_urls:
        return False
    group, res = next(iter(atom.api_groups)), next(iter(atom.resources))
    if not ("*" in owner.api_groups or group in owner.api_groups):
        return False
    sub = res.partition("/")[2]
    if not ("*" in owner.resources or res in owner.resources or (sub and f"*/{sub}" in owner.resources)):
        return False
    return not owner.resource_names or bool(atom.resource_names <= owner.resource_names and atom.resource_names)


def uncovered(owner: Iterable[Rule], requested: Iterable[Rule]) -> list[Rule]:
    """The broken-down rules of ``requested`` no rule of ``owner`` covers."""
    owner = tuple(owner)
    return [atom for r in requested for atom in _breakdown(r) if not any(_covers(o, atom) for o in owner)]


def compact_string(r: Rule) -> str:
    """rbacv1helpers.CompactString: the rule's non-empty fields, Go-quoted."""
    def q(xs: Iterable[str]) -> str:
        return "[" + " ".join(f'"{_q(x)}"' for x in xs) + "]"
    parts = []
    if r.api_groups:
        parts.append(f"APIGroups:{q(sorted(r.api_groups))}")
    if r.resources:
        parts.append(f"Resources:{q(sorted(r.resources))}")
    if r.non_resource_urls:
        parts.append(f"NonResourceURLs:{q(r.non_resource_urls)}")
    if r.resource_names:
        parts.append(f"ResourceNames:{q(sorted(r.resource_names))}")
    parts.append(f"Verbs:{q(sorted(r.verbs))}")
    return "{" + ", ".join(parts) + "}"


def escalation_message(user: str, groups: tuple[str, ...], missing: list[Rule]) -> str:
    """ConfirmNoEscalation's error text."""
    gs = "[" + " ".join(f'"{_q(g)}"' for g in groups) + "]"
    return (f'user "{_q(user)}" (groups={gs}) is attempting to grant RBAC permissions not currently held:\n'
            + "\n".join(compact_string(r) for r in missing))


def rules_of(doc: Mapping[str, Any]) -> tuple[Rule, ...]:
    """The rules of a Role or ClusterRole document (ValueError for a bad one)."""
    return _rules(doc, f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}")


class Union:
    """kube-apiserver's union authorizer (``--authorization-mode Node,RBAC``): the first authorizer that
    allows decides; a deny carries the other authorizers' reasons joined by ``, ``."""

    def __init__(self, *authorizers: Any) -> None:
        self.authorizers = authorizers

    def authorize(self, a: Attributes) -> Decision:
        reasons = []
        for az in self.authorizers:
            d = az.authorize(a)
            if d.allowed:
                return d
            if d.reason:
                reasons.append(d.reason)
        return Decision(False, ", ".join(reasons))
