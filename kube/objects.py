"""Small frozen types for the Kubernetes objects podnet reads.

API objects are stripped here, at the boundary, into immutable values with
only the fields podnet uses. Every ``parse_*`` function takes the raw JSON
dict of one object and either returns a fully validated value or raises
:class:`InvalidObject`; no unchecked string survives into these types, so
nothing downstream (iptables rules, DNS names) ever needs to re-check them.

The rules are kube-apiserver's (see :mod:`podnet.kube.validate`): an object it
would refuse is refused here, including the special-address rule
(ValidateNonSpecialIP) on EndpointSlice addresses and Service externalIPs, so
a stricter or a hostile API server cannot get past what a real one enforces.

Values are hashable and compare by content, so an informer can drop no-op
updates with ``==`` and a tracker can diff snapshots cheaply.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from prometheus_client import Counter

from podnet.kube import validate as v
from podnet.kube.names import LAST_CHANGE_TRIGGER_TIME_ANNOTATION as LAST_CHANGE_TRIGGER_TIME
from podnet.kube.names import SERVICE_NAME_LABEL, TOPOLOGY_HINTS_ANNOTATION, TOPOLOGY_MODE_ANNOTATION
from podnet.kube.sharing import SHARE_LIMIT, _shared  # noqa: F401 - the bounded table, for tests and tuning
from podnet.kube.sharing import intern as _intern, share as _share, share_items as _share_items

__all__ = [
    "InvalidObject",
    "Labels",
    "ServicePort",
    "Service",
    "EndpointConditions",
    "Endpoint",
    "EndpointPort",
    "EndpointSlice",
    "NodeAddress",
    "Node",
    "Namespace",
    "Pod",
    "parse_service",
    "parse_endpoint_slice",
    "parse_node",
    "parse_namespace",
    "parse_pod",
    "object_key",
    "SERVICE_NAME_LABEL",
    "MAX_ENDPOINTS_PER_SLICE",
    "LAST_CHANGE_TRIGGER_TIME",
    "IGNORED_FIELDS",
    "parse_rfc3339_ns",
    "format_rfc3339_nano",
    "TOPOLOGY_MODE_ANNOTATION",
    "TOPOLOGY_HINTS_ANNOTATION",
    "MAX_ZONE_HINTS",
]

log = logging.getLogger("podnet.kube")

IGNORED_FIELDS = Counter(
    "podnet_kube_ignored_fields_total",
    "Optional fields dropped at the boundary because their value was invalid (the object itself was kept).",
    ["resource", "field"],
)

# The API server caps a slice at 1000 endpoints; anything larger is hostile.
MAX_ENDPOINTS_PER_SLICE = 1000
MAX_PORTS = 1000

Labels = tuple[tuple[str, str], ...]
"""Labels as a sorted tuple of (key, value) pairs, so that they hash."""


class InvalidObject(ValueError):
    """An API object failed validation. ``kind``/``key`` say which one."""

    def __init__(self, kind: str, key: str, reason: str) -> None:
        super().__init__(f"{kind} {key}: {reason}")
        self.kind = kind
        self.key = key
        self.reason = reason


def object_key(namespace: str, name: str) -> str:
    """The informer key: ``namespace/name``, or ``name`` when cluster-scoped."""
    return f"{namespace}/{name}" if namespace else name


def _labels(raw: Mapping[str, Any] | None, field_name: str = "metadata.labels") -> Labels:
    if not raw:
        return ()
    if not isinstance(raw, dict):
        raise v.InvalidField(field_name, raw, "not a map")
    return _share(
        tuple(
            sorted(
                _share((_intern(v.label_key(field_name, k)), _intern(v.label_value(f"{field_name}[{k}]", val))))
                for k, val in raw.items()
            )
        )
    )


def _list(raw: Any, field_name: str, limit: int = 100_000) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise v.InvalidField(field_name, raw, "not a list")
    if len(raw) > limit:
        raise v.InvalidField(field_name, f"<{len(raw)} items>", f"more than {limit} items")
    return raw


def _map(raw: Any, field_name: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise v.InvalidField(field_name, raw, "not an object")
    return raw


def _bool(raw: Any, field_name: str, default: bool | None) -> bool | None:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise v.InvalidField(field_name, raw, "not a boolean")
    return raw


def _choice(raw: Any, field_name: str, choices: tuple[str, ...], default: str) -> str:
    if raw is None or raw == "":
        return default
    for choice in choices:
        if raw == choice:
            return choice  # the constant, not the decoder's copy
    raise v.InvalidField(field_name, raw, f"not one of {', '.join(choices)}")


TOTAL_ANNOTATION_SIZE = 256 * 1024
"""apimachinery's TotalAnnotationSizeLimitB: keys and values together, in bytes."""


