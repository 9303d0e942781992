"""Service allocation as kube-apiserver's service registry does it: ClusterIPs and NodePorts.

:class:`ServiceAllocator` fills ``spec.clusterIP(s)``, ``ipFamilies``,
``ipFamilyPolicy``, ``ports[].nodePort`` and ``healthCheckNodePort`` of a
Service being created or updated, and records every value it took in an
``allocated`` list so the caller can give them back if the write fails.

- ClusterIPs come from the service range of each family (dual-stack when a
  second range is configured and the policy asks for it); an explicit
  clusterIP is honoured when free and inside the range, else 422; ``None``
  means headless; ExternalName Services get none; clusterIPs are immutable
  (omitted on update = carried over).
- NodePorts for NodePort and LoadBalancer Services (unless
  allocateLoadBalancerNodePorts is false); an omitted nodePort on update
  keeps the old value of the same (port, protocol); a nodePort on a
  ClusterIP Service is 422 at create and dropped on a type change.
- healthCheckNodePort only for LoadBalancer with externalTrafficPolicy=Local.
- Every ClusterIP handed out passes :func:`podnet.kube.validate.ip_address`
  and is in its canonical form: an explicit one is validated before the
  allocator sees it (422 otherwise), and a dynamic one the validator would
  refuse is kept reserved and never handed out.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from podnet.kube import validate as v
from podnet.netlab.apiserver.allocators import AllocationError, IPAllocator, PortAllocator
from podnet.netlab.apiserver.apistore import StatusError

__all__ = ["ServiceAllocator", "service_allocations", "validate_service_extra", "invalid", "quoted"]

Allocation = tuple[str, Any]
"""("ip", "10.96.0.10") or ("port", 30080)"""


def quoted(name: object) -> str:
    """A name as Go's %q shows it in kube-apiserver's messages: in double quotes, control bytes escaped."""
    return json.dumps(str(name), ensure_ascii=False)


def invalid(kind: str, name: str, field: str, message: str) -> StatusError:
    return StatusError(
        422, "Invalid", f'{kind} {quoted(name)} is invalid: {field}: {message}', kind=kind, name=name,
        causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}],
    )


class ServiceAllocator:
    def __init__(self, service_cidrs: list[str], node_ports: tuple[int, int] = (30000, 32767)) -> None:
        try:
            ranges = [v.cidr("--service-cluster-ip-range", c) for c in service_cidrs]
        except v.InvalidField as e:
            raise ValueError(str(e)) from None
        self.ip_allocators = {a.family: a for a in (IPAllocator(c) for c in ranges)}
        self.node_ports = PortAllocator(*node_ports)

    def reserve_existing(self, services: Iterable[dict[str, Any]]) -> None:
        """Mark every allocated IP/port of stored Services as used (after a restart)."""
        for svc in services:
            for what, value in service_allocations(svc):
                if what == "ip":
                    for alloc in self.ip_allocators.values():
                        alloc.reserve(value)
                else:
                    self.node_ports.reserve(value)

    def release(self, allocated: Iterable[Allocation]) -> None:
        for what, value in allocated:
            if what == "ip":
                for alloc in self.ip_allocators.values():
                    alloc.release(value)
            else:
                self.node_ports.release(value)

    def allocate(self, obj: dict[str, Any], old: dict[str, Any] | None, allocated: list[Allocation]) -> None:
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        stype = spec.get("type")
        if stype == "ExternalName":
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(k, None)
        else:
            self._allocate_cluster_ips(name, spec, old_spec, allocated)
        wants_node_ports = stype == "NodePort" or (stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or ()
                     if isinstance(p, dict)}
        for i, p in enumerate(spec.get("ports") or ()):
            if not isinstance(p, dict):
                continue
            want = p.get("nodePort") or None  # 0 means unset
            if stype in ("ClusterIP", "ExternalName"):
                if want and old is None:
                    raise invalid("Service", name, f"spec.ports[{i}].nodePort",
                                  f"Forbidden: may not be used when `type` is '{stype}'")
                p.pop("nodePort", None)
                continue
            previous = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if not want and previous:
                p["nodePort"] = previous
                continue
            if want and want == previous:
                continue
            if not want and not wants_node_ports:
                continue
            try:
                port = self.node_ports.allocate(want if isinstance(want, int) and not isinstance(want, bool) else None)
            except AllocationError as e:
                raise invalid("Service", name, f"spec.ports[{i}].nodePort", f"Invalid value: {want}: {e}") from None
            allocated.append(("port", port))
            p["nodePort"] = port
        needs_hc = stype == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
        if needs_hc:
            want = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
            if not want or want != old_spec.get("healthCheckNodePort"):
                try:
                    port = self.node_ports.allocate(want or None)
                except AllocationError as e:
                    raise invalid("Service", name, "spec.healthCheckNodePort", f"Invalid value: {want}: {e}") from None
                allocated.append(("port", port))
                want = port
            spec["healthCheckNodePort"] = want
        else:
            spec.pop("healthCheckNodePort", None)

    def _allocate_cluster_ips(self, name: str, spec: dict[str, Any], old_spec: dict[str, Any],
                              allocated: list[Allocation]) -> None:
        old_ips = old_spec.get("clusterIPs") or ([old_spec["clusterIP"]] if old_spec.get("clusterIP") else [])
        want = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if old_ips:
            if want and want[: len(old_ips)] != old_ips[: len(want)]:
                raise invalid("Service", name, "spec.clusterIPs[0]", f"Invalid value: {want!r}: may not change once set")
            if not want or len(want) <= len(old_ips):
                spec["clusterIPs"], spec["clusterIP"] = list(old_ips), old_ips[0]
                spec.setdefault("ipFamilies", old_spec.get("ipFamilies") or [])
                spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy", "SingleStack"))
                return
        if want and want[0] == "None":
            spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            return
        if spec.get("clusterIP") and spec.get("clusterIPs") and spec["clusterIP"] != spec["clusterIPs"][0]:
            raise invalid("Service", name, "spec.clusterIPs[0]", "Invalid value: must match clusterIP")
        families = list(spec.get("ipFamilies") or [])
        for ip in want:
            fam = "IPv6" if ":" in str(ip) else "IPv4"
            if len(families) < len(want) and fam not in families:
                families.append(fam)
        policy = spec.get("ipFamilyPolicy") or ("SingleStack" if len(want) <= 1 else "RequireDualStack")
        if not families:
            families = [next(iter(self.ip_allocators))]
        if policy in ("PreferDualStack", "RequireDualStack") and len(families) == 1:
            other = "IPv6" if families[0] == "IPv4" else "IPv4"
            if other in self.ip_allocators:
                families.append(other)
            elif policy == "RequireDualStack":
                raise invalid("Service", name, "spec.ipFamilyPolicy",
                              "Invalid value: RequireDualStack: this cluster is not configured for dual-stack services")
        ips = []
        for i, fam in enumerate(families):
            alloc = self.ip_allocators.get(fam)
            if alloc is None:
                raise invalid("Service", name, f"spec.ipFamilies[{i}]", f"Unsupported value: {fam}: not configured")
            explicit = want[i] if i < len(want) else None
            try:
                ip = _take_ip(alloc, None if explicit is None else v.ip_address(f"spec.clusterIPs[{i}]", explicit))
            except v.InvalidField as e:
                raise invalid("Service", name, f"spec.clusterIPs[{i}]",
                              f"Invalid value: {explicit!r}: {e.why}") from None
            except AllocationError as e:
                raise invalid("Service", name, f"spec.clusterIPs[{i}]", f"Invalid value: {explicit!r}: {e}") from None
            allocated.append(("ip", ip))
            ips.append(ip)
        spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
        spec["ipFamilies"], spec["ipFamilyPolicy"] = families, policy


_DYNAMIC_TRIES = 64


def _take_ip(alloc: IPAllocator, explicit: str | None) -> str:
    """One ClusterIP from ``alloc`` that the boundary validators accept, in canonical form.
    A dynamic address they refuse (an IPv4-mapped one in an IPv6 range) stays reserved, so it
    is never handed out, and the next one is tried."""
    if explicit is not None:
        return alloc.allocate(explicit)
    for _ in range(_DYNAMIC_TRIES):
        ip = alloc.allocate(None)
        try:
            if v.ip_address("clusterIP", ip) == ip:
                return ip
        except v.InvalidField:
            pass
    raise AllocationError("no address in the range that a Service may hold")


def service_allocations(svc: dict[str, Any]) -> list[Allocation]:
    spec = svc.get("spec") or {}
    out: list[Allocation] = [("ip", ip) for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    out += [("port", p["nodePort"]) for p in spec.get("ports") or () if isinstance(p, dict) and p.get("nodePort")]
    if spec.get("healthCheckNodePort"):
        out.append(("port", spec["healthCheckNodePort"]))
    return out


def validate_service_extra(obj: dict[str, Any]) -> None:
    """Rules of the real API server that the parser (a consumer) does not enforce."""
    name = obj["metadata"]["name"]
    if isinstance(name, str) and name and not name[0].isalpha():
        raise invalid("Service", name, "metadata.name",
                      f"Invalid value: {name!r}: a DNS-1035 label must start with an alphabetic character")
    spec = obj.get("spec") or {}
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if spec.get("type") != "ExternalName" and not headless and not ports:
        raise invalid("Service", name, "spec.ports", "Required value")
    if len(ports) > 1:
        for i, p in enumerate(ports):
            if isinstance(p, dict) and not p.get("name"):
                raise invalid("Service", name, f"spec.ports[{i}].name", "Required value")
