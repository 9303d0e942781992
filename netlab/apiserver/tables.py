"""Server-side printing: ``meta.k8s.io/v1`` Tables, as kubectl asks for them (``Accept: ...;as=Table``).

With Tables, ``kubectl get`` shows the same columns as against a real
cluster (a Service's TYPE, CLUSTER-IP and PORTS, a Pod's READY and STATUS,
...). Each row carries the object's metadata (PartialObjectMetadata), which
kubectl uses for the NAMESPACE column. Watch events are Tables of one row,
as kube-apiserver sends them to ``kubectl get -w``. Pure functions; ``now``
is a parameter (for AGE).
"""

from __future__ import annotations

import calendar
import time
from typing import Any, Callable

from podnet.kube.names import NETNS_ANNOTATION

__all__ = ["wants_table", "table", "age"]

Column = tuple[str, str, int]  # (name, type, priority)


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part and "v=v1;" in part + ";"
               for part in accept.split(","))


def age(created: str | None, now: float) -> str:
    """kubectl's short duration: 45s, 5m12s, 3h4m, 2d3h, 400d."""
    if not created:
        return "<unknown>"
    try:
        t = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    s = max(0, int(now - t))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h{m % 60}m" if h < 8 and m % 60 else f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _ports(svc: dict[str, Any]) -> str:
    out = []
    for p in (svc.get("spec") or {}).get("ports") or ():
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service_row(o: dict[str, Any]) -> list[Any]:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    ext = list(spec.get("externalIPs") or []) + [i.get("ip") or i.get("hostname") for i in
                                                  (status.get("loadBalancer") or {}).get("ingress") or ()]
    if spec.get("type") == "ExternalName":
        ext = [spec.get("externalName", "")]
    elif spec.get("type") == "LoadBalancer" and not ext:
        ext = ["<pending>"]
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", ",".join(ext) or "<none>", _ports(o),
            selector]


def _pod_row(o: dict[str, Any]) -> list[Any]:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    n = len(spec.get("containers") or ())
    ready = sum(1 for c in status.get("containerStatuses") or () if c.get("ready"))
    if not status.get("containerStatuses"):
        ready = n if any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in status.get("conditions") or ()) else 0
    return [f"{ready}/{n}", _pod_status(o), sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ()),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            ((o.get("metadata") or {}).get("annotations") or {}).get(NETNS_ANNOTATION) or "<none>"]


def _pod_status(o: dict[str, Any]) -> str:
    """kubectl's STATUS column: Terminating, else a container's waiting/terminated reason
    (CrashLoopBackOff, Error, Completed), else the pod's reason, else its phase."""
    if o["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = o.get("status") or {}
    shown = status.get("reason") or status.get("phase") or "Pending"
    for c in status.get("containerStatuses") or ():
        state = c.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if reason:
            shown = reason
    return shown


def _node_row(o: dict[str, Any]) -> list[Any]:
    status = o.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    labels = o["metadata"].get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    internal = next((a.get("address") for a in status.get("addresses") or () if a.get("type") == "InternalIP"), None)
    return ["Ready" if ready == "True" else "NotReady" if ready else "Unknown", roles,
            (status.get("nodeInfo") or {}).get("kubeletVersion", ""), internal or "<none>",
            (o.get("spec") or {}).get("podCIDR") or "<none>"]


def _slice_row(o: dict[str, Any]) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in o.get("ports") or ()) or "<unset>"
    addrs = [a for e in o.get("endpoints") or () for a in e.get("addresses") or ()]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o.get("addressType", ""), ports, shown or "<unset>"]


def _namespace_row(o: dict[str, Any]) -> list[Any]:
    return [(o.get("status") or {}).get("phase", "Active")]


def _count(o: dict[str, Any], field: str) -> int:
    v = o.get(field)
    return len(v) if isinstance(v, (dict, list)) else 0


def _config_map_row(o: dict[str, Any]) -> list[Any]:
    return [_count(o, "data") + _count(o, "binaryData")]


def _secret_row(o: dict[str, Any]) -> list[Any]:
    return [o.get("type", ""), _count(o, "data")]


def _status_int(o: dict[str, Any], field: str) -> int:
    v = (o.get("status") or {}).get(field, 0)
    return v if isinstance(v, int) else 0


