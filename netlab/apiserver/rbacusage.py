"""Granted-but-never-used RBAC permissions: what each subject was allowed, against what its bindings grant.

:class:`UsageLog` is the recorder: the API server hands it every allowed request's
:class:`.authz.Attributes` and :class:`.authz.Decision`; it counts, per (user, groups, apiGroup,
resource, subresource, verb, namespace, name, path), which RBAC rule allowed the request (the binding,
and the index of the first rule of its role that matched, as :func:`.authz.authorize` decides). Requests
the Node authorizer allowed carry no rule and count under no binding. The log is bounded
(:data:`MAX_KEYS` distinct keys; requests past that are counted in ``dropped``).

:func:`report` is pure: a :class:`.authz.Policy` and recorded uses -> :class:`Row` s. For every subject
(User, Group or ServiceAccount) of every binding, every item its role grants (one per apiGroup x resource x
verb of each rule, or nonResourceURL x verb; resourceNames stay together on the item) is a row with how
many recorded requests that rule allowed, through that binding, that the item matches; a row with 0 is a
permission granted and never used. A request counts only for the first rule that allowed it, so an item a
preceding rule already covers reads as unused: it is redundant. Rows of the built-in bootstrap roles
bound to groups (``cluster-admin``, ``system:discovery``) are included; callers filter by subject.

:func:`render` prints rows as a table; ``GET`` :data:`PATH` serves :func:`report_document` (JSON) to
whoever RBAC allows that non-resource path (``cluster-admin``'s ``*``: the admin kubeconfig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver import authz

__all__ = ["PATH", "MAX_KEYS", "Use", "UsageLog", "Row", "RbacUsage", "report", "report_document",
           "rows_from_document", "render"]

PATH = "/debug/podnet/rbac-usage"
MAX_KEYS = 200_000


@dataclass(frozen=True)
class Use:
    """One kind of allowed request and the RBAC rule that allowed it (``binding`` None: not RBAC)."""
    attributes: authz.Attributes
    binding: authz.Binding | None
    rule_index: int


class UsageLog:
    """Counts of allowed requests by :class:`Use` (the only mutable part of this module)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.counts: dict[Use, int] = {}
        self.max_keys = max_keys
        self.dropped = 0

    def record(self, a: authz.Attributes, decision: authz.Decision) -> None:
        if not decision.allowed:
            return
        m = decision.match
        use = Use(a, m.binding if m else None, m.rule_index if m else -1)
        n = self.counts.get(use)
        if n is None and len(self.counts) >= self.max_keys:
            self.dropped += 1
            return
        self.counts[use] = (n or 0) + 1

    def uses(self) -> tuple[tuple[Use, int], ...]:
        return tuple(self.counts.items())


@dataclass(frozen=True)
class Row:
    subject: str
    """``ServiceAccount:<ns>/<name>``, ``User:<name>`` or ``Group:<name>``"""
    binding: str
    """``ClusterRoleBinding/<name>`` or ``RoleBinding/<ns>/<name>``"""
    role: str
    """``ClusterRole/<name>`` or ``Role/<ns>/<name>``"""
    rule_index: int
    api_group: str
    resource: str
    """``resource`` or ``resource/subresource``; ``""`` for a nonResourceURL item"""
    verb: str
    resource_names: tuple[str, ...] = ()
    url: str = ""
    uses: int = 0

    @property
    def used(self) -> bool:
        return self.uses > 0


def _subject_label(s: authz.Subject, binding_ns: str) -> str:
    if s.kind == "ServiceAccount":
        return f"ServiceAccount:{s.namespace or binding_ns}/{s.name}"
    return f"{s.kind}:{s.name}"


def _binding_label(b: authz.Binding) -> str:
    return f"RoleBinding/{b.namespace}/{b.name}" if b.namespace else f"ClusterRoleBinding/{b.name}"


def _role_label(b: authz.Binding) -> str:
    return f"Role/{b.namespace}/{b.role_name}" if b.role_kind == "Role" else f"ClusterRole/{b.role_name}"


