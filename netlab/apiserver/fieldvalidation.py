"""Server-side field validation (``?fieldValidation=``) as kube-apiserver does it.

For create (POST), update (PUT) and patch (PATCH), the request's
``fieldValidation`` directive decides what happens to fields the kind does
not have (:mod:`podnet.netlab.apiserver.fieldschema`) and to keys repeated in one JSON
object:

- ``Strict``: the request fails, listing every problem (repeated keys first,
  then unknown fields, each in document order) as
  ``strict decoding error: duplicate field "spec.type", unknown field "spec.foo"``:
  create/update answer 400 BadRequest ``<Kind> in version "v1" cannot be
  handled as a <Kind>: strict decoding error: ...``; JSON merge patch and
  JSON patch answer 400 BadRequest ``strict decoding error: ...``; strategic
  merge patch answers 422 Invalid on the field ``patch`` (kube-apiserver's
  patch handler does exactly this);
- ``Warn`` (the default when the parameter is absent or empty, as in
  kube-apiserver v1.27+): the request succeeds, unknown fields are dropped
  from the stored object, and the answer carries one ``Warning: 299 - "..."``
  header per problem;
- ``Ignore``: the request succeeds and unknown fields are dropped silently.

Any other value is refused with 422 (``CreateOptions.meta.k8s.io "" is
invalid: fieldValidation: Unsupported value: ...``). Everything here is pure:
objects are never modified; :func:`prune` returns a new tree (subtrees it
keeps unchanged may be shared).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.fieldschema import ANY, SCHEMAS, ListOf, Schema

__all__ = ["DIRECTIVES", "directive", "loads_noting_duplicates", "problems", "prune", "check", "warning_header",
           "go_format"]

DIRECTIVES = ("Ignore", "Strict", "Warn")
DEFAULT = "Warn"


def directive(value: str | None, options_kind: str) -> str:
    """The effective directive; ``options_kind`` is CreateOptions, UpdateOptions or PatchOptions."""
    if value is None or value == "":
        return DEFAULT
    if value in DIRECTIVES:
        return value
    supported = ", ".join(json.dumps(v) for v in ("",) + DIRECTIVES)
    detail = f"Unsupported value: {json.dumps(value)}: supported values: {supported}"
    raise StatusError(422, "Invalid", f'{options_kind}.meta.k8s.io "" is invalid: fieldValidation: {detail}',
                      kind=options_kind, causes=[{"reason": "FieldValueNotSupported", "message": detail,
                                                  "field": "fieldValidation"}])


class _Dups:
    """Duplicate keys seen while parsing, by the id of the dict that holds them."""

    def __init__(self) -> None:
        self.by_id: dict[int, list[str]] = {}

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dups: list[str] = []
        for k, v in pairs:
            if k in out and k not in dups:
                dups.append(k)
            out[k] = v
        if dups:
            self.by_id[id(out)] = dups
        return out


def loads_noting_duplicates(raw: bytes | str) -> tuple[Any, list[str]]:
    """Parse JSON (the last of repeated keys wins) and the paths of repeated keys, in document order."""
    dups = _Dups()
    doc = json.loads(raw, object_pairs_hook=dups.hook)
    if not dups.by_id:
        return doc, []
    paths: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k in dups.by_id.get(id(node), ()):
                paths.append(_join(path, k))
            for k, v in node.items():
                walk(v, _join(path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(doc, "")
    return doc, paths


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(node: Any, schema: Schema, path: str) -> Iterator[str]:
    if schema is ANY:
        return
    if isinstance(schema, ListOf):
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from _unknown(item, schema.item, f"{path}[{i}]")
        return
    if isinstance(node, dict):
        for k, v in node.items():
            if k not in schema:
                yield _join(path, k)
            else:
                yield from _unknown(v, schema[k], _join(path, k))


def problems(plural: str, obj: Any, duplicates: list[str] = ()) -> list[str]:
    """Strict-decoding messages for ``obj``: duplicates first (as the decoder meets them), then unknown fields."""
    schema = SCHEMAS.get(plural, ANY)
    out = [f'duplicate field "{p}"' for p in duplicates]
    out += [f'unknown field "{p}"' for p in _unknown(obj, schema, "")]
    return out


def prune(plural: str, obj: Any) -> Any:
    """A copy of ``obj`` without the fields its kind does not have."""
    return _prune(obj, SCHEMAS.get(plural, ANY))


def _prune(node: Any, schema: Schema) -> Any:
    if schema is ANY:
        return node
    if isinstance(schema, ListOf):
        return [_prune(i, schema.item) for i in node] if isinstance(node, list) else node
    if isinstance(node, dict):
        return {k: _prune(v, schema[k]) for k, v in node.items() if k in schema}
    return node


def go_format(v: Any) -> str:
    """``fmt.Sprintf("%+v", v)`` of a JSON value decoded by Go into interface{} (maps print sorted)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_format(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_format(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def check(plural: str, kind: str, version: str, obj: Any, how: str, *, duplicates: list[str] = (),
          verb: str = "create", patch_type: str = "", patch: Any = None) -> tuple[Any, list[str]]:
    """Apply directive ``how`` to ``obj``: (object to store, warnings), or StatusError under Strict.

    ``verb`` is create, update or patch; for patch, ``patch_type`` is the
    Content-Type and ``patch`` the request body (quoted in the 422 message of
    a strategic merge patch).
    """
    found = problems(plural, obj, duplicates)
    if found and how == "Strict":
        err = "strict decoding error: " + ", ".join(found)
        if verb != "patch":
            raise StatusError(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {err}')
        if patch_type == "application/strategic-merge-patch+json":
            detail = f"Invalid value: {json.dumps(go_format(patch), ensure_ascii=False)}: {err}"
            raise StatusError(422, "Invalid", f' "" is invalid: patch: {detail}',
                              causes=[{"reason": "FieldValueInvalid", "message": detail, "field": "patch"}])
        raise StatusError(400, "BadRequest", err)
    stored = prune(plural, obj) if found else obj
    return stored, found if how == "Warn" else []


def warning_header(text: str) -> str:
    """One ``Warning`` header value as kube-apiserver writes it (code 299, agent ``-``)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
