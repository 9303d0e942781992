"""The podman store a lab runs podnet's image from, and the commands that find and remove a lab's containers.

A :class:`Store` is where podman keeps images and containers (``--root``/``--runroot``; None: podman's
own), with the flags this machine's podman needs (runc, cgroupfs, file events). It is saved in a
lab's run directory so ``lab down`` removes every container labelled with the lab's name, whatever
state its ``podman run`` was left in.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Store", "LAB_LABEL", "POD_LABEL", "STORE_FILE", "save", "load", "lab_containers", "remove_lab"]

LAB_LABEL, POD_LABEL = "podnet.io/lab", "podnet.io/pod"
STORE_FILE = "podman-store.json"


@dataclass(frozen=True)
class Store:
    root: str | None = None
    runroot: str | None = None

    def base(self) -> list[str]:
        argv = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        if self.root:
            argv += ["--root", self.root]
        if self.runroot:
            argv += ["--runroot", self.runroot]
        return argv

    def kubelet_args(self) -> list[str]:
        """The lab kubelet's flags that select this store."""
        return ["--runtime", "podman", *(["--podman-root", self.root] if self.root else []),
                *(["--podman-runroot", self.runroot] if self.runroot else [])]

    def image_exists(self, image: str) -> bool:
        return subprocess.run([*self.base(), "image", "exists", image], capture_output=True).returncode == 0


def save(run_dir: Path, store: Store) -> None:
    (run_dir / STORE_FILE).write_text(json.dumps({"root": store.root, "runroot": store.runroot}))


def load(run_dir: Path) -> Store | None:
    try:
        d = json.loads((run_dir / STORE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Store(d.get("root"), d.get("runroot"))


def lab_containers(store: Store, lab: str) -> list[str]:
    """Names of every container podman has for ``lab``, running or not."""
    try:
        p = subprocess.run([*store.base(), "ps", "--all", "--filter", f"label={LAB_LABEL}={lab}", "--format",
                            "{{.Names}}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in p.stdout.split() if line] if p.returncode == 0 else []


def remove_lab(store: Store, lab: str) -> list[str]:
    """Remove every container of ``lab``; the names removed."""
    names = lab_containers(store, lab)
    if names:
        subprocess.run([*store.base(), "rm", "--force", "--time", "0", "--ignore", *names], capture_output=True,
                       timeout=120)
    return names
