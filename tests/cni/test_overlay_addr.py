"""The VXLAN device's own address (each own pod CIDR's network address, as flannel's ``flannel.1``):
the pure plan, then applied through the fake netlink layer (idempotent, repaired, removed with host-gw)."""

from __future__ import annotations

import pytest

from podnet.cni import overlay
from podnet.cni.overlay import Addr, Config, Host, Iface, Vtep
from podnet.cni.testing import FakeOverlayOps
from podnet.kube.objects import NodeAddress

V4 = {4: Vtep("02:00:00:00:00:0a", "192.168.1.10")}
V6 = {6: Vtep("02:00:00:00:06:0a", "fd00:1::10")}
DUAL = {**V4, **V6}
HOST = Host((Iface("eth0", 1500, ("192.168.1.10/24",)),))

CASES = [
    pytest.param(["10.244.3.0/24"], V4, {Addr("podnet.vxlan", "10.244.3.0/32")}, id="ipv4"),
    pytest.param(["10.244.3.0/24", "fd00:10:244:3::/64"], DUAL,
                 {Addr("podnet.vxlan", "10.244.3.0/32"), Addr("podnet.vxlan6", "fd00:10:244:3::/128")}, id="dual-stack"),
    pytest.param(["10.244.3.0/24", "fd00:10:244:3::/64"], V4,
                 {Addr("podnet.vxlan", "10.244.3.0/32"), Addr("podnet.vxlan", "fd00:10:244:3::/128")},
                 id="dual-stack-pods-over-ipv4-underlay"),
    pytest.param(["10.244.3.0/24"], {}, set(), id="no-device-up"),
    pytest.param(["10.244.3.7/24"], V4, {Addr("podnet.vxlan", "10.244.3.0/32")}, id="host-bits-ignored"),
]


@pytest.mark.parametrize("cidrs,vteps,want", CASES)
def test_device_addrs(cidrs, vteps, want):
    assert overlay.device_addrs(cidrs, vteps) == want


def node(name, cidrs, ip):
    return overlay.AnnotatedNode(name, (NodeAddress("InternalIP", ip),), tuple(cidrs))


def run_once(ops, backend):
    o = overlay.Overlay(Config(backend), ops)
    p = o.prepare([node("a", ["10.244.0.0/24"], "192.168.1.10")], "a", ["10.244.0.0/24"])
    return overlay.sync_entries(p, [overlay.DEVICE[f] for f in o.vteps], ops), p


def test_plan_has_no_device_address_with_host_gw():
    ops = FakeOverlayOps(HOST)
    _, p = run_once(ops, "host-gw")
    assert p.addrs == frozenset() and ops.addr == set()


@pytest.mark.parametrize("backend", ["vxlan", "auto"])
def test_device_address_applied_once_and_repaired(backend):
    ops = FakeOverlayOps(HOST)
    (changes, errors), _ = run_once(ops, backend)
    assert errors == [] and ops.addr == {Addr("podnet.vxlan", "10.244.0.0/32")}
    assert "addr 10.244.0.0/32 dev podnet.vxlan" in changes
    (changes, _), _ = run_once(ops, backend)
    assert changes == []
    ops.addr.clear()
    ops.addr.add(Addr("podnet.vxlan", "10.9.9.9/32"))  # someone else's address on podnet's device
    (changes, _), _ = run_once(ops, backend)
    assert ops.addr == {Addr("podnet.vxlan", "10.244.0.0/32")}
    assert "addr 10.9.9.9/32 dev podnet.vxlan removed" in changes
