"""policy/handshake.py: the CNI handshake protocol, served over a real unix socket to an engine on the fake kernel."""

from __future__ import annotations

import asyncio
import json

import pytest

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.client import ApiError
from podnet.kube.testing import FakeInformer
from podnet.policy.cli import parser
from podnet.policy.engine import Engine
from podnet.policy.handshake import Announcements, BadRequest, HandshakeServer, api_fetcher, encode_request, parse_request
from podnet.policy import render as r
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel, raw_ns, raw_pod, raw_policy

NODE = "node-a"
SECRET_DENY = raw_policy("default", "secret", {
    "podSelector": {"matchLabels": {"app": "secret"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "friend"}}}]}]})
CLIENT = "10.1.0.9"


def pod(name: str, ip: str = "", app: str = "", node: str = NODE):
    return parse_policy_pod(raw_pod("default", name, ip, node=node, labels={"app": app} if app else {}))


class Setup:
    def __init__(self, tmp_path, fetch=None, synced=True):
        self.kernel = FakeKernel()
        self.engine = Engine([Programmer(self.kernel)], NODE)
        self.pols, self.pods, self.nss = FakeInformer(), FakeInformer(), FakeInformer()
        self.engine.attach(self.pols, self.pods, self.nss)
        self.nss.set(parse_namespace(raw_ns("default")))
        self.pols.set(parse_network_policy(SECRET_DENY))
        self.pods.set(pod("client", CLIENT, node="node-b"))
        self.pods.set(pod("secret", app="secret"))  # bound here, no address yet: the sandbox does not exist
        self.pods.set(pod("friend", app="friend"))
        if synced:
            for i in (self.pols, self.pods, self.nss):
                i.synced()
        self.path = str(tmp_path / "policy.sock")
        self.server = HandshakeServer(self.engine, self.path, fetch)

    async def ask(self, line: bytes) -> dict:
        reader, writer = await asyncio.open_unix_connection(self.path)
        writer.write(line)
        writer.write_eof()
        out = await reader.read()
        writer.close()
        return json.loads(out)

    async def add(self, name: str, *ips: str) -> dict:
        return await self.ask(encode_request("add", "default", name, ips))


@pytest.fixture
async def hs(tmp_path):
    s = Setup(tmp_path)
    await s.server.start()
    try:
        yield s
    finally:
        await s.server.close()


async def test_known_pod_is_isolated_in_the_kernel_when_ok_is_answered(hs):
    assert hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80), "no rule for an address nobody announced"
    assert await hs.add("secret", "10.1.0.3") == {"status": "ok", "message": ""}
    assert not hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80)
    assert hs.engine.syncs == 1


async def test_announced_peer_enters_the_peer_sets_at_once(hs):
    assert (await hs.add("secret", "10.1.0.3"))["status"] == "ok"
    assert (await hs.add("friend", "10.1.0.4"))["status"] == "ok"
    assert hs.kernel.forward("10.1.0.4", "10.1.0.3", "tcp", 80)
    assert not hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80)


async def test_unisolated_pod_is_confirmed_without_touching_the_kernel(hs):
    await hs.add("secret", "10.1.0.3")
    calls = len(hs.kernel.calls)
    hs.pods.set(pod("plain", app="open"))
    assert (await hs.add("plain", "10.1.0.5"))["status"] == "ok"
    assert hs.kernel.calls[calls:] == [] and hs.kernel.forward(CLIENT, "10.1.0.5", "tcp", 80)


async def test_del_withdraws_the_address_from_peer_sets(hs):
    await hs.add("secret", "10.1.0.3")
    await hs.add("friend", "10.1.0.4")
    syncs = hs.engine.syncs
    assert (await hs.ask(encode_request("del", "default", "friend", ["10.1.0.4"])))["status"] == "ok"
    for _ in range(500):  # the DEL starts a sync of its own; wait for it (bounded)
        if hs.engine.syncs > syncs:
            break
        await asyncio.sleep(0.01)
    assert hs.engine.syncs == syncs + 1
    assert not hs.kernel.forward("10.1.0.4", "10.1.0.3", "tcp", 80), "a deleted pod's address must not stay a peer"
    # the informer still shows the old address (pod terminating): it stays withdrawn
    hs.pods.set(pod("friend", "10.1.0.4", app="friend"))
    assert await hs.engine.sync() and not hs.kernel.forward("10.1.0.4", "10.1.0.3", "tcp", 80)


class SlowKernel(FakeKernel):
    """A restore that takes a while, as the real one does, so handshakes arrive while a sync runs."""

    async def iptables_restore(self, text: str) -> None:
        await asyncio.sleep(0.05)
        await super().iptables_restore(text)


