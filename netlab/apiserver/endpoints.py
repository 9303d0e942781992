"""Desired v1 Endpoints of one Service, as a pure function of the Service and Pods.

Follows kube-controller-manager's endpoints controller (pkg/controller/endpoint/endpoints_controller.go,
syncService, and pkg/api/v1/endpoints RepackSubsets):

- only Services with a selector get managed Endpoints (others are the user's, left alone);
  ExternalName Services get none;
- a selected pod needs an IP (``status.podIP``/``podIPs`` of the Service's first IP family) and must
  not be Succeeded/Failed; a pod being deleted is left out unless ``publishNotReadyAddresses``;
- each address carries ``ip``, ``nodeName``, ``targetRef`` (Pod, namespace, name, uid) and
  ``hostname`` when the pod's ``hostname`` is set and its ``subdomain`` is the Service's name;
  a ready pod (or any pod with ``publishNotReadyAddresses``) goes to ``addresses``, others to
  ``notReadyAddresses``;
- every Service port becomes an EndpointPort (name, port resolved as ``podutil.FindPort``:
  a number, or the container port with that name and protocol; a pod without it gets no entry
  for that port), appProtocol kept; a headless Service without ports lists addresses with no ports;
- ``RepackSubsets``: addresses with the same port set share a subset; addresses sorted by IP
  then pod uid, ports by name, port and protocol, subsets by their ports;
- labels: the Service's labels, plus ``service.kubernetes.io/headless`` for a headless Service and
  ``endpointslice.kubernetes.io/skip-mirror: "true"`` (so EndpointSlice mirroring skips them).

The driver writes an Endpoints object only when its subsets or labels change (as upstream), with the
``endpoints.kubernetes.io/last-change-trigger-time`` annotation of the slices' trigger-time tracker.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Iterable, Mapping

from podnet.netlab.apiserver.endpointslices import HEADLESS_LABEL, selector_matches
from podnet.netlab.apiserver.workloads import pod_ready

__all__ = ["desired_endpoints", "SKIP_MIRROR_LABEL"]

SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"


@functools.lru_cache(maxsize=65536)
def _parsed(ip: str) -> tuple[int, int] | None:
    """(IP version, integer value), None when ``ip`` is not an address; cached (every reconcile
    of a Service reads every selected pod's IP again)."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return a.version, int(a)


def _ip(pod: Mapping[str, Any], family: str) -> str | None:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)] or [status.get("podIP")]
    for ip in ips:
        parsed = _parsed(ip) if isinstance(ip, str) else None
        if parsed is not None and (parsed[0] == 4) == (family == "IPv4"):
            return ip
    return None


def _find_port(pod: Mapping[str, Any], target: Any, protocol: str) -> int | None:
    """podutil.FindPort."""
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or ():
        for cp in (c.get("ports") or ()) if isinstance(c, dict) else ():
            if isinstance(cp, dict) and cp.get("name") == target and cp.get("protocol", "TCP") == protocol:
                port = cp.get("containerPort")
                return port if isinstance(port, int) else None
    return None


def _ip_key(ip: str) -> tuple[int, int]:
    return _parsed(ip) or (0, 0)


def desired_endpoints(svc: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The Endpoints object (without the trigger-time annotation) the controller keeps for ``svc``;
    None when it keeps none (no selector, or ExternalName)."""
    spec, meta = svc.get("spec") or {}, svc["metadata"]
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return None
    publish = bool(spec.get("publishNotReadyAddresses"))
    family = (spec.get("ipFamilies") or ["IPv4"])[0]
    headless = spec.get("clusterIP") == "None"
    ports = [p for p in spec.get("ports") or () if isinstance(p, dict)]
    groups: dict[tuple, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in pods:
        pmeta, pspec = pod["metadata"], pod.get("spec") or {}
        if not selector_matches(selector, pmeta.get("labels")):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if pmeta.get("deletionTimestamp") and not publish:
            continue
        ip = _ip(pod, family)
        if ip is None:
            continue
        addr: dict[str, Any] = {"ip": ip}
        if pspec.get("hostname") and pspec.get("subdomain") == meta["name"]:
            addr["hostname"] = pspec["hostname"]
        if pspec.get("nodeName"):
            addr["nodeName"] = pspec["nodeName"]
        addr["targetRef"] = {"kind": "Pod", "namespace": pmeta.get("namespace", ""), "name": pmeta["name"],
                             "uid": pmeta.get("uid", "")}
        ready = publish or pod_ready(pod)
        eports = []
        for sp in ports:
            proto = sp.get("protocol", "TCP")
            num = _find_port(pod, sp.get("targetPort", sp.get("port")), proto)
            if num is None:
                continue
            ep = {"name": sp.get("name", ""), "port": num, "protocol": proto}
            if not ep["name"]:
                del ep["name"]
            if sp.get("appProtocol"):
                ep["appProtocol"] = sp["appProtocol"]
            eports.append(ep)
        if not eports and not (headless and not ports):
            continue
        key = tuple(sorted((p.get("name", ""), p["port"], p["protocol"], p.get("appProtocol", "")) for p in eports))
        ready_list, not_ready = groups.setdefault(key, ([], []))
        (ready_list if ready else not_ready).append(addr)
    subsets = []
    for key in sorted(groups):
        ready_list, not_ready = groups[key]
        subset: dict[str, Any] = {}
        order = lambda a: (_ip_key(a["ip"]), a["targetRef"]["uid"])  # noqa: E731
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=order)
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=order)
        port_list = []
        for name, port, proto, app in key:
            p: dict[str, Any] = {"port": port, "protocol": proto}
            if name:
                p["name"] = name
            if app:
                p["appProtocol"] = app
            port_list.append(p)
        if port_list:
            subset["ports"] = port_list
        subsets.append(subset)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HEADLESS_LABEL}
    if headless:
        labels[HEADLESS_LABEL] = ""
    labels[SKIP_MIRROR_LABEL] = "true"
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                           "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"),
                                        "labels": labels}}
    if subsets:
        out["subsets"] = subsets
    return out
