"""Builders for Services and EndpointSlices (through podnet.kube's real parsers) and a
programmed FakeIptables + Tracer: shared by the proxy tests, benchmarks and labs.

Pure apart from building in-memory objects; nothing here touches the kernel.
"""

from __future__ import annotations

import itertools
from typing import Any

from podnet.kube.objects import parse_endpoint_slice, parse_service
from podnet.proxy.fake_iptables import FakeIptables
from podnet.proxy.render import render_full
from podnet.proxy.rules import JUMPS, NodeContext
from podnet.proxy.snapshot import build
from podnet.proxy.trace import Tracer

NODE = "node-a"
NODE_IP = "192.168.0.2"
CLUSTER_CIDR = "10.0.0.0/16"
_names = itertools.count()


def svc(name: str = "svc", ns: str = "ns", cluster_ip: str = "172.30.0.41", ports=((80, "TCP", "p80"),),
        annotations: dict[str, str] | None = None, **spec: Any):
    """A Service; ``ports`` entries are (port, protocol, name[, nodePort])."""
    raw_ports = []
    for p in ports:
        d = {"port": p[0], "protocol": p[1], "name": p[2], "targetPort": p[0]}
        if len(p) > 3:
            d["nodePort"] = p[3]
        raw_ports.append(d)
    status = spec.pop("status", {})
    ips = cluster_ip if isinstance(cluster_ip, (list, tuple)) else [cluster_ip]
    return parse_service(
        {
            "metadata": {"name": name, "namespace": ns, **({"annotations": annotations} if annotations else {})},
            "spec": {"clusterIPs": list(ips), "ports": raw_ports, **spec},
            "status": status,
        }
    )


def ep(ip: str, node: str = "node-b", ready: bool = True, serving: bool | None = None, terminating: bool = False,
       zones: tuple[str, ...] | None = None):
    """One raw endpoint; ``zones`` become hints.forZones (None: no hints field at all)."""
    cond = {"ready": ready, "terminating": terminating}
    if serving is not None:
        cond["serving"] = serving
    raw: dict[str, Any] = {"addresses": [ip], "nodeName": node, "conditions": cond}
    if zones is not None:
        raw["hints"] = {"forZones": [{"name": z} for z in zones]}
    return raw


def slice_(service: str = "svc", ns: str = "ns", endpoints=(), ports=((80, "TCP", "p80"),), family: str = "IPv4", name: str | None = None):
    return parse_endpoint_slice(
        {
            "metadata": {
                "name": name or f"{service}-{next(_names)}",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": family,
            "endpoints": list(endpoints),
            "ports": [{"port": p[0], "protocol": p[1], "name": p[2]} for p in ports],
        }
    )


def ctx(**kw: Any) -> NodeContext:
    base = dict(family=4, cluster_cidrs=(CLUSTER_CIDR,), node_ips=(NODE_IP,))
    base.update(kw)
    return NodeContext(**base)


def program(services, slices, context: NodeContext | None = None, node: str = NODE) -> tuple[FakeIptables, Tracer, str]:
    context = context or ctx()
    fake = FakeIptables(context.family)
    tables = build(services, slices, context, node)
    text = render_full(tables)
    fake.tables = FakeIptables.parse(text, fake.tables)
    for table, chain, rule in JUMPS:
        fake.tables[table][chain].insert(0, rule)
    return fake, Tracer(fake.tables, context.node_ips), text


class FakeInformer:
    """The Informer shape (add_handler, run, wait_synced, has_synced), driven by hand."""

    def __init__(self) -> None:
        import asyncio

        self.handlers: list[dict] = []
        self.store: dict[str, Any] = {}
        self._synced = asyncio.Event()

    def add_handler(self, on_add=None, on_update=None, on_delete=None, on_synced=None):
        h = dict(on_add=on_add, on_update=on_update, on_delete=on_delete, on_synced=on_synced)
        self.handlers.append(h)
        return h

    def _emit(self, name: str, *args: Any) -> None:
        for h in self.handlers:
            if h[name] is not None:
                h[name](*args)

    def set(self, obj: Any) -> None:
        old = self.store.get(obj.key)
        self.store[obj.key] = obj
        if old is None:
            self._emit("on_add", obj)
        elif old != obj:
            self._emit("on_update", old, obj)

    def delete(self, key: str) -> None:
        old = self.store.pop(key, None)
        if old is not None:
            self._emit("on_delete", old)

    def synced(self) -> None:
        self._synced.set()
        self._emit("on_synced")

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        import asyncio

        await asyncio.Event().wait()


class FakeClock:
    """A clock whose sleep() advances time at once (for pacing tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        import asyncio

        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)