def _annotations(raw: Any) -> None:
    """ValidateAnnotations: keys are qualified names (checked lower-cased), at most 256 KiB of
    keys and values in all. Values are read only by the parsers of the annotations podnet uses,
    which ignore (and count) a malformed one without taking the object out."""
    if not isinstance(raw, dict):
        return  # no annotations (a real API server never sends anything but a map here)
    total = 0
    for k, val in raw.items():
        if isinstance(k, str):
            total += len(k.encode("utf-8", "surrogatepass"))
        if isinstance(val, str):
            total += len(val.encode("utf-8", "surrogatepass"))
    if total > TOTAL_ANNOTATION_SIZE:
        raise v.InvalidField("metadata.annotations", f"<{total} bytes>",
                             f"may not be more than {TOTAL_ANNOTATION_SIZE} bytes")
    for k in raw:
        v.annotation_key("metadata.annotations", k)


@dataclass(frozen=True, slots=True)
class _Meta:
    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: Labels
    deleting: bool


def _meta(
    raw: Mapping[str, Any],
    kind: str,
    namespaced: bool,
    name_check: Callable[[str, object], str],
    shared_name: bool = False,
) -> _Meta:
    """``shared_name``: intern the name (for names other objects repeat: Services, Nodes, Namespaces)."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject(kind, "?", "metadata missing")
    name_raw, ns_raw = meta.get("name"), meta.get("namespace")
    shown = f"{ns_raw}/{name_raw}" if namespaced else str(name_raw)
    try:
        name = name_check("metadata.name", name_raw)
        if shared_name:
            name = _intern(name)
        namespace = _intern(v.dns_label("metadata.namespace", ns_raw)) if namespaced else ""
        uid = v.opaque_token("metadata.uid", meta.get("uid"))
        rv = v.opaque_token("metadata.resourceVersion", meta.get("resourceVersion"))
        labels = _labels(meta.get("labels"))
        _annotations(meta.get("annotations"))
    except v.InvalidField as e:
        raise InvalidObject(kind, shown[:120], str(e)) from None
    return _Meta(namespace, name, uid, rv, labels, bool(meta.get("deletionTimestamp")))


# --------------------------------------------------------------------------- Service


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    target_port: int | str
    """A number, or a named container port (resolved through EndpointSlice ports)."""
    node_port: int | None = None
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"
    """ClusterIP, NodePort, LoadBalancer or ExternalName."""
    cluster_ips: tuple[str, ...] = ()
    """Allocated cluster IPs, primary first; empty for headless and ExternalName."""
    headless: bool = False
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    """status.loadBalancer.ingress[].ip"""
    load_balancer_source_ranges: tuple[str, ...] = ()
    session_affinity: str = "None"
    session_affinity_timeout: int = 10800
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    topology_mode: str = ""
    """The topology annotation as kube-proxy reads it: service.kubernetes.io/topology-aware-hints,
    else service.kubernetes.io/topology-mode; '' when absent (or malformed, then logged and counted)."""
    traffic_distribution: str = ""
    """spec.trafficDistribution (PreferClose, PreferSameZone, PreferSameNode, ...); '' when unset."""
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool = False
    ip_families: tuple[str, ...] = ()
    selector: Labels = ()
    external_name: str = ""
    labels: Labels = ()
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @property
    def cluster_ip(self) -> str | None:
        """The primary cluster IP, or None (headless, ExternalName, unallocated)."""
        return self.cluster_ips[0] if self.cluster_ips else None

    @property
    def selector_dict(self) -> dict[str, str]:
        return dict(self.selector)


def parse_service(raw: Mapping[str, Any]) -> Service:
    meta = _meta(raw, "Service", True, v.dns1035_label, shared_name=True)
    key = object_key(meta.namespace, meta.name)
    try:
        spec = _map(raw.get("spec"), "spec")
        status = _map(raw.get("status"), "status")
        stype = _choice(spec.get("type"), "spec.type", ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"), "ClusterIP")
        ips_raw = _list(spec.get("clusterIPs"), "spec.clusterIPs", 2) or (
            [spec["clusterIP"]] if spec.get("clusterIP") else []
        )
        headless = bool(ips_raw) and ips_raw[0] == "None"
        cluster_ips: tuple[str, ...] = ()
        if not headless and stype != "ExternalName":
            cluster_ips = tuple(v.ip_address(f"spec.clusterIPs[{i}]", ip) for i, ip in enumerate(ips_raw))
            if len(cluster_ips) == 2 and (":" in cluster_ips[0]) == (":" in cluster_ips[1]):
                raise v.InvalidField("spec.clusterIPs", ips_raw, "may specify no more than one IP for each IP family")
        ports = []
        seen: set[tuple[str, int]] = set()
        for i, p in enumerate(_list(spec.get("ports"), "spec.ports", MAX_PORTS)):
            p = _map(p, f"spec.ports[{i}]")
            tp = p.get("targetPort")
            port = v.port_number(f"spec.ports[{i}].port", p.get("port"))
            if tp is None or tp == 0 or tp == "":
                target: int | str = port
            elif isinstance(tp, str):
                target = v.port_name(f"spec.ports[{i}].targetPort", tp)  # a string is a name, never a number
            else:
                target = v.port_number(f"spec.ports[{i}].targetPort", tp)
            sp = ServicePort(
                name=_svc_port_name(f"spec.ports[{i}].name", p.get("name")),
                protocol=v.protocol(f"spec.ports[{i}].protocol", p.get("protocol")),
                port=port,
                target_port=target,
                node_port=v.optional_port_number(f"spec.ports[{i}].nodePort", p.get("nodePort")),
                app_protocol=_app_protocol(p.get("appProtocol")),
            )
            if (sp.protocol, sp.port) in seen:
                raise v.InvalidField(f"spec.ports[{i}]", sp.port, "duplicate port/protocol")
            seen.add((sp.protocol, sp.port))
            ports.append(sp)
        if len({p.name for p in ports}) != len(ports):
            raise v.InvalidField("spec.ports", [p.name for p in ports], "duplicate port names")
        ext_name = ""
        if stype == "ExternalName":
            ext_name = _external_name(spec.get("externalName"))
        ingress = _list(_map(status.get("loadBalancer"), "status.loadBalancer").get("ingress"), "ingress", 100)
        affinity = _choice(spec.get("sessionAffinity"), "spec.sessionAffinity", ("None", "ClientIP"), "None")
        timeout = 10800
        cfg = _map(_map(spec.get("sessionAffinityConfig"), "sessionAffinityConfig").get("clientIP"), "clientIP")
        if cfg.get("timeoutSeconds") is not None:
            t = cfg["timeoutSeconds"]
            if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 86400:
                raise v.InvalidField("timeoutSeconds", t, "not in 1..86400")
            timeout = t
        selector = _labels(spec.get("selector"), "spec.selector")
        fams = _share_items(tuple(
            _choice(f, "spec.ipFamilies", ("IPv4", "IPv6"), "IPv4") for f in _list(spec.get("ipFamilies"), "ipFamilies", 2)
        ))
        return Service(
            namespace=meta.namespace,
            name=meta.name,
            type=stype,
            cluster_ips=cluster_ips,
            headless=headless,
            ports=_share_items(tuple(ports)),
            external_ips=tuple(
                v.non_special_ip(f"spec.externalIPs[{j}]", ip)
                for j, ip in enumerate(_list(spec.get("externalIPs"), "externalIPs", 100))
            ),
            load_balancer_ips=tuple(
                v.ip_address("status.loadBalancer.ingress.ip", _map(i, "ingress")["ip"])
                for i in ingress
                if _map(i, "ingress").get("ip")
            ),
            load_balancer_source_ranges=tuple(
                v.source_range(f"spec.loadBalancerSourceRanges[{j}]", c)
                for j, c in enumerate(_list(spec.get("loadBalancerSourceRanges"), "loadBalancerSourceRanges", 1000))
            ),
            session_affinity=affinity,
            session_affinity_timeout=timeout,
            external_traffic_policy=_choice(
                spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", ("Cluster", "Local"), "Cluster"
            ),
            internal_traffic_policy=_choice(
                spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", ("Cluster", "Local"), "Cluster"
            ),
            topology_mode=_topology_annotation(raw["metadata"], key),
            traffic_distribution=_traffic_distribution(spec.get("trafficDistribution")),
            health_check_node_port=v.optional_port_number("spec.healthCheckNodePort", spec.get("healthCheckNodePort")),
            publish_not_ready_addresses=bool(
                _bool(spec.get("publishNotReadyAddresses"), "spec.publishNotReadyAddresses", False)
            ),
            ip_families=fams,
            selector=selector,
            external_name=ext_name,
            labels=meta.labels,
            uid=meta.uid,
            resource_version=meta.resource_version,
        )
    except (v.InvalidField, KeyError, TypeError) as e:
        raise InvalidObject("Service", key, str(e)) from None


# TOPOLOGY_HINTS_ANNOTATION is deprecated since 1.27 in favour of topology-mode; kube-proxy still reads it first.
# Annotation values and spec.trafficDistribution: a label value, optionally with a
# domain prefix ("example.com/heuristic", KEP-4444's implementation-specific values).
_TOPOLOGY_VALUE = re.compile(r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")


def _topology_annotation(meta: Mapping[str, Any], key: str) -> str:
    """kube-proxy's hints annotation: topology-aware-hints when set, else topology-mode.
    A malformed value is logged, counted in ``podnet_kube_ignored_fields_total`` and
    treated as absent (an annotation never takes the Service out)."""
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    for name in (TOPOLOGY_HINTS_ANNOTATION, TOPOLOGY_MODE_ANNOTATION):
        raw = annotations.get(name)
        if raw is None or raw == "":
            continue
        if isinstance(raw, str) and _TOPOLOGY_VALUE.fullmatch(raw):
            return raw
        log.warning("Service %s: ignoring annotation %s: %r is not a topology mode", key, name, str(raw)[:64])
        IGNORED_FIELDS.labels("services", name).inc()
    return ""


def _traffic_distribution(raw: Any) -> str:
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str) or not _TOPOLOGY_VALUE.fullmatch(raw):
        raise v.InvalidField("spec.trafficDistribution", raw, "not a traffic distribution name")
    return raw


def _external_name(raw: Any) -> str:
    """ValidateService: the externalName without one trailing dot must be a DNS-1123 subdomain."""
    if raw is None or raw == "":
        raise v.InvalidField("spec.externalName", raw, "Required value")
    if not isinstance(raw, str):
        raise v.InvalidField("spec.externalName", raw, "not a string")
    return _intern(v.dns_subdomain("spec.externalName", raw[:-1] if raw.endswith(".") else raw))


def _svc_port_name(field_name: str, raw: Any) -> str:
    """Service and EndpointSlice port names are DNS-1123 labels ('80-8080' is valid);
    only container port names (targetPort by name) are IANA service names."""
    if raw is None or raw == "":
        return ""
    return _intern(v.dns_label(field_name, raw))


def _app_protocol(raw: Any) -> str:
    """Service and EndpointSlice appProtocol: a qualified name (ValidateQualifiedName)."""
    if raw is None:
        return ""
    return _intern(v.qualified_name("appProtocol", raw))


# --------------------------------------------------------------------------- EndpointSlice

"""Set by the EndpointSlice controller: when the Pod/Service change behind this write happened."""

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)


def parse_rfc3339_ns(text: Any) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with at most 9 fractional digits
    (Go's ``time.RFC3339Nano``, which Kubernetes uses for annotations); ValueError otherwise."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {str(text)[:64]!r}")
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm(datetime(y, mo, d, h, mi, sec, tzinfo=timezone.utc).timetuple())  # checks ranges
    zone = m.group(8)
    if zone != "Z":
        hh, mm = int(zone[1:3]), int(zone[4:6])
        if hh > 23 or mm > 59:
            raise ValueError(f"bad zone offset {zone!r}")
        secs -= (1 if zone[0] == "+" else -1) * (hh * 3600 + mm * 60)
    return secs * 1_000_000_000 + int((m.group(7) or "0").ljust(9, "0"))


def format_rfc3339_nano(ns: int) -> str:
    """``ns`` since the epoch as Go's ``t.UTC().Format(time.RFC3339Nano)`` (trailing zeros trimmed)."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def _trigger_time(meta: Mapping[str, Any], key: str) -> float | None:
    """The slice's last-change-trigger-time as POSIX seconds, or None when absent.
    A bad value is logged, counted in ``podnet_kube_ignored_fields_total`` and ignored."""
    annotations = meta.get("annotations")
    raw = annotations.get(LAST_CHANGE_TRIGGER_TIME) if isinstance(annotations, dict) else None
    if raw is None:
        return None
    try:
        return parse_rfc3339_ns(raw) / 1e9
    except ValueError as e:
        log.warning("EndpointSlice %s: ignoring annotation %s: %s", key, LAST_CHANGE_TRIGGER_TIME, e)
        IGNORED_FIELDS.labels("endpointslices", LAST_CHANGE_TRIGGER_TIME).inc()
        return None


