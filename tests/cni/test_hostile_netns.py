"""Hostile and unlucky invocations against the installed plugin + daemon in real network namespaces.

Every case ends with the same invariant: what the IPAM store records for an
attachment is exactly what the kernel has (pod addresses, node-side veth, host routes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import netops

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def pod_addrs(ns, ifname="eth0") -> set[str]:
    """Global addresses on ``ifname`` in ``ns`` (empty when the interface does not exist)."""
    out = ns.ip("-j", "addr", "show", "dev", ifname, check=False).strip()
    if not out:
        return set()
    links = json.loads(out)
    return {a["local"] for link in links for a in link["addr_info"] if a.get("scope") == "global"}


def assert_in_step(node, pod, cid, ifname="eth0"):
    """IPAM records of (cid, ifname) == addresses on the pod interface == host routes; veth iff records."""
    recorded = {ip for ip, c, i in node.reservations() if (c, i) == (cid, ifname)}
    host = netops.host_ifname(cid, ifname)
    routed = {line.split()[0].split("/")[0] for line in node.pod_host_routes() if f" dev {host} " in line}
    assert pod_addrs(pod, ifname) == recorded == routed
    assert (host in node.host_veths()) == bool(recorded)


def test_concurrent_add_and_del_of_one_attachment_keep_ipam_and_kernel_in_step(make_node, pool):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"))
    pod = pool.netns("p")
    ops = ["ADD", "DEL"] * 80
    codes: dict[str, list[int]] = {"ADD": [], "DEL": []}
    with ThreadPoolExecutor(8) as ex:
        for rnd in range(0, len(ops), 8):
            batch = ops[rnd:rnd + 8]
            for verb, (code, out) in zip(batch, ex.map(lambda v: node.cni(v, "racer", pod.path), batch)):
                codes[verb].append(code)
            assert_in_step(node, pod, "racer")
    assert set(codes["DEL"]) == {0}, codes["DEL"]
    assert set(codes["ADD"]) == {0}, codes["ADD"]  # a repeated ADD rebuilds the attachment
    assert node.cni("DEL", "racer", pod.path) == (0, None)
    assert_in_step(node, pod, "racer")
    assert node.reservations() == [] and node.host_veths() == []


def test_concurrent_add_and_del_of_many_attachments_keep_each_in_step(make_node, pool):
    """The lock is per attachment: other attachments' ADDs and DELs run alongside and stay consistent."""
    node = make_node(("10.244.1.0/24",))
    pods = [pool.netns("p") for _ in range(4)]
    ops = [(verb, i) for _ in range(6) for i in range(4) for verb in ("ADD", "DEL")]
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda op: node.cni(op[0], f"r{op[1]}", pods[op[1]].path)[0], ops))
    assert set(codes) == {0}, codes
    for i, pod in enumerate(pods):
        assert_in_step(node, pod, f"r{i}")
    ips = [ip for ip, _, _ in node.reservations()]
    assert len(ips) == len(set(ips))


def own_netns(node, case: str) -> tuple[str, str]:
    """(CNI_NETNS, what the error must say) for each way of pointing at a namespace that is not a pod's."""
    if case == "host-initial-via-test-process":
        me = f"/proc/{os.getpid()}/ns/net"
        if os.stat(me).st_ino != netops.NET_NS_INIT_INO:
            pytest.skip("the tests do not run in the host's initial netns (or the kernel predates 6.18)")
        return me, "host's initial"
    return {
        "proc-self": ("/proc/self/ns/net", "daemon's own"),
        "daemon-pid": (f"/proc/{node.proc.pid}/ns/net", "daemon's own"),
        "node-bind-mount": (node.ns.path, "daemon's own"),
        "proc-1": ("/proc/1/ns/net", "/proc/1/ns/net"),  # refused as the host's, or unreadable: both code 4
    }[case]


@pytest.mark.parametrize("case", ["proc-self", "daemon-pid", "node-bind-mount", "proc-1",
                                  "host-initial-via-test-process"])
@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
def test_netns_of_the_node_itself_is_refused(make_node, pool, case, verb):
    node = make_node()
    path, what = own_netns(node, case)
    node_links = set(link_names(node.ns))
    assert "pntown0" not in link_names(None)
    code, out = node.cni(verb, "own", path, ifname="pntown0")
    assert code == 4 and "CNI_NETNS" in out["msg"] and what in out["msg"], out
    assert node.reservations() == [] and node.host_veths() == []
    assert set(link_names(node.ns)) == node_links and "pntown0" not in link_names(None)
    pod = pool.netns("p")  # a real pod netns still works
    assert node.cni("ADD", "own", pod.path, ifname="pntown0")[0] == 0
    assert_in_step(node, pod, "own", "pntown0")


