"""The proxy's own values, derived from podnet.kube.objects per IP family.

A Service becomes one :class:`ServicePortInfo` per port and family; its
EndpointSlices become :class:`EndpointInfo` tuples per service port. All
values are frozen and compare by content, so "did this service change?" is
``==``. Everything here is pure. IPs arrive validated and canonical from
podnet.kube, and guard.py checks every value again before any rule is kept,
so no string built from them can carry foreign text into an iptables-restore
line.

Bound: none by default, as in kube-proxy. With ``max_endpoints`` set
(--max-endpoints-per-service-port), one service port keeps at most that many
endpoints (ready ones first, then by address); the cut is logged as a warning
naming the service and port, and counted in
``podnet_proxy_endpoints_truncated_total``.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from podnet.kube.objects import EndpointSlice, Service

log = logging.getLogger("podnet.proxy")

DEFAULT_MAX_ENDPOINTS = 0
"""No bound (kube-proxy has none)."""


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def cidr_family(cidr: str) -> int:
    return family_of(cidr.split("/")[0])


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    namespace: str
    name: str
    port: str
    protocol: str

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    """One port of one Service in one IP family, as the rules need it."""

    name: ServicePortName
    cluster_ip: str
    port: int
    protocol: str
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    affinity_timeout: int | None = None
    """Seconds for sessionAffinity ClientIP; None when affinity is off."""
    etp_local: bool = False
    itp_local: bool = False
    hc_node_port: int | None = None
    topology: bool = False
    """The Service opted in to topology-aware routing (see :func:`wants_topology`)."""

    @property
    def externally_reachable(self) -> bool:
        return bool(self.node_port or self.external_ips or self.lb_ips)

    @property
    def uses_local(self) -> bool:
        return self.etp_local or self.itp_local


class EndpointInfo(NamedTuple):
    """One endpoint address of one service port (a tuple: cheap to build by the 100k)."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    local: bool = False
    zones: tuple[str, ...] = ()
    """Zone hints (hints.forZones); () when the endpoint has none."""

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def usable_fallback(self) -> bool:
        """Serving while terminating: used only when nothing is ready."""
        return self.serving and self.terminating


TOPOLOGY_OFF = frozenset({"", "disabled", "Disabled"})
"""Hints-annotation values that leave topology-aware routing off (kube-proxy's canUseTopology)."""
TOPOLOGY_DISTRIBUTIONS = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})
"""spec.trafficDistribution values whose EndpointSlices carry zone hints (node hints are not modelled)."""


def wants_topology(svc: Service) -> bool:
    """The Service opted in to topology-aware routing: a hints annotation other than
    '', 'disabled' or 'Disabled' (kube-proxy 1.27-1.30 accept any such value, 'Auto' is the
    documented one), or ``spec.trafficDistribution`` PreferClose (1.30+) or the 1.33 values
    PreferSameZone / PreferSameNode (whose slices carry zone hints too). Whether hints are
    actually used is decided per port in endpoints.categorize."""
    return svc.topology_mode not in TOPOLOGY_OFF or svc.traffic_distribution in TOPOLOGY_DISTRIBUTIONS


def service_ports(svc: Service, family: int) -> tuple[ServicePortInfo, ...]:
    """The service ports to program for ``family`` (none for headless/ExternalName)."""
    if svc.type == "ExternalName" or svc.headless:
        return ()
    cips = [ip for ip in svc.cluster_ips if family_of(ip) == family]
    if not cips:
        return ()
    external = svc.type in ("NodePort", "LoadBalancer") or bool(svc.external_ips)
    etp_local = external and svc.external_traffic_policy == "Local"
    topology = wants_topology(svc)
    same = lambda ips: tuple(ip for ip in ips if family_of(ip) == family)  # noqa: E731
    out = []
    for p in svc.ports:
        out.append(
            ServicePortInfo(
                name=ServicePortName(svc.namespace, svc.name, p.name, p.protocol),
                cluster_ip=cips[0],
                port=p.port,
                protocol=p.protocol,
                node_port=p.node_port if svc.type in ("NodePort", "LoadBalancer") else None,
                external_ips=same(svc.external_ips),
                lb_ips=same(svc.load_balancer_ips) if svc.type == "LoadBalancer" else (),
                source_ranges=tuple(
                    c for c in svc.load_balancer_source_ranges if cidr_family(c) == family
                ) if svc.type == "LoadBalancer" else (),
                affinity_timeout=svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else None,
                etp_local=etp_local,
                itp_local=svc.internal_traffic_policy == "Local",
                hc_node_port=svc.health_check_node_port if etp_local and svc.type == "LoadBalancer" else None,
                topology=topology,
            )
        )
    return tuple(out)


def endpoints_by_port(
    slices: Iterable[EndpointSlice],
    family: int,
    node_name: str,
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
    service: str = "",
) -> dict[tuple[str, str], tuple[EndpointInfo, ...]]:
    """Endpoints of one service keyed by (port name, protocol), deduplicated.

    An address listed in two slices (during a slice rotation) counts once; the
    entry that is ready wins. Output is sorted, hence deterministic.
    """
    atype = "IPv4" if family == 4 else "IPv6"
    merged: dict[tuple[str, str], dict[tuple[str, int], EndpointInfo]] = {}
    for sl in slices:
        if sl.address_type != atype:
            continue
        for p in sl.ports:
            if p.port is None:
                continue
            port = p.port
            bucket = merged.setdefault((p.name, p.protocol), {})
            for ep in sl.endpoints:
                c = ep.conditions
                ip = ep.addresses[0]
                info = EndpointInfo(ip, port, c.ready, c.serving, c.terminating,
                                    bool(node_name) and ep.node_name == node_name, ep.zone_hints)
                old = bucket.get((ip, port))
                if old is None or (info.ready and not old.ready):
                    bucket[(ip, port)] = info
    out = {}
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    pton = socket.inet_pton
    for key, bucket in merged.items():
        eps = list(bucket.values())
        if max_endpoints > 0 and len(eps) > max_endpoints:
            eps.sort(key=lambda e: (not e.ready, _ip_sort_key(e.ip), e.port))
            from podnet.proxy import metrics

            log.warning(
                "service %s port %s/%s has %d endpoints; keeping the first %d (--max-endpoints-per-service-port)", service, key[0] or "-", key[1], len(eps), max_endpoints
            )
            metrics.ENDPOINTS_TRUNCATED.inc(len(eps) - max_endpoints)
            eps = eps[:max_endpoints]
        # Numeric address order (inet_pton: C speed); one port per bucket key, so ties are rare.
        out[key] = tuple(sorted(eps, key=lambda e: (pton(af, e.ip), e.port)))
    return out


def _ip_sort_key(ip: str) -> bytes:
    """Numeric order of canonical IPs of one family, at C speed."""
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