@dataclass(frozen=True, slots=True)
class EndpointConditions:
    ready: bool = True
    """Unset means ready (API: 'unknown state, interpreted as ready')."""
    serving: bool = True
    """Unset means the same as ready."""
    terminating: bool = False


_CONDITIONS = {
    (ready, serving, terminating): EndpointConditions(ready, serving, terminating)
    for ready in (False, True)
    for serving in (False, True)
    for terminating in (False, True)
}
"""The eight possible conditions, shared by every endpoint."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    hostname: str = ""
    node_name: str = ""
    zone: str = ""
    target_pod: str = ""
    """targetRef.name when targetRef.kind is Pod."""
    zone_hints: tuple[str, ...] = ()
    """hints.forZones[].name: the zones whose nodes should use this endpoint (topology-aware routing)."""


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str = ""
    protocol: str = "TCP"
    port: int | None = None
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str
    """The kubernetes.io/service-name label; '' when missing (then ignored by consumers)."""
    address_type: str
    """IPv4, IPv6 or FQDN."""
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    labels: Labels = ()
    uid: str = ""
    resource_version: str = field(default="", compare=False)
    last_change_trigger_time: float | None = field(default=None, compare=False)
    """The endpoints.kubernetes.io/last-change-trigger-time annotation as POSIX seconds;
    None when absent or invalid. Not part of equality: a write that only moves this
    annotation changes no endpoint (kube-proxy ignores such updates too)."""

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @property
    def service_key(self) -> str:
        return object_key(self.namespace, self.service_name)


MAX_ZONE_HINTS = 8
"""The API server's cap on hints.forZones."""


