"""Where a lab container runs: its process, environment and working directory, from the lab kubelet's files.

The lab's kubelets run on this machine and keep, under the lab's run directory (the parent of
``logs/``, where the API server reads pod logs):

- ``pods/<node>/<record>.json``: one record per pod sandbox, ``{"pod": "ns/name", "uid": ...,
  "pids": {container: pid}}``, written whenever a container instance starts;
- ``nodes/<node>/pods/<uid>/containers/<container>/plan-<restart>.json``: the launch plan of each
  instance, with the container's ``env`` and ``workingDir`` exactly as it was started.

A command run "in the container" joins that process's mount and network namespaces and its root
(the overlay root it ``chroot``ed into), with the plan's environment and working directory, which is
what a runtime's exec does. A container that is not running (no live process, or the pod's status
says it is not running) answers 400 ``container not found`` as kubelet's exec does; one whose
recorded process shares this server's mount namespace answers 400 rather than run the command on
the host. A ``--runtime podman`` container has no launch plan: the kubelet records the pid podman
reports for it, and its environment is that process's own (``/proc/<pid>/environ``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.host.procs import alive
from podnet.netlab.apiserver.apistore import StatusError

__all__ = ["ContainerTarget", "KubeletRecords", "running_in_status", "latest_plan", "executable_in",
           "own_mount_namespace"]


@dataclass(frozen=True)
class ContainerTarget:
    pid: int
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"

    @property
    def root(self) -> str:
        """The container's root as seen from the host."""
        return f"/proc/{self.pid}/root"


def running_in_status(pod: dict[str, Any], container: str) -> bool:
    """Whether the pod's status reports ``container`` (regular or init) running."""
    status = pod.get("status") or {}
    for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if c.get("name") == container:
            return "running" in (c.get("state") or {})
    return False


def latest_plan(containers_dir: Path, container: str) -> Path | None:
    """The newest instance's launch plan (highest restart number), None when there is none."""
    best: tuple[int, Path] | None = None
    for p in (containers_dir / container).glob("plan-*.json"):
        n = p.stem.removeprefix("plan-")
        if n.isdigit() and (best is None or int(n) > best[0]):
            best = (int(n), p)
    return best[1] if best else None


def executable_in(root: str, command: str, path_env: str) -> bool:
    """Whether ``command`` names an executable file in the container's root (``PATH`` lookup
    without a slash, as execvp). Best effort: a symlink with an absolute target is followed
    from the host's root, so only a plain miss is reported."""
    if "/" in command:
        candidates = [command if command.startswith("/") else "/" + command]
    else:
        candidates = [f"{d.rstrip('/')}/{command}" for d in (path_env or "/usr/bin:/bin").split(":") if d]
    for c in candidates:
        p = root + c
        if os.path.islink(p) or (os.path.isfile(p) and os.access(p, os.X_OK)):
            return True
    return False


def own_mount_namespace(pid: int) -> bool:
    """Whether ``pid`` runs in a mount namespace other than this process's (a lab container does;
    a runtime's client process, such as ``podman run``, does not, and joining it would be the host)."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return False


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep:
            out[k] = v
    return out


class KubeletRecords:
    """Finds a running container's :class:`ContainerTarget` in the lab kubelets' files under ``run_dir``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def _record(self, key: str, uid: str) -> tuple[str, dict[str, Any]] | None:
        """(node, record) of the pod's sandbox."""
        for f in sorted((self.run_dir / "pods").glob("*/*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("pod") == key and (not uid or rec.get("uid") == uid):
                return f.parent.name, rec
        return None

    def find(self, pod: dict[str, Any], container: str) -> ContainerTarget:
        meta = pod["metadata"]
        name, uid = meta["name"], meta.get("uid", "")
        if not (pod.get("spec") or {}).get("nodeName"):
            raise StatusError(400, "BadRequest", f"pod {name} does not have a host assigned")
        found = self._record(f"{meta.get('namespace', '')}/{name}", uid)
        pid = ((found[1].get("pids") or {}).get(container) if found else None)
        if not isinstance(pid, int) or not alive(pid) or not running_in_status(pod, container):
            raise StatusError(400, "BadRequest", f'container not found ("{container}")')
        if not own_mount_namespace(pid):
            raise StatusError(400, "BadRequest", f'container "{container}" of pod {name} does not run in a mount '
                              "namespace of its own yet (its runtime has not reported its process): retry")
        plan_file = latest_plan(self.run_dir / "nodes" / found[0] / "pods" / (uid or name) / "containers",
                                container) if found else None
        plan: dict[str, Any] = {}
        if plan_file is not None:
            try:
                plan = json.loads(plan_file.read_text())
            except (OSError, ValueError):
                plan = {}
        env = {str(k): str(v) for k, v in plan["env"].items()} if isinstance(plan.get("env"), dict) \
            else _environ(pid)
        return ContainerTarget(pid, env, str(plan.get("workingDir") or "/"))
