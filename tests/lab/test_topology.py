"""Topology validation (bad input refused with what to change) and name/IP planning."""

from __future__ import annotations

import argparse

import pytest

from podnet.netlab.lab import lab_up
from podnet.netlab.lab.topology import IFNAMSIZ, LabSpec, TopologyError, load_topology_file, plan, validate

BAD = [
    ("name-upper", dict(name="Lab"), "--name 'Lab' is not a valid lab name"),
    ("name-dash", dict(name="my-lab"), "is not a valid lab name"),
    ("name-too-long", dict(name="abcdefghijk"), "is not a valid lab name"),
    ("zero-nodes", dict(nodes=0), "--nodes 0: give between 1 and 64"),
    ("negative-pods", dict(pods_per_node=-1), "give 0 or more pods per node"),
    ("too-many-pods", dict(pods_per_node=300), "--pods-per-node 300 (+8 for lab pods) does not fit a /24"),
    ("pods-hint-mask", dict(pods_per_node=300), "set --node-cidr-mask 23"),
    ("cluster-not-cidr", dict(cluster_cidr="10.244.0.0/33"), "--cluster-cidr '10.244.0.0/33' is not a CIDR"),
    ("cluster-host-bits", dict(cluster_cidr="10.244.0.1/16"), "did you mean 10.244.0.0/16"),
    ("ipv6", dict(service_cidr="fd00::/108"), "IPv4-only"),
    ("loopback-underlay", dict(underlay="127.0.0.0/24"), "reserved range"),
    ("cluster-overlaps-service", dict(service_cidr="10.244.128.0/20"),
     "--cluster-cidr 10.244.0.0/16 overlaps --service-cidr 10.244.128.0/20"),
    ("underlay-overlaps-cluster", dict(underlay="10.244.3.0/24"),
     "--cluster-cidr 10.244.0.0/16 overlaps --underlay 10.244.3.0/24"),
    ("underlay-overlaps-service", dict(underlay="10.96.0.0/24"), "overlaps --underlay 10.96.0.0/24"),
    ("cluster-too-small", dict(nodes=5, cluster_cidr="10.244.0.0/22"), "holds only 4 node CIDRs of /24 for 5 nodes"),
    ("mask-below-cluster", dict(cluster_cidr="10.244.0.0/25"), "--node-cidr-mask 24 must lie between"),
    ("underlay-too-small", dict(underlay="192.168.77.0/28", nodes=8), "use a larger underlay"),
    ("overlaps-external-pool", dict(underlay="198.51.100.0/24"),
     "--underlay 198.51.100.0/24 overlaps the lab's external IP pool"),
    ("service-too-small", dict(service_cidr="10.96.0.0/30"), "too small"),
    ("underlay-typo-hints-layouts", dict(underlay="routd"),
     "--underlay 'routd' is not a CIDR: 'routd' does not appear to be an IPv4 or IPv6 network (--underlay also "
     "takes a layout: flat, routed, mixed)"),
    ("bad-layout", dict(layout="star"), "--underlay 'star': give a layout (flat, routed, mixed) or a CIDR"),
    ("bad-backend", dict(backend="ipip"), "--backend 'ipip': give one of auto, host-gw, vxlan"),
    ("mixed-too-few-nodes", dict(layout="mixed", nodes=2), "--underlay mixed needs at least 3 nodes"),
    ("routed-subnets-too-small", dict(layout="routed", nodes=20),
     "split into 21 subnets gives /29 subnets, too small"),
]


