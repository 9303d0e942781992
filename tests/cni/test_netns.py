"""The installed plugin binary + daemon in real network namespaces, driven exactly as a runtime drives it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import version

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def addrs(ns, ifname="eth0") -> set[str]:
    out = json.loads(ns.ip("-j", "addr", "show", "dev", ifname))
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a.get("scope") == "global"}


@pytest.mark.parametrize("v", version.SUPPORTED)
def test_every_verb_at_every_version(make_node, pool, v):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"))
    pod = pool.netns("p")
    code, res = node.cni("ADD", netns=pod.path, version=v)
    assert code == 0, res
    assert res["cniVersion"] == v
    eth0 = [i for i in res["interfaces"] if i["name"] == "eth0"]
    assert eth0 and eth0[0]["sandbox"] == pod.path
    assert all(res["interfaces"][ip["interface"]]["name"] == "eth0" for ip in res["ips"])
    assert addrs(pod) == {ip["address"] for ip in res["ips"]} == {"10.244.1.2/32", "fd00:1::2/128"}
    if v >= "0.4.0":
        assert node.cni("CHECK", netns=pod.path, version=v, prevResult=res) == (0, None)
    if v == "1.1.0":
        assert node.cni("STATUS", version=v) == (0, None)
    assert node.cni("DEL", netns=pod.path, version=v, prevResult=res) == (0, None)
    assert node.cni("DEL", netns=pod.path, version=v) == (0, None)
    assert node.host_veths() == [] and node.pod_host_routes() == [] and node.reservations() == []
    assert "eth0" not in pod.ip("link")
    assert node.cni("VERSION", stdin=b"") == (0, {"cniVersion": "1.1.0", "supportedVersions": list(version.SUPPORTED)})


def test_check_detects_a_removed_route(make_node, pool):
    node = make_node()
    pod = pool.netns("p")
    _, res = node.cni("ADD", netns=pod.path)
    pod.ip("route", "del", "default")
    code, out = node.cni("CHECK", netns=pod.path, prevResult=res)
    assert code == 999 and "default route" in out["msg"]


def test_edge_cases_get_spec_codes_and_leave_nothing_behind(make_node, pool, tmp_path):
    node = make_node()
    pod = pool.netns("p")
    notns = tmp_path / "not-a-netns"
    notns.write_text("")
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    cases = [
        ("ifname-exists", dict(netns=pod.path), 4, "eth0 already exists"),
        ("netns-missing", dict(netns="/var/run/netns/pnt-cni-nonexistent"), 3, "does not exist"),
        ("netns-not-a-netns", dict(netns=str(notns)), 4, "not a network namespace"),
        ("malformed-json", dict(netns=pod.path, stdin=b'{"cniVersion":'), 6, "decode"),
        ("unknown-version", dict(netns=pod.path, version="0.9.9"), 1, "0.9.9"),
        ("missing-ifname", dict(netns=pod.path, env={"CNI_IFNAME": None}), 4, "CNI_IFNAME"),
        ("missing-containerid", dict(netns=pod.path, env={"CNI_CONTAINERID": None}), 4, "CNI_CONTAINERID"),
        ("unknown-arg", dict(netns=pod.path, env={"CNI_ARGS": "FOO=1"}), 2, "FOO"),
    ]
    for name, kw, code, needle in cases:
        got, out = node.cni("ADD", **kw)
        assert (got, out["code"]) == (code, code), name
        assert needle in out["msg"], (name, out)
        assert node.reservations() == [] and node.host_veths() == [], name
    for netns in ("", "/var/run/netns/pnt-cni-nonexistent", str(notns)):
        assert node.cni("DEL", netns=netns) == (0, None), netns


def test_exhausted_range(make_node, pool):
    node = make_node(("10.9.0.0/30",))  # exactly one pod address: .2
    p1, p2 = pool.netns("p"), pool.netns("p")
    assert node.cni("ADD", "c1", p1.path)[0] == 0
    code, out = node.cni("ADD", "c2", p2.path)
    assert code == 999 and "no free address" in out["msg"]
    assert len(node.host_veths()) == 1 and "eth0" not in p2.ip("link")
    assert node.cni("DEL", "c1", p1.path)[0] == 0
    assert node.cni("ADD", "c2", p2.path)[0] == 0


def test_corrupt_store_reports_5_and_status_50(make_node, pool):
    node = make_node(start=False)
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "ipam.db").write_bytes(b"garbage" * 1000)
    node.start()
    pod = pool.netns("p")
    code, out = node.cni("ADD", netns=pod.path)
    assert code == 5 and "ipam.db" in out["msg"] and "eth0" not in pod.ip("link")
    code, out = node.cni("STATUS", version="1.1.0")
    assert code == 50 and "corrupt" in out["msg"]
    assert (node.data_dir / "ipam.db").read_bytes() == b"garbage" * 1000


def test_no_daemon_means_try_again_later(make_node, pool):
    node = make_node(start=False)
    pod = pool.netns("p")
    code, out = node.cni("ADD", netns=pod.path)
    assert code == 11 and node.sock in out["msg"]
    assert node.cni("STATUS", version="1.1.0")[0] == 50
    assert node.cni("VERSION", stdin=b"")[0] == 0


def test_100_concurrent_adds_get_distinct_addresses_and_dels_clean_up(make_node, pool):
    node = make_node(("10.244.0.0/22",))
    pods = [pool.netns("c") for _ in range(100)]
    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(lambda i: node.cni("ADD", f"c{i}", pods[i].path), range(100)))
    assert [c for c, _ in results] == [0] * 100, [r for r in results if r[0]][:3]
    ips = [r["ips"][0]["address"] for _, r in results]
    assert len(set(ips)) == 100
    assert len(node.reservations()) == 100 and len(node.host_veths()) == 100
    with ThreadPoolExecutor(16) as ex:
        dels = list(ex.map(lambda i: node.cni("DEL", f"c{i}", pods[i].path), range(100)))
    assert [c for c, _ in dels] == [0] * 100
    assert node.reservations() == [] and node.host_veths() == [] and node.pod_host_routes() == []


def test_kill_9_during_adds_then_restart_and_gc(make_node, pool):
    node = make_node(("10.244.0.0/22",))
    pods = [pool.netns("k") for _ in range(40)]

    def add(i):
        return node.cni("ADD", f"k{i}", pods[i].path)

    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(add, i) for i in range(40)]
        futs[2].result()  # the burst is under way
        node.stop(signal.SIGKILL)
        results = [f.result() for f in futs]
    ok = {f"k{i}": r for i, (c, r) in enumerate(results) if c == 0}
    failed = [c for c, _ in results if c != 0]
    assert 1 <= len(ok) <= 3 + 8  # the third ADD and at most the 8 then in flight finished
    assert set(failed) == {11}, failed  # unreachable or cut off: try again later
    node.start()
    valid = [{"containerID": cid, "ifname": "eth0"} for cid in ok]
    assert node.cni("GC", version="1.1.0", env={"CNI_CONTAINERID": None},
                    **{"cni.dev/valid-attachments": valid}) == (0, None)
    held = node.reservations()
    assert sorted(cid for _, cid, _ in held) == sorted(ok)
    assert sorted(ip for ip, _, _ in held) == sorted(r["ips"][0]["address"].split("/")[0] for r in ok.values())
    assert len(node.host_veths()) == len(ok)
    # retried ADDs of the cut-off pods succeed with fresh, distinct addresses
    retry = [i for i in range(40) if f"k{i}" not in ok]
    for i in retry:
        node.cni("DEL", f"k{i}", pods[i].path)
        code, r = add(i)
        assert code == 0, r
    ips = [ip for ip, _, _ in node.reservations()]
    assert len(ips) == len(set(ips)) == 40


def test_same_node_pods_talk_without_nat(make_node, pool, tcp_peer_seen):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"))
    a, b = pool.netns("pa"), pool.netns("pb")
    _, ra = node.cni("ADD", "a", a.path)
    _, rb = node.cni("ADD", "b", b.path)
    a4, a6 = (ip["address"].split("/")[0] for ip in ra["ips"])
    b4, b6 = (ip["address"].split("/")[0] for ip in rb["ips"])
    assert tcp_peer_seen(b, b4, a) == a4
    assert tcp_peer_seen(b, b6, a) == a6
    assert tcp_peer_seen(a, a4, a) == a4  # a pod reaches itself by its own IP


def test_pod_netns_deleted_without_del_is_reclaimed(make_node, pool):
    node = make_node(extra=["--reconcile-interval", "0.3"])
    pod = pool.netns("p")
    assert node.cni("ADD", "gone", pod.path)[0] == 0
    keep = pool.netns("p")
    assert node.cni("ADD", "kept", keep.path)[0] == 0
    pod.ip("link", "del", "eth0")  # what deleting the netns does to the veth
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(node.reservations()) != 1:
        time.sleep(0.1)
    assert [cid for _, cid, _ in node.reservations()] == ["kept"]
    assert len(node.host_veths()) == 1


def test_del_after_a_refused_add_leaves_the_existing_interface(make_node, pool):
    node = make_node()
    pod = pool.netns("p")
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    assert node.cni("ADD", netns=pod.path)[0] == 4
    assert node.cni("DEL", netns=pod.path)[0] == 0  # runtimes DEL after a failed ADD
    assert "eth0" in pod.ip("link")


def test_mtu_and_forwarding_sysctls(make_node, pool):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"), ["--mtu", "1400", "--route-interval", "0.2"])
    pod = pool.netns("p")
    code, res = node.cni("ADD", netns=pod.path, version="1.1.0")
    assert code == 0 and res["interfaces"][1]["mtu"] == 1400
    assert "mtu 1400" in pod.ip("link", "show", "eth0")
    assert "mtu 1400" in node.ns.ip("link", "show", res["interfaces"][0]["name"])
    assert node.ns.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    assert node.ns.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"
    node.ns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")  # someone turns it off: it comes back
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and node.ns.run("sysctl", "-n", "net.ipv4.ip_forward").strip() != "1":
        time.sleep(0.1)
    assert node.ns.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    assert node.cni("STATUS", version="1.1.0")[0] == 0


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_compiled_shim_end_to_end(make_node, pool):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"), form="c")
    pod = pool.netns("p")
    code, res = node.cni("ADD", netns=pod.path, version="0.4.0")
    assert code == 0 and [ip["version"] for ip in res["ips"]] == ["4", "6"]
    assert node.cni("CHECK", netns=pod.path, version="0.4.0", prevResult=res) == (0, None)
    assert node.cni("ADD", netns=pod.path, version="0.4.0") == (0, res)  # repeated: rebuilt, same result
    assert node.cni("DEL", netns=pod.path) == (0, None)
    assert node.reservations() == [] and node.host_veths() == []


REQUESTS = [
    ("cni-args-podman", {"env": {"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:77:50;IP=10.244.1.50"}},
     "10.244.1.50/32", "02:00:00:00:77:50"),
    ("runtimeConfig-capabilities", {"runtimeConfig": {"ips": ["10.244.1.51/24", "fd00:1::51/64"],
                                                      "mac": "02:00:00:00:77:51"}},
     "10.244.1.51/32", "02:00:00:00:77:51"),
]


@pytest.mark.parametrize("kw,want_ip,want_mac", [c[1:] for c in REQUESTS], ids=[c[0] for c in REQUESTS])
def test_requested_ip_and_mac_in_a_real_netns(make_node, pool, kw, want_ip, want_mac):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"))
    pod = pool.netns("p")
    code, res = node.cni("ADD", netns=pod.path, **kw)
    assert code == 0, res
    assert res["ips"][0]["address"] == want_ip and res["interfaces"][1]["mac"] == want_mac
    assert want_ip in addrs(pod)
    assert f"link/ether {want_mac} " in pod.ip("link", "show", "eth0")
    # taken: a second pod asking for the same address gets 11 and nothing is left behind
    other = pool.netns("p")
    code, err = node.cni("ADD", "c2", other.path, **kw)
    assert code == 11 and "in use by c1/eth0" in err["msg"]
    assert "eth0" not in other.ip("link") and len(node.host_veths()) == 1 and len(node.reservations()) == 2
    assert node.cni("DEL", netns=pod.path) == (0, None)
    assert node.cni("ADD", "c2", other.path, **kw)[0] == 0  # free again once released
