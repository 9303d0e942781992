"""The overlay as data (pure): backend per peer, routes, neighbours, FDB entries, devices, MTU, bad
annotations; then applied through the fake netlink layer (podnet.cni.testing.FakeOverlayOps)."""

from __future__ import annotations

import dataclasses
import errno
import inspect

import pytest

from podnet.cni import overlay, routes
from podnet.cni.overlay import Config, Device, Fdb, Host, Iface, Neigh, Vtep
from podnet.cni.testing import FakeOverlayOps
from podnet.kube.objects import NodeAddress

MAC_B, MAC_C, MAC_D, MAC_SELF = "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:0d", "02:00:00:00:00:0a"
HOST = Host((Iface("eth0", 1500, ("192.168.1.10/24", "fd00:1::10/64")),))
VTEPS = {4: Vtep(MAC_SELF, "192.168.1.10")}
VTEPS_DUAL = {4: Vtep(MAC_SELF, "192.168.1.10"), 6: Vtep("02:00:00:00:06:0a", "fd00:1::10")}


def node(name, cidrs, ips, created="", **ann):
    keys = {"mac": "podnet.io/vtep-mac", "ip": "podnet.io/public-ip", "mac6": "podnet.io/vtep-mac-v6",
            "ip6": "podnet.io/public-ipv6"}
    return overlay.AnnotatedNode(name, tuple(NodeAddress("InternalIP", a) for a in ips), tuple(cidrs),
                                 annotations=tuple(sorted((keys[k], v) for k, v in ann.items())), created=created)


SELF = node("a", ["10.244.0.0/24"], ["192.168.1.10"])
SAME = node("b", ["10.244.1.0/24"], ["192.168.1.11"], mac=MAC_B)            # on eth0's subnet
FAR = node("c", ["10.244.2.0/24"], ["192.168.2.12"], mac=MAC_C)             # behind a router
VX = routes.onlink

