"""Server-side apply: PATCH with ``application/apply-patch+yaml`` (``kubectl apply --server-side``).

As kube-apiserver (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, the ``applyPatcher``,
and apimachinery's managedfields with structured-merge-diff), for every kind served:

- ``fieldManager`` is required (422 ``PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required
  value: is required for apply patch``); the body is a YAML or JSON object with ``apiVersion``, ``kind``
  and a ``metadata.name`` equal to the URL's;
- an absent object is created (201) from the applied configuration;
- every object written by apply carries ``metadata.managedFields``: one ``Apply`` entry per manager
  (``fieldsType: FieldsV1``, ``fieldsV1`` the set of fields the manager applied), as upstream;
- applying a value to a field another manager owns, where the value differs from the live one, is a
  conflict: 409 ``Apply failed with 1 conflict: conflict with "<manager>": .spec.replicas`` (several:
  ``Apply failed with N conflicts: conflicts with "<manager>":\\n- <path>...``; an ``Update`` manager
  printed ``"<manager>" using <apiVersion>``), with one ``FieldManagerConflict`` cause per field; with
  ``force=true`` (``--force-conflicts``) the fields move to the applier. Equal values are shared;
- a field the manager applied before and leaves out now is removed, unless another manager owns it.

Writes other than apply (create, PUT, other PATCH types) record an ``Update`` entry for their
manager (:func:`record_update`): the fields they add or change move to it, so a later apply of a
different value conflicts with it (``conflict with "kubectl-create" using v1: .data.color``).

Simplified (the "field set" is a set of paths): maps are walked field by field; lists whose elements
have a strategic merge key (:data:`.patch.MERGE_KEYS`: containers by name, ports, env, volumes, ...)
are sets of elements (``k:{"name":"c"}``), every other list is atomic (owned as one field); no schema
per kind (so no ``x-kubernetes-map-type: atomic`` structs). A non-apply write without
``?fieldManager=`` (kubectl always sends one) is recorded only on objects that already have
managedFields, so objects written by plain API clients carry none. On the main resource of a kind
with a status, ``status`` is not part of the field set (it is ignored there, as upstream resets it);
the status subresource owns only ``status``.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from aiohttp import web

from podnet.netlab.apiserver.apistore import StatusError, rfc3339
from podnet.netlab.apiserver.patch import merge_key

__all__ = ["serve_apply", "field_set", "fields_v1", "paths_of", "apply_merge", "conflict_error", "plan_apply",
           "record_update", "update_manager"]

Path = tuple[str, ...]
_SKIP_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}


def _element_key(item: dict[str, Any], key: str) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"))


def field_set(obj: Any, *, status: bool = True) -> set[Path]:
    """The paths ``obj`` sets, in FieldsV1 notation (``f:`` fields, ``k:`` keyed list elements with a
    ``.`` marker for the element itself)."""
    out: set[Path] = set()
    for k, v in (obj or {}).items():
        if k in ("apiVersion", "kind") or (k == "status" and not status):
            continue
        if k == "metadata" and isinstance(v, dict):
            v = {mk: mv for mk, mv in v.items() if mk not in _SKIP_META}
            if not v:
                continue
        _walk(("f:" + k,), k, v, out)
    return out


def _walk(path: Path, name: str, v: Any, out: set[Path]) -> None:
    if isinstance(v, dict) and v:
        for k, sub in v.items():
            _walk(path + ("f:" + k,), k, sub, out)
        return
    if isinstance(v, list) and v and (key := merge_key(name, v)):
        for item in v:
            ek = _element_key(item, key)
            out.add(path + (ek, "."))
            for k, sub in item.items():
                _walk(path + (ek, "f:" + k), k, sub, out)
        return
    out.add(path)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for p in sorted(paths):
        node = tree
        for part in p:
            node = node.setdefault(part, {})
    return tree


def paths_of(tree: Any, prefix: Path = ()) -> set[Path]:
    """The leaf paths of a FieldsV1 tree."""
    if not isinstance(tree, dict) or not tree:
        return {prefix} if prefix else set()
    out: set[Path] = set()
    for k, v in tree.items():
        out |= paths_of(v, prefix + (k,))
    return out


def _step(node: Any, part: str) -> Any:
    if part.startswith("f:"):
        return node.get(part[2:]) if isinstance(node, dict) else None
    if part.startswith("k:") and isinstance(node, list):
        want = json.loads(part[2:])
        return next((i for i in node if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())), None)
    return node


def _get(obj: Any, path: Path) -> Any:
    node = obj
    for part in path:
        if part == ".":
            break
        node = _step(node, part)
        if node is None:
            return None
    return node


def _remove(obj: Any, path: Path) -> None:
    """Remove the field (or keyed element, for a ``.`` path) at ``path``."""
    if path and path[-1] == ".":
        path = path[:-1]
    parent = _get(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        item = _step(parent, last)
        if item is not None:
            parent.remove(item)


def apply_merge(live: Any, applied: Any, name: str = "") -> Any:
    """``applied`` merged into ``live``: maps field by field, keyed lists element by element, other lists
    and scalars replaced."""
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = apply_merge(live.get(k), v, k)
        return out
    if isinstance(applied, list) and isinstance(live, list) and (key := merge_key(name, live + applied)):
        out_list = [copy.deepcopy(i) for i in live]
        for item in applied:
            idx = next((n for n, i in enumerate(out_list) if isinstance(i, dict) and i.get(key) == item.get(key)),
                       None)
            if idx is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[idx] = apply_merge(out_list[idx], item, "")
        return out_list
    return copy.deepcopy(applied)


def path_string(path: Path) -> str:
    """``.spec.template.spec.containers[name="c"].image``, as structured-merge-diff prints a path."""
    out = ""
    for part in path:
        if part.startswith("f:"):
            out += "." + part[2:]
        elif part.startswith("k:"):
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(part[2:]).items()) + "]"
    return out


def _manager_label(entry: dict[str, Any]) -> str:
    label = json.dumps(entry.get("manager", ""))
    if entry.get("subresource"):
        label += f' with subresource {json.dumps(entry["subresource"])}'
    if entry.get("operation") == "Update":
        label += f' using {entry.get("apiVersion", "")}'
    return label


def conflict_error(conflicts: list[tuple[dict[str, Any], Path]]) -> StatusError:
    """409 Conflict with apimachinery's NewConflictError message and causes."""
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {_manager_label(e)}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        msg = f"Apply failed with 1 conflict: conflict with {_manager_label(e)}: {path_string(p)}"
    else:
        by: dict[str, list[str]] = {}
        for e, p in conflicts:
            by.setdefault(_manager_label(e), []).append(path_string(p))
        lines = []
        for label in sorted(by):
            lines.append(f"conflicts with {label}:")
            lines += [f"- {p}" for p in sorted(by[label])]
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return StatusError(409, "Conflict", msg, causes=causes)


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    mf = (obj.get("metadata") or {}).get("managedFields")
    return [dict(e) for e in mf if isinstance(e, dict)] if isinstance(mf, list) else []


