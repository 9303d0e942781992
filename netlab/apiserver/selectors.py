"""Label and field selectors, parsed as kube-apiserver parses them.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists), ``!k`` (does not exist), joined by commas (AND). ``k!=v`` and
``notin`` also match objects without the label, as in Kubernetes.
Field selectors: ``path=v``, ``path==v``, ``path!=v`` on the fields each
resource supports (metadata.name, metadata.namespace; spec.nodeName and
status.phase for pods).

Parsing raises :class:`SelectorError` (the API server answers 400); matching
is a pure function of the parsed selector and one object dict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["SelectorError", "LabelSelector", "FieldSelector", "parse_label_selector", "parse_field_selector"]


class SelectorError(ValueError):
    pass


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    """=, !=, in, notin, exists, !exists"""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        return not has or labels[self.key] not in self.values  # != and notin


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise SelectorError("unbalanced '('")
    parts.append(cur)
    return [p.strip() for p in parts]


def _key(k: str) -> str:
    if not _KEY.match(k) or len(k) > 317:
        raise SelectorError(f"invalid label key {k!r}")
    return k


def _value(v: str) -> str:
    if not _VALUE.match(v) or len(v) > 63:
        raise SelectorError(f"invalid label value {v!r}")
    return v


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    reqs = []
    for part in _split_top(text):
        if not part:
            raise SelectorError("empty requirement")
        m = _SET_RE.match(part)
        if m:
            raw_values = [v.strip() for v in m.group(3).split(",")]
            if not all(raw_values):
                raise SelectorError(f"empty value in {part!r}")
            values = frozenset(_value(v) for v in raw_values)
            reqs.append(Requirement(_key(m.group(1)), "in" if m.group(2) == "in" else "notin", values))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append(Requirement(_key(k.strip()), "!=", frozenset({_value(v.strip())})))
        elif "==" in part:
            k, v = part.split("==", 1)
            reqs.append(Requirement(_key(k.strip()), "=", frozenset({_value(v.strip())})))
        elif "=" in part:
            k, v = part.split("=", 1)
            reqs.append(Requirement(_key(k.strip()), "=", frozenset({_value(v.strip())})))
        elif part.startswith("!"):
            reqs.append(Requirement(_key(part[1:].strip()), "!exists"))
        else:
            reqs.append(Requirement(_key(part), "exists"))
    return LabelSelector(tuple(reqs))


# --------------------------------------------------------------------------- fields

FIELDS_BY_RESOURCE: dict[str, tuple[str, ...]] = {
    "pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "status.podIP", "spec.hostNetwork"),
    # kube-apiserver's event and secret strategies (their selectable fields, less Event's "source")
    "events": ("metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
               "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "type"),
    "secrets": ("metadata.name", "metadata.namespace", "type"),
}
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()
    """(field path, equal?, value)"""

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, f) == v) == eq for f, eq, v in self.terms)


def parse_field_selector(text: str | None, plural: str) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    allowed = FIELDS_BY_RESOURCE.get(plural, COMMON_FIELDS)
    terms = []
    for part in text.split(","):
        part = part.strip()
        for op, eq in (("!=", False), ("==", True), ("=", True)):
            if op in part:
                f, v = part.split(op, 1)
                f = f.strip()
                if f not in allowed:
                    raise SelectorError(f'field label not supported: {f}')
                terms.append((f, eq, v.strip()))
                break
        else:
            raise SelectorError(f"invalid field selector term {part!r}")
    return FieldSelector(tuple(terms))