PLAN_CASES = [
    pytest.param("auto", [SELF, SAME, FAR], VTEPS,
                 {"10.244.0.0/24": "blackhole", "10.244.1.0/24": "192.168.1.11",
                  "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan")},
                 {Neigh("podnet.vxlan", "10.244.2.0", MAC_C)}, {Fdb("podnet.vxlan", MAC_C, "192.168.2.12")},
                 id="auto-host-gw-on-subnet-vxlan-elsewhere"),
    pytest.param("vxlan", [SELF, SAME, FAR], VTEPS,
                 {"10.244.0.0/24": "blackhole", "10.244.1.0/24": VX("10.244.1.0", "podnet.vxlan"),
                  "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan")},
                 {Neigh("podnet.vxlan", "10.244.1.0", MAC_B), Neigh("podnet.vxlan", "10.244.2.0", MAC_C)},
                 {Fdb("podnet.vxlan", MAC_B, "192.168.1.11"), Fdb("podnet.vxlan", MAC_C, "192.168.2.12")},
                 id="vxlan-everywhere"),
    pytest.param("host-gw", [SELF, SAME, FAR], {},
                 {"10.244.0.0/24": "blackhole", "10.244.1.0/24": "192.168.1.11", "10.244.2.0/24": "192.168.2.12"},
                 set(), set(), id="host-gw-everywhere"),
    pytest.param("auto", [SELF, FAR], {},
                 {"10.244.0.0/24": "blackhole"}, set(), set(), id="own-device-down-no-vxlan-routes"),
    pytest.param("auto", [SELF, node("c", ["10.244.2.0/24"], ["192.168.2.12"])], VTEPS,
                 {"10.244.0.0/24": "blackhole"}, set(), set(), id="peer-without-vtep-unroutable"),
    pytest.param("auto", [SELF, node("c", ["10.244.2.0/24"], ["192.168.2.12"], mac=MAC_C, ip="198.51.100.7")],
                 VTEPS, {"10.244.0.0/24": "blackhole", "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan")},
                 {Neigh("podnet.vxlan", "10.244.2.0", MAC_C)}, {Fdb("podnet.vxlan", MAC_C, "198.51.100.7")},
                 id="public-ip-annotation-wins-over-internal-ip"),
    pytest.param("auto", [SELF, node("c", ["10.244.2.0/24"], ["192.168.2.12"], mac="02:00:00:00:00:CC")], VTEPS,
                 {"10.244.0.0/24": "blackhole", "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan")},
                 {Neigh("podnet.vxlan", "10.244.2.0", "02:00:00:00:00:cc")},
                 {Fdb("podnet.vxlan", "02:00:00:00:00:cc", "192.168.2.12")}, id="mac-lowercased"),
    pytest.param("auto", [SELF, node("c", ["10.244.2.0/24", "fd00:10:2::/64"], ["192.168.2.12"], mac=MAC_C)],
                 VTEPS, {"10.244.0.0/24": "blackhole", "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan"),
                         "fd00:10:2::/64": VX("fd00:10:2::", "podnet.vxlan")},
                 {Neigh("podnet.vxlan", "10.244.2.0", MAC_C), Neigh("podnet.vxlan", "fd00:10:2::", MAC_C)},
                 {Fdb("podnet.vxlan", MAC_C, "192.168.2.12")}, id="dual-stack-pods-over-ipv4-underlay"),
    pytest.param("auto", [SELF, node("c", ["10.244.2.0/24", "fd00:10:2::/64"], ["192.168.2.12", "fd00:2::12"],
                                     mac=MAC_C, mac6="02:00:00:00:06:0c")],
                 VTEPS_DUAL, {"10.244.0.0/24": "blackhole", "10.244.2.0/24": VX("10.244.2.0", "podnet.vxlan"),
                              "fd00:10:2::/64": VX("fd00:10:2::", "podnet.vxlan6")},
                 {Neigh("podnet.vxlan", "10.244.2.0", MAC_C), Neigh("podnet.vxlan6", "fd00:10:2::", "02:00:00:00:06:0c")},
                 {Fdb("podnet.vxlan", MAC_C, "192.168.2.12"), Fdb("podnet.vxlan6", "02:00:00:00:06:0c", "fd00:2::12")},
                 id="each-family-over-its-own-underlay"),
    pytest.param("auto", [SELF, node("b", ["fd00:10:1::/64"], ["fd00:1::11"], mac6="02:00:00:00:06:0b")],
                 VTEPS_DUAL, {"10.244.0.0/24": "blackhole", "fd00:10:1::/64": "fd00:1::11"}, set(), set(),
                 id="ipv6-peer-on-subnet-host-gw"),
    pytest.param("auto", [SELF, node("b", ["10.244.0.0/24"], ["192.168.2.12"], mac=MAC_B)], VTEPS,
                 {"10.244.0.0/24": "blackhole"}, set(), set(), id="stolen-own-cidr-ignored"),
]


@pytest.mark.parametrize(("backend", "nodes", "vteps", "want_routes", "want_neigh", "want_fdb"), PLAN_CASES)
def test_plan(backend, nodes, vteps, want_routes, want_neigh, want_fdb):
    p = overlay.plan(Config(backend), nodes, "a", ["10.244.0.0/24"], HOST, vteps)
    assert p.routes.routes == want_routes
    assert p.neighs == want_neigh
    assert p.fdbs == want_fdb


def test_host_gw_backend_equals_the_host_gw_routes():
    nodes = [SELF, SAME, FAR, node("d", ["fd00:10:4::/64"], ["192.168.1.14", "fd00:1::14"])]
    p = overlay.plan(Config("host-gw"), nodes, "a", ["10.244.0.0/24"], HOST, {})
    assert p.routes == routes.desired_routes(nodes, "a", ["10.244.0.0/24"])


