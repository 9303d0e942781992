"""From frozen API objects to desired tables: the pure heart of a sync.

:func:`service_fragments` is the unit of caching: one Service plus its
EndpointSlices, for one family, gives the same fragments every time, so the
daemon recomputes only services whose objects changed. :func:`build` is the
uncached whole (tests, benchmarks, --once).
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy import guard
from podnet.proxy import metrics as m
from podnet.proxy.model import DEFAULT_MAX_ENDPOINTS, endpoints_by_port, service_ports
from podnet.proxy.rules import NodeContext, ServiceRules, Tables, assemble, service_rules

log = logging.getLogger("podnet.proxy")


def service_fragments(
    svc: Service,
    slices: Iterable[EndpointSlice],
    ctx: NodeContext,
    node_name: str,
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
) -> tuple[ServiceRules, ...]:
    """Raises guard.Unsafe when any value or line would be unsafe in iptables-restore text."""
    ports = service_ports(svc, ctx.family)
    if not ports:
        return ()
    for sp in ports:
        guard.check_service_port(sp, ctx.family)
    slices = list(slices)
    guard.check_slices(slices, ctx.family)
    eps = endpoints_by_port(slices, ctx.family, node_name, max_endpoints, service=svc.key)
    out = []
    for sp in ports:
        frag = service_rules(sp, eps.get((sp.name.port, sp.protocol), ()), ctx)
        guard.check_fragment(frag)
        out.append(frag)
    return tuple(out)


def fragments_or_skip(
    key: str,
    svc: Service,
    slices: Iterable[EndpointSlice],
    ctx: NodeContext,
    node_name: str,
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
) -> tuple[ServiceRules, ...] | None:
    """:func:`service_fragments`, or None for a service that cannot be written safely:
    logged with the offending value and counted in podnet_proxy_skipped_services_total
    (reason label), so one bad service never stops the others."""
    family = f"IPv{ctx.family}"
    try:
        return service_fragments(svc, slices, ctx, node_name, max_endpoints)
    except guard.Unsafe as e:
        m.SKIPPED_SERVICES.labels(e.reason, family).inc()
        log.error("%s: service %r skipped, nothing of it is written: %s", family, key, e)
    except Exception:  # noqa: BLE001 - one bad service must not stop the others
        m.SKIPPED_SERVICES.labels("error", family).inc()
        log.exception("%s: cannot compute rules for service %r; skipped", family, key)
    return None


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
        frags.extend(fragments_or_skip(svc.key, svc, by_service.get(svc.key, ()), ctx, node_name, max_endpoints) or ())
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
