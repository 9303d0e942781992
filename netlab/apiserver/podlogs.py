"""The pods/log subresource: ``GET /api/v1/namespaces/NS/pods/NAME/log`` from the lab kubelet's log files.

kube-apiserver asks the pod's kubelet; the lab's kubelets run on this machine and write
kubelet's ``/var/log/pods`` layout under the lab (``<root>/<ns>_<name>_<uid>/<container>/<restartCount>.log``,
see ``podnet.netlab.node.podlogs``), so this server reads the files directly.

Query parameters as kube-apiserver's PodLogOptions: ``container`` (optional when the pod has
one container, else 400 naming the choices, as the registry's LogLocation does), ``previous``
(the instance before the newest one), ``follow`` (stream until the instance ends: the kubelet
reports it not running, a newer instance starts, the pod ends or is deleted; as kubelet, a
follow of an exited container returns what it wrote), ``tailLines``, ``limitBytes``.
``timestamps``, ``sinceSeconds`` and ``sinceTime`` answer 400: the lab's log files hold raw
output without the per-line times CRI log files carry, so they cannot be honoured truthfully.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

from podnet.netlab.apiserver.apistore import StatusError, Store

__all__ = ["PodLogs", "LogOptions", "parse_options", "tail_offset", "pick_container"]

_INT = re.compile(r"-?[0-9]+")
FOLLOW_POLL = 0.1
CHUNK = 64 * 1024


class LogOptions:
    __slots__ = ("container", "previous", "follow", "tail_lines", "limit_bytes")

    def __init__(self, container: str = "", previous: bool = False, follow: bool = False,
                 tail_lines: int | None = None, limit_bytes: int | None = None) -> None:
        self.container, self.previous, self.follow = container, previous, follow
        self.tail_lines, self.limit_bytes = tail_lines, limit_bytes


def _bool(query: Any, key: str) -> bool:
    v = query.get(key)
    if v is None:
        return False
    if v.lower() in ("1", "t", "true"):
        return True
    if v.lower() in ("", "0", "f", "false"):
        return False
    raise StatusError(400, "BadRequest", f'{key}: invalid boolean value "{v}"')


def _int(query: Any, key: str, minimum: int) -> int | None:
    v = query.get(key)
    if v is None:
        return None
    if not _INT.fullmatch(v):
        raise StatusError(400, "BadRequest", f'{key}: invalid integer value "{v}"')
    n = int(v)
    if n < minimum:
        word = "greater than or equal to 0" if minimum == 0 else "greater than 0"
        raise StatusError(422, "Invalid", f"PodLogOptions \"\" is invalid: {key}: Invalid value: {n}: must be {word}",
                          kind="PodLogOptions")
    return n


def parse_options(query: Any) -> LogOptions:
    """PodLogOptions from the query string; StatusError for what is malformed or not recorded."""
    for key in ("timestamps", "sinceSeconds", "sinceTime"):
        if key in query and not (key == "timestamps" and not _bool(query, key)):
            raise StatusError(400, "BadRequest", f"{key} is not supported by the podnet lab: its container logs "
                              "are raw output without per-line times")
    return LogOptions(container=query.get("container", ""), previous=_bool(query, "previous"),
                      follow=_bool(query, "follow"), tail_lines=_int(query, "tailLines", 0),
                      limit_bytes=_int(query, "limitBytes", 1))


def pick_container(pod: dict[str, Any], container: str) -> str:
    """The container to read, with the messages of kube-apiserver's LogLocation."""
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or ()]
    inits = [c.get("name", "") for c in spec.get("initContainers") or ()]
    if not container:
        if len(names) == 1:
            return names[0]
        if not names:
            raise StatusError(400, "BadRequest", f"a container name must be specified for pod {name}")
        msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        if inits:
            msg += f" or one of the init containers: [{' '.join(inits)}]"
        raise StatusError(400, "BadRequest", msg)
    if container not in names and container not in inits:
        raise StatusError(400, "BadRequest", f"container {container} is not valid for pod {name}")
    return container


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last ``lines`` lines of the file start (a trailing newline ends a line)."""
    if lines == 0:
        return path.stat().st_size
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        found = 0
        # the file's last byte, if a newline, ends the last line rather than starting a new one
        skip_last = True
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = len(block)
            while True:
                i = block.rfind(b"\n", 0, i)
                if i < 0:
                    break
                if skip_last and pos + i == end - 1:
                    skip_last = False
                    continue
                skip_last = False
                found += 1
                if found == lines:
                    return pos + i + 1
            skip_last = False
        return 0


def _instances(d: Path) -> list[int]:
    """Restart numbers with a log file, ascending."""
    try:
        return sorted(int(p.stem) for p in d.iterdir() if p.suffix == ".log" and p.stem.isdigit())
    except OSError:
        return []


class PodLogs:
    """Serves pods/log from ``root`` (None: a server with no kubelets, every read answers 400)."""

    def __init__(self, store: Store, root: str | Path | None) -> None:
        self.store = store
        self.root = Path(root) if root else None

    def _file(self, pod: dict[str, Any], container: str, previous: bool) -> tuple[Path, int]:
        meta = pod["metadata"]
        name = meta["name"]
        if self.root is None:
            raise StatusError(400, "BadRequest", f'container "{container}" in pod "{name}" has no logs: this API '
                              "server runs without a lab (no --pod-log-dir)")
        d = self.root / f"{meta.get('namespace', '')}_{name}_{meta.get('uid', '')}" / container
        inst = _instances(d)
        if previous:
            if len(inst) < 2:
                raise StatusError(400, "BadRequest",
                                  f'previous terminated container "{container}" in pod "{name}" not found')
            return d / f"{inst[-2]}.log", inst[-2]
        if not inst:
            reason = "ContainerCreating" if (pod.get("spec") or {}).get("nodeName") else "PodScheduled"
            raise StatusError(400, "BadRequest",
                              f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return d / f"{inst[-1]}.log", inst[-1]

    def _ended(self, pod: dict[str, Any], path: Path, instance: int) -> bool:
        """True once the followed container instance can write no more: the pod is gone or finished,
        a newer instance has a log, or the kubelet reports this instance not running."""
        meta = pod["metadata"]
        now = self.store.get("pods", meta.get("namespace", ""), meta["name"])
        if now is None or now["metadata"].get("uid") != meta.get("uid"):
            return True
        status = now.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return True
        container = path.parent.name
        for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            if cs.get("name") == container and cs.get("restartCount") == instance and \
                    "running" not in (cs.get("state") or {"running": {}}):
                return True
        return any(i > instance for i in _instances(path.parent))

    async def serve(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        opts = parse_options(request.query)
        container = pick_container(pod, opts.container)
        path, instance = self._file(pod, container, opts.previous)
        start = tail_offset(path, opts.tail_lines) if opts.tail_lines is not None else 0
        budget = opts.limit_bytes
        if not opts.follow:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read() if budget is None else f.read(budget)
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        with open(path, "rb") as f:
            f.seek(start)
            while budget is None or budget > 0:
                data = f.read(CHUNK if budget is None else min(CHUNK, budget))
                if data:
                    await resp.write(data)
                    if budget is not None:
                        budget -= len(data)
                    continue
                if self._ended(pod, path, instance):
                    data = f.read() if budget is None else f.read(budget)  # what was written before the end
                    if data:
                        await resp.write(data)
                    break
                await asyncio.sleep(FOLLOW_POLL)
        await resp.write_eof()
        return resp
