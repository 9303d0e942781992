"""Which endpoints serve which traffic: kube-proxy's CategorizeEndpoints.

Pure. For one service port, on a node in zone ``zone``:

* ``cluster``: ready endpoints anywhere, narrowed to this zone's when
  topology-aware routing applies (below); when none is ready, the endpoints
  that are serving while terminating, anywhere (graceful rollouts keep
  working; topology is not considered for that fallback).
* ``local``: computed only when a Local policy applies: ready endpoints on
  this node, else this node's serving-and-terminating ones. Topology never
  narrows it: internalTrafficPolicy/externalTrafficPolicy Local take
  precedence over zone hints for the traffic they govern.
* ``has_any``: some endpoint can serve at all. It decides REJECT (no
  endpoints: the client is told at once) versus DROP (endpoints exist, but
  none usable under the Local policy).

Topology-aware routing follows kube-proxy v1.27-v1.30's ``canUseTopology``
in pkg/proxy/topology.go (read at kubernetes/kubernetes 803d40a5; the
TopologyAwareHints gate on). It applies only when all of these hold:

1. the Service opted in (:func:`podnet.proxy.model.wants_topology`: the
   topology-aware-hints annotation, else topology-mode, set to anything but
   '', 'disabled', 'Disabled'; or ``spec.trafficDistribution: PreferClose``,
   the v1.30+ field);
2. this node has a non-empty ``topology.kubernetes.io/zone`` label;
3. every *ready* endpoint has at least one zone hint (not-ready ones are
   not looked at);
4. at least one ready endpoint is hinted for this node's zone.

Otherwise every ready endpoint is used, as without hints. Differences from
newer kube-proxy, on purpose: from v1.31 (ServiceTrafficDistribution beta)
kube-proxy honours hints whatever the Service says, and v1.33 adds node
hints (PreferSameNode); podnet requires the opt-in above and reads only
zone hints (a PreferSameNode Service gets same-zone routing).
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.proxy.model import EndpointInfo, ServicePortInfo


@dataclass(frozen=True, slots=True)
class Categorized:
    cluster: tuple[EndpointInfo, ...]
    local: tuple[EndpointInfo, ...]
    has_any: bool
    internal: tuple[EndpointInfo, ...]
    """What ClusterIP traffic may reach: ``local`` under iTP Local, else ``cluster``."""
    external: tuple[EndpointInfo, ...]
    """What NodePort/external traffic may reach: ``local`` under eTP Local, else ``cluster``."""
    topology: bool = False
    """``cluster`` was narrowed to this node's zone."""


def _usable(eps: tuple[EndpointInfo, ...]) -> tuple[EndpointInfo, ...]:
    ready = tuple(e for e in eps if e.ready)
    return ready or tuple(e for e in eps if e.usable_fallback)


def use_topology(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], zone: str) -> bool:
    """kube-proxy's canUseTopology: opted in, zoned node, all ready endpoints hinted, one for us."""
    if not sp.topology or not zone:
        return False
    for_zone = False
    for e in eps:
        if not e.ready:
            continue
        if not e.zones:
            return False
        for_zone = for_zone or zone in e.zones
    return for_zone


def categorize(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], zone: str = "") -> Categorized:
    topology = use_topology(sp, eps, zone)
    if topology:
        # Non-empty: use_topology found a ready endpoint hinted for this zone.
        cluster = tuple(e for e in eps if e.ready and zone in e.zones)
    else:
        cluster = _usable(eps)
    local = _usable(tuple(e for e in eps if e.local)) if sp.uses_local else ()
    has_any = bool(cluster)
    return Categorized(
        cluster=cluster,
        local=local,
        has_any=has_any,
        internal=local if sp.itp_local else cluster,
        external=local if sp.etp_local else cluster,
        topology=topology,
    )
