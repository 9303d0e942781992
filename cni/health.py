"""The CNI daemon's HTTP endpoints: ``/healthz``, ``/livez`` and ``/metrics``.

- ``/healthz`` answers 200 only when the daemon can serve an ADD right now:
  the IPAM store is usable, the node has its pod CIDR, forwarding is on and
  the routes to other nodes are in place (exactly the conditions under which
  STATUS answers success, :meth:`podnet.cni.plugin.Readiness.problem`);
  otherwise 503 with the reason. The body is JSON either way. This is the
  readiness probe: a node whose daemon has no CIDR yet must not be counted
  as networked.
- ``/livez`` answers 200 whenever the event loop runs (the liveness probe:
  waiting for a CIDR is not a reason to restart the daemon).
- ``/metrics`` is the Prometheus text format of the process's default
  registry: the request counters and durations below, ``podnet_cni_ready``,
  the API layer's counters and the process collector.

:func:`health` is pure (readiness in, status and body out); :class:`HealthServer`
is the thin layer on :class:`podnet.host.serving.HttpEndpoint`. The listen address
is ``HOST:PORT`` with IPv6 hosts in brackets and the host an IP literal, as
Kubernetes components take ``--healthz-bind-address`` (parsed by
:func:`podnet.host.addr.listen_address`).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from podnet.cni.plugin import Readiness
from podnet.host.addr import listen_address
from podnet.host.serving import HttpEndpoint

__all__ = ["health", "parse_listen", "listen_arg", "HealthServer", "observe", "REQUESTS", "DURATION", "READY"]

REQUESTS = Counter("podnet_cni_requests_total", "CNI requests served by the daemon, by command and result code.",
                   ["command", "code"])
DURATION = Histogram("podnet_cni_request_duration_seconds", "Time the daemon spent on one CNI request.",
                     ["command"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
READY = Gauge("podnet_cni_ready", "1 when the daemon can serve ADDs (pod CIDR, store, forwarding, routes).")

_COMMANDS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})


def observe(command: str, code: int, seconds: float) -> None:
    """Count one served request (unknown commands are counted as ``other``)."""
    cmd = command if command in _COMMANDS else "other"
    REQUESTS.labels(cmd, str(code)).inc()
    DURATION.labels(cmd).observe(seconds)


def health(ready: Readiness) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for ``/healthz``."""
    problem = ready.problem()
    body: dict[str, Any] = {"podCIDRs": list(ready.pod_cidrs), "routesSynced": ready.routes_synced,
                            "forwarding": ready.forwarding_ok}
    if problem is None:
        return 200, {"status": "ok", **body}
    return 503, {"status": "unavailable", "cniCode": problem[0], "reason": problem[1], **body}


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``) -> (host, port); ValueError names what is wrong."""
    host, port = listen_address(value)
    if value.startswith("[") and ipaddress.ip_address(host).version != 6:
        raise ValueError(f"{value!r}: only IPv6 addresses go in brackets")
    ipaddress.ip_address(host)  # an address, not a name (raises ValueError)
    return host, port


def listen_arg(value: str) -> str:
    """argparse ``type`` for the listen flag: '' (off) or a valid ``HOST:PORT``."""
    if value:
        try:
            parse_listen(value)
        except ValueError as e:
            import argparse

            raise argparse.ArgumentTypeError(str(e)) from None
    return value


class HealthServer:
    """Serves the endpoints for one :class:`Readiness` until :meth:`close`."""

    def __init__(self, ready: Readiness, listen: str, clock=time.time) -> None:
        self.ready = ready
        self.host, self.port = parse_listen(listen)
        self._clock = clock
        self._endpoint = HttpEndpoint({"/healthz": self._healthz, "/livez": self._livez, "/metrics": self._metrics})

    async def _healthz(self, request: web.Request) -> web.Response:
        code, body = health(self.ready)
        READY.set(1 if code == 200 else 0)
        body["currentTime"] = self._clock()
        return web.Response(status=code, text=json.dumps(body) + "\n", content_type="application/json")

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        READY.set(1 if self.ready.problem() is None else 0)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        """Listen; :attr:`port` is then the bound port (the kernel's choice for port 0)."""
        self.port = await self._endpoint.start(self.host, self.port, reuse_address=False)

    async def close(self) -> None:
        await self._endpoint.close()
