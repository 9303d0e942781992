"""cni/policy_hook.py and its hook in the ADD/DEL path: the client against the policy engine's real handshake
server (fake kernel) and against misbehaving servers, and the plugin's ordering and rollback over fake netops."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from podnet.cni import skel
from podnet.cni.ipam import Allocator
from podnet.cni.plugin import Plugin, Readiness
from podnet.cni.policy_hook import PolicyHook
from podnet.cni.testing import FakeNetOps, MemoryStore
from podnet.cni.types import CniError
from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.policy.engine import Engine
from podnet.policy.handshake import HandshakeServer
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod, raw_policy

DENY = raw_policy("default", "deny", {"podSelector": {"matchLabels": {"app": "secret"}}, "ingress": []})


class Engined:
    """The policy engine (fake kernel) behind a real handshake socket."""

    def __init__(self, path: str) -> None:
        self.kernel = FakeKernel()
        self.engine = Engine([Programmer(self.kernel)], "node-a")
        self.pods = FakeInformer()
        pols, nss = FakeInformer(), FakeInformer()
        self.engine.attach(pols, self.pods, nss)
        nss.set(parse_namespace(raw_ns("default")))
        pols.set(parse_network_policy(DENY))
        self.pods.set(parse_policy_pod(raw_pod("default", "secret", "", labels={"app": "secret"})))
        for i in (pols, self.pods, nss):
            i.synced()
        self.server = HandshakeServer(self.engine, path)


@pytest.fixture
async def engined(tmp_path):
    e = Engined(str(tmp_path / "policy.sock"))
    await e.server.start()
    try:
        yield e
    finally:
        await e.server.close()


async def stub_server(path: str, answer: bytes | None):
    """A server that answers ``answer`` to everything (None: reads and never answers)."""
    seen: list[bytes] = []

    async def handle(reader, writer):
        seen.append(await reader.readline())
        if answer is None:
            await asyncio.sleep(3600)
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=path), seen


async def test_ok_from_the_engine_means_the_rules_exist(engined):
    hook = PolicyHook(engined.server.path, required=True)
    await hook.added("default/secret", ["10.244.1.3"])
    assert not engined.kernel.forward("10.9.9.9", "10.244.1.3", "tcp", 80)


@pytest.mark.parametrize("required", [pytest.param(True, id="required"), pytest.param(False, id="optional")])
async def test_unknown_pod(engined, required):
    hook = PolicyHook(engined.server.path, required=required)
    if required:
        with pytest.raises(CniError) as e:
            await hook.added("default/ghost", ["10.244.1.4"])
        assert e.value.code == 11 and "unknown" in e.value.msg
    else:
        await hook.added("default/ghost", ["10.244.1.4"])
    assert engined.engine.syncs == 0


@pytest.mark.parametrize("answer, needle", [
    pytest.param(None, "within", id="timeout"),
    pytest.param(b"garbage\n", "malformed reply", id="malformed-reply"),
    pytest.param(b"", "policy engine at", id="closed-without-answer"),
    pytest.param(b'{"status": "error", "message": "sync failed"}\n', "sync failed", id="engine-error"),
])
async def test_failure_modes_fail_closed_only_when_required(tmp_path, answer, needle):
    path = str(tmp_path / "stub.sock")
    server, seen = await stub_server(path, answer)
    try:
        with pytest.raises(CniError) as e:
            await PolicyHook(path, required=True, timeout=0.3).added("default/p", ["10.244.1.3"])
        assert e.value.code == 11 and needle in e.value.msg, e.value.msg
        await PolicyHook(path, required=False, timeout=0.3).added("default/p", ["10.244.1.3"])
        assert json.loads(seen[0]) == {"op": "add", "namespace": "default", "name": "p", "ips": ["10.244.1.3"]}
    finally:
        server.close()


async def test_no_socket(tmp_path):
    path = str(tmp_path / "absent.sock")
    with pytest.raises(CniError) as e:
        await PolicyHook(path, required=True).added("default/p", ["10.244.1.3"])
    assert e.value.code == 11 and path in e.value.msg
    await PolicyHook(path, required=False).added("default/p", ["10.244.1.3"])
    await PolicyHook(path, required=True).deleted("default/p", ["10.244.1.3"])  # DEL never fails


async def test_no_pod_name_skips_the_handshake(tmp_path):
    path = str(tmp_path / "stub.sock")
    server, seen = await stub_server(path, b'{"status": "error", "message": "x"}\n')
    try:
        await PolicyHook(path, required=True).added("", ["10.244.1.3"])
        assert seen == []
    finally:
        server.close()


# ------------------------------------------------------------------ the hook in the plugin


class RecordingHook:
    def __init__(self, net: FakeNetOps, fail: CniError | None = None) -> None:
        self.net = net
        self.fail = fail
        self.calls: list[tuple] = []

    async def added(self, pod, ips):
        self.calls.append(("added", pod, tuple(ips), frozenset(self.net.links)))
        if self.fail:
            raise self.fail

    async def deleted(self, pod, ips):
        self.calls.append(("deleted", pod, tuple(ips), frozenset(self.net.links)))


@pytest.fixture
def env():
    pool = ThreadPoolExecutor(2)
    net = FakeNetOps()
    p = Plugin(Allocator([], MemoryStore()), net, pool, 1400, Readiness(forwarding_ok=True, routes_synced=True))
    p.set_pod_cidrs(("10.244.1.0/24",))
    net.make_netns("/run/netns/p1")
    yield p, net
    pool.shutdown()


async def cni(p, verb):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p1", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/x", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=secret"}
    conf = json.dumps({"cniVersion": "1.1.0", "name": "podnet", "type": "podnet-cni"}).encode()
    r = await skel.dispatch(env, conf, p)
    return r.code, (json.loads(r.stdout) if r.stdout else None)


async def test_add_announces_before_the_veth_exists_and_del_withdraws_after(env):
    p, net = env
    p.policy = hook = RecordingHook(net)
    assert (await cni(p, "ADD"))[0] == 0
    assert hook.calls == [("added", "default/secret", ("10.244.1.2",), frozenset())]
    assert (await cni(p, "DEL"))[0] == 0
    assert hook.calls[1] == ("deleted", "default/secret", ("10.244.1.2",), frozenset())


async def test_refused_handshake_fails_add_with_nothing_left(env):
    p, net = env
    p.policy = RecordingHook(net, CniError(11, "policy engine: unknown"))
    code, out = await cni(p, "ADD")
    assert code == 11 and "unknown" in out["msg"]
    assert p.ipam.reservations() == [] and net.links == set()


async def test_failed_plumbing_after_the_handshake_withdraws_the_address(env):
    p, net = env
    p.policy = hook = RecordingHook(net)
    net.fail_add = CniError(999, "netlink said no")
    assert (await cni(p, "ADD"))[0] == 999
    assert [c[0] for c in hook.calls] == ["added", "deleted"] and p.ipam.reservations() == []


async def test_end_to_end_add_through_the_engine(env, engined):
    p, net = env
    p.policy = PolicyHook(engined.server.path, required=True)
    code, res = await cni(p, "ADD")
    assert code == 0 and res["ips"][0]["address"] == "10.244.1.2/32"
    assert not engined.kernel.forward("10.9.9.9", "10.244.1.2", "tcp", 80)
    assert (await cni(p, "DEL"))[0] == 0
    assert await engined.engine.sync()
    assert engined.kernel.forward("10.9.9.9", "10.244.1.2", "tcp", 80), "the released address is no longer isolated"
