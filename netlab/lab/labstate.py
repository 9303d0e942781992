"""Where a lab keeps its state, and how the other verbs find a running lab.

``<run-dir>/lab.json`` holds the spec (so ``check``/``down`` re-derive the same
plan), the API server's root-namespace port and how each part runs (podnet's
from deploy/podnet.yaml's workloads; the CNI may be the reference anchor). It is written once ``up`` has built the fabric, so ``down``
can always find what to remove; ``down`` also works with no state file at all
(sweep by prefix and by process marker).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podnet.netlab.lab.topology import DATA_ROOT, RUN_ROOT, LabPlan, LabSpec, plan

__all__ = ["LabState", "load", "save", "list_labs", "kubeconfig_text"]


@dataclass
class LabState:
    spec: LabSpec
    api_port: int = 0
    parts: dict[str, str] = field(default_factory=dict)   # part -> "podnet-<part> from podnet.yaml (...)" | "reference ..."
    pod_cidrs: dict[str, str] = field(default_factory=dict)
    created: float = 0.0

    def plan(self, run_root: Path = RUN_ROOT, data_root: Path = DATA_ROOT) -> LabPlan:
        return plan(self.spec, run_root, data_root)

    @property
    def local_master(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = asdict(self.spec)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LabState":
        return cls(
            spec=LabSpec(**d["spec"]), api_port=int(d.get("api_port", 0)), parts=dict(d.get("parts") or {}),
            pod_cidrs=dict(d.get("pod_cidrs") or {}), created=float(d.get("created", 0.0)),
        )


def save(run_dir: Path, st: LabState) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "lab.json.tmp"
    tmp.write_text(json.dumps(st.to_json(), indent=2))
    tmp.replace(run_dir / "lab.json")


def load(name: str, run_root: Path = RUN_ROOT) -> LabState | None:
    try:
        return LabState.from_json(json.loads((run_root / name / "lab.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_labs(run_root: Path = RUN_ROOT) -> list[str]:
    if not run_root.is_dir():
        return []
    return sorted(p.name for p in run_root.iterdir() if (p / "lab.json").exists())


def kubeconfig_text(lab: str, server: str) -> str:
    """A kubeconfig for kubectl (plain http to the lab API server; no credentials)."""
    n = f"pnl-{lab}"
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {n}\n  cluster:\n    server: {server}\n"
        f"users:\n- name: {n}\n  user: {{}}\n"
        f"contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: default\n"
        f"current-context: {n}\n"
    )