def test_backends_are_reported_per_pair():
    p = overlay.plan(Config("auto"), [SELF, SAME, FAR], "a", ["10.244.0.0/24"], HOST, VTEPS)
    assert p.backends == (("b", "10.244.1.0/24", "host-gw"), ("c", "10.244.2.0/24", "vxlan"))


BAD_CASES = [
    pytest.param({"mac": "garbage"}, "bad-vtep-mac", id="garbage-mac"),
    pytest.param({"mac": "02:00:00:00:00:0c "}, "bad-vtep-mac", id="mac-trailing-space"),
    pytest.param({"mac": "01:00:5e:00:00:01"}, "bad-vtep-mac", id="multicast-mac"),
    pytest.param({"mac": "00:00:00:00:00:00"}, "bad-vtep-mac", id="zero-mac"),
    pytest.param({"mac": "02-00-00-00-00-0c"}, "bad-vtep-mac", id="dashes"),
    pytest.param({"mac": MAC_C, "ip": "not-an-ip"}, "bad-public-ip", id="garbage-ip"),
    pytest.param({"mac": MAC_C, "ip": "192.168.002.12"}, "bad-public-ip", id="leading-zeros"),
    pytest.param({"mac": MAC_C, "ip": "fe80::1%eth0"}, "bad-public-ip", id="zone"),
    pytest.param({"mac": MAC_C, "ip": "fd00:2::12"}, "wrong-family", id="ipv6-in-ipv4-annotation"),
    pytest.param({"mac": MAC_D}, "duplicate-vtep-mac", id="mac-of-another-node"),
    pytest.param({"mac": MAC_SELF}, "duplicate-vtep-mac", id="mac-of-this-node"),
    pytest.param({"mac": MAC_C, "ip": "192.168.2.13"}, "duplicate-public-ip", id="ip-of-another-node"),
    pytest.param({"mac": MAC_C, "ip": "192.168.1.10"}, "duplicate-public-ip", id="ip-of-this-node"),
]


@pytest.mark.parametrize(("ann", "reason"), BAD_CASES)
def test_bad_vtep_annotation_is_ignored_and_reported_without_hurting_other_peers(ann, reason):
    good = node("d", ["10.244.3.0/24"], ["192.168.2.13"], created="2026-01-01T00:00:00Z", mac=MAC_D)
    bad = node("c", ["10.244.2.0/24"], ["192.168.2.12"], created="2026-06-01T00:00:00Z", **ann)
    p = overlay.plan(Config("auto"), [SELF, SAME, bad, good], "a", ["10.244.0.0/24"], HOST, VTEPS)
    assert ("c", "ipv4", reason) in p.ignored
    assert "10.244.2.0/24" not in p.routes.routes
    assert p.routes.routes["10.244.1.0/24"] == "192.168.1.11"  # host-gw peer untouched
    assert p.routes.routes["10.244.3.0/24"] == VX("10.244.3.0", "podnet.vxlan")  # the older claimant keeps it
    assert Fdb("podnet.vxlan", MAC_D, "192.168.2.13") in p.fdbs
    assert [i for i in p.ignored if i[0] != "c"] == []
    assert p.fdbs == {Fdb("podnet.vxlan", MAC_D, "192.168.2.13")}  # nothing at all for the bad node
    assert p.neighs == {Neigh("podnet.vxlan", "10.244.3.0", MAC_D)}


def test_bad_vtep_still_gets_host_gw_when_on_link():
    bad = node("b", ["10.244.1.0/24"], ["192.168.1.11"], mac="zz")
    p = overlay.plan(Config("auto"), [SELF, bad], "a", ["10.244.0.0/24"], HOST, VTEPS)
    assert p.routes.routes["10.244.1.0/24"] == "192.168.1.11" and p.ignored == (("b", "ipv4", "bad-vtep-mac"),)