def _daemon_set_row(o: dict[str, Any]) -> list[Any]:
    node_selector = ((((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector")) or {}
    shown = ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) if isinstance(node_selector, dict) else ""
    return [*(_status_int(o, f) for f in ("desiredNumberScheduled", "currentNumberScheduled", "numberReady",
                                          "updatedNumberScheduled", "numberAvailable")),
            shown or "<none>", *_template_wide(o)]


def _deployment_row(o: dict[str, Any]) -> list[Any]:
    spec = o.get("spec") or {}
    want = spec.get("replicas", 1) if isinstance(spec.get("replicas", 1), int) else 1
    return [f"{_status_int(o, 'readyReplicas')}/{want}", _status_int(o, "updatedReplicas"),
            _status_int(o, "availableReplicas"), *_template_wide(o)]


def _template_wide(o: dict[str, Any]) -> list[Any]:
    """The CONTAINERS, IMAGES and SELECTOR columns of ``-o wide`` for a workload."""
    spec = o.get("spec") or {}
    containers = [c for c in ((spec.get("template") or {}).get("spec") or {}).get("containers") or ()
                  if isinstance(c, dict)]
    selector = spec.get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    parts += [f"{e.get('key')} {str(e.get('operator', '')).lower()} ({','.join(e.get('values') or [])})"
              for e in selector.get("matchExpressions") or () if isinstance(e, dict)]
    return [",".join(str(c.get("name", "")) for c in containers), ",".join(str(c.get("image", "")) for c in containers),
            ",".join(parts) or "<none>"]


def _replica_set_row(o: dict[str, Any]) -> list[Any]:
    spec = o.get("spec") or {}
    want = spec.get("replicas", 1) if isinstance(spec.get("replicas", 1), int) else 1
    return [want, _status_int(o, "replicas"), _status_int(o, "readyReplicas"), *_template_wide(o)]


def _endpoints_row(o: dict[str, Any]) -> list[Any]:
    """kubectl's formatEndpoints: ``ip:port`` over subsets, ports, addresses; at most 3, then ``+ N more...``."""
    shown: list[str] = []
    total = 0
    for ss in o.get("subsets") or ():
        addrs = [a.get("ip", "") for a in ss.get("addresses") or ()]
        ports = [p.get("port") for p in ss.get("ports") or ()] or [None]
        for port in ports:
            for ip in addrs:
                total += 1
                if len(shown) < 3:
                    shown.append(ip if port is None else f"{ip}:{port}")
    if not shown:
        return ["<none>"]
    return [",".join(shown) + (f" + {total - 3} more..." if total > 3 else "")]


def _pdb_row(o: dict[str, Any]) -> list[Any]:
    spec = o.get("spec") or {}
    return [str(spec.get("minAvailable", "N/A")), str(spec.get("maxUnavailable", "N/A")),
            _status_int(o, "disruptionsAllowed")]


def _event_row(o: dict[str, Any]) -> list[Any]:
    involved = o.get("involvedObject") or {}
    obj = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [o.get("type", ""), o.get("reason", ""), obj, o.get("message", "")]


_NO_COLUMNS: tuple[list[Column], Callable[[dict[str, Any]], list[Any]]] = ([], lambda o: [])
"""Name and Age only: the kinds stored as given without columns of their own."""

COLUMNS: dict[str, tuple[list[Column], Callable[[dict[str, Any]], list[Any]]]] = {
    "services": ([("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
                  ("Port(s)", "string", 0), ("Selector", "string", 1)], _service_row),
    "pods": ([("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "integer", 0), ("IP", "string", 1),
              ("Node", "string", 1), ("Netns", "string", 1)], _pod_row),
    "nodes": ([("Status", "string", 0), ("Roles", "string", 0), ("Version", "string", 0),
               ("Internal-IP", "string", 1), ("Pod-CIDR", "string", 1)], _node_row),
    "endpointslices": ([("AddressType", "string", 0), ("Ports", "string", 0), ("Endpoints", "string", 0)],
                       _slice_row),
    "namespaces": ([("Status", "string", 0)], _namespace_row),
    "configmaps": ([("Data", "integer", 0)], _config_map_row),
    "events": ([("Type", "string", 0), ("Reason", "string", 0), ("Object", "string", 0), ("Message", "string", 0)],
               _event_row),
    "secrets": ([("Type", "string", 0), ("Data", "integer", 0)], _secret_row),
    "daemonsets": ([("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
                    ("Up-to-date", "integer", 0), ("Available", "integer", 0), ("Node Selector", "string", 0),
                    ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)], _daemon_set_row),
    "deployments": ([("Ready", "string", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
                     ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)], _deployment_row),
    "replicasets": ([("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
                     ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
                    _replica_set_row),
    "endpoints": ([("Endpoints", "string", 0)], _endpoints_row),
    "poddisruptionbudgets": ([("Min Available", "string", 0), ("Max Unavailable", "string", 0),
                              ("Allowed Disruptions", "integer", 0)], _pdb_row),
}


def table(plural: str, objects: list[dict[str, Any]], now: float, list_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Table of ``objects``: Name, the kind's columns (AGE after the priority-0 ones)."""
    cols, row = COLUMNS.get(plural, _NO_COLUMNS)
    main = [c for c in cols if c[2] == 0]
    wide = [c for c in cols if c[2] != 0]
    defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    defs += [{"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in main]
    defs.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    defs += [{"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in wide]
    rows = []
    for o in objects:
        cells = row(o)
        meta = o["metadata"]
        rows.append({
            "cells": [meta["name"], *cells[: len(main)], age(meta.get("creationTimestamp"), now), *cells[len(main):]],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
        })
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {},
            "columnDefinitions": defs, "rows": rows}
