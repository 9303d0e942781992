"""A picture of a lab's topology as a standalone SVG document (pure; no dependencies).

:class:`Topology` is plain data (collected from a running lab by
:mod:`podnet.netlab.picture.snapshot`); :func:`render` lays it out:

- top: the Services (name, type, ClusterIP, ports/NodePorts, ready endpoints) and, under
  each, the pods that back it (● ready, ○ not ready);
- middle: one box per node with its underlay IP and subnet, pod CIDR, pods (name, IP,
  ready or not, and the pod's network namespace), the backend it uses to each other node
  (host-gw or vxlan, as its CNI daemon reports) and its routes to other nodes' pod CIDRs;
- bottom: the underlay (its layout) with the router, API server, outside and upstream hosts.

Every text is XML-escaped; the output is deterministic for equal input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape

__all__ = ["Topology", "NodeView", "PodView", "ServiceView", "HostView", "render"]

NODE_W, GAP, MARGIN, LINE = 320, 24, 24, 16


@dataclass(frozen=True)
class PodView:
    name: str
    ip: str
    ready: bool
    namespace: str = "default"
    netns: str = ""


@dataclass(frozen=True)
class NodeView:
    name: str
    ip: str
    pod_cidr: str
    pods: tuple[PodView, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()   # (destination CIDR, via)
    peers: tuple[tuple[str, str], ...] = ()    # (other node, "host-gw" | "vxlan" | "?")
    subnet: str = ""                           # the node's underlay subnet


@dataclass(frozen=True)
class ServiceView:
    name: str          # namespace/name
    type: str
    cluster_ip: str
    ports: str
    endpoints: int
    backends: tuple[tuple[str, bool], ...] = ()   # (namespace/pod backing it, ready)


@dataclass(frozen=True)
class HostView:
    name: str
    ip: str
    role: str


@dataclass(frozen=True)
class Topology:
    lab: str
    underlay: str
    cluster_cidr: str
    service_cidr: str
    nodes: tuple[NodeView, ...] = ()
    services: tuple[ServiceView, ...] = ()
    hosts: tuple[HostView, ...] = ()
    notes: tuple[str, ...] = field(default=())
    layout: str = "flat"


def _text(x: float, y: float, s: str, cls: str = "", anchor: str = "start") -> str:
    c = f' class="{cls}"' if cls else ""
    a = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{x:.0f}" y="{y:.0f}"{c}{a}>{escape(s)}</text>'


def _node_height(n: NodeView) -> int:
    return (4 * LINE + 12 + LINE * (2 * len(n.pods) + 1) + LINE * (len(n.peers) + 1) + 6
            + LINE * (len(n.routes) + 1) + 12)


def _backed_by(s: ServiceView) -> str:
    if not s.backends:
        return "no pods"
    return "pods: " + ", ".join(f"{'●' if ok else '○'} {name.removeprefix('default/')}" for name, ok in s.backends)


def render(t: Topology) -> str:
    ncount = max(1, len(t.nodes))
    width = max(960, MARGIN * 2 + ncount * NODE_W + (ncount - 1) * GAP)
    out: list[str] = []
    y = MARGIN + 8
    out.append(_text(MARGIN, y, f"podnet lab {t.lab!r}", "title"))
    y += LINE + 4
    out.append(_text(MARGIN, y, f"cluster CIDR {t.cluster_cidr} · service CIDR {t.service_cidr} · underlay {t.underlay}", "sub"))
    y += LINE + 10
    # services
    out.append(_text(MARGIN, y, f"Services ({len(t.services)})", "h"))
    y += 6
    for s in t.services:
        y += LINE
        out.append(_text(MARGIN, y, f"{s.name}  {s.type}  {s.cluster_ip or '-'}  {s.ports}  → {s.endpoints} ready",
                         "svc"))
        y += LINE
        out.append(_text(MARGIN + 24, y, "↳ " + _backed_by(s), "small"))
    y += LINE + 14
    # nodes
    top = y
    node_h = max((_node_height(n) for n in t.nodes), default=60)
    centers = []
    for i, n in enumerate(t.nodes):
        x = MARGIN + i * (NODE_W + GAP)
        centers.append(x + NODE_W / 2)
        out.append(f'<rect x="{x}" y="{top}" width="{NODE_W}" height="{node_h}" rx="8" class="node"/>')
        ly = top + LINE + 2
        out.append(_text(x + 10, ly, n.name, "h"))
        ly += LINE
        out.append(_text(x + 10, ly, f"eth0 {n.ip}" + (f" · subnet {n.subnet}" if n.subnet else ""), "sub"))
        ly += LINE
        out.append(_text(x + 10, ly, f"pod CIDR {n.pod_cidr}", "sub"))
        ly += LINE + 6
        out.append(_text(x + 10, ly, f"pods ({len(n.pods)})", "small"))
        for p in n.pods:
            ly += LINE
            mark = "●" if p.ready else "○"
            label = p.name if p.namespace == "default" else f"{p.namespace}/{p.name}"
            out.append(_text(x + 14, ly, f"{mark} {label}", "pod" if p.ready else "pod notready"))
            out.append(_text(x + NODE_W - 10, ly, p.ip or "-", "ip", "end"))
            ly += LINE
            out.append(_text(x + 28, ly, f"netns {p.netns or '?'}", "small"))
        ly += LINE + 6
        out.append(_text(x + 10, ly, f"to other nodes ({len(n.peers)})", "small"))
        for peer, backend in n.peers:
            ly += LINE
            out.append(_text(x + 14, ly, f"→ {peer}: {backend}", "backend " + backend.replace("?", "unknown")))
        ly += LINE + 6
        out.append(_text(x + 10, ly, f"routes ({len(n.routes)})", "small"))
        for dst, via in n.routes:
            ly += LINE
            out.append(_text(x + 14, ly, f"{dst} via {via}", "route"))
    y = top + node_h + 40
    # underlay
    out.append(f'<line x1="{MARGIN}" y1="{y}" x2="{width - MARGIN}" y2="{y}" class="wire"/>')
    kind = "one bridge" if t.layout == "flat" else f"{t.layout}: subnets joined by a router that knows no pod CIDR"
    out.append(_text(width - MARGIN, y - 6, f"underlay {t.underlay} ({kind})", "small", "end"))
    for cx in centers:
        out.append(f'<line x1="{cx:.0f}" y1="{top + node_h}" x2="{cx:.0f}" y2="{y}" class="wire"/>')
    hw = 250
    for i, h in enumerate(t.hosts):
        hx = MARGIN + i * (hw + GAP)
        out.append(f'<line x1="{hx + hw / 2:.0f}" y1="{y}" x2="{hx + hw / 2:.0f}" y2="{y + 24}" class="wire"/>')
        out.append(f'<rect x="{hx}" y="{y + 24}" width="{hw}" height="{2 * LINE + 12}" rx="6" class="host"/>')
        out.append(_text(hx + 8, y + 24 + LINE, h.name, "h"))
        out.append(_text(hx + 8, y + 24 + 2 * LINE + 2, f"{h.ip} · {h.role}", "small"))
    y += 24 + 2 * LINE + 12 + 24
    for note in t.notes:
        out.append(_text(MARGIN, y, note, "small"))
        y += LINE
    height = y + MARGIN
    style = (
        "text{font-family:DejaVu Sans Mono,monospace;font-size:12px;fill:#222}"
        ".title{font-size:18px;font-weight:bold}.h{font-weight:bold}.sub{fill:#555}"
        ".small{font-size:11px;fill:#555}.svc{fill:#14532d}.ip{fill:#1e3a8a}.route{fill:#7c2d12;font-size:11px}"
        ".notready{fill:#999}.host-gw{fill:#166534}.vxlan{fill:#6b21a8}.unknown{fill:#999}.node{fill:#f1f5f9;stroke:#334155;stroke-width:1.5}"
        ".host{fill:#fefce8;stroke:#a16207}.wire{stroke:#334155;stroke-width:2}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">\n'
        f"<style>{style}</style>\n"
        f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n"
    )
