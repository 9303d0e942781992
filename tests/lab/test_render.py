"""SVG topology picture, the check table, route extraction: pure rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from podnet.netlab.check.checkkit import Row, render_table
from podnet.netlab.picture.snapshot import pod_routes
from podnet.netlab.picture.svg import HostView, NodeView, PodView, ServiceView, Topology, render

SVG_NS = "{http://www.w3.org/2000/svg}"


def topo(nodes: int = 2, pods: int = 3) -> Topology:
    return Topology(
        lab="demo", underlay="192.168.77.0/24", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12",
        nodes=tuple(
            NodeView(f"demo-n{i}", f"192.168.77.{10 + i}", f"10.244.{i}.0/24",
                     tuple(PodView(f"echo-n{i}-{k}", f"10.244.{i}.{k + 1}", k != 2) for k in range(1, pods + 1)),
                     ((f"10.244.{3 - i}.0/24", f"192.168.77.{13 - i}"),))
            for i in range(1, nodes + 1)
        ),
        services=(ServiceView("default/web", "NodePort", "10.96.0.20", "80/TCP→:30080", 2),
                  ServiceView("kube-system/kube-dns", "ClusterIP", "10.96.0.10", "53/UDP,53/TCP", 1)),
        hosts=(HostView("pnl-demo-ul", "192.168.77.1", "API server :6443"),),
        notes=("proxy: podnet-proxy",),
    )


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}text")]


def test_svg_is_well_formed_and_shows_everything():
    svg = render(topo())
    assert svg.startswith("<svg ")
    all_text = "\n".join(texts(svg))
    for needle in ["demo-n1", "demo-n2", "10.244.1.0/24", "echo-n2-3", "10.244.2.4", "default/web",
                   "10.96.0.10", "→:30080", "10.244.2.0/24 via 192.168.77.12", "API server :6443",
                   "proxy: podnet-proxy"]:
        assert needle in all_text, needle


def test_svg_escapes_text():
    t = Topology("x<&>", "u", "c", "s", notes=('a "quote" & <tag>',))
    svg = render(t)
    ET.fromstring(svg)  # parses: everything escaped
    assert "x<&>" in "\n".join(texts(svg))


@pytest.mark.parametrize("nodes,pods", [(1, 0), (2, 3), (4, 25)], ids=["1x0", "2x3", "4x25"])
def test_svg_grows_with_topology(nodes, pods):
    svg = render(topo(nodes, pods))
    root = ET.fromstring(svg)
    w, h = int(root.get("width")), int(root.get("height"))
    assert w >= 960 and h > 200
    rects = [r for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "node"]
    assert len(rects) == nodes
    # node boxes never overlap
    xs = sorted(int(r.get("x")) for r in rects)
    assert all(b - a >= int(rects[0].get("width")) for a, b in zip(xs, xs[1:]))
    assert render(topo(nodes, pods)) == svg  # deterministic


def test_check_table():
    rows = [Row("pod->pod", "answered", "answered by b", True, 0.12),
            Row("a very long check name that will not fit in the column", "x" * 100, "y" * 200, False, 3.4),
            Row("across nodes", "answered", "skipped: needs >= 2 nodes", None, 0.0)]
    out = render_table(rows)
    lines = out.splitlines()
    assert lines[0].split() == ["check", "expected", "observed", "result", "time"]
    assert "pass" in lines[2] and "0.12s" in lines[2]
    assert "FAIL" in lines[3] and "3.40s" in lines[3] and "…" in lines[3]
    assert "skip" in lines[4]
    assert len({len(line) for line in lines[:5]}) == 1  # fixed width
    assert lines[-1] == "1/2 checks passed, 1 skipped"


ROUTES = """default via 192.168.77.1 dev eth0
10.244.1.0/24 via 192.168.77.12 dev eth0 proto static
10.244.0.0/24 dev podnet0 proto kernel scope link src 10.244.0.1
10.99.0.0/24 via 192.168.77.9 dev eth0
192.168.77.0/24 dev eth0 proto kernel scope link src 192.168.77.11
10.244.2.0/24 via 192.168.77.13 dev eth0
"""


def test_pod_routes_keeps_gateway_routes_inside_cluster_cidr():
    assert pod_routes(ROUTES, "10.244.0.0/16") == (
        ("10.244.1.0/24", "192.168.77.12"), ("10.244.2.0/24", "192.168.77.13"))


def test_check_table_wide_does_not_clip():
    rows = [Row("c", "e", "y" * 200, True, 0.1)]
    out = render_table(rows, None)
    assert "y" * 200 in out and "…" not in out


def test_svg_shows_backends_per_pair_pods_per_service_and_pod_netns():
    t = Topology(
        lab="mx", underlay="192.168.77.0/24", cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12",
        nodes=(
            NodeView("mx-n1", "192.168.77.75", "10.244.0.0/24",
                     (PodView("web-1", "10.244.0.5", True, netns="pnl-mx-n1-p1"),),
                     peers=(("mx-n2", "host-gw"), ("mx-n3", "vxlan")), subnet="192.168.77.64/26"),
            NodeView("mx-n3", "192.168.77.139", "10.244.2.0/24",
                     (PodView("web-2", "10.244.2.5", False, netns="pnl-mx-n3-p1"),),
                     peers=(("mx-n1", "vxlan"), ("mx-n2", "?")), subnet="192.168.77.128/26"),
        ),
        services=(ServiceView("default/web", "ClusterIP", "10.96.0.20", "80/TCP", 1,
                              (("default/web-1", True), ("default/web-2", False))),
                  ServiceView("default/empty", "ClusterIP", "10.96.0.21", "80/TCP", 0)),
        hosts=(HostView("pnl-mx-rt", ".1 of 3 subnets", "router, no pod CIDRs"),),
        layout="mixed",
    )
    svg = render(t)
    all_text = "\n".join(texts(svg))
    for needle in ["→ mx-n2: host-gw", "→ mx-n3: vxlan", "→ mx-n2: ?", "netns pnl-mx-n1-p1", "netns pnl-mx-n3-p1",
                   "↳ pods: ● web-1, ○ web-2", "↳ no pods", "subnet 192.168.77.64/26",
                   "mixed: subnets joined by a router that knows no pod CIDR", "router, no pod CIDRs"]:
        assert needle in all_text, needle
    root = ET.fromstring(svg)
    classes = {e.get("class") for e in root.iter(f"{SVG_NS}text")}
    assert {"backend host-gw", "backend vxlan", "backend unknown"} <= classes


def test_draw_without_a_running_lab_is_one_line(capsys):
    import argparse

    from podnet.netlab.commands import lab_draw
    ap = argparse.ArgumentParser()
    lab_draw.add_arguments(ap)
    assert lab_draw.run(ap.parse_args(["--lab", "nosuchlab9"])) == 1
    err = capsys.readouterr().err
    assert err == "podnet lab draw: no running lab 'nosuchlab9' (no /run/podnet/nosuchlab9/lab.json); start one with " \
                  "podnet lab up\n"
