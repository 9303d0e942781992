"""Reading deploy/podnet.yaml for the deploy tests (loaded by file path, never from sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFEST = DEPLOY / "podnet.yaml"


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    for d in docs():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind}/{name} not in {MANIFEST}")


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every workload."""
    for d in docs():
        if d["kind"] in ("DaemonSet", "Deployment"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload/container, container) of every container and init container."""
    for wl, spec in pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{wl}/{c['name']}", c