def _is_own(e: dict[str, Any], manager: str, sub: str) -> bool:
    return e.get("manager") == manager and e.get("operation") == "Apply" and (e.get("subresource") or "") == sub


def plan_apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, *, force: bool,
               sub: str = "", status: bool = True, now: float | None = None) -> dict[str, Any]:
    """The object to store after ``manager`` applies ``applied`` to ``live`` (None: create). Pure;
    raises the 409 of :func:`conflict_error`."""
    new_set = field_set(applied, status=status)
    entries = _entries(live) if live is not None else []
    own = next((e for e in entries if _is_own(e, manager, sub)), None)
    prev = paths_of(own.get("fieldsV1")) if own else set()
    others = [e for e in entries if e is not own]
    other_sets = [paths_of(e.get("fieldsV1")) for e in others]
    if live is not None:
        conflicts = []
        for e, owned in zip(others, other_sets):
            for p in sorted(new_set & owned):
                if p[-1] != "." and _get(live, p) != _get(applied, p):
                    conflicts.append((e, p))
        if conflicts and not force:
            raise conflict_error(conflicts)
        if force:  # the conflicting fields move to the applier; equal values stay shared
            taken = {p for _, p in conflicts}
            other_sets = [owned - taken for owned in other_sets]
    base = copy.deepcopy(live) if live is not None else {}
    still_owned = set().union(*other_sets) if other_sets else set()
    for p in sorted(prev - new_set - still_owned, key=len, reverse=True):
        _remove(base, p)
    merged = apply_merge(base, {k: v for k, v in applied.items() if k != "metadata"})
    meta = dict(merged.get("metadata") or {})
    for k, v in (applied.get("metadata") or {}).items():
        if k not in _SKIP_META or k in ("name", "namespace"):
            meta[k] = apply_merge(meta.get(k), v, k)
    if own is not None and prev == new_set and own.get("apiVersion") == applied.get("apiVersion"):
        mine = own  # nothing new: the entry, and its time, stay (no no-op write)
    else:
        mine = _entry(manager, "Apply", applied, new_set, sub, now)
    out: list[dict[str, Any]] = [] if own is not None else [mine]
    sets = iter(other_sets)
    for e in entries:  # in their order, so an unchanged list stays equal
        if e is own:
            out.append(mine)
            continue
        owned = next(sets)
        if owned == paths_of(e.get("fieldsV1")):
            out.append(e)
        elif owned:
            out.append({**e, "fieldsV1": fields_v1(owned)})
    meta["managedFields"] = out
    merged["metadata"] = meta
    return merged


def _scoped(obj: Any, sub: str, has_status: bool) -> set[Path]:
    """The field set of a write: the status subresource owns ``status`` only, the main resource of a kind
    with a status everything but it."""
    paths = field_set(obj)
    if sub == "status":
        return {p for p in paths if p[0] == "f:status"}
    if has_status:
        return {p for p in paths if p[0] != "f:status"}
    return paths


def _entry(manager: str, operation: str, obj: dict[str, Any], paths: set[Path], sub: str,
           now: float | None) -> dict[str, Any]:
    e = {"manager": manager, "operation": operation, "apiVersion": obj.get("apiVersion", ""),
         "time": rfc3339(time.time() if now is None else now), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths)}
    if sub:
        e["subresource"] = sub
    return e


