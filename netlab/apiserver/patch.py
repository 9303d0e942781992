"""PATCH bodies: JSON merge patch, strategic merge patch (subset), JSON patch.

All functions are pure: they return a new document and never modify their
arguments. Errors raise :class:`PatchError` (the API server answers 400/422).

The strategic merge patch covers what ``kubectl apply``/``kubectl patch``
send for the kinds the lab serves: lists with a merge key (Service ports by
``port``, containers by ``name``, container ports by ``containerPort``,
conditions and node addresses by ``type``, podIPs by ``ip``) merge element by
element; ``$patch: delete`` / ``$patch: replace``, ``$setElementOrder/<list>``,
``$deleteFromPrimitiveList/<list>`` and ``$retainKeys`` are honoured; every
other list is replaced, as with a merge patch.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "merge_patch", "strategic_merge_patch", "json_patch", "MERGE_KEYS", "merge_key"]


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# The list fields (by name) with a strategic merge key, for the kinds we serve.
MERGE_KEYS: dict[str, str] = {
    "ports": "port",  # Service spec.ports; container ports use containerPort (below)
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "conditions": "type",
    "addresses": "type",
    "podIPs": "ip",
    "podCIDRs": "",  # a primitive list merged as a set of values
    "finalizers": "",
    "ownerReferences": "uid",
    "taints": "key",
    "tolerations": "",  # atomic
    "imagePullSecrets": "name",
}


def merge_key(field: str, items: list[Any]) -> str | None:
    """The strategic merge key of list ``field`` holding ``items`` ("" for a set of primitives), or None
    for a list replaced whole. Shared with server-side apply (:mod:`.apply`)."""
    if field == "ports" and any(isinstance(i, dict) and "containerPort" in i for i in items):
        return "containerPort"
    if field == "tolerations":
        return None
    key = MERGE_KEYS.get(field)
    if key and not all(isinstance(i, dict) for i in items):
        return None  # e.g. EndpointSlice endpoints[].addresses: a list of strings
    return key


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in drop]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(field, result[field], order)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    mk = merge_key(field, current + patch)
    if mk is None:
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if mk == "":  # primitive list with merge strategy: union, keep order
        out = list(current)
        for v in patch:
            if v not in out:
                out.append(copy.deepcopy(v))
        return out
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    out = [copy.deepcopy(v) for v in current]
    for item in patch:
        if not isinstance(item, dict) or mk not in item:
            raise PatchError(f"strategic merge patch: element of {field} lacks merge key {mk!r}")
        idx = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(mk) == item[mk]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    mk = merge_key(field, items)
    if not mk:
        return items

    def position(item: Any) -> int:
        for i, o in enumerate(order):
            if isinstance(o, dict) and isinstance(item, dict) and o.get(mk) == item.get(mk):
                return i
        return len(order)

    return sorted(items, key=position)


# --------------------------------------------------------------------------- RFC 6902


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            try:
                doc = doc[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"no element {p!r}") from None
        elif isinstance(doc, dict) and p in doc:
            doc = doc[p]
        else:
            raise PatchError(f"path element {p!r} not found")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/test/copy/move."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"bad operation {op!r}")
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind in ("copy", "move"):
            value = copy.deepcopy(_walk(doc, _pointer(op.get("from", ""))))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            continue
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
            continue
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise PatchError("cannot remove the whole document")
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= idx <= len(parent) or (kind != "add" and idx == len(parent)):
                raise PatchError(f"index {last!r} out of range")
            if kind == "add":
                parent.insert(idx, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                del parent[idx]
            elif kind == "replace":
                parent[idx] = copy.deepcopy(op.get("value"))
            else:
                raise PatchError(f"unknown op {kind!r}")
        elif isinstance(parent, dict):
            if kind in ("remove", "replace") and last not in parent:
                raise PatchError(f"path {op['path']!r} not found")
            if kind == "remove":
                del parent[last]
            elif kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op.get("value"))
            else:
                raise PatchError(f"unknown op {kind!r}")
        else:
            raise PatchError(f"path {op['path']!r} not found")
    return doc
