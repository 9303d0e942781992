"""Requested IPs and MAC (runtimeConfig ips/mac capabilities, args.cni, CNI_ARGS IP=/MAC=) over the fake netops."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import requested, skel
from podnet.cni.ipam import Allocator
from podnet.cni.plugin import Plugin, Readiness
from podnet.cni.testing import FakeNetOps, MemoryStore
from podnet.cni.types import CniError

NS = "/run/netns/p1"


@pytest.fixture
def env():
    pool = ThreadPoolExecutor(2)
    net = FakeNetOps()
    for i in range(1, 4):
        net.make_netns(f"/run/netns/p{i}")
    p = Plugin(Allocator([], MemoryStore()), net, pool, 1500, Readiness(forwarding_ok=True, routes_synced=True))
    p.set_pod_cidrs(("10.244.1.0/24", "fd00:1::/64"))
    yield p, net
    pool.shutdown()


async def add(p, cid="c1", ns=NS, cni_args="", **conf):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": ns, "CNI_IFNAME": "eth0", "CNI_PATH": "/x",
           "CNI_ARGS": cni_args}
    stdin = json.dumps({"cniVersion": "1.1.0", "name": "podnet", "type": "podnet-cni", **conf}).encode()
    r = await skel.dispatch(env, stdin, p)
    return r.code, json.loads(r.stdout)


def ips_of(res) -> list[str]:
    return [ip["address"] for ip in res["ips"]]


GRANTED = [
    ("runtimeConfig-v4", {"runtimeConfig": {"ips": ["10.244.1.77/24"]}}, "",
     ["10.244.1.77/32", "fd00:1::2/128"]),
    ("runtimeConfig-dual", {"runtimeConfig": {"ips": ["10.244.1.77", "fd00:1::77/64"]}}, "",
     ["10.244.1.77/32", "fd00:1::77/128"]),
    ("runtimeConfig-v6-only", {"runtimeConfig": {"ips": ["fd00:1::abcd"]}}, "",
     ["10.244.1.2/32", "fd00:1::abcd/128"]),
    ("args-cni-ips", {"args": {"cni": {"ips": ["10.244.1.78"]}}}, "", ["10.244.1.78/32", "fd00:1::2/128"]),
    ("cni-args-ip-podman", {}, "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.244.1.79", ["10.244.1.79/32", "fd00:1::2/128"]),
    ("cni-args-ip-list", {}, "IP=10.244.1.80,fd00:1::80", ["10.244.1.80/32", "fd00:1::80/128"]),
    ("runtimeConfig-wins-over-cni-args", {"runtimeConfig": {"ips": ["10.244.1.81"]}}, "IP=10.244.1.82",
     ["10.244.1.81/32", "fd00:1::2/128"]),
    ("last-address-of-range", {"runtimeConfig": {"ips": ["10.244.1.254"]}}, "", ["10.244.1.254/32", "fd00:1::2/128"]),
]


@pytest.mark.parametrize("conf,cni_args,want", [c[1:] for c in GRANTED], ids=[c[0] for c in GRANTED])
async def test_requested_ips_are_granted_exactly(env, conf, cni_args, want):
    p, _ = env
    code, res = await add(p, cni_args=cni_args, **conf)
    assert code == 0, res
    assert ips_of(res) == want
    assert sorted(r.ip for r in p.ipam.reservations()) == sorted(w.split("/")[0] for w in want)


REFUSED = [
    ("outside-range-runtimeConfig", {"runtimeConfig": {"ips": ["10.9.9.9"]}}, "", 7, "outside this node's pod CIDRs"),
    ("outside-range-cni-args", {}, "IP=10.9.9.9", 4, "CNI_ARGS IP"),
    ("gateway", {"runtimeConfig": {"ips": ["10.244.1.1"]}}, "", 7, "reserved in pod CIDR 10.244.1.0/24"),
    ("network-address", {}, "IP=10.244.1.0", 4, "reserved"),
    ("broadcast", {"args": {"cni": {"ips": ["10.244.1.255"]}}}, "", 7, "args.cni.ips"),
    ("not-an-ip", {}, "IP=banana", 4, "'banana' is not an IP address"),
    ("not-a-list", {"runtimeConfig": {"ips": "10.244.1.5"}}, "", 7, "want a list"),
    ("two-in-one-range", {"runtimeConfig": {"ips": ["10.244.1.5", "10.244.1.6"]}}, "", 7, "second address"),
    ("listed-twice", {}, "IP=10.244.1.5,10.244.1.5", 4, "listed twice"),
    ("taken", {"runtimeConfig": {"ips": ["10.244.1.2"]}}, "", 11, "in use by held/eth0"),
    ("bad-mac", {"runtimeConfig": {"mac": "zz:00:00:00:00:01"}}, "", 7, "not a MAC address"),
    ("multicast-mac", {}, "MAC=01:00:5e:00:00:01", 4, "not a unicast MAC"),
]


@pytest.mark.parametrize("conf,cni_args,code,needle", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_unmeetable_requests_get_the_sources_code_and_reserve_nothing(env, conf, cni_args, code, needle):
    p, net = env
    assert (await add(p, "held", "/run/netns/p2"))[0] == 0  # holds 10.244.1.2 and fd00:1::2
    before = sorted(r.ip for r in p.ipam.reservations())
    got, err = await add(p, cni_args=cni_args, **conf)
    assert (got, err["code"]) == (code, code), err
    assert needle in err["msg"], err
    assert sorted(r.ip for r in p.ipam.reservations()) == before
    assert "eth0" not in net.netns[NS]


async def test_failed_plumbing_releases_the_requested_ip(env):
    p, net = env
    net.fail_add = CniError(999, "boom")
    assert (await add(p, runtimeConfig={"ips": ["10.244.1.50"]}))[0] == 999
    assert p.ipam.reservations() == []
    net.fail_add = None
    code, res = await add(p, runtimeConfig={"ips": ["10.244.1.50"]})
    assert code == 0 and ips_of(res)[0] == "10.244.1.50/32"


async def test_released_static_ip_can_be_requested_again_and_does_not_move_the_cursor(env):
    p, _ = env
    assert ips_of((await add(p, "a", cni_args="IP=10.244.1.3"))[1])[0] == "10.244.1.3/32"
    assert ips_of((await add(p, "b", "/run/netns/p2"))[1])[0] == "10.244.1.2/32"
    assert ips_of((await add(p, "c", "/run/netns/p3"))[1])[0] == "10.244.1.4/32"  # .3 is skipped, not reused


async def test_repeated_add_must_ask_for_what_it_holds(env):
    p, _ = env
    _, first = await add(p, cni_args="IP=10.244.1.9")
    p.net.netns[NS].discard("eth0")  # as if the runtime re-ADDs without DEL into a fresh netns
    code, err = await add(p, cni_args="IP=10.244.1.10")
    assert code == 4 and "already holds" in err["msg"]


MACS = [
    ("runtimeConfig", {"runtimeConfig": {"mac": "02:00:00:00:77:50"}}, "", "02:00:00:00:77:50"),
    ("cni-args-upper", {}, "IgnoreUnknown=1;MAC=02:AB:00:00:77:51", "02:ab:00:00:77:51"),
    ("args-cni", {"args": {"cni": {"mac": "02:00:00:00:77:52"}}}, "", "02:00:00:00:77:52"),
]


@pytest.mark.parametrize("conf,cni_args,want", [c[1:] for c in MACS], ids=[c[0] for c in MACS])
async def test_requested_mac_is_used_for_the_pod_end(env, conf, cni_args, want):
    p, _ = env
    code, res = await add(p, cni_args=cni_args, **conf)
    assert code == 0, res
    assert res["interfaces"][1]["name"] == "eth0" and res["interfaces"][1]["mac"] == want


def test_from_request_reads_nothing_when_nothing_is_asked():
    assert requested.from_request({"name": "podnet"}, {"IgnoreUnknown": "1"}) == requested.Requested()