def test_parse_node_keeps_only_podnet_string_annotations():
    n = overlay.parse_node({"metadata": {"name": "x", "annotations": {
        "podnet.io/vtep-mac": MAC_B, "other/x": "y", "podnet.io/long": "z" * 1000}},
        "spec": {"podCIDR": "10.244.5.0/24"}})
    assert n.name == "x" and n.pod_cidrs == ("10.244.5.0/24",)
    assert dict(n.annotations) == {"podnet.io/vtep-mac": MAC_B, "podnet.io/long": "z" * 256}


INHERIT = overlay.DF_INHERIT
DEVICE_CASES = [
    pytest.param("auto", HOST, SELF, (Device("podnet.vxlan", 4, 1, 8472, "192.168.1.10", 1450, INHERIT),
                                      Device("podnet.vxlan6", 6, 1, 8472, "fd00:1::10", 1430)), 1430, id="dual-underlay"),
    pytest.param("vxlan", Host((Iface("eth0", 9000, ("10.0.0.5/16",)),)), None,
                 (Device("podnet.vxlan", 4, 1, 8472, "10.0.0.5", 8950, INHERIT),), 8950, id="jumbo-v4"),
    pytest.param("auto", Host((Iface("eth0", 1500, ("fd00:1::10/64", "fe80::1/64")),)), None,
                 (Device("podnet.vxlan6", 6, 1, 8472, "fd00:1::10", 1430),), 1430, id="ipv6-only-underlay"),
    pytest.param("auto", Host((Iface("eth0", 1500, ("10.9.0.1/24",)), Iface("eth1", 1400, ("192.168.1.10/24",)))),
                 SELF, (Device("podnet.vxlan", 4, 1, 8472, "192.168.1.10", 1350, INHERIT),), 1350,
                 id="node-internal-ip-iface"),
    pytest.param("host-gw", HOST, SELF, (), 1500, id="host-gw-no-devices"),
    pytest.param("auto", Host(), None, (), 1450, id="no-underlay-yet"),
]


@pytest.mark.parametrize(("backend", "host", "own", "want", "mtu"), DEVICE_CASES)
def test_devices_and_pod_mtu(backend, host, own, want, mtu):
    assert overlay.desired_devices(Config(backend), own, host) == want
    assert overlay.pod_mtu(Config(backend), own, host) == mtu


def test_outer_df_unset_is_flannels_way_on_the_ipv4_device_only():
    devs = overlay.desired_devices(Config("auto", df=overlay.DF_UNSET), SELF, HOST)
    assert [(d.name, d.df) for d in devs] == [("podnet.vxlan", overlay.DF_UNSET), ("podnet.vxlan6", overlay.DF_UNSET)]


def test_configured_mtu_wins():
    assert overlay.pod_mtu(Config("auto", mtu=1300), SELF, HOST) == 1300


@pytest.mark.parametrize(("kw", "msg"), [
    pytest.param({"backend": "udp"}, "backend", id="unknown-backend"),
    pytest.param({"vni": 0}, "VNI", id="vni-zero"),
    pytest.param({"vni": 1 << 24}, "VNI", id="vni-too-big"),
    pytest.param({"port": 0}, "port", id="port-zero"),
    pytest.param({"mtu": 100}, "MTU", id="mtu-too-small"),
    pytest.param({"df": overlay.DF_SET}, "outer DF", id="df-set-not-offered"),
])
def test_config_refuses_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Config(**kw)


def test_annotation_patch_publishes_vtep_and_removes_absent_family():
    patch = overlay.annotation_patch(Config("auto"), VTEPS, SELF)
    assert patch == {"metadata": {"annotations": {
        "podnet.io/backend": "auto", "podnet.io/vtep-mac": MAC_SELF, "podnet.io/public-ip": "192.168.1.10",
        "podnet.io/vtep-mac-v6": None, "podnet.io/public-ipv6": None}}}
    published = node("a", ["10.244.0.0/24"], ["192.168.1.10"], mac=MAC_SELF, ip="192.168.1.10")
    published = overlay.AnnotatedNode(**{**{f: getattr(published, f) for f in published.__dataclass_fields__},
                                         "annotations": published.annotations + (("podnet.io/backend", "auto"),)})
    assert overlay.annotation_patch(Config("auto"), VTEPS, published) is None


