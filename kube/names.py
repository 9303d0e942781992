"""Label and annotation names: the Kubernetes vocabulary podnet reads and writes, in one place.

Kubernetes' well-known names are spelled as upstream declares them (k8s.io/api
``core/v1/well_known_labels.go`` and ``discovery/v1/well_known_labels.go``, the endpointslice
and topology-aware-routing annotations); podnet's own live under ``podnet.io/``. Every package
(cni, proxy, dns, policy, netlab) imports the names from here instead of re-declaring the text.
Constants only, no podnet imports.
"""

from __future__ import annotations

__all__ = [
    "SERVICE_NAME_LABEL", "MANAGED_BY_LABEL", "HEADLESS_LABEL", "ZONE_LABEL", "HOSTNAME_LABEL", "OS_LABEL",
    "NAMESPACE_NAME_LABEL", "TOPOLOGY_MODE_ANNOTATION", "TOPOLOGY_HINTS_ANNOTATION",
    "LAST_CHANGE_TRIGGER_TIME_ANNOTATION", "INITIAL_EVENTS_END_ANNOTATION",
    "PODNET_PREFIX", "NETNS_ANNOTATION", "BACKEND_ANNOTATION", "VTEP_MAC_ANNOTATION", "PUBLIC_IP_ANNOTATION",
]

# -- Kubernetes' well-known labels
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""discovery/v1 LabelServiceName: the Service an EndpointSlice belongs to."""
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
"""discovery/v1 LabelManagedBy: the controller that owns an EndpointSlice."""
HEADLESS_LABEL = "service.kubernetes.io/headless"
"""core/v1 IsHeadlessService: set on the EndpointSlices of a headless Service."""
ZONE_LABEL = "topology.kubernetes.io/zone"
"""core/v1 LabelTopologyZone: a Node's zone (topology-aware routing)."""
HOSTNAME_LABEL = "kubernetes.io/hostname"
"""core/v1 LabelHostname."""
OS_LABEL = "kubernetes.io/os"
"""core/v1 LabelOSStable."""
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""core/v1 LabelMetadataName: every Namespace carries its own name (NetworkPolicy namespace selectors)."""

# -- Kubernetes' annotations
TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
TOPOLOGY_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
"""The older spelling of the topology-aware routing opt-in."""
LAST_CHANGE_TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
"""On the bookmark that ends a watch's initial events (sendInitialEvents)."""

# -- podnet's own
PODNET_PREFIX = "podnet.io/"
NETNS_ANNOTATION = "podnet.io/netns"
"""A lab pod's network namespace name (the lab kubelet writes it, tables and checks read it)."""
BACKEND_ANNOTATION = "podnet.io/backend"
"""The overlay backend a node's CNI daemon runs (host-gw or vxlan)."""
VTEP_MAC_ANNOTATION = {4: "podnet.io/vtep-mac", 6: "podnet.io/vtep-mac-v6"}
"""Per IP family: the node's VXLAN device MAC."""
PUBLIC_IP_ANNOTATION = {4: "podnet.io/public-ip", 6: "podnet.io/public-ipv6"}
"""Per IP family: the node's underlay address peers send VXLAN to."""
