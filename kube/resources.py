"""The API resources podnet watches, and the one place raw objects are converted.

:func:`convert` is the boundary: it turns one raw JSON object into its frozen
type, or logs one line, counts the rejection in
``podnet_kube_rejected_objects_total{resource,reason}`` and returns None. It
never raises for bad data, so a hostile object cannot stop a watch stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from prometheus_client import Counter

from podnet.kube import objects as o

__all__ = ["Resource", "SERVICES", "ENDPOINT_SLICES", "NODES", "NAMESPACES", "PODS", "BY_PLURAL", "convert", "REJECTED"]

log = logging.getLogger("podnet.kube")

REJECTED = Counter(
    "podnet_kube_rejected_objects_total",
    "API objects rejected at the boundary because they failed validation.",
    ["resource"],
)


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource: where it lives and how to convert its objects."""

    api_path: str
    """'/api/v1' for the core group, '/apis/<group>/<version>' otherwise."""
    plural: str
    kind: str
    namespaced: bool
    parse: Callable[[Mapping[str, Any]], Any]

    @property
    def api_version(self) -> str:
        return self.api_path.removeprefix("/api/").removeprefix("/apis/")

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection or object URL path, e.g. /api/v1/namespaces/ns/services/x."""
        p = self.api_path
        if namespace and self.namespaced:
            p += f"/namespaces/{namespace}"
        p += f"/{self.plural}"
        if name:
            p += f"/{name}"
        return p


SERVICES = Resource("/api/v1", "services", "Service", True, o.parse_service)
ENDPOINT_SLICES = Resource("/apis/discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True, o.parse_endpoint_slice)
NODES = Resource("/api/v1", "nodes", "Node", False, o.parse_node)
NAMESPACES = Resource("/api/v1", "namespaces", "Namespace", False, o.parse_namespace)
PODS = Resource("/api/v1", "pods", "Pod", True, o.parse_pod)
BY_PLURAL = {r.plural: r for r in (SERVICES, ENDPOINT_SLICES, NODES, NAMESPACES, PODS)}


def convert(resource: Resource, raw: Mapping[str, Any]) -> Any | None:
    """The frozen value for ``raw``, or None (logged and counted) when it is invalid."""
    try:
        return resource.parse(raw)
    except o.InvalidObject as e:
        log.warning("rejected %s", e)
    except Exception as e:  # noqa: BLE001 - a parser bug must not stop the stream either
        log.warning("rejected %s: unexpected %s: %s", resource.kind, type(e).__name__, e)
    REJECTED.labels(resource.plural).inc()
    return None
