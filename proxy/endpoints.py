"""Which endpoints serve which traffic: kube-proxy's CategorizeEndpoints.

Pure. For one service port:

* ``cluster``: ready endpoints anywhere; when none is ready, the endpoints
  that are serving while terminating (graceful rollouts keep working).
* ``local``: computed only when a Local policy applies: ready endpoints on
  this node, else this node's serving-and-terminating ones.
* ``has_any``: some endpoint can serve at all. It decides REJECT (no
  endpoints: the client is told at once) versus DROP (endpoints exist, but
  none usable under the Local policy).

Topology hints are not modelled (podnet labs have no zones).
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


def _usable(eps: tuple[EndpointInfo, ...]) -> tuple[EndpointInfo, ...]:
    ready = tuple(e for e in eps if e.ready)
    return ready or tuple(e for e in eps if e.usable_fallback)


def categorize(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...]) -> Categorized:
    cluster = _usable(eps)
    local = _usable(tuple(e for e in eps if e.local)) if sp.uses_local else ()
    has_any = bool(cluster)
    return Categorized(
        cluster=cluster,
        local=local,
        has_any=has_any,
        internal=local if sp.itp_local else cluster,
        external=local if sp.etp_local else cluster,
    )
