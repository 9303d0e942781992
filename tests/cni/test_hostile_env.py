"""Hostile values from the runtime, in-process: CNI_* validation, per-attachment serialisation, shim error codes."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import shim, skel
from podnet.cni.ipam import Allocator
from podnet.cni.keyed_lock import KeyedLock
from podnet.cni.plugin import Plugin, Readiness
from podnet.cni.testing import FakeNetOps, MemoryStore
from podnet.cni.types import CniError

BASE_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin"}
CONF = json.dumps({"cniVersion": "1.0.0", "name": "podnet", "type": "podnet-cni"}).encode()


class Seen:
    """A skel.Handler that only records which requests reached it."""

    def __init__(self) -> None:
        self.seen: list[skel.Request] = []

    async def add(self, req):
        self.seen.append(req)
        return {"cniVersion": "1.0.0", "interfaces": [], "ips": [], "routes": [], "dns": {}}

    async def _go(self, req):
        self.seen.append(req)

    delete = check = status = gc = _go


GOOD = [
    ("containerid-one-char", {"CNI_CONTAINERID": "a"}),
    ("containerid-all-classes", {"CNI_CONTAINERID": "0Az_.-9"}),
    ("containerid-64-hex", {"CNI_CONTAINERID": "f" * 64}),
    ("ifname-15-bytes", {"CNI_IFNAME": "x" * 15}),
    ("ifname-vlan-style", {"CNI_IFNAME": "net1.100"}),
    ("ifname-utf8-14-bytes", {"CNI_IFNAME": "\u00e9" * 7}),
    ("ifname-dots-inside", {"CNI_IFNAME": "..."}),
    ("netns-proc-path", {"CNI_NETNS": "/proc/4242/ns/net"}),
]

BAD = [
    ("containerid-trailing-newline", {"CNI_CONTAINERID": "c1\n"}, "CNI_CONTAINERID"),
    ("containerid-leading-newline", {"CNI_CONTAINERID": "\nc1"}, "CNI_CONTAINERID"),
    ("containerid-inner-newline", {"CNI_CONTAINERID": "c1\nc2"}, "CNI_CONTAINERID"),
    ("containerid-leading-dash", {"CNI_CONTAINERID": "-c1"}, "CNI_CONTAINERID"),
    ("containerid-leading-dot", {"CNI_CONTAINERID": ".c1"}, "CNI_CONTAINERID"),
    ("containerid-leading-underscore", {"CNI_CONTAINERID": "_c1"}, "CNI_CONTAINERID"),
    ("containerid-slash", {"CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
    ("containerid-space", {"CNI_CONTAINERID": "a b"}, "CNI_CONTAINERID"),
    ("containerid-non-ascii-letter", {"CNI_CONTAINERID": "\u00e9t\u00e9"}, "CNI_CONTAINERID"),
    ("containerid-fullwidth-digit", {"CNI_CONTAINERID": "\uff11abc"}, "CNI_CONTAINERID"),
    ("ifname-16-bytes", {"CNI_IFNAME": "x" * 16}, "at most 15"),
    ("ifname-16-bytes-of-utf8", {"CNI_IFNAME": "\u00e9" * 8}, "at most 15"),
    ("ifname-dot", {"CNI_IFNAME": "."}, "'.' and '..'"),
    ("ifname-dotdot", {"CNI_IFNAME": ".."}, "'.' and '..'"),
    ("ifname-slash", {"CNI_IFNAME": "a/b"}, "'/' and ':'"),
    ("ifname-colon", {"CNI_IFNAME": "eth0:1"}, "'/' and ':'"),
    ("ifname-space", {"CNI_IFNAME": "eth 0"}, "whitespace"),
    ("ifname-trailing-newline", {"CNI_IFNAME": "eth0\n"}, "whitespace"),
    ("ifname-tab", {"CNI_IFNAME": "\teth0"}, "whitespace"),
    ("ifname-vertical-tab", {"CNI_IFNAME": "eth\v0"}, "whitespace"),
    ("ifname-nbsp", {"CNI_IFNAME": "eth\u00a00"}, "whitespace"),
    ("ifname-line-separator", {"CNI_IFNAME": "eth\u20280"}, "whitespace"),
    ("ifname-byte-a0-inside-utf8", {"CNI_IFNAME": "eth\u00e0"}, "whitespace"),  # U+00E0 is C3 A0
    ("ifname-control-byte", {"CNI_IFNAME": "eth\x01"}, "control"),
    ("ifname-escape", {"CNI_IFNAME": "eth\x1b[0m"}, "control"),
    ("ifname-delete", {"CNI_IFNAME": "eth\x7f"}, "control"),
    ("ifname-undecodable-byte", {"CNI_IFNAME": "eth\udcff"}, "not UTF-8"),
    ("netns-relative", {"CNI_NETNS": "run/netns/x"}, "CNI_NETNS"),
    ("netns-dot-relative", {"CNI_NETNS": "./x"}, "CNI_NETNS"),
    ("netns-tilde", {"CNI_NETNS": "~/x"}, "CNI_NETNS"),
]


@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
@pytest.mark.parametrize("env", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
async def test_valid_values_reach_the_handler(env, verb):
    h = Seen()
    resp = await skel.dispatch({**BASE_ENV, "CNI_COMMAND": verb, **env}, CONF, h)
    assert resp.code == 0 and len(h.seen) == 1
    req = h.seen[0]
    assert (req.container_id, req.ifname, req.netns) == (
        env.get("CNI_CONTAINERID", "c1"), env.get("CNI_IFNAME", "eth0"), env.get("CNI_NETNS", "/var/run/netns/x"))


@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
@pytest.mark.parametrize("env,needle", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_hostile_values_get_code_4_and_reach_nothing(env, needle, verb):
    h = Seen()
    resp = await skel.dispatch({**BASE_ENV, "CNI_COMMAND": verb, **env}, CONF, h)
    out = json.loads(resp.stdout)
    assert resp.code == out["code"] == 4 and needle in out["msg"], out
    assert h.seen == []


@pytest.mark.parametrize("env,code", [
    pytest.param({"CNI_CONTAINERID": "c1\n"}, 4, id="containerid-trailing-newline"),
    pytest.param({"CNI_IFNAME": "eth0\n"}, 4, id="ifname-trailing-newline"),
    pytest.param({"CNI_NETNS": "run/netns/x"}, 0, id="netns-relative-is-never-opened"),
    pytest.param({"CNI_NETNS": ""}, 0, id="netns-empty"),
])
async def test_del_validates_the_attachment_but_not_the_netns(env, code):
    h = Seen()
    resp = await skel.dispatch({**BASE_ENV, "CNI_COMMAND": "DEL", **env}, CONF, h)
    assert resp.code == code and len(h.seen) == (code == 0)


async def test_keyed_lock_serialises_one_key_in_arrival_order_and_forgets_idle_keys():
    locks, order = KeyedLock(), []

    async def hold(key, tag, pause):
        async with locks.hold(key):
            order.append(("in", tag))
            await asyncio.sleep(pause)
            order.append(("out", tag))

    await asyncio.gather(hold("a", 1, 0.02), hold("a", 2, 0), hold("b", 3, 0), hold("a", 4, 0))
    a_events = [e for e in order if e[1] != 3]
    assert a_events == [("in", 1), ("out", 1), ("in", 2), ("out", 2), ("in", 4), ("out", 4)]
    assert order.index(("in", 3)) < order.index(("out", 1))  # another key does not wait
    assert len(locks) == 0


@pytest.fixture
def gated():
    """A Plugin over the fake netops whose add_pod blocks until released."""
    pool = ThreadPoolExecutor(4)
    net = FakeNetOps()
    p = Plugin(Allocator([], MemoryStore()), net, pool, 1500, Readiness(forwarding_ok=True, routes_synced=True))
    p.set_pod_cidrs(("10.244.1.0/24",))
    gate, inside = threading.Event(), threading.Event()
    real_add = net.add_pod

    def slow_add(*a):
        inside.set()
        gate.wait(10)
        return real_add(*a)

    net.add_pod = slow_add
    yield p, net, gate, inside
    gate.set()
    pool.shutdown()


async def call(p, verb, cid="c1", ns="/run/netns/p1"):
    env = {**BASE_ENV, "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": ns}
    return (await skel.dispatch(env, CONF, p)).code


async def wait_for(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("ADD never reached the kernel step")


@pytest.mark.parametrize("verb", ["DEL", "CHECK"])
async def test_del_and_check_wait_for_an_add_of_the_same_attachment(gated, verb):
    p, net, gate, inside = gated
    net.make_netns("/run/netns/p1")
    add = asyncio.create_task(call(p, "ADD"))
    await wait_for(inside)  # reserved, veth not yet made
    other = asyncio.create_task(call(p, verb))
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not other.done()  # queued behind the ADD
    assert len(p.ipam.reservations()) == 1 and net.links == set()
    gate.set()
    assert await add == 0 and await other == 0
    held = p.ipam.reservations()
    assert (bool(held), bool(net.links)) == ((False, False) if verb == "DEL" else (True, True))


async def test_another_attachment_does_not_wait(gated):
    p, net, gate, inside = gated
    net.make_netns("/run/netns/p1")
    net.make_netns("/run/netns/p2")
    add = asyncio.create_task(call(p, "ADD"))
    await wait_for(inside)
    assert await call(p, "DEL", cid="c2", ns="/run/netns/p2") == 0  # not queued behind c1
    gate.set()
    assert await add == 0
    assert len(p.attachments) == 0


ERRNO_CASES = [
    ("eacces", "ADD", PermissionError(errno.EACCES, "Permission denied"), 5, "refuses this plugin"),
    ("eperm", "DEL", PermissionError(errno.EPERM, "Operation not permitted"), 5, "refuses this plugin"),
    ("eacces-check", "CHECK", PermissionError(errno.EACCES, "Permission denied"), 5, "refuses this plugin"),
    ("eacces-gc", "GC", PermissionError(errno.EACCES, "Permission denied"), 5, "refuses this plugin"),
    ("eacces-status", "STATUS", PermissionError(errno.EACCES, "Permission denied"), 50, "not available"),
    ("enoent", "ADD", FileNotFoundError(errno.ENOENT, "No such file or directory"), 11, "try again later"),
    ("econnrefused", "DEL", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 11, "try again"),
    ("eagain-backlog-full", "ADD", BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), 11, "again"),
    ("timeout", "ADD", TimeoutError("timed out"), 11, "try again later"),
    ("cut-mid-answer", "ADD", ConnectionError("daemon closed the connection without an answer"), 11, "again"),
]


@pytest.mark.parametrize("verb,exc,code,needle", [c[1:] for c in ERRNO_CASES], ids=[c[0] for c in ERRNO_CASES])
def test_shim_maps_socket_errors_to_transient_or_permanent_codes(monkeypatch, verb, exc, code, needle):
    def refuse(path, request, timeout=shim.TIMEOUT):
        raise exc

    monkeypatch.setattr(shim, "call_daemon", refuse)
    out = io.BytesIO()
    rc = shim.plugin_main({"CNI_COMMAND": verb}, io.BytesIO(b'{"socket":"/run/x.sock"}'), out)
    err = json.loads(out.getvalue())
    assert rc == 1 and err["code"] == code and needle in err["msg"] and "/run/x.sock" in err["msg"]


@pytest.fixture
def plain():
    pool = ThreadPoolExecutor(2)
    net = FakeNetOps()
    p = Plugin(Allocator([], MemoryStore()), net, pool, 1500, Readiness(forwarding_ok=True, routes_synced=True))
    p.set_pod_cidrs(("10.244.1.0/24",))
    yield p, net
    pool.shutdown()


async def test_failed_add_keeps_the_reservation_exactly_while_the_attachments_veth_exists(plain):
    p, net = plain
    net.make_netns("/run/netns/p1")
    assert await call(p, "ADD") == 0
    net.fail_add = CniError(999, "netlink said no")
    net.netns["/run/netns/p1"].clear()  # a repeated ADD that gets past the ifname check, then fails
    assert await call(p, "ADD") == 999
    assert len(p.ipam.reservations()) == 1 and len(net.links) == 1  # the first ADD's veth still holds it
    net.links.clear()  # the veth is gone (a rebuild that failed after removing it)
    net.fail_add = CniError(999, "netlink said no")
    assert await call(p, "ADD") == 999
    assert p.ipam.reservations() == []  # no reservation without a veth