def _zone_hints(raw: Any, i: int) -> tuple[str, ...]:
    hints = _map(raw, f"endpoints[{i}].hints")
    out = []
    for j, z in enumerate(_list(hints.get("forZones"), f"endpoints[{i}].hints.forZones", MAX_ZONE_HINTS)):
        field_name = f"endpoints[{i}].hints.forZones[{j}].name"
        name = v.zone_name(field_name, _map(z, field_name).get("name"))
        if not name:
            raise v.InvalidField(field_name, name, "empty")
        out.append(name)
    return tuple(out)


def parse_endpoint_slice(raw: Mapping[str, Any]) -> EndpointSlice:
    meta = _meta(raw, "EndpointSlice", True, v.dns_subdomain)
    key = object_key(meta.namespace, meta.name)
    try:
        labels = dict(meta.labels)
        svc = labels.get(SERVICE_NAME_LABEL, "")
        if svc:
            v.dns_label(f"labels[{SERVICE_NAME_LABEL}]", svc)
        atype = _choice(raw.get("addressType"), "addressType", ("IPv4", "IPv6", "FQDN"), "")
        if not atype:
            raise v.InvalidField("addressType", None, "missing")
        endpoints = []
        for i, e in enumerate(_list(raw.get("endpoints"), "endpoints", MAX_ENDPOINTS_PER_SLICE)):
            e = _map(e, f"endpoints[{i}]")
            addrs_raw = _list(e.get("addresses"), f"endpoints[{i}].addresses", 100)
            if not addrs_raw:
                raise v.InvalidField(f"endpoints[{i}].addresses", addrs_raw, "empty")
            if atype == "FQDN":
                addrs = tuple(v.fqdn(f"endpoints[{i}].addresses[{j}]", a) for j, a in enumerate(addrs_raw))
            else:
                addrs = tuple(v.non_special_ip(f"endpoints[{i}].addresses[{j}]", a) for j, a in enumerate(addrs_raw))
                want = 4 if atype == "IPv4" else 6
                if any(":" in a if want == 4 else ":" not in a for a in addrs):
                    raise v.InvalidField(f"endpoints[{i}].addresses", addrs_raw, f"must be a valid {atype} address")
            c = _map(e.get("conditions"), f"endpoints[{i}].conditions")
            ready = _bool(c.get("ready"), "conditions.ready", True)
            serving = _bool(c.get("serving"), "conditions.serving", ready)
            terminating = _bool(c.get("terminating"), "conditions.terminating", False)
            ref = _map(e.get("targetRef"), "targetRef")
            pod = ""
            if ref.get("kind") == "Pod" and ref.get("name"):
                pod = v.dns_subdomain("targetRef.name", ref["name"])
            endpoints.append(
                Endpoint(
                    addresses=addrs,
                    conditions=_CONDITIONS[bool(ready), bool(serving), bool(terminating)],
                    hostname=v.dns_label(f"endpoints[{i}].hostname", e["hostname"]) if e.get("hostname") else "",
                    node_name=(_intern(v.dns_subdomain(f"endpoints[{i}].nodeName", e["nodeName"]))
                               if e.get("nodeName") else ""),
                    zone=v.zone_name(f"endpoints[{i}].zone", e["zone"]) if e.get("zone") else "",
                    target_pod=pod,
                    zone_hints=_zone_hints(e.get("hints"), i) if e.get("hints") else (),
                )
            )
        ports = []
        for i, p in enumerate(_list(raw.get("ports"), "ports", 100)):
            p = _map(p, f"ports[{i}]")
            ports.append(
                EndpointPort(
                    name=_svc_port_name(f"ports[{i}].name", p.get("name")),
                    protocol=v.protocol(f"ports[{i}].protocol", p.get("protocol")),
                    port=v.optional_port_number(f"ports[{i}].port", p.get("port")),
                    app_protocol=_app_protocol(p.get("appProtocol")),
                )
            )
        return EndpointSlice(
            namespace=meta.namespace,
            name=meta.name,
            service_name=svc,
            address_type=atype,
            endpoints=tuple(endpoints),
            ports=_share_items(tuple(ports)),
            labels=meta.labels,
            uid=meta.uid,
            resource_version=meta.resource_version,
            last_change_trigger_time=_trigger_time(raw["metadata"], key),
        )
    except (v.InvalidField, KeyError, TypeError) as e:
        raise InvalidObject("EndpointSlice", key, str(e)) from None


