"""Where the lab kubelet writes container logs: kubelet's ``/var/log/pods`` layout under the lab.

``<root>/<namespace>_<name>_<uid>/<container>/<restartCount>.log``, one file per container
instance, so the previous instance's log survives a restart (``kubectl logs --previous``) and a
Pod recreated under the same name starts with an empty log. The lab API server's pods/log
subresource reads the same layout (``podnet.netlab.apiserver.podlogs``); the two never import
each other, tests/lab/test_kubelet.py checks that they agree. Files hold the container's raw
stdout and stderr (no CRI timestamps).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["pod_dir", "container_log", "remove_pod"]


def pod_dir(root: Path, namespace: str, name: str, uid: str) -> Path:
    return root / f"{namespace}_{name}_{uid}"


def container_log(root: Path, namespace: str, name: str, uid: str, container: str, restart: int) -> Path:
    """The log file of one container instance (``restart``: its restartCount); parents created."""
    d = pod_dir(root, namespace, name, uid) / container
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{restart}.log"


def remove_pod(root: Path, namespace: str, name: str, uid: str) -> None:
    """Forget a deleted Pod's logs (kubelet removes them with the pod)."""
    shutil.rmtree(pod_dir(root, namespace, name, uid), ignore_errors=True)
