"""Collect a running lab's topology into :class:`podnet.netlab.picture.svg.Topology`.

Sources: API objects (pods, Services, EndpointSlices with their ``targetRef`` pods), each
node's routes (``ip route`` in its netns), the backend each node's CNI daemon reports using
towards every other node (its last ``backend <mode>: <node> <CIDR> <backend>, ...`` log line),
and each pod's network namespace (the kubelet's ``podnet.io/netns`` annotation, else its
record under ``<run-dir>/pods``).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.host.netns import run
from podnet.netlab.lab import backends
from podnet.kube.names import NETNS_ANNOTATION
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.topology import LabPlan
from podnet.netlab.picture.svg import HostView, NodeView, PodView, ServiceView, Topology

__all__ = ["collect", "pod_routes", "NETNS_ANNOTATION"]



def _netns_records(run_dir: Path) -> dict[str, str]:
    """``namespace/name`` -> netns from the lab kubelets' pod records."""
    out = {}
    for f in (run_dir / "pods").glob("*/*.json") if (run_dir / "pods").is_dir() else []:
        try:
            d = json.loads(f.read_text())
            out[d["pod"]] = d["netns"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return out


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
    backing: dict[str, dict[str, bool]] = {}
    for s in slices:
        key = f"{s['metadata'].get('namespace')}/{(s['metadata'].get('labels') or {}).get('kubernetes.io/service-name')}"
        ready_by_svc[key] = ready_by_svc.get(key, 0) + sum(
            len(e.get("addresses") or ()) for e in s.get("endpoints") or () if (e.get("conditions") or {}).get("ready", True))
        for e in s.get("endpoints") or ():
            ref = e.get("targetRef") or {}
            if ref.get("kind") == "Pod" and ref.get("name"):
                pod = f"{ref.get('namespace') or s['metadata'].get('namespace')}/{ref['name']}"
                backing.setdefault(key, {})[pod] = bool((e.get("conditions") or {}).get("ready", True))
    records = _netns_records(plan.run_dir)
    nodes = []
    for n in plan.nodes:
        mine = sorted((p for p in pods if (p.get("spec") or {}).get("nodeName") == n.name),
                      key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
        routes = pod_routes(run(["ip", "-n", n.netns, "route", "show"], check=False), plan.spec.cluster_cidr)
        reported = backends.reported_by(plan, n)
        peers = tuple((o.name, reported.get(o.name, "?")) for o in plan.nodes if o.name != n.name)
        nodes.append(NodeView(
            n.name, n.ip, st.pod_cidrs.get(n.name, "?"),
            tuple(PodView(p["metadata"]["name"], (p.get("status") or {}).get("podIP") or "", _ready(p),
                          p["metadata"].get("namespace", "default"),
                          ((p["metadata"].get("annotations") or {}).get(NETNS_ANNOTATION)
                           or records.get(f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}", "")))
                  for p in mine),
            routes, peers, plan.segments[n.segment].cidr,
        ))
    svcs = []
    for s in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        spec = s.get("spec") or {}
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}" + (f"→:{p['nodePort']}" if p.get("nodePort") else "")
            for p in spec.get("ports") or ())
        key = f"{s['metadata'].get('namespace')}/{s['metadata']['name']}"
        svcs.append(ServiceView(key, spec.get("type", "ClusterIP"), spec.get("clusterIP", ""), ports, ready_by_svc.get(key, 0),
                                tuple(sorted(backing.get(key, {}).items()))))
    hosts = ((HostView(plan.router_netns, f".1 of {len(plan.segments)} subnets", "router, no pod CIDRs"),)
             if plan.router_netns else ()) + (
        HostView(plan.underlay_netns, plan.apiserver_ip, f"API server :{plan.apiserver_port}"),
        HostView(plan.outside_netns, plan.outside_ip, "outside client"),
        HostView(plan.upstream_netns, plan.upstream_ip, "upstream DNS"),
    )
    notes = tuple(f"{k}: {v}" for k, v in sorted(st.parts.items()))
    return Topology(plan.spec.name, plan.spec.underlay, plan.spec.cluster_cidr, plan.spec.service_cidr,
                    tuple(nodes), tuple(svcs), hosts, notes, plan.spec.layout)
