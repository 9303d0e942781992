"""What a lab container runs for its ``image``: the lab pulls nothing, the host's files are the image.

- podnet's own image (``localhost/podnet:<tag>``, what deploy/podnet.yaml and ``bash dev.sh image``
  name): its ``command`` runs with the installed podnet console scripts first on PATH (the
  directory of this Python's ``podnet-*`` scripts), as they are first on the image's PATH; the
  files the image has beyond them (``/usr/lib/podnet/podnet-cni-static``) come from the
  kubelet's ``--image-dir``, laid over the host's ``/`` (:mod:`podnet.netlab.node.launch`);
- the lab's echo image (``podnet/podserver:*``, what ``lab up`` creates its pods with): the lab
  pod server on its usual ports (HTTP 8080, TCP and UDP echo 9000), unless it has a command;
- any other image: its ``command`` when it has one (a program on the host's PATH); without one,
  the lab pod server on the container's declared ``containerPorts`` -- HTTP on each TCP port, UDP
  echo on each UDP port -- so ``kubectl run web --image=nginx --port=80`` answers HTTP on 80;
  with no ports declared, the usual ports.

The echo server stands in for the image's own entrypoint, so the lab checks a started echo
container's first TCP port before calling it Ready when the spec has no readiness probe (what
an image's HEALTHCHECK would say); :func:`implicit_readiness` gives that probe.

``imageID`` is ``podnet-lab://<file>@sha256:<digest>`` of what actually runs (the pod server
module or the command's executable), kubelet's ``<repository>@sha256:<digest>`` shape.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from pathlib import Path

from podnet.netlab.node.podspec import Container, Probe

__all__ = ["is_podnet_image", "is_echo_image", "argv", "path_env", "image_id", "implicit_readiness",
           "PODSERVER_HTTP", "PODSERVER_ECHO", "DEFAULT_PATH"]

PODSERVER_HTTP, PODSERVER_ECHO = 8080, 9000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PODSERVER_FILE = str(Path(__file__).with_name("podserver.py"))
_PODSERVER = ["-P", "-m", "podnet.netlab.node.podserver"]


def is_podnet_image(image: str) -> bool:
    return image.startswith(("localhost/podnet:", "localhost/podnet@")) or image == "localhost/podnet"


def is_echo_image(image: str) -> bool:
    return image.startswith("podnet/podserver")


def path_env(image: str, python: str = sys.executable) -> str:
    """The container's PATH: podnet's scripts first for podnet's image, the usual PATH otherwise."""
    if is_podnet_image(image):
        return f"{os.path.dirname(python)}:{DEFAULT_PATH}"
    return DEFAULT_PATH


def _echo_ports(c: Container) -> list[str]:
    if is_echo_image(c.image) or not c.ports:
        return []
    tcp = sorted({p.container_port for p in c.ports if p.protocol.upper() == "TCP"})
    udp = sorted({p.container_port for p in c.ports if p.protocol.upper() == "UDP"})
    out = [f"--http={p}" for p in tcp] + [f"--udp={p}" for p in udp]
    return out or []


def argv(c: Container, command: list[str], pod_name: str, python: str = sys.executable) -> list[str]:
    """The container's argv: its expanded ``command`` + ``args`` (``command``), or the pod server."""
    if c.command:
        return command
    if is_podnet_image(c.image):
        raise ValueError(f"container {c.name!r}: image {c.image} has no command in the pod spec")
    return [python, *_PODSERVER, "--name", pod_name, *_echo_ports(c)]


def implicit_readiness(c: Container) -> Probe | None:
    """The echo server's own readiness (see the module docstring); None for any other container."""
    if c.command or c.readiness is not None or is_podnet_image(c.image):
        return None
    ports = _echo_ports(c)
    port = int(ports[0].split("=", 1)[1]) if ports and ports[0].startswith("--http=") else (
        None if ports else PODSERVER_HTTP)
    if port is None:
        return None
    return Probe("tcp", port, period=1.0)


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_id(c: Container, path: str | None = None) -> str:
    """``containerStatuses[].imageID`` (see the module docstring); ``path``: the container's PATH."""
    if not c.command:
        exe = _PODSERVER_FILE
    else:
        found = shutil.which(c.command[0], path=path or path_env(c.image))
        if found is None:
            return f"podnet-lab://{c.command[0]}"
        exe = os.path.realpath(found)
    try:
        st = os.stat(exe)
        return f"podnet-lab://{exe}@sha256:{_sha256_cached(exe, st.st_mtime_ns, st.st_size)}"
    except OSError:
        return f"podnet-lab://{exe}"
