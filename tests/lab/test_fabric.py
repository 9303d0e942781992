"""The lab's wires in real network namespaces: built as planned, root namespace untouched, swept by down.

Flat, routed and mixed layouts; every sysctl the lab relies on is written in every namespace it
creates (checked on the commands ``build`` runs, and read back from the kernel)."""

from __future__ import annotations

import os
import secrets
import subprocess

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


@pytest.fixture
def make_lab(tmp_path):
    """Builds labs of any layout; every one is removed at the end, also after a failure."""
    names = []

    def make(**kw):
        name = "f" + secrets.token_hex(3)
        names.append(name)
        return plan(LabSpec(name=name, **kw), run_root=tmp_path / "run", data_root=tmp_path / "data")
    yield make
    for name in names:
        down(name, run_root=tmp_path / "run", data_root=tmp_path / "data")


def tcp_outcome(netns: str, ip: str, port: int) -> str:
    """"refused" (the peer's kernel answered: the path works both ways), "timeout" or "ok"."""
    code = (
        "import socket\n"
        "try:\n"
        f"  socket.create_connection(('{ip}', {port}), timeout=1.0).close(); print('ok')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError as e: print('timeout' if isinstance(e, TimeoutError) else type(e).__name__)\n"
    )
    return Netns(netns).run("python3", "-S", "-c", code, timeout=10).strip()


def sysctl_values(netns: str, keys) -> dict[str, str]:
    out = Netns(netns).run("sysctl", "-n", *keys)
    return dict(zip(keys, out.split()))


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


LAYOUTS = [pytest.param("flat", 2, id="flat"), pytest.param("routed", 2, id="routed"),
           pytest.param("mixed", 3, id="mixed")]


@pytest.mark.parametrize("layout,nodes", LAYOUTS)
def test_sysctl_plan_covers_every_namespace_and_key(layout, nodes):
    p = plan(LabSpec(name="s", nodes=nodes, layout=layout))
    want = fabric.sysctls(p)
    assert set(want) == set(fabric.namespaces(p))
    for ns, values in want.items():
        assert set(values) == set(fabric.RELIED_ON), ns
    forwarding = {ns for ns, v in want.items() if v["net.ipv4.ip_forward"] == "1"}
    assert forwarding == {n.netns for n in p.nodes} | ({p.router_netns} if p.router_netns else set())


@pytest.mark.parametrize("layout,nodes", LAYOUTS)
def test_build_writes_every_sysctl_before_any_link(layout, nodes, monkeypatch):
    """Whatever the root namespace holds, each namespace gets every value written right after
    ``ip netns add`` and before a link is moved in: recorded on the commands build runs."""
    p = plan(LabSpec(name="s", nodes=nodes, layout=layout))
    calls: list[list[str]] = []

    def record(args, **kw):
        calls.append(list(args))
        return ""
    monkeypatch.setattr(fabric, "run", record)
    monkeypatch.setattr("podnet.host.netns.run", record)
    fabric.build(p)
    want = fabric.sysctls(p)
    for ns, values in want.items():
        added = calls.index(["ip", "netns", "add", ns])
        written = [c for c in calls if c[:4] == ["ip", "netns", "exec", ns] and "sysctl" in c]
        assert len(written) == 1, (ns, written)
        assert calls.index(written[0]) == added + 1
        assert written[0][-len(values):] == [f"{k}={v}" for k, v in values.items()]


@pytest.mark.parametrize("layout,nodes", LAYOUTS)
def test_sysctls_read_back_from_every_namespace(layout, nodes, make_lab):
    p = make_lab(nodes=nodes, layout=layout)
    fabric.build(p)
    for ns, values in fabric.sysctls(p).items():
        assert sysctl_values(ns, list(values)) == values, ns
    # eth0 was created after conf.default was written, so it has rp_filter 0 too
    n1 = p.nodes[0].netns
    assert sysctl_values(n1, ["net.ipv4.conf.eth0.rp_filter"]) == {"net.ipv4.conf.eth0.rp_filter": "0"}


def test_routed_layout_router_knows_no_pod_cidr(make_lab):
    p = make_lab(nodes=2, layout="routed")
    before = root_links()
    fabric.build(p)
    fabric.add_pod_cidr_routes(p, {p.nodes[0].name: "10.244.0.0/24", p.nodes[1].name: "10.244.1.0/24"})
    assert root_links() == before
    made = {n for n in list_netns() if n.startswith(p.prefix)}
    assert made == set(fabric.namespaces(p))
    n1, n2 = p.nodes
    assert n1.segment != n2.segment and n1.prefixlen == 26
    rt = Netns(p.router_netns)
    assert "10.244." not in rt.ip("route")  # no pod CIDR anywhere on the path
    assert "10.244." not in Netns(p.underlay_netns).ip("route")
    assert f"default via {n1.gateway}" in Netns(n1.netns).ip("route")
    # across the router: node 1 -> node 2 and every node -> the API server's address (a refusal
    # is the peer kernel's answer, so the path works in both directions)
    assert tcp_outcome(n1.netns, n2.ip, 1) == "refused"
    for n in p.nodes:
        assert tcp_outcome(n.netns, p.apiserver_ip, p.apiserver_port) == "refused", n.name
    assert tcp_outcome(p.outside_netns, n2.ip, 1) == "refused"
    # node 2 is not on node 1's subnet: a host-gw route via it is refused by the kernel
    r = subprocess.run(["ip", "-n", n1.netns, "route", "add", "10.244.1.0/24", "via", n2.ip],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "gateway" in r.stderr.lower(), r.stderr


def test_mixed_layout_two_nodes_share_a_subnet(make_lab):
    p = make_lab(nodes=3, layout="mixed")
    fabric.build(p)
    n1, n2, n3 = p.nodes
    assert n1.segment == n2.segment != n3.segment
    # n1 and n2 on one bridge: n2 resolves n1's address by ARP (no router in between)
    assert tcp_outcome(n2.netns, n1.ip, 1) == "refused"
    assert "lladdr" in Netns(n2.netns).ip("neigh", "show", n1.ip)
    assert tcp_outcome(n3.netns, n1.ip, 1) == "refused"
    assert Netns(n3.netns).ip("neigh", "show", n1.ip).strip() == ""  # reached through the router