# --------------------------------------------------------------------------- apply through the fake


def test_fake_implements_the_protocol():
    members = [(n, f) for n, f in inspect.getmembers(overlay.OverlayOps, inspect.isfunction) if not n.startswith("_")]
    assert len(members) == 16
    for name, fn in members:
        fake = getattr(FakeOverlayOps, name)
        assert list(inspect.signature(fake).parameters) == list(inspect.signature(fn).parameters), name


def run_once(ops, cfg, nodes):
    o = overlay.Overlay(cfg, ops)
    p = o.prepare(nodes, "a", ["10.244.0.0/24"])
    changes, errors = overlay.sync_entries(p, [overlay.DEVICE[f] for f in o.vteps], ops)
    return o, p, changes, errors


def test_apply_creates_device_and_entries_idempotently():
    ops = FakeOverlayOps(HOST)
    o, p, changes, errors = run_once(ops, Config("auto"), [SELF, SAME, FAR])
    assert errors == [] and set(ops.links) == {"podnet.vxlan", "podnet.vxlan6"}
    st = ops.links["podnet.vxlan"]
    assert (st.vni, st.port, st.local, st.learning, st.mtu, st.up, st.df) == (
        1, 8472, "192.168.1.10", False, 1450, True, overlay.DF_INHERIT)
    assert ops.neigh == {Neigh("podnet.vxlan", "10.244.2.0", MAC_C)}
    assert ops.fdb == {Fdb("podnet.vxlan", MAC_C, "192.168.2.12")}
    assert o.mtu == 1430
    _, _, changes2, _ = run_once(ops, Config("auto"), [SELF, SAME, FAR])
    assert changes2 == []


def test_apply_repairs_deleted_entries_and_removes_stale_ones():
    ops = FakeOverlayOps(HOST)
    run_once(ops, Config("auto"), [SELF, SAME, FAR])
    ops.neigh.clear()
    ops.fdb.add(Fdb("podnet.vxlan", "02:00:00:00:00:99", "192.168.9.9"))
    _, _, changes, _ = run_once(ops, Config("auto"), [SELF, SAME, FAR])
    assert ops.neigh == {Neigh("podnet.vxlan", "10.244.2.0", MAC_C)}
    assert ops.fdb == {Fdb("podnet.vxlan", MAC_C, "192.168.2.12")}
    assert "fdb 02:00:00:00:00:99 dst 192.168.9.9 dev podnet.vxlan removed" in changes
    run_once(ops, Config("auto"), [SELF, SAME])  # c leaves
    assert ops.neigh == set() and ops.fdb == set()


def test_vtep_mac_change_replaces_neighbour_and_fdb():
    ops = FakeOverlayOps(HOST)
    run_once(ops, Config("auto"), [SELF, FAR])
    moved = node("c", ["10.244.2.0/24"], ["192.168.2.12"], mac="02:00:00:00:00:cd")
    run_once(ops, Config("auto"), [SELF, moved])
    assert ops.neigh == {Neigh("podnet.vxlan", "10.244.2.0", "02:00:00:00:00:cd")}
    assert ops.fdb == {Fdb("podnet.vxlan", "02:00:00:00:00:cd", "192.168.2.12")}


def test_changed_vni_recreates_the_device_and_host_gw_removes_it():
    ops = FakeOverlayOps(HOST)
    run_once(ops, Config("auto"), [SELF, FAR])
    old_mac = ops.links["podnet.vxlan"].mac
    run_once(ops, Config("auto", vni=7, port=overlay.IANA_PORT), [SELF, FAR])
    st = ops.links["podnet.vxlan"]
    assert (st.vni, st.port) == (7, 4789) and st.mac != old_mac and st.up
    run_once(ops, Config("host-gw"), [SELF, FAR])
    assert ops.links == {}


