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
- a Service with no endpoints in a family gets one empty placeholder slice;
- every slice written gets ``endpoints.kubernetes.io/last-change-trigger-time``
  from :class:`TriggerTimeTracker` (the controller's TriggerTimeTracker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from podnet.kube import validate
from podnet.kube.names import HEADLESS_LABEL, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL
from podnet.kube.names import LAST_CHANGE_TRIGGER_TIME_ANNOTATION as TRIGGER_TIME_ANNOTATION
from podnet.kube.objects import parse_rfc3339_ns

__all__ = ["DesiredSlice", "desired_slices", "MANAGED_BY_LABEL", "CONTROLLER_NAME", "SERVICE_NAME_LABEL",
           "HEADLESS_LABEL", "ZONE_LABEL", "selector_matches", "TriggerTimeTracker", "TRIGGER_TIME_ANNOTATION"]

CONTROLLER_NAME = "endpointslice-controller.k8s.io"


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
        try:  # only what kube-apiserver accepts as an EndpointSlice address
            addr = validate.non_special_ip("status.podIPs", ip)
        except validate.InvalidField:
            continue
        if (":" not in addr) == (family == "IPv4"):
            out.append(addr)
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


def _time_ns(raw: Any) -> int:
    """An RFC 3339 API time in ns, 0 (Go's zero time) when absent or unparsable."""
    try:
        return parse_rfc3339_ns(raw)
    except ValueError:
        return 0


def pod_trigger_time(pod: Mapping[str, Any]) -> int:
    """The pod change that (will) change the slices: its Ready condition's lastTransitionTime."""
    for c in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return _time_ns(c.get("lastTransitionTime"))
    return 0


class TriggerTimeTracker:
    """The EndpointSlice controller's TriggerTimeTracker (pkg/controller/util/endpoint).

    :meth:`compute` is called once per reconcile of a Service, with the Service
    and its selected pods, and returns the trigger time (ns since the epoch) to
    write on the slices this reconcile creates or updates; 0 means "no new
    trigger": the annotation is removed. The first reconcile of a Service
    returns its creationTimestamp; later ones return the earliest pod trigger
    time (Ready condition lastTransitionTime) or Service trigger time
    (creationTimestamp) that moved forward since the previous reconcile.
    """

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[dict[str, int], int]] = {}
        """(namespace, service) -> (pod name -> last pod trigger time, last service trigger time)"""

    def compute(self, svc: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> int:
        meta = svc["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        known = key in self._state
        last_pods, last_svc = self._state.get(key, ({}, 0))
        changed: list[int] = []
        pod_times: dict[str, int] = {}
        for pod in pods:
            t = pod_trigger_time(pod)
            if t:
                name = pod["metadata"]["name"]
                pod_times[name] = t
                if t > last_pods.get(name, 0):
                    changed.append(t)
        svc_time = _time_ns(meta.get("creationTimestamp"))
        if svc_time > last_svc:
            changed.append(svc_time)
        self._state[key] = (pod_times, svc_time)
        if not known:
            return svc_time  # a new Service: its creation
        return min(changed, default=0)

    def forget(self, namespace: str, name: str) -> None:
        """The Service is gone (DeleteService)."""
        self._state.pop((namespace, name), None)