# --------------------------------------------------------------------------- Node


@dataclass(frozen=True, slots=True)
class NodeAddress:
    type: str
    """InternalIP, ExternalIP, Hostname, InternalDNS or ExternalDNS."""
    address: str


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    addresses: tuple[NodeAddress, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    labels: Labels = ()
    ready: bool = True
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return self.name

    def ips(self, *types: str) -> tuple[str, ...]:
        """IP addresses of the given types (default InternalIP then ExternalIP)."""
        types = types or ("InternalIP", "ExternalIP")
        return tuple(a.address for t in types for a in self.addresses if a.type == t)

    @property
    def internal_ip(self) -> str | None:
        ips = self.ips("InternalIP") or self.ips("ExternalIP")
        return ips[0] if ips else None


_IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
_NAME_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")


def parse_node(raw: Mapping[str, Any]) -> Node:
    meta = _meta(raw, "Node", False, v.dns_subdomain, shared_name=True)
    try:
        spec = _map(raw.get("spec"), "spec")
        status = _map(raw.get("status"), "status")
        addrs = []
        for i, a in enumerate(_list(status.get("addresses"), "status.addresses", 100)):
            a = _map(a, f"status.addresses[{i}]")
            t = _choice(a.get("type"), "address.type", _IP_ADDRESS_TYPES + _NAME_ADDRESS_TYPES, "")
            if t in _IP_ADDRESS_TYPES:
                addrs.append(NodeAddress(t, v.ip_address(f"status.addresses[{i}]", a.get("address"))))
            elif t:
                addrs.append(NodeAddress(t, v.dns_subdomain(f"status.addresses[{i}]", a.get("address"))))
        cidrs_raw = _list(spec.get("podCIDRs"), "spec.podCIDRs", 2) or (
            [spec["podCIDR"]] if spec.get("podCIDR") else []
        )
        ready = True
        for c in _list(status.get("conditions"), "status.conditions", 100):
            c = _map(c, "condition")
            if c.get("type") == "Ready":
                ready = c.get("status") == "True"
        pod_cidrs = tuple(v.cidr(f"spec.podCIDRs[{i}]", c) for i, c in enumerate(cidrs_raw))
        if len(pod_cidrs) == 2 and (":" in pod_cidrs[0]) == (":" in pod_cidrs[1]):
            raise v.InvalidField("spec.podCIDRs", cidrs_raw, "may specify no more than one CIDR for each IP family")
        return Node(
            name=meta.name,
            addresses=tuple(addrs),
            pod_cidrs=pod_cidrs,
            labels=meta.labels,
            ready=ready,
            uid=meta.uid,
            resource_version=meta.resource_version,
        )
    except (v.InvalidField, KeyError, TypeError) as e:
        raise InvalidObject("Node", meta.name, str(e)) from None


# --------------------------------------------------------------------------- Namespace


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Labels = ()
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return self.name


def parse_namespace(raw: Mapping[str, Any]) -> Namespace:
    meta = _meta(raw, "Namespace", False, v.dns_label, shared_name=True)
    return Namespace(meta.name, meta.labels, meta.uid, meta.resource_version)


# --------------------------------------------------------------------------- Pod


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...] = ()
    labels: Labels = ()
    node_name: str = ""
    ready: bool = False
    phase: str = "Pending"
    hostname: str = ""
    subdomain: str = ""
    host_network: bool = False
    deleting: bool = False
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)


