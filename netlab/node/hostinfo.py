"""A lab node's ``status.nodeInfo``, read from the machine the node's namespaces live on.

Every lab node shares the host's kernel, so each field is what kubelet (through cadvisor)
would report on this machine: ``kernelVersion`` from uname, ``machineID`` from
/etc/machine-id (then /var/lib/dbus/machine-id), ``bootID`` from
/proc/sys/kernel/random/boot_id, ``systemUUID`` from the DMI product UUID (an empty string
where the machine has none, as cadvisor leaves it), ``osImage`` from os-release's
PRETTY_NAME and ``architecture`` as Go's GOARCH. Every field the API marks required is
present (a string, possibly empty), so the official clients can deserialise the Node.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["system_info", "GOARCH"]

GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
          "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
"""uname's machine name -> Go's GOARCH, which is what kubelet reports."""

KUBELET_VERSION = "v0.1.0-podnet-lab"
RUNTIME_VERSION = "podnet-lab://netns"


def _first_line(root: Path, *paths: str) -> str:
    for p in paths:
        try:
            text = (root / p.lstrip("/")).read_text().strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[0].strip()
    return ""


def _os_image(root: Path) -> str:
    for p in ("etc/os-release", "usr/lib/os-release"):
        try:
            lines = (root / p).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() == "PRETTY_NAME":
                return value.strip().strip('"').strip("'")
    return "Linux"


def system_info(root: Path = Path("/"), uname: os.uname_result | None = None) -> dict[str, str]:
    """The Node's ``status.nodeInfo`` (see the module docstring); ``root`` and ``uname`` for tests."""
    u = uname or os.uname()
    machine = u.machine or platform.machine()
    return {
        "machineID": _first_line(root, "/etc/machine-id", "/var/lib/dbus/machine-id"),
        "systemUUID": _first_line(root, "/sys/class/dmi/id/product_uuid", "/proc/device-tree/system-id",
                                  "/proc/device-tree/vm,uuid").lower(),
        "bootID": _first_line(root, "/proc/sys/kernel/random/boot_id"),
        "kernelVersion": u.release,
        "osImage": _os_image(root),
        "containerRuntimeVersion": RUNTIME_VERSION,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": u.sysname.lower() or "linux",
        "architecture": GOARCH.get(machine, machine),
    }
