"""From frozen API objects to desired tables: the pure heart of a sync.

:func:`service_fragments` is the unit of caching: one Service plus its
EndpointSlices, for one family, gives the same fragments every time, so the
daemon recomputes only services whose objects changed. :func:`build` is the
uncached whole (tests, benchmarks, --once).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy.model import DEFAULT_MAX_ENDPOINTS, endpoints_by_port, service_ports
from podnet.proxy.rules import NodeContext, ServiceRules, Tables, assemble, service_rules


def service_fragments(
    svc: Service,
    slices: Iterable[EndpointSlice],
    ctx: NodeContext,
    node_name: str,
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
) -> tuple[ServiceRules, ...]:
    ports = service_ports(svc, ctx.family)
    if not ports:
        return ()
    eps = endpoints_by_port(slices, ctx.family, node_name, max_endpoints, service=svc.key)
    return tuple(service_rules(sp, eps.get((sp.name.port, sp.protocol), ()), ctx) for sp in ports)


def build(
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
    ctx: NodeContext,
    node_name: str = "",
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
) -> Tables:
    by_service: dict[str, list[EndpointSlice]] = {}
    for sl in slices:
        if sl.service_name:
            by_service.setdefault(sl.service_key, []).append(sl)
    frags: list[ServiceRules] = []
    for svc in sorted(services, key=lambda s: s.key):
        frags.extend(service_fragments(svc, by_service.get(svc.key, ()), ctx, node_name, max_endpoints))
    return assemble(frags, ctx)


def services_health(
    services: Mapping[str, Service], fragments: Mapping[str, tuple[ServiceRules, ...]]
) -> dict[str, tuple[int, int]]:
    """``ns/name`` -> (healthCheckNodePort, local endpoint count) for eTP Local LBs."""
    out = {}
    for key, svc in services.items():
        if svc.health_check_node_port and svc.external_traffic_policy == "Local" and svc.type == "LoadBalancer":
            local = max((f.local_endpoints for f in fragments.get(key, ())), default=0)
            out[key] = (svc.health_check_node_port, local)
    return out