def _items(rule: authz.Rule) -> list[tuple[authz.Rule, str, str, str, str]]:
    """(single-item rule, apiGroup, resource, verb, url) for each item the rule grants."""
    verbs = sorted(rule.verbs)
    if rule.non_resource_urls:
        return [(authz.Rule(frozenset({v}), non_resource_urls=(u,)), "", "", v, u)
                for u in rule.non_resource_urls for v in verbs]
    return [(authz.Rule(frozenset({v}), frozenset({g}), frozenset({r}), rule.resource_names), g, r, v, "")
            for g in sorted(rule.api_groups) for r in sorted(rule.resources) for v in verbs]


def report(policy: authz.Policy, uses: Iterable[tuple[Use, int]]) -> list[Row]:
    """Every (subject, binding, rule item) of ``policy`` with the number of ``uses`` it accounts for."""
    by_rule: dict[tuple[authz.Binding, int], list[tuple[Use, int]]] = {}
    for use, n in uses:
        if use.binding is not None:
            by_rule.setdefault((use.binding, use.rule_index), []).append((use, n))
    rows: list[Row] = []
    for b in policy.bindings:
        rules = authz.role_rules(policy, b.role_kind, b.role_name, b.namespace)
        for s in b.subjects:
            for i, rule in enumerate(rules):
                mine = [(u, n) for u, n in by_rule.get((b, i), ())
                        if s.applies(u.attributes.user, _groups(u.attributes), b.namespace)]
                for item, group, resource, verb, url in _items(rule):
                    count = sum(n for u, n in mine if item.allows(u.attributes))
                    rows.append(Row(_subject_label(s, b.namespace), _binding_label(b), _role_label(b), i, group,
                                    resource, verb, tuple(sorted(rule.resource_names)), url, count))
    return rows


def _groups(a: authz.Attributes) -> tuple[str, ...]:
    return a.groups if authz.AUTHENTICATED in a.groups else (*a.groups, authz.AUTHENTICATED)


def report_document(rows: Iterable[Row], dropped: int = 0) -> dict[str, Any]:
    """The JSON body of ``GET`` :data:`PATH`."""
    return {"kind": "RBACUsageReport", "apiVersion": "podnet.dev/v1alpha1", "droppedRequests": dropped,
            "rows": [{"subject": r.subject, "binding": r.binding, "role": r.role, "rule": r.rule_index,
                      "apiGroup": r.api_group, "resource": r.resource, "verb": r.verb,
                      "resourceNames": list(r.resource_names), "nonResourceURL": r.url, "uses": r.uses}
                     for r in rows]}


def rows_from_document(doc: Mapping[str, Any]) -> list[Row]:
    """The inverse of :func:`report_document` (what ``podnet lab rbac-report`` reads)."""
    return [Row(d["subject"], d["binding"], d["role"], int(d["rule"]), d["apiGroup"], d["resource"], d["verb"],
                tuple(d.get("resourceNames") or ()), d.get("nonResourceURL") or "", int(d["uses"]))
            for d in doc.get("rows") or ()]


def render(rows: Iterable[Row], *, unused_only: bool = False) -> str:
    """A fixed-width table, one row per item, sorted by subject, role, rule; ``unused_only`` keeps rows with 0 uses."""
    head = ("SUBJECT", "ROLE", "RULE", "APIGROUP", "RESOURCE", "VERB", "USES")
    body = []
    for r in sorted(rows, key=lambda r: (r.subject, r.role, r.binding, r.rule_index, r.api_group, r.resource,
                                         r.url, r.verb)):
        if unused_only and r.used:
            continue
        what = r.url or (r.resource + (f" [{','.join(r.resource_names)}]" if r.resource_names else ""))
        body.append((r.subject, r.role, str(r.rule_index), r.api_group or ('""' if not r.url else "-"), what,
                     r.verb, str(r.uses) if r.used else "0 (never used)"))
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body)) + "\n"


class RbacUsage:
    """The server's side: a :class:`UsageLog` and the current policy of a ``.policy`` holder
    (:class:`.rbacstore.StorePolicy`), so the report always reads the RBAC objects stored now."""

    def __init__(self, policy_source: Any, log: UsageLog | None = None) -> None:
        self.policy_source = policy_source
        self.log = log or UsageLog()

    def record(self, a: authz.Attributes, decision: authz.Decision) -> None:
        self.log.record(a, decision)

    def document(self) -> dict[str, Any]:
        return report_document(report(self.policy_source.policy, self.log.uses()), self.log.dropped)
