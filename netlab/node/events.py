"""The lab kubelet's Events: what ``kubectl describe pod`` shows of a pod's life.

Reasons and messages as kubelet words them (pkg/kubelet/events/event.go for the reasons; the
messages of pkg/kubelet/kuberuntime and pkg/kubelet/prober), each about the Pod with the
container's ``fieldPath`` (``spec.containers{<name>}`` or ``spec.initContainers{<name>}``),
from ``source.component: kubelet`` on ``source.host: <node>``:

==========  =======  =====================================================================
reason      type     message
==========  =======  =====================================================================
Pulled      Normal   ``Container image "<image>" already present on machine``
Created     Normal   ``Created container: <name>``
Started     Normal   ``Started container <name>``
Killing     Normal   ``Stopping container <name>`` (pod deleted), ``Container <name> failed
                     <liveness|startup> probe, will be restarted``
BackOff     Warning  ``Back-off restarting failed container <name> in pod <pod>_<ns>(<uid>)``
Unhealthy   Warning  ``<Readiness|Liveness|Startup> probe failed: <prober output>`` (each failed
                     attempt, :func:`.probes.event_for`), ``<kind> probe errored and resulted
                     in unknown state: <error>``
==========  =======  =====================================================================

:func:`event` is pure (the object to POST). :class:`Recorder` posts them without blocking the
caller, at a bounded rate: as client-go's EventSourceObjectSpamFilter, each (source, involved
object) has a token bucket of ``burst`` (25) refilled at ``qps`` (one per 5 minutes); an Event
over the budget is dropped, and at most ``max_pending`` posts are in flight. A failed post is
logged and dropped (Events are best effort, as upstream's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping

__all__ = ["event", "Recorder", "field_path"]

log = logging.getLogger("podnet.netlab.node.events")


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def field_path(container: str, init: bool) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


def event(pod: Mapping[str, str], node: str, reason: str, message: str, *, type_: str = "Normal",
          path: str = "", now: float) -> dict[str, Any]:
    """A core/v1 Event about ``pod`` (``namespace``, ``name``, ``uid``) from this node's kubelet."""
    involved = {"kind": "Pod", "apiVersion": "v1", "namespace": pod["namespace"], "name": pod["name"],
                "uid": pod.get("uid", "")}
    if path:
        involved["fieldPath"] = path
    stamp = _stamp(now)
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod['name']}.{time.time_ns():x}", "namespace": pod["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet", "reportingInstance": node,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}


class Recorder:
    """``post(event) -> awaitable``: how an Event reaches the API (the kubelet's client)."""

    def __init__(self, post: Callable[[dict[str, Any]], Any], node: str, *, burst: int = 25,
                 qps: float = 1 / 300, max_pending: int = 100, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.post, self.node = post, node
        self.burst, self.qps, self.max_pending = burst, qps, max_pending
        self.clock, self.wall = clock, wall
        self._buckets: dict[str, tuple[float, float]] = {}  # uid -> (tokens, at)
        self._pending: set[asyncio.Task] = set()
        self.dropped = 0

    def allow(self, key: str) -> bool:
        """Take one token of ``key``'s bucket; False when it is empty."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.qps)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget the fullest buckets first: they would allow anyway
            for k in sorted(self._buckets, key=lambda k: -self._buckets[k][0])[:1000]:
                del self._buckets[k]
        return True

    def forget(self, uid: str) -> None:
        self._buckets.pop(uid, None)

    def record(self, pod: Mapping[str, str], reason: str, message: str, *, type_: str = "Normal",
               path: str = "") -> None:
        if not self.allow(pod.get("uid") or f"{pod['namespace']}/{pod['name']}") or \
                len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        body = event(pod, self.node, reason, message, type_=type_, path=path, now=self.wall())
        try:
            task = asyncio.get_running_loop().create_task(self._post(body))
        except RuntimeError:
            return  # no loop: nothing to post with
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            await self.post(body)
        except Exception as e:  # noqa: BLE001 - Events are best effort
            log.debug("event %s %s not recorded: %s", body["reason"], body["involvedObject"]["name"], e)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the posts in flight (shutdown, tests); after ``timeout`` seconds, cancel the rest."""
        if self._pending:
            pending = list(self._pending)
            _, late = await asyncio.wait(pending, timeout=timeout)
            for t in late:
                t.cancel()