async def test_concurrent_adds_share_syncs(hs):
    hs.engine.programmers = [Programmer(SlowKernel())]
    hs.kernel = hs.engine.programmers[0].kernel
    for i in range(10):
        hs.pods.set(pod(f"s{i}", app="secret"))
    replies = await asyncio.gather(*(hs.add(f"s{i}", f"10.1.0.{20 + i}") for i in range(10)))
    assert [r["status"] for r in replies] == ["ok"] * 10
    assert all(not hs.kernel.forward(CLIENT, f"10.1.0.{20 + i}", "tcp", 80) for i in range(10))
    assert hs.engine.syncs < 10


async def test_unknown_pod_is_answered_unknown(hs):
    r = await hs.add("ghost", "10.1.0.7")
    assert r["status"] == "unknown" and "default/ghost" in r["message"]
    assert hs.engine.syncs == 0


@pytest.mark.parametrize("fetched, status, isolated", [
    pytest.param(pod("late", app="secret", node="elsewhere"), "ok", True, id="fetched-from-api"),
    pytest.param(None, "unknown", False, id="api-says-not-found"),
    pytest.param(RuntimeError("API down"), "unknown", False, id="api-fails"),
])
async def test_unknown_pod_is_fetched_from_the_api(tmp_path, fetched, status, isolated):
    asked = []

    async def fetch(ns, name):
        asked.append((ns, name))
        if isinstance(fetched, Exception):
            raise fetched
        return fetched

    s = Setup(tmp_path, fetch)
    await s.server.start()
    try:
        assert (await s.add("late", "10.1.0.8"))["status"] == status
        assert asked == [("default", "late")]
        assert s.kernel.forward(CLIENT, "10.1.0.8", "tcp", 80) is not isolated
        await s.ask(encode_request("del", "default", "late", ["10.1.0.8"]))
        assert s.server.announced.fetched == {} and await s.engine.sync()
        assert s.kernel.forward(CLIENT, "10.1.0.8", "tcp", 80), "a DELeted fetched pod is forgotten"
    finally:
        await s.server.close()


async def test_not_synced_is_an_error(tmp_path):
    s = Setup(tmp_path, synced=False)
    await s.server.start()
    try:
        r = await s.add("secret", "10.1.0.3")
        assert r["status"] == "error" and "not synced" in r["message"]
    finally:
        await s.server.close()


async def test_kernel_failure_before_the_pod_is_isolated_is_an_error(hs):
    hs.kernel.fail_next = "ipset_update"  # the pending entry cannot be written
    r = await hs.add("secret", "10.1.0.3")
    assert r["status"] == "error" and "injected" in r["message"]


async def test_chains_failing_after_the_answer_leave_the_pod_isolated_until_a_retry(hs):
    assert await hs.engine.sync()  # the engine's first sync: its dispatch chains are in force
    hs.kernel.fail_next = "iptables_restore"
    assert (await hs.add("secret", "10.1.0.3"))["status"] == "ok"
    assert not hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80)
    assert hs.kernel.sets[r.pending_sets(4)[0]][1] == ["10.1.0.3"]
    assert await hs.engine.sync()  # a resync: the pending entry stays until the chains are written
    assert not hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80) and hs.kernel.sets[r.pending_sets(4)[0]][1] == []
    assert any("-d 10.1.0.3/32" in rule for rule in hs.kernel.chains[r.FORWARD])


