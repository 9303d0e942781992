"""Loading several kubeconfig files into one, by client-go's merge rules.

:func:`load_merged` is what ``$KUBECONFIG=a:b:c`` means to kubectl and
client-go (``clientcmd.ClientConfigLoadingRules.Load``):

- files are taken in order; empty entries and repeated paths are dropped;
  files that do not exist are skipped silently; a file that exists but cannot
  be read or parsed is an error (:class:`~podnet.kube.kubeconfig.ConfigError`);
- ``clusters``, ``users`` and ``contexts`` are merged by name: the first file
  that defines a name wins, whole entry (later files never change it);
- ``current-context`` comes from the first file that sets it;
- relative paths inside an entry (``certificate-authority``,
  ``client-certificate``, ``client-key``, ``tokenFile``, and an exec
  ``command`` that contains a ``/``) are made absolute against the directory
  of the file that holds the entry, *before* merging, so an entry keeps
  pointing at the same files whichever file it came from;
- the same name twice inside one file is an error (client-go: "duplicate name
  in list").

Pure apart from reading the named files; the result is a plain kubeconfig
document (a dict) that :func:`~podnet.kube.kubeconfig.parse_kubeconfig` reads.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from podnet.kube.errors import ConfigError

__all__ = ["load_merged", "merge_docs", "resolve_paths", "read_doc", "split_kubeconfig_env", "is_empty"]

_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
_CLUSTER_FILES = ("certificate-authority",)
_USER_FILES = ("client-certificate", "client-key", "tokenFile")


def _error(message: str) -> Exception:
    return ConfigError(message)


def split_kubeconfig_env(value: str | None) -> list[str]:
    """The paths of a ``$KUBECONFIG`` value: split on ``:``, empties and repeats dropped, order kept."""
    out: list[str] = []
    for p in (value or "").split(os.pathsep):
        if p and p not in out:
            out.append(p)
    return out


def read_doc(path: Path) -> dict[str, Any]:
    """One kubeconfig file parsed (YAML or JSON); an empty file is an empty document."""
    try:
        text = path.read_text()
    except OSError as e:
        raise _error(f"kubeconfig {path}: {e.strerror}") from None
    doc: Any
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise _error(f"kubeconfig {path}: bad YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _error(f"kubeconfig {path}: not a mapping")
    return doc


def _abs(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    return str(base / value)


def resolve_paths(doc: Mapping[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """A copy of ``doc`` whose relative file references are absolute against ``base_dir``."""
    base = Path(base_dir).absolute()
    out = copy.deepcopy(dict(doc))
    for item in out.get("clusters") or ():
        body = item.get("cluster") if isinstance(item, dict) else None
        if isinstance(body, dict):
            for k in _CLUSTER_FILES:
                if k in body:
                    body[k] = _abs(body[k], base)
    for item in out.get("users") or ():
        body = item.get("user") if isinstance(item, dict) else None
        if not isinstance(body, dict):
            continue
        for k in _USER_FILES:
            if k in body:
                body[k] = _abs(body[k], base)
        exec_ = body.get("exec")
        # client-go resolves the command only when it is a path, not a name looked up in $PATH.
        if isinstance(exec_, dict) and isinstance(exec_.get("command"), str) and "/" in exec_["command"]:
            exec_["command"] = _abs(exec_["command"], base)
    return out


def _named(doc: Mapping[str, Any], section: str, where: str) -> list[tuple[str, Any]]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise _error(f"kubeconfig {where}: {section} is not a list")
    seen: set[str] = set()
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _error(f"kubeconfig {where}: an entry of {section} has no name")
        name = item["name"]
        if name in seen:
            raise _error(f'kubeconfig {where}: duplicate name "{name}" in {section}')
        seen.add(name)
        out.append((name, item))
    return out


def merge_docs(docs: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Merge (origin, document) pairs, earliest first, by the rules in the module docstring."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    names: dict[str, set[str]] = {s: set() for s, _ in _SECTIONS}
    current = ""
    for where, doc in docs:
        for section, _ in _SECTIONS:
            for name, item in _named(doc, section, where):
                if name not in names[section]:
                    names[section].add(name)
                    merged[section].append(item)
        if not current and isinstance(doc.get("current-context"), str):
            current = doc["current-context"]
    merged["current-context"] = current
    return merged


def is_empty(doc: Mapping[str, Any]) -> bool:
    """True when a (merged) document configures nothing (client-go's "empty config")."""
    return not (doc.get("current-context") or doc.get("clusters") or doc.get("users") or doc.get("contexts"))


def load_merged(paths: Iterable[str | Path]) -> tuple[dict[str, Any], list[Path]]:
    """The merged document of the existing files among ``paths``, and those files in order."""
    loaded: list[tuple[str, dict[str, Any]]] = []
    used: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            continue
        loaded.append((str(path), resolve_paths(read_doc(path), path.parent)))
        used.append(path)
    return merge_docs(loaded), used