def record_update(obj: dict[str, Any], old: dict[str, Any] | None, manager: str, *, sub: str = "",
                  has_status: bool = False, now: float | None = None) -> None:
    """Record a non-apply write (create, PUT, PATCH) by ``manager`` in ``obj``'s managedFields, in place:
    its ``Update`` entry gains the fields it added or changed, which every other manager loses (so a later
    apply of another value conflicts with it); fields it removed leave every entry."""
    new_set = _scoped(obj, sub, has_status)
    old_set = _scoped(old, sub, has_status) if old is not None else set()
    changed = {p for p in new_set if p not in old_set or (p[-1] != "." and _get(old, p) != _get(obj, p))}
    removed = old_set - new_set
    entries = _entries(old) if old is not None else []
    mine_at = next((i for i, e in enumerate(entries) if e.get("manager") == manager
                    and e.get("operation") == "Update" and (e.get("subresource") or "") == sub), None)
    mine_prev = paths_of(entries[mine_at].get("fieldsV1")) if mine_at is not None else set()
    mine_set = (mine_prev | changed) - removed
    kept = []
    for i, e in enumerate(entries):
        if i == mine_at:
            if mine_set == mine_prev:  # nothing new: the entry, and its time, stay (no no-op write)
                kept.append(e)
            elif mine_set:
                kept.append(_entry(manager, "Update", obj, mine_set, sub, now))
            continue
        owned = paths_of(e.get("fieldsV1"))
        if owned & (changed | removed):
            owned -= changed | removed
            if owned:
                kept.append({**e, "fieldsV1": fields_v1(owned)})
        else:
            kept.append(e)
    if mine_at is None and mine_set:
        kept.append(_entry(manager, "Update", obj, mine_set, sub, now))
    meta = obj["metadata"] = dict(obj.get("metadata") or {})  # never the stored object's own dict
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def update_manager(request: web.Request, old: dict[str, Any] | None) -> str | None:
    """The manager of a non-apply write: ``?fieldManager=``, else (only for an object that already has
    managedFields) the User-Agent up to its first ``/`` as upstream; None: the write is not recorded."""
    manager = request.query.get("fieldManager")
    if manager:
        return manager
    if old is None or not (old.get("metadata") or {}).get("managedFields"):
        return None
    return request.headers.get("User-Agent", "unknown").split("/", 1)[0] or "unknown"


def _parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise StatusError(400, "BadRequest", f"error decoding YAML: {e}") from None


async def serve_apply(handlers: Any, request: web.Request, kind: Any, ns: str | None, name: str,
                      sub: str | None) -> web.Response:
    """The apply PATCH on ``kind``/``name`` (through :class:`.apihandlers.ApiHandlers`'s registry and admission)."""
    manager = request.query.get("fieldManager", "")
    if not manager:
        msg = "fieldManager: Required value: is required for apply patch"
        raise StatusError(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {msg}', kind="PatchOptions",
                          group="meta.k8s.io", causes=[{"reason": "FieldValueRequired",
                                                        "message": "Required value: is required for apply patch",
                                                        "field": "fieldManager"}])
    force = request.query.get("force", "").lower() == "true"
    applied = _parse_body(await request.read())
    if not isinstance(applied, dict):
        raise StatusError(400, "BadRequest", "the apply configuration must be an object")
    if not applied.get("apiVersion") or not applied.get("kind"):
        raise StatusError(400, "BadRequest", "apiVersion and kind must be set in the apply configuration")
    meta = applied.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") not in (None, name):
        raise StatusError(400, "BadRequest", "the name of the object does not match the name on the URL")
    applied = {**applied, "metadata": {**meta, "name": name}}
    live = handlers.store.get(kind.plural, ns or "", name)
    status = not (kind.has_status and not sub)
    obj = plan_apply(live, applied, manager, force=force, sub=sub or "", status=status)
    dry = bool(request.query.getall("dryRun", []))
    if live is None:
        if sub:
            raise StatusError(404, "NotFound", f'{kind.plural} "{name}" not found', kind=kind.plural, name=name)
        prepared = handlers.registry.prepare_create(kind, obj, ns)
        try:
            handlers.admit(request, kind, "CREATE", ns, name, None, prepared.obj, None)
        except StatusError:
            handlers.registry.release_allocations(prepared)
            raise
        if dry:
            handlers.registry.release_allocations(prepared)
            return web.json_response(prepared.obj, status=201)
        return web.json_response(handlers.registry.commit_create(kind, prepared), status=201)
    prepared = handlers.registry.prepare_update(kind, live, obj, subresource=sub or "")
    try:
        handlers.admit(request, kind, "UPDATE", ns, name, sub, prepared.obj, live)
    except StatusError:
        handlers.registry.release_allocations(prepared)
        raise
    if dry:
        handlers.registry.release_allocations(prepared)
        return web.json_response(prepared.obj)
    return web.json_response(handlers.registry.commit_update(kind, live, prepared, None))