@pytest.mark.parametrize(("mode", "drift"), [
    pytest.param(overlay.DF_INHERIT, {"df": overlay.DF_UNSET}, id="inherit-changed-to-unset"),
    pytest.param(overlay.DF_INHERIT, {"df": overlay.DF_SET}, id="inherit-changed-to-set"),
    pytest.param(overlay.DF_UNSET, {"df": overlay.DF_INHERIT}, id="unset-changed-to-inherit"),
    pytest.param(overlay.DF_INHERIT, {"learning": True}, id="learning-on"),
])
def test_a_device_changed_by_hand_is_recreated_with_its_outer_df_mode(mode, drift):
    ops = FakeOverlayOps(HOST)
    run_once(ops, Config("auto", df=mode), [SELF, FAR])
    old_mac = ops.links["podnet.vxlan"].mac
    ops.links["podnet.vxlan"] = dataclasses.replace(ops.links["podnet.vxlan"], **drift)
    _, _, changes, errors = run_once(ops, Config("auto", df=mode), [SELF, FAR])
    st = ops.links["podnet.vxlan"]
    assert errors == [] and (st.df, st.learning, st.up) == (mode, False, True) and st.mac != old_mac
    assert ops.neigh == {Neigh("podnet.vxlan", "10.244.2.0", MAC_C)}  # entries put back on the new device
    assert ops.links["podnet.vxlan6"].df == overlay.DF_UNSET


def test_port_taken_is_one_error_and_host_gw_peers_keep_their_routes(caplog):
    ops = FakeOverlayOps(HOST)
    ops.busy_ports.add(8472)
    o = overlay.Overlay(Config("auto"), ops)
    for _ in range(3):
        p = o.prepare([SELF, SAME, FAR], "a", ["10.244.0.0/24"])
    busy = [r for r in caplog.records if "already in use" in r.getMessage()]
    assert len(busy) == 2  # one line per device (IPv4 and IPv6 underlay), not one per retry
    assert "8472/udp" in busy[0].getMessage()
    assert o.vteps == {} and p.routes.routes["10.244.1.0/24"] == "192.168.1.11"
    assert "10.244.2.0/24" not in p.routes.routes
    ops.busy_ports.clear()  # the retry succeeds once the port is free
    p = o.prepare([SELF, SAME, FAR], "a", ["10.244.0.0/24"])
    assert p.routes.routes["10.244.2.0/24"] == VX("10.244.2.0", "podnet.vxlan") and set(o.vteps) == {4, 6}


def test_ignored_peers_are_counted_in_the_gauge():
    bad = node("c", ["10.244.2.0/24"], ["192.168.2.12"], mac="nope")
    overlay.Overlay(Config("auto"), FakeOverlayOps(HOST)).prepare([SELF, bad], "a", ["10.244.0.0/24"])
    assert overlay.IGNORED.labels("bad-vtep-mac")._value.get() == 1
    overlay.Overlay(Config("auto"), FakeOverlayOps(HOST)).prepare([SELF, FAR], "a", ["10.244.0.0/24"])
    assert overlay.IGNORED.labels("bad-vtep-mac")._value.get() == 0
    assert overlay.PEERS.labels("vxlan")._value.get() == 1
    assert [overlay.BACKEND.labels(b)._value.get() for b in overlay.BACKENDS] == [0, 0, 1]


def test_unknown_errors_are_reported_not_raised():
    class Broken(FakeOverlayOps):
        def create_vxlan(self, dev):
            raise OSError(errno.EPERM, "Operation not permitted")

    res = overlay.sync_devices([Device("podnet.vxlan", 4, 1, 8472, "192.168.1.10", 1450)], Broken(HOST))
    assert res.vteps == {} and res.errors == ["podnet.vxlan: Operation not permitted"]


