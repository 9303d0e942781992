"""The verbs over the fake netops and the in-memory store: rollback, idempotency, GC, reconcile, STATUS."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import skel
from podnet.cni.ipam import Allocator
from podnet.cni.plugin import Plugin, Readiness
from podnet.cni.testing import FakeNetOps, MemoryStore
from podnet.cni.types import CniError


@pytest.fixture
def env():
    pool = ThreadPoolExecutor(2)
    net = FakeNetOps()
    ready = Readiness(forwarding_ok=True, routes_synced=True)
    p = Plugin(Allocator([], MemoryStore()), net, pool, 1400, ready)
    p.set_pod_cidrs(("10.244.1.0/24",))
    yield p, net
    pool.shutdown()


def conf(v="1.1.0", **kw) -> bytes:
    return json.dumps({"cniVersion": v, "name": "podnet", "type": "podnet-cni", **kw}).encode()


async def cni(p, verb, cid="c1", ns="/run/netns/p1", stdin=None, ifname="eth0"):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": ns, "CNI_IFNAME": ifname, "CNI_PATH": "/x"}
    r = await skel.dispatch(env, stdin or conf(), p)
    return r.code, (json.loads(r.stdout) if r.stdout else None)


async def test_add_then_del_leaves_nothing(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    code, res = await cni(p, "ADD")
    assert code == 0 and res["ips"][0]["address"] == "10.244.1.2/32"
    assert res["interfaces"][1]["mtu"] == 1400
    assert (await cni(p, "CHECK", stdin=conf(prevResult=res)))[0] == 0
    assert (await cni(p, "DEL"))[0] == 0
    assert net.links == set() and p.ipam.reservations() == []
    assert (await cni(p, "DEL"))[0] == 0  # second DEL


@pytest.mark.parametrize("ns,code", [("/run/netns/gone", 3), ("/tmp/notns", 4)], ids=["missing", "not-a-netns"])
async def test_add_into_bad_netns_reserves_nothing(env, ns, code):
    p, _ = env
    assert (await cni(p, "ADD", ns=ns))[0] == code
    assert p.ipam.reservations() == []


@pytest.mark.parametrize("ns", ["", "/run/netns/gone", "/tmp/notns"], ids=["empty", "missing", "not-a-netns"])
async def test_del_succeeds_whatever_the_netns(env, ns):
    p, net = env
    net.make_netns("/run/netns/p1")
    await cni(p, "ADD")
    net.netns.pop("/run/netns/p1")
    assert (await cni(p, "DEL", ns=ns))[0] == 0
    assert p.ipam.reservations() == [] and net.links == set()


async def test_failed_plumbing_rolls_back_the_reservation(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    net.fail_add = CniError(999, "netlink said no")
    code, res = await cni(p, "ADD")
    assert (code, res["msg"]) == (999, "netlink said no")
    assert p.ipam.reservations() == []


async def test_duplicate_ifname_is_refused_and_rolled_back(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    assert (await cni(p, "ADD"))[0] == 0
    code, res = await cni(p, "ADD", cid="c2")
    assert code == 4 and "eth0 already exists" in res["msg"]
    assert [r.container_id for r in p.ipam.reservations()] == ["c1"]


async def test_check_fails_when_the_interface_is_gone(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    _, res = await cni(p, "ADD")
    net.netns["/run/netns/p1"].clear()
    code, out = await cni(p, "CHECK", stdin=conf(prevResult=res))
    assert code == 999 and "eth0" in out["msg"]


async def test_gc_releases_everything_not_valid(env):
    p, net = env
    for i in range(4):
        net.make_netns(f"/run/netns/p{i}")
        assert (await cni(p, "ADD", cid=f"c{i}", ns=f"/run/netns/p{i}"))[0] == 0
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    old_key = [{"containerID": "c3", "ifname": "eth0"}]
    env_gc = {"CNI_COMMAND": "GC", "CNI_PATH": "/x"}
    r = await skel.dispatch(env_gc, conf(**{"cni.dev/valid-attachments": valid, "cni.dev/attachments": old_key}), p)
    assert r.code == 0
    assert sorted(x.container_id for x in p.ipam.reservations()) == ["c1", "c3"]
    assert len(net.links) == 2
    r = await skel.dispatch(env_gc, conf(**{"cni.dev/valid-attachments": []}), p)
    assert r.code == 0 and p.ipam.reservations() == [] and net.links == set()


async def test_gc_of_another_network_keeps_ours(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    await cni(p, "ADD")
    other = {"cniVersion": "1.1.0", "name": "other", "cni.dev/valid-attachments": []}
    r = await skel.dispatch({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, json.dumps(other).encode(), p)
    assert r.code == 0 and len(p.ipam.reservations()) == 1


async def test_reconcile_releases_reservations_without_a_veth_and_deletes_orphans(env):
    p, net = env
    for i in range(3):
        net.make_netns(f"/run/netns/p{i}")
        await cni(p, "ADD", cid=f"c{i}", ns=f"/run/netns/p{i}")
    gone_host = next(h for h, (ns, _) in net.pod_of.items() if ns == "/run/netns/p0")
    net.delete_host_link(gone_host)  # the pod's netns vanished with its veth
    orphan = p.ipam.lookup("podnet", "c2", "eth0")[0]
    p.ipam.release("podnet", "c2", "eth0")  # veth left without reservation
    released = await p.reconcile()
    assert released == ["10.244.1.2"]
    assert sorted(r.container_id for r in p.ipam.reservations()) == ["c1"]
    assert len(net.links) == 1 and orphan.ip not in released


STATUS_CASES = [
    ("ready", {}, 0, None),
    ("no-cidr", {"pod_cidrs": ()}, 50, "pod CIDR"),
    ("no-routes", {"routes_synced": False}, 50, "routes"),
    ("no-forwarding", {"forwarding_ok": False}, 51, "forwarding"),
    ("route-sync-failing", {"routes_error": "10.244.2.0/24 via 10.0.0.2: No route to host"}, 51, "No route"),
    ("route-sync-never-worked", {"routes_synced": False, "routes_error": "boom"}, 50, "boom"),
    ("store-broken", {"store_error": CniError(5, "IPAM store /x/ipam.db is corrupt")}, 50, "corrupt"),
]


@pytest.mark.parametrize("change,code,needle", [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES])
async def test_status(env, change, code, needle):
    p, _ = env
    for k, v in change.items():
        setattr(p.ready, k, v)
    rc, out = await cni(p, "STATUS")
    assert rc == code
    if needle:
        assert needle in out["msg"]


async def test_add_before_pod_cidr_is_try_again_and_corrupt_store_is_5(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    p.set_pod_cidrs(())
    assert (await cni(p, "ADD"))[0] == 11
    p.ready.store_error = CniError(5, "IPAM store /x/ipam.db is corrupt")
    for verb in ("ADD", "DEL", "CHECK", "GC"):
        code, out = await cni(p, verb)
        assert code == 5 and "corrupt" in out["msg"], verb


async def test_reconcile_never_takes_an_add_in_flight(env):
    """ADD has reserved but not yet created the veth: a reconcile running now must not release it."""
    p, net = env
    net.make_netns("/run/netns/p1")
    gate, inside = threading.Event(), threading.Event()
    real_add = net.add_pod

    def slow_add(*a):
        inside.set()
        gate.wait(10)
        return real_add(*a)

    net.add_pod = slow_add
    add = asyncio.create_task(cni(p, "ADD"))
    while not inside.is_set():
        await asyncio.sleep(0.01)
    assert len(p.ipam.reservations()) == 1 and net.links == set()
    assert await p.reconcile() == []
    gate.set()
    code, _ = await add
    assert code == 0 and await p.reconcile() == [] and len(p.ipam.reservations()) == 1
    net.links.clear()  # the pod's netns was deleted without a DEL
    assert await p.reconcile() == ["10.244.1.2"]


async def test_repeated_add_without_del_keeps_the_first_adds_address(env):
    p, net = env
    net.make_netns("/run/netns/p1")
    _, first = await cni(p, "ADD")
    code, out = await cni(p, "ADD")  # the runtime should not, but may (e.g. after a timeout)
    assert code == 4 and "already exists" in out["msg"]
    assert [r.ip for r in p.ipam.reservations()] == [first["ips"][0]["address"].split("/")[0]]