def parse_pod(raw: Mapping[str, Any]) -> Pod:
    meta = _meta(raw, "Pod", True, v.dns_subdomain)
    key = object_key(meta.namespace, meta.name)
    try:
        spec = _map(raw.get("spec"), "spec")
        status = _map(raw.get("status"), "status")
        ips_raw = [
            _map(p, "status.podIPs").get("ip") for p in _list(status.get("podIPs"), "status.podIPs", 2)
        ] or ([status["podIP"]] if status.get("podIP") else [])
        ready = False
        for c in _list(status.get("conditions"), "status.conditions", 100):
            c = _map(c, "condition")
            if c.get("type") == "Ready":
                ready = c.get("status") == "True"
        ips = tuple(v.ip_address(f"status.podIPs[{i}]", ip) for i, ip in enumerate(ips_raw))
        if len(ips) == 2 and (":" in ips[0]) == (":" in ips[1]):
            raise v.InvalidField("status.podIPs", ips_raw, "may specify no more than one IP for each IP family")
        return Pod(
            namespace=meta.namespace,
            name=meta.name,
            ips=ips,
            labels=meta.labels,
            node_name=_intern(v.dns_subdomain("spec.nodeName", spec["nodeName"])) if spec.get("nodeName") else "",
            ready=ready,
            phase=_choice(status.get("phase"), "status.phase", ("Pending", "Running", "Succeeded", "Failed", "Unknown"), "Pending"),
            hostname=v.dns_label("spec.hostname", spec["hostname"]) if spec.get("hostname") else "",
            subdomain=v.dns_label("spec.subdomain", spec["subdomain"]) if spec.get("subdomain") else "",
            host_network=bool(_bool(spec.get("hostNetwork"), "spec.hostNetwork", False)),
            deleting=meta.deleting,
            uid=meta.uid,
            resource_version=meta.resource_version,
        )
    except (v.InvalidField, KeyError, TypeError) as e:
        raise InvalidObject("Pod", key, str(e)) from None