def link_names(ns) -> list[str]:
    """Link names in ``ns`` (None: the machine's namespace, read only)."""
    out = ns.ip("-o", "link", "show") if ns else subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@pytest.mark.parametrize("env,needle", [
    pytest.param({"CNI_CONTAINERID": "c1\n"}, "CNI_CONTAINERID", id="containerid-trailing-newline"),
    pytest.param({"CNI_IFNAME": "eth0\n"}, "CNI_IFNAME", id="ifname-trailing-newline"),
    pytest.param({"CNI_IFNAME": "eth\u00e0"}, "CNI_IFNAME", id="ifname-kernel-space-byte"),
    pytest.param({"CNI_NETNS": "run/netns/x"}, "CNI_NETNS", id="netns-relative"),
])
def test_hostile_env_through_the_installed_plugin(make_node, pool, env, needle):
    node = make_node()
    pod = pool.netns("p")
    code, out = node.cni("ADD", netns=pod.path, env=env)
    assert code == 4 and needle in out["msg"], out
    assert node.reservations() == [] and node.host_veths() == [] and pod_addrs(pod) == set()


def crash_leftover_with_reservation(node, pod):
    """The daemon dies after the veth was created, before the pod end got its addresses."""
    code, first = node.cni("ADD", "crash", pod.path)
    assert code == 0, first
    node.stop(signal.SIGKILL)
    pod.ip("addr", "flush", "dev", "eth0")
    node.start()  # the start-up reconcile keeps it: the reservation has its veth
    return {ip["address"] for ip in first["ips"]}


def crash_leftover_without_reservation(node, pod):
    """A veth pair of this attachment that the IPAM store knows nothing about."""
    host = netops.host_ifname("crash", "eth0")
    node.ns.ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod.name)
    return None


@pytest.mark.parametrize("leftover", [crash_leftover_with_reservation, crash_leftover_without_reservation],
                         ids=["with-reservation", "without-reservation"])
def test_add_retried_after_a_crash_cleans_up_and_succeeds(make_node, pool, leftover):
    node = make_node(("10.244.1.0/24", "fd00:1::/64"))
    pod = pool.netns("p")
    want = leftover(node, pod)
    assert "eth0" in pod.ip("link")
    code, res = node.cni("ADD", "crash", pod.path)
    assert code == 0, res
    if want is not None:  # the attachment keeps the addresses it held
        assert {ip["address"] for ip in res["ips"]} == want
    assert_in_step(node, pod, "crash")
    assert node.cni("CHECK", "crash", pod.path, prevResult=res) == (0, None)
    assert node.cni("DEL", "crash", pod.path) == (0, None)
    assert_in_step(node, pod, "crash")
    assert "eth0" not in pod.ip("link")


def test_add_retried_without_del_after_kill_9_mid_burst(make_node, pool):
    node = make_node(("10.244.0.0/22",))
    pods = [pool.netns("k") for _ in range(24)]

    def add(i):
        return node.cni("ADD", f"k{i}", pods[i].path)

    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(add, i) for i in range(24)]
        futs[2].result()  # the burst is under way
        node.stop(signal.SIGKILL)
        first = [f.result()[0] for f in futs]
    assert set(first) <= {0, 11}, first
    node.start()
    for i in range(24):  # every ADD again, as a runtime retries, without a DEL in between
        code, res = add(i)
        assert code == 0, (i, first[i], res)
    for i in range(24):
        assert_in_step(node, pods[i], f"k{i}")
    ips = [ip for ip, _, _ in node.reservations()]
    assert len(ips) == len(set(ips)) == 24


def test_interface_of_another_attachment_is_not_taken_over(make_node, pool):
    node = make_node()
    pod = pool.netns("p")
    assert node.cni("ADD", "first", pod.path)[0] == 0
    code, out = node.cni("ADD", "second", pod.path)
    assert code == 4 and "eth0 already exists" in out["msg"]
    assert_in_step(node, pod, "first")
    assert [cid for _, cid, _ in node.reservations()] == ["first"]
    assert node.host_veths() == [netops.host_ifname("first", "eth0")]


NOT_NETNS_FILES = [
    pytest.param(lambda d: os.mkfifo(d / "fifo") or d / "fifo", id="fifo"),  # opening it would block the daemon
    pytest.param(lambda d: d, id="directory"),
    pytest.param(lambda d: "/dev/null", id="character-device"),
    pytest.param(lambda d: "/proc/self/ns/uts", id="other-namespace-type"),
    pytest.param(lambda d: (d / "link").symlink_to("/proc/self/ns/net") or d / "link", id="symlink-to-own-netns"),
]


@pytest.mark.parametrize("make", NOT_NETNS_FILES)
def test_netns_paths_that_are_not_a_pods_netns_are_refused_without_blocking(make_node, pool, tmp_path, make):
    node = make_node()
    path = str(make(tmp_path))
    code, out = node.cni("ADD", "x", path)
    assert code == 4 and "CNI_NETNS" in out["msg"], out
    assert node.reservations() == [] and node.host_veths() == []
    pod = pool.netns("p")
    assert node.cni("ADD", "x", pod.path)[0] == 0  # the daemon is still serving
