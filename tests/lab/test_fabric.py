"""The lab's wires in real network namespaces: built as planned, root namespace untouched, swept by down."""

from __future__ import annotations

import os
import secrets

import pytest

from podnet.host.netns import Netns, list_netns, run
from podnet.netlab.lab import fabric
from podnet.netlab.lab.teardown import down, leftovers
from podnet.netlab.lab.topology import LabSpec, plan

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def root_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in run(["ip", "-o", "link"]).splitlines()}


@pytest.fixture
def lab(tmp_path):
    name = "f" + secrets.token_hex(3)
    p = plan(LabSpec(name=name, nodes=2), run_root=tmp_path / "run", data_root=tmp_path / "data")
    try:
        yield p
    finally:
        down(name, run_root=tmp_path / "run", data_root=tmp_path / "data")


def test_build_matches_plan_and_leaves_root_alone(lab, tmp_path):
    before = root_links()
    fabric.build(lab)
    fabric.add_pod_cidr_routes(lab, {lab.nodes[0].name: "10.244.0.0/24", lab.nodes[1].name: "10.244.1.0/24"})
    assert root_links() == before  # nothing appeared in the root namespace
    made = {n for n in list_netns() if n.startswith(lab.prefix)}
    assert made == {lab.underlay_netns, lab.upstream_netns, lab.outside_netns} | {n.netns for n in lab.nodes}
    ul = Netns(lab.underlay_netns)
    ports = run(["ip", "-n", ul.name, "-o", "link", "show", "master", lab.bridge])
    for n in lab.nodes:
        assert f" {n.underlay_if}@" in ports
        node = Netns(n.netns)
        assert f"inet {n.ip}/24" in node.ip("-o", "addr", "show", "eth0")
        assert node.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
        assert node.run("sysctl", "-n", "net.ipv4.icmp_ratelimit").strip() == "0"
        assert f"default via {lab.apiserver_ip}" in node.ip("route")
    assert ul.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"  # outside cannot reach pods through it
    assert "10.244.1.0/24 via 192.168.77.12" in ul.ip("route")
    assert f"{lab.external_pool} via {lab.nodes[0].ip}" in Netns(lab.outside_netns).ip("route")
    # the segment works: a connection attempt from node 1 resolves node 2's address over the bridge
    fabric.wait_reachable(lab.nodes[0].netns, lab.nodes[1].ip, 1, 0.5)  # nothing listens there; only the ARP matters
    neigh = Netns(lab.nodes[0].netns).ip("neigh", "show", lab.nodes[1].ip)
    assert "lladdr" in neigh, neigh
    down(lab.spec.name, run_root=tmp_path / "run", data_root=tmp_path / "data")
    assert leftovers(lab.spec.name, run_root=tmp_path / "run", data_root=tmp_path / "data") == []
