"""Desired EndpointSlices of one Service, as a pure function of the Service and Pods.

Follows the Kubernetes EndpointSlice controller:

- pods in the Service's namespace matching its selector, with an IP of the
  slice's address family, not Succeeded/Failed, become endpoints; terminating
  pods (deletionTimestamp set) stay, with ``terminating: true``;
- ``serving`` is the pod's Ready condition; ``ready`` is Ready and not
  terminating; ``publishNotReadyAddresses`` makes both true;
- ``hostname`` is set when pod.spec.hostname is set and pod.spec.subdomain is
  the Service's name; ``nodeName``, ``zone`` (the node's
  topology.kubernetes.io/zone label) and ``targetRef`` come from the pod;
- ports map the Service's ports to each pod's targetPort (a named targetPort
  is looked up in the pod's container ports with the same protocol; a pod
  without it gets no entry for that port), so pods that resolve differently
  land in different slices; each group is cut into slices of at most
  ``max_per_slice`` endpoints, sorted by pod name (stable, minimal churn);
- a Service with no endpoints in a family gets one empty placeholder slice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["DesiredSlice", "desired_slices", "MANAGED_BY_LABEL", "CONTROLLER_NAME", "SERVICE_NAME_LABEL",
           "HEADLESS_LABEL", "ZONE_LABEL", "selector_matches"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class DesiredSlice:
    address_type: str
    ports: tuple[tuple[tuple[str, Any], ...], ...]
    """Each port as sorted (key, value) pairs, so groups compare and hash."""
    endpoints: tuple[dict[str, Any], ...]

    def ports_json(self) -> list[dict[str, Any]] | None:
        return [dict(p) for p in self.ports] if self.ports else None

    @property
    def group(self) -> tuple[str, tuple]:
        return self.address_type, self.ports


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service selector (a plain map, AND of equalities); empty matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _pod_ips(pod: Mapping[str, Any], family: str) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)] or [status.get("podIP")]
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            continue
        if (addr.version == 4) == (family == "IPv4"):
            out.append(str(addr))
    return out[:1]


def _resolve_port(pod: Mapping[str, Any], target: Any, protocol: str) -> int | None:
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    containers = (pod.get("spec") or {}).get("containers")
    for c in containers if isinstance(containers, list) else ():
        ports = c.get("ports") if isinstance(c, dict) else None
        for cp in ports if isinstance(ports, list) else ():
            if isinstance(cp, dict) and cp.get("name") == target and cp.get("protocol", "TCP") == protocol:
                port = cp.get("containerPort")
                return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None
    return None


def _endpoint(svc: Mapping[str, Any], pod: Mapping[str, Any], ip: str, zones: Mapping[str, str]) -> dict[str, Any]:
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    terminating = bool(meta.get("deletionTimestamp"))
    pod_ready = _pod_ready(pod)
    ep: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {
            "ready": publish or (pod_ready and not terminating),
            "serving": publish or pod_ready,
            "terminating": terminating,
        },
    }
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        ep["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
        if zones.get(spec["nodeName"]):
            ep["zone"] = zones[spec["nodeName"]]
    ep["targetRef"] = {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"],
                       "uid": meta.get("uid", "")}
    return ep


def desired_slices(
    svc: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], zones: Mapping[str, str] | None = None,
    max_per_slice: int = 100,
) -> list[DesiredSlice]:
    spec = svc.get("spec") or {}
    selector = spec.get("selector")
    families = list(spec.get("ipFamilies") or ["IPv4"])
    zones = zones or {}
    groups: dict[tuple[str, tuple], list[tuple[str, dict[str, Any]]]] = {}
    eligible = [
        p for p in pods
        if selector_matches(selector, (p.get("metadata") or {}).get("labels"))
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    for family in families:
        for pod in eligible:
            for ip in _pod_ips(pod, family):
                ports = []
                for sp in spec.get("ports") or ():
                    proto = sp.get("protocol", "TCP")
                    port = _resolve_port(pod, sp.get("targetPort", sp.get("port")), proto)
                    if port is None:
                        continue
                    entry = {"name": sp.get("name", ""), "port": port, "protocol": proto}
                    if sp.get("appProtocol"):
                        entry["appProtocol"] = sp["appProtocol"]
                    ports.append(tuple(sorted(entry.items())))
                ep = _endpoint(svc, pod, ip, zones)
                groups.setdefault((family, tuple(ports)), []).append((pod["metadata"]["name"], ep))
    out: list[DesiredSlice] = []
    for family in families:
        fam_groups = sorted((g for g in groups if g[0] == family), key=repr)
        if not fam_groups:
            out.append(DesiredSlice(family, (), ()))
            continue
        for g in fam_groups:
            eps = [ep for _, ep in sorted(groups[g], key=lambda t: (t[0], t[1]["addresses"]))]
            for i in range(0, len(eps), max_per_slice):
                out.append(DesiredSlice(family, g[1], tuple(eps[i : i + max_per_slice])))
    return out