@pytest.mark.parametrize("overrides,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_topologies_are_refused_with_what_to_change(overrides, message):
    problems = validate(LabSpec(**overrides))
    assert any(message in p for p in problems), problems
    with pytest.raises(TopologyError):
        plan(LabSpec(**overrides))


def test_default_topology_is_valid():
    assert validate(LabSpec()) == []


def test_all_problems_reported_at_once():
    problems = validate(LabSpec(name="X", nodes=0, underlay="10.244.0.0/24"))
    assert len(problems) == 3, problems


def test_plan_names_and_addresses():
    p = plan(LabSpec(name="t1", nodes=3, underlay="192.168.50.0/24", service_cidr="10.100.0.0/16"))
    assert p.prefix == "pnl-t1-"
    assert [n.name for n in p.nodes] == ["t1-n1", "t1-n2", "t1-n3"]
    assert [n.netns for n in p.nodes] == ["pnl-t1-n1", "pnl-t1-n2", "pnl-t1-n3"]
    assert [n.ip for n in p.nodes] == ["192.168.50.11", "192.168.50.12", "192.168.50.13"]
    assert p.nodes[1].pod_netns(4) == "pnl-t1-n2-p4"
    assert p.apiserver_ip == "192.168.50.1" and p.master == "https://192.168.50.1:6443"
    assert (p.upstream_ip, p.outside_ip) == ("192.168.50.2", "192.168.50.3")
    assert p.dns_service_ip == "10.100.0.10"
    assert str(p.run_dir) == "/run/podnet/t1" and str(p.data_dir) == "/var/lib/podnet/t1"
    every_netns = [p.underlay_netns, p.upstream_netns, p.outside_netns] + [n.netns for n in p.nodes]
    assert all(n.startswith("pnl-t1-") for n in every_netns)
    assert len(set(every_netns)) == len(every_netns)
    assert all(len(i) <= IFNAMSIZ for i in [p.bridge] + [n.underlay_if for n in p.nodes])
    assert all(i.startswith("pnl-") for i in [p.bridge] + [n.underlay_if for n in p.nodes])


def test_plan_largest_lab_fits_interface_names():
    p = plan(LabSpec(name="abcdefghij", nodes=64, pods_per_node=10))
    assert max(len(n.underlay_if) for n in p.nodes) <= IFNAMSIZ
    assert p.nodes[-1].ip == "192.168.77.74"


def test_resolv_conf():
    p = plan(LabSpec())
    assert p.resolv_conf("team") == (
        "search team.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )


FILES = [
    ("toml", "t.toml", 'nodes = 4\npods-per-node = 25\nunderlay = "192.168.9.0/24"\n', dict(nodes=4, pods_per_node=25)),
    ("toml-lab-table", "t.toml", '[lab]\nname = "big"\nnodes = 3\n', dict(name="big", nodes=3)),
    ("json", "t.json", '{"nodes": 1, "cluster_cidr": "10.32.0.0/16"}', dict(nodes=1, cluster_cidr="10.32.0.0/16")),
    ("toml-routed", "t.toml", 'underlay = "routed"\nbackend = "vxlan"\n', dict(layout="routed", backend="vxlan")),
    ("toml-layout-and-cidr", "t.toml", 'underlay = "mixed"\nunderlay-cidr = "10.9.0.0/16"\nnodes = 3\n',
     dict(layout="mixed", underlay="10.9.0.0/16")),
    ("toml-layout-key", "t.toml", 'layout = "routed"\n', dict(layout="routed", underlay="192.168.77.0/24")),
]


@pytest.mark.parametrize("fname,text,expect", [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_topology_file(tmp_path, fname, text, expect):
    f = tmp_path / fname
    f.write_text(text)
    spec = LabSpec.from_mapping(load_topology_file(f))
    for k, v in expect.items():
        assert getattr(spec, k) == v


BAD_FILES = [
    ("unknown-key", "t.toml", "nodez = 3\n", "unknown topology key 'nodez'"),
    ("not-a-number", "t.toml", 'nodes = "many"\n', "nodes: 'many' is not a whole number"),
    ("bad-toml", "t.toml", "nodes = \n", "is not valid TOML"),
    ("bad-json", "t.json", "{", "is not valid JSON"),
]


@pytest.mark.parametrize("fname,text,message", [f[1:] for f in BAD_FILES], ids=[f[0] for f in BAD_FILES])
def test_bad_topology_file(tmp_path, fname, text, message):
    f = tmp_path / fname
    f.write_text(text)
    with pytest.raises(TopologyError) as e:
        LabSpec.from_mapping(load_topology_file(f))
    assert message in str(e.value)


def test_flags_override_file(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("nodes = 4\npods-per-node = 5\n")
    ap = argparse.ArgumentParser()
    lab_up.add_arguments(ap)
    spec = lab_up.spec_from_args(ap.parse_args(["--topology", str(f), "--nodes", "2"]))
    assert (spec.nodes, spec.pods_per_node) == (2, 5)


def test_up_refuses_bad_topology_before_creating_anything(capsys, tmp_path):
    ap = argparse.ArgumentParser()
    lab_up.add_arguments(ap)
    rc = lab_up.run(ap.parse_args(["--name", "zz9", "--cluster-cidr", "10.96.0.0/16"]))
    assert rc == 2
    err = capsys.readouterr().err
    assert "nothing was created" in err and "overlaps --service-cidr" in err


FLAGS = [
    pytest.param(["--underlay", "routed"], dict(layout="routed", underlay="192.168.77.0/24"), id="layout-word"),
    pytest.param(["--underlay", "10.8.0.0/24"], dict(layout="flat", underlay="10.8.0.0/24"), id="cidr"),
    pytest.param(["--underlay", "mixed", "--underlay-cidr", "10.8.0.0/16", "--nodes", "3", "--backend", "host-gw"],
                 dict(layout="mixed", underlay="10.8.0.0/16", backend="host-gw"), id="both"),
]


@pytest.mark.parametrize("argv,expect", FLAGS)
def test_underlay_and_backend_flags(argv, expect):
    ap = argparse.ArgumentParser()
    lab_up.add_arguments(ap)
    spec = lab_up.spec_from_args(ap.parse_args(argv))
    for k, v in expect.items():
        assert getattr(spec, k) == v


def test_plan_routed_puts_every_node_in_its_own_subnet_behind_the_router():
    p = plan(LabSpec(name="r", nodes=2, layout="routed"))
    assert p.router_netns == "pnl-r-rt" and p.routed
    assert [s.cidr for s in p.segments] == ["192.168.77.0/26", "192.168.77.64/26", "192.168.77.128/26"]
    assert [s.router_ip for s in p.segments] == ["192.168.77.1", "192.168.77.65", "192.168.77.129"]
    assert (p.apiserver_ip, p.upstream_ip, p.outside_ip, p.services_gateway) == (
        "192.168.77.2", "192.168.77.3", "192.168.77.4", "192.168.77.1")
    assert [(n.ip, n.gateway, n.segment) for n in p.nodes] == [
        ("192.168.77.75", "192.168.77.65", 1), ("192.168.77.139", "192.168.77.129", 2)]
    names = [s.bridge for s in p.segments] + [s.router_if for s in p.segments]
    assert all(len(i) <= IFNAMSIZ and i.startswith("pnl-") for i in names)


def test_plan_mixed_shares_one_subnet_between_the_first_two_nodes():
    p = plan(LabSpec(name="m", nodes=4, layout="mixed"))
    assert [s.nodes for s in p.segments] == [(), ("m-n1", "m-n2"), ("m-n3", "m-n4")]
    n1, n2, n3, n4 = p.nodes
    assert n1.segment == n2.segment == 1 and n3.segment == n4.segment == 2
    assert (n1.ip, n2.ip, n3.ip, n4.ip) == ("192.168.77.75", "192.168.77.76", "192.168.77.139", "192.168.77.140")


def test_plan_flat_is_one_segment_without_router():
    p = plan(LabSpec(name="f", nodes=2))
    assert not p.routed and p.router_netns == "" and len(p.segments) == 1
    assert p.segments[0].bridge == p.bridge == "pnl-br"
    assert all(n.gateway == p.apiserver_ip for n in p.nodes)
