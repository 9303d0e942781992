"""host-gw desired state from Node objects (pure), the masquerade rule text, and route sync in a netns."""

from __future__ import annotations

import os
import sys

import pytest

from podnet.cni import routes
from podnet.kube.objects import Node, NodeAddress


def node(name, cidrs, *addrs):
    return Node(name, tuple(NodeAddress(t, a) for t, a in addrs), tuple(cidrs))


CASES = [
    ("self-only", [node("a", ["10.244.0.0/24"], ("InternalIP", "192.168.0.1"))], {"10.244.0.0/24": "blackhole"}),
    ("two-nodes", [node("a", ["10.244.0.0/24"], ("InternalIP", "192.168.0.1")),
                   node("b", ["10.244.1.0/24"], ("InternalIP", "192.168.0.2"))],
     {"10.244.0.0/24": "blackhole", "10.244.1.0/24": "192.168.0.2"}),
    ("no-cidr-yet", [node("b", [], ("InternalIP", "192.168.0.2"))], {"10.244.0.0/24": "blackhole"}),
    ("no-address", [node("b", ["10.244.1.0/24"])], {"10.244.0.0/24": "blackhole"}),
    ("external-fallback", [node("b", ["10.244.1.0/24"], ("ExternalIP", "203.0.113.2"))],
     {"10.244.0.0/24": "blackhole", "10.244.1.0/24": "203.0.113.2"}),
    ("dual-stack-families-match", [node("b", ["10.244.1.0/24", "fd00:1::/64"],
                                        ("InternalIP", "fc00::2"), ("InternalIP", "192.168.0.2"))],
     {"10.244.0.0/24": "blackhole", "10.244.1.0/24": "192.168.0.2", "fd00:1::/64": "fc00::2"}),
    ("v6-cidr-v4-only-node", [node("b", ["fd00:1::/64"], ("InternalIP", "192.168.0.2"))],
     {"10.244.0.0/24": "blackhole"}),
    ("ipv6-only", [node("b", ["fd00:1::/64"], ("InternalIP", "192.168.0.2"), ("InternalIP", "fc00::2"))],
     {"10.244.0.0/24": "blackhole", "fd00:1::/64": "fc00::2"}),
    ("ipv6-canonical-text", [node("b", ["FD00:0001:0::/64"], ("InternalIP", "FC00:0:0::2"))],
     {"10.244.0.0/24": "blackhole", "fd00:1::/64": "fc00::2"}),
    ("stolen-own-cidr-ignored", [node("b", ["10.244.0.0/24"], ("InternalIP", "192.168.0.2"))],
     {"10.244.0.0/24": "blackhole"}),
]


@pytest.mark.parametrize("nodes,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_desired_routes(nodes, want):
    assert routes.desired_routes(nodes, "a", ["10.244.0.0/24"]).routes == want


def test_pod_cidrs_without_a_same_family_node_address_are_reported():
    d = routes.desired_routes([node("b", ["10.244.1.0/24", "fd00:1::/64"], ("InternalIP", "192.168.0.2"))],
                              "a", ["10.244.0.0/24"])
    assert d.unroutable == ("b: fd00:1::/64",)


def test_masquerade_rules_exempt_the_cluster_cidr():
    text = routes.masquerade_rules(["10.244.1.0/24"], ["10.244.0.0/16"], True)
    assert "-A PODNET-MASQ -d 10.244.0.0/16 -j RETURN\n-A PODNET-MASQ -j MASQUERADE" in text
    assert "MASQUERADE" not in routes.masquerade_rules(["10.244.1.0/24"], ["10.244.0.0/16"], False)


SYNC = """
from podnet.cni import routes
d = routes.Desired({"10.1.0.0/24": "blackhole", "10.2.0.0/24": "192.168.5.9", "fd00:2::/64": "fc00::9"})
print(sorted(routes.sync(d)))
print(routes.sync(d))
print(routes.sync(routes.Desired({"10.1.0.0/24": "blackhole"})))
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_sync_is_idempotent_and_removes_stale_routes(pool):
    ns = pool.netns("r")
    ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ns.ip("link", "set", "v0", "up")
    ns.ip("link", "set", "v1", "up")
    ns.ip("addr", "add", "192.168.5.1/24", "dev", "v0")
    ns.ip("addr", "add", "fc00::1/64", "dev", "v0", "nodad")
    ns.ip("route", "add", "10.3.0.0/24", "via", "192.168.5.7", "proto", "149")  # not ours to remove
    out = ns.run(sys.executable, "-P", "-c", SYNC).splitlines()
    assert out[0] == str(sorted(["10.1.0.0/24 -> blackhole", "10.2.0.0/24 -> 192.168.5.9", "fd00:2::/64 -> fc00::9"]))
    assert out[1] == "[]"
    assert out[2] == str(["10.2.0.0/24 removed", "fd00:2::/64 removed"])
    assert "10.3.0.0/24" in ns.ip("route")