class WatchedKernel(FakeKernel):
    """Records, when the chains are written, whether the client reaches the new pod and whether the
    handshake has already answered."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []
        self.answered = False

    async def iptables_restore(self, text: str) -> None:
        self.seen.append((self.forward(CLIENT, "10.1.0.3", "tcp", 80), self.answered))
        await asyncio.sleep(0.05)
        await super().iptables_restore(text)


async def test_answer_comes_before_the_chains_with_the_pod_pending(tmp_path):
    s = Setup(tmp_path)
    k = WatchedKernel()
    s.engine.programmers = [Programmer(k)]
    await s.engine.sync()
    await s.server.start()
    try:
        k.seen.clear()
        reply = await s.add("secret", "10.1.0.3")
        k.answered = True
        assert reply["status"] == "ok" and not k.forward(CLIENT, "10.1.0.3", "tcp", 80)
        assert k.sets[r.pending_sets(4)[0]][1] == ["10.1.0.3"]  # the restore is still running
        for _ in range(200):  # bounded wait for the sync to finish
            if not s.server._background:
                break
            await asyncio.sleep(0.01)
        assert k.seen == [(False, False)]  # isolated (pending) while the chains were written
        assert k.sets[r.pending_sets(4)[0]][1] == [] and not k.forward(CLIENT, "10.1.0.3", "tcp", 80)
    finally:
        await s.server.close()


@pytest.mark.parametrize("line, needle", [
    pytest.param(b"nope\n", "not JSON", id="not-json"),
    pytest.param(b"[]\n", "exactly the keys", id="not-an-object"),
    pytest.param(b'{"op":"add","namespace":"default","name":"x"}\n', "exactly the keys", id="missing-ips"),
    pytest.param(encode_request("move", "default", "x", ["10.1.0.3"]), "op", id="unknown-op"),
    pytest.param(encode_request("add", "Default", "x", ["10.1.0.3"]), "DNS-1123 label", id="namespace-uppercase"),
    pytest.param(encode_request("add", "default", "x/y", ["10.1.0.3"]), "DNS-1123 subdomain", id="name-with-slash"),
    pytest.param(encode_request("add", "default", "x", []), "1 to 8", id="no-ips"),
    pytest.param(encode_request("add", "default", "x", ["10.1.0.%d" % i for i in range(9)]), "1 to 8", id="too-many-ips"),
    pytest.param(encode_request("add", "default", "x", ["010.1.0.3"]), "leading 0", id="leading-zero"),
    pytest.param(encode_request("add", "default", "x", ["fe80::1%eth0"]), "valid IP", id="zone"),
    pytest.param(encode_request("add", "default", "x", ["10.1.0.3", "10.1.0.3"]), "duplicate", id="duplicate-ip"),
    pytest.param(b'{"op":"add","namespace":"default","name":"x","ips":["10.1.0.3"]}', "no newline", id="no-newline"),
    pytest.param(b"x" * 5000 + b"\n", "longer than", id="too-long"),
])
async def test_malformed_request_is_refused_and_changes_nothing(hs, line, needle):
    r = await hs.ask(line)
    assert r["status"] == "error" and r["message"].startswith("malformed request") and needle in r["message"], r
    assert hs.engine.syncs == 0 and hs.kernel.calls == []
    assert (await hs.add("secret", "10.1.0.3"))["status"] == "ok", "the server keeps serving"


@pytest.mark.parametrize("ips, want", [
    pytest.param(["10.1.0.3"], ("10.1.0.3",), id="v4"),
    pytest.param(["FD00::0003", "10.1.0.3"], ("fd00::3", "10.1.0.3"), id="v6-canonicalised"),
])
def test_parse_request_canonicalises_addresses(ips, want):
    assert parse_request(encode_request("add", "ns", "p", ips)).ips == want


def test_parse_request_refuses_non_string_ip():
    with pytest.raises(BadRequest):
        parse_request(encode_request("add", "ns", "p", [167837699]))


def test_announcements_overlay_until_the_informer_agrees():
    a = Announcements(NODE)
    informer_pod = pod("secret", app="secret", node="")
    a.add("default/secret", ("10.1.0.3",))
    (out,) = a((informer_pod,))
    assert out.ips == ("10.1.0.3",) and out.node_name == NODE
    caught_up = pod("secret", "10.1.0.3", app="secret")
    assert a((caught_up,)) == (caught_up,) and a.added == {}
    a.remove("default/secret", ("10.1.0.3",))
    assert a((caught_up,))[0].ips == ()
    assert a((pod("secret", "10.1.0.6", app="secret"),))[0].ips == ("10.1.0.6",) and a.removed == {}


async def test_unisolated_add_after_an_isolated_pods_del_writes_nothing(hs):
    """A chain deletion is not written again by the next sync: an ADD that changes nothing costs no restore."""
    await hs.add("secret", "10.1.0.3")
    await hs.ask(encode_request("del", "default", "secret", ["10.1.0.3"]))
    assert await hs.engine.sync() and hs.kernel.forward(CLIENT, "10.1.0.3", "tcp", 80)
    calls = len(hs.kernel.calls)
    hs.pods.set(pod("plain", app="open"))
    assert (await hs.add("plain", "10.1.0.5"))["status"] == "ok"
    assert hs.kernel.calls[calls:] == []


class FakeApi:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    async def get(self, res, name, namespace=None):
        self.asked.append((res.plural, namespace, name))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer, want", [
    pytest.param(raw_pod("default", "late", "", labels={"app": "secret"}), "default/late", id="found"),
    pytest.param(ApiError(404, {"reason": "NotFound"}), None, id="not-found"),
])
async def test_api_fetcher(answer, want):
    api = FakeApi(answer)
    got = await api_fetcher(api)("default", "late")
    assert (got.key if got else None) == want and api.asked == [("pods", "default", "late")]


async def test_api_fetcher_passes_other_errors_on():
    with pytest.raises(ApiError):
        await api_fetcher(FakeApi(ApiError(500, {"reason": "InternalError"})))("default", "late")


def test_cli_flag():
    assert parser().parse_args(["--cni-socket", "/run/podnet/policy.sock"]).cni_socket == "/run/podnet/policy.sock"
    assert parser().parse_args([]).cni_socket == ""


async def test_first_sync_answers_only_after_the_chains(tmp_path):
    """Before the engine's first apply no dispatch chain holds the pending-set rules: the answer waits."""
    s = Setup(tmp_path)
    k = WatchedKernel()
    s.engine.programmers = [Programmer(k)]
    await s.server.start()
    try:
        reply = await s.add("secret", "10.1.0.3")
        assert reply["status"] == "ok" and k.seen and not k.forward(CLIENT, "10.1.0.3", "tcp", 80)
        assert not s.server._background  # the sync had finished when the answer came
    finally:
        await s.server.close()

