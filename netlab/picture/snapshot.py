"""Collect a running lab's topology (API objects + node routes) into :class:`podnet.netlab.picture.svg.Topology`."""

from __future__ import annotations

import ipaddress

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.host.netns import run
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.topology import LabPlan
from podnet.netlab.picture.svg import HostView, NodeView, PodView, ServiceView, Topology

__all__ = ["collect", "pod_routes"]


def pod_routes(route_text: str, cluster_cidr: str) -> tuple[tuple[str, str], ...]:
    """(dst, via) for every ``ip route`` line whose destination lies in the cluster CIDR and has a gateway."""
    cluster = ipaddress.ip_network(cluster_cidr)
    out = []
    for line in route_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "via" in parts:
            try:
                dst = ipaddress.ip_network(parts[0])
            except ValueError:
                continue
            if dst.version == cluster.version and dst.subnet_of(cluster):
                out.append((parts[0], parts[parts.index("via") + 1]))
    return tuple(sorted(out))


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


async def collect(plan: LabPlan, st: LabState, client: ApiClient) -> Topology:
    pods, _ = await client.list(r.PODS)
    services, _ = await client.list(r.SERVICES)
    slices, _ = await client.list(r.ENDPOINT_SLICES)
    ready_by_svc: dict[str, int] = {}
    for s in slices:
        key = f"{s['metadata'].get('namespace')}/{(s['metadata'].get('labels') or {}).get('kubernetes.io/service-name')}"
        ready_by_svc[key] = ready_by_svc.get(key, 0) + sum(
            len(e.get("addresses") or ()) for e in s.get("endpoints") or () if (e.get("conditions") or {}).get("ready", True))
    nodes = []
    for n in plan.nodes:
        mine = sorted((p for p in pods if (p.get("spec") or {}).get("nodeName") == n.name),
                      key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
        routes = pod_routes(run(["ip", "-n", n.netns, "route", "show"], check=False), plan.spec.cluster_cidr)
        nodes.append(NodeView(
            n.name, n.ip, st.pod_cidrs.get(n.name, "?"),
            tuple(PodView(p["metadata"]["name"], (p.get("status") or {}).get("podIP") or "", _ready(p),
                          p["metadata"].get("namespace", "default")) for p in mine),
            routes,
        ))
    svcs = []
    for s in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        spec = s.get("spec") or {}
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}" + (f"→:{p['nodePort']}" if p.get("nodePort") else "")
            for p in spec.get("ports") or ())
        key = f"{s['metadata'].get('namespace')}/{s['metadata']['name']}"
        svcs.append(ServiceView(key, spec.get("type", "ClusterIP"), spec.get("clusterIP", ""), ports, ready_by_svc.get(key, 0)))
    hosts = (
        HostView(plan.underlay_netns, plan.apiserver_ip, f"API server :{plan.apiserver_port}"),
        HostView(plan.outside_netns, plan.outside_ip, "outside client"),
        HostView(plan.upstream_netns, plan.upstream_ip, "upstream DNS"),
    )
    notes = tuple(f"{k}: {v}" for k, v in sorted(st.parts.items()))
    return Topology(plan.spec.name, plan.spec.underlay, plan.spec.cluster_cidr, plan.spec.service_cidr,
                    tuple(nodes), tuple(svcs), hosts, notes)