@pytest.mark.parametrize(("argv", "want"), [
    pytest.param([], ("auto", 1, 8472, 0, "inherit"), id="defaults-flannel-port"),
    pytest.param(["--backend", "vxlan", "--vni", "42", "--vxlan-port", "4789", "--mtu", "1400"],
                 ("vxlan", 42, 4789, 1400, "inherit"), id="iana-port"),
    pytest.param(["--backend", "host-gw"], ("host-gw", 1, 8472, 0, "inherit"), id="host-gw"),
    pytest.param(["--vxlan-df", "unset"], ("auto", 1, 8472, 0, "unset"), id="outer-df-unset-as-flannel"),
    pytest.param(["--vxlan-df", "set"], SystemExit, id="outer-df-set-refused"),
    pytest.param(["--vni", "0"], SystemExit, id="vni-zero-refused"),
    pytest.param(["--vni", "16777216"], SystemExit, id="vni-too-big-refused"),
    pytest.param(["--vxlan-port", "70000"], SystemExit, id="port-too-big-refused"),
    pytest.param(["--backend", "udp"], SystemExit, id="unknown-backend-refused"),
])
def test_daemon_flags(argv, want):
    import argparse

    from podnet.cni import daemon

    p = argparse.ArgumentParser()
    daemon.add_arguments(p)
    base = ["--socket", "/tmp/x.sock", "--node-name", "n", "--data-dir", "/tmp/d"]
    if want is SystemExit:
        with pytest.raises(SystemExit):
            p.parse_args(base + argv)
        return
    o = daemon.options_from(p.parse_args(base + argv))
    assert (o.backend, o.vni, o.vxlan_port, o.mtu, o.vxlan_df) == want


@pytest.mark.parametrize(("created_b", "created_c", "kept"), [
    pytest.param("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "b", id="older-node-keeps-the-mac"),
    pytest.param("2026-03-01T00:00:00Z", "2026-02-01T00:00:00Z", "c", id="older-node-keeps-the-mac-reversed"),
    pytest.param("", "", "b", id="no-timestamps-name-order"),
    pytest.param("", "2026-02-01T00:00:00Z", "c", id="a-timestamp-beats-none"),
    pytest.param("garbage", "2026-02-01T00:00:00Z", "c", id="malformed-timestamp-is-none"),
])
def test_vtep_collision_goes_to_the_older_node(created_b, created_c, kept):
    raw = [{"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"podnet.io/vtep-mac": MAC_C}},
            "spec": {"podCIDR": cidr}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
           for name, created, cidr, ip in (("b", created_b, "10.244.1.0/24", "192.168.2.11"),
                                           ("c", created_c, "10.244.2.0/24", "192.168.2.12"))]
    p = overlay.plan(Config("vxlan"), [SELF, *map(overlay.parse_node, raw)], "a", ["10.244.0.0/24"], HOST, VTEPS)
    loser = "c" if kept == "b" else "b"
    assert p.ignored == ((loser, "ipv4", "duplicate-vtep-mac"),)
    assert {x[0] for x in p.backends} == {kept}


OLD, NEW = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


def claimant(name, created, mac, ip, n):
    return node(name, [f"10.244.{n}.0/24"], [f"192.168.2.{10 + n}"], created=created, mac=mac, ip=ip)


@pytest.mark.parametrize(("peers", "holders", "kept", "ignored"), [
    pytest.param([claimant("b", OLD, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {(4, "mac", MAC_C): "c"}, {"c"}, {("b", "ipv4", "duplicate-vtep-mac")},
                 id="holder-keeps-the-mac-against-an-older-node"),
    pytest.param([claimant("b", OLD, MAC_B, "192.168.2.12", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {(4, "ip", "192.168.2.12"): "c"}, {"c"}, {("b", "ipv4", "duplicate-public-ip")},
                 id="holder-keeps-the-address-against-an-older-node"),
    pytest.param([claimant("b", NEW, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {(4, "mac", MAC_C): "c"}, {"c"}, {("b", "ipv4", "duplicate-vtep-mac")},
                 id="same-second-holder-beats-the-name-order"),
    pytest.param([claimant("b", OLD, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {}, {"b"}, {("c", "ipv4", "duplicate-vtep-mac")}, id="fresh-start-the-older-node"),
    pytest.param([claimant("b", NEW, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {}, {"b"}, {("c", "ipv4", "duplicate-vtep-mac")}, id="fresh-start-same-second-the-name"),
    pytest.param([claimant("b", OLD, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {(4, "mac", MAC_C): "gone"}, {"b"}, {("c", "ipv4", "duplicate-vtep-mac")},
                 id="holder-deleted-falls-back-to-age"),
    pytest.param([claimant("b", OLD, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2)],
                 {(4, "mac", MAC_B): "c"}, {"b"}, {("c", "ipv4", "duplicate-vtep-mac")},
                 id="holder-of-another-mac-falls-back-to-age"),
    pytest.param([claimant("c", NEW, MAC_SELF, "192.168.2.12", 2)], {(4, "mac", MAC_SELF): "c"}, set(),
                 {("c", "ipv4", "duplicate-vtep-mac")}, id="this-nodes-own-vtep-beats-any-holder"),
    pytest.param([claimant("b", OLD, MAC_C, "192.168.2.11", 1), claimant("c", NEW, MAC_C, "192.168.2.12", 2),
                  claimant("d", NEW, MAC_D, "192.168.2.12", 3)],
                 {(4, "mac", MAC_C): "c", (4, "ip", "192.168.2.12"): "d"}, {"d"},
                 {("b", "ipv4", "duplicate-vtep-mac"), ("c", "ipv4", "duplicate-public-ip")},
                 id="mac-holder-loses-an-address-another-node-holds"),
])
def test_vtep_collision_keeps_the_current_owner(peers, holders, kept, ignored):
    p = overlay.plan(Config("vxlan"), [SELF, *peers], "a", ["10.244.0.0/24"], HOST, VTEPS, holders)
    assert set(p.ignored) == ignored
    assert {x[0] for x in p.backends} == kept
    assert {name for _, name in p.holders} == kept  # the winners are the holders of the next plan


def test_plan_holders_name_every_claim_kept():
    p = overlay.plan(Config("vxlan"), [SELF, claimant("c", NEW, MAC_C, "192.168.2.12", 2)], "a",
                     ["10.244.0.0/24"], HOST, VTEPS)
    assert p.holders == (((4, "ip", "192.168.2.12"), "c"), ((4, "mac", MAC_C), "c"))


def test_overlay_keeps_the_programmed_owner_until_a_restart():
    cfg, ops = Config("vxlan"), FakeOverlayOps(HOST)
    owner = claimant("c", NEW, MAC_C, "192.168.2.12", 2)
    older_copy = claimant("b", OLD, MAC_C, "192.168.2.11", 1)
    o = overlay.Overlay(cfg, ops)
    o.prepare([SELF, owner], "a", ["10.244.0.0/24"])
    p = o.prepare([SELF, owner, older_copy], "a", ["10.244.0.0/24"])
    assert p.ignored == (("b", "ipv4", "duplicate-vtep-mac"),)
    assert Fdb("podnet.vxlan", MAC_C, "192.168.2.12") in p.fdbs
    restarted = overlay.Overlay(cfg, ops).prepare([SELF, owner, older_copy], "a", ["10.244.0.0/24"])
    assert restarted.ignored == (("c", "ipv4", "duplicate-vtep-mac"),)  # no current owner: the older Node
    assert Fdb("podnet.vxlan", MAC_C, "192.168.2.11") in restarted.fdbs
