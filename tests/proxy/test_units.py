"""Tables for the pure pieces: names, tracker, categorization, dispatch, plan/render, pacing."""

from __future__ import annotations

import ipaddress
import random

import pytest

from podnet.proxy import names
from podnet.proxy.dispatch import build_tree
from podnet.proxy.endpoints import categorize
from podnet.host.xtables import choose_mode
from podnet.proxy.iptables import RestoreError
from podnet.proxy.model import EndpointInfo, ServicePortInfo, ServicePortName
from podnet.proxy.render import plan, render
from podnet.proxy.sync import Pacer
from podnet.proxy.testing import ep, program, slice_, svc
from podnet.proxy.trace import Packet
from podnet.proxy.tracker import ChangeTracker


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    "text,want",
    [("ns1/svc1:p80tcp", "XPGD46QRK7WJZT7O"), ("ns4/svc4:p80tcp10.180.0.4:80", "UKSFD7AGPMPPLUHC")],
    ids=["service-port", "endpoint"],
)
def test_hash_matches_kube_proxy(text, want):
    assert names._hash(text) == want


def test_chain_names_fit_iptables_limit():
    long = "n" * 63 + "/" + "s" * 63 + ":" + "p" * 15
    made = [names.service_port_chains(long, "SCTP")[0], names.endpoint_chain(long, "UDP", "[fd00::1]:65535"),
            names.service_port_chains(long, "TCP")[3], names.dispatch_chain("nat", names.SERVICES, "fd00::/124"),
            names.EXTERNAL_SERVICES, names.PROXY_FIREWALL]
    assert all(len(c) <= names.MAX_CHAIN_NAME and names.is_ours(c) for c in made)


# ---------------------------------------------------------------- tracker
TRACKER = [
    ("add", [(None, 1)], {"k": (None, 1)}),
    ("add-then-delete-is-noop", [(None, 1), (1, None)], {}),
    ("update-keeps-first-and-last", [(1, 2), (2, 3)], {"k": (1, 3)}),
    ("change-and-back-is-noop", [(1, 2), (2, 1)], {}),
    ("delete", [(1, None)], {"k": (1, None)}),
    ("equal-update-ignored", [(1, 1)], {}),
]


@pytest.mark.parametrize("updates,want", [c[1:] for c in TRACKER], ids=[c[0] for c in TRACKER])
def test_tracker(updates, want):
    t: ChangeTracker[str, int] = ChangeTracker()
    for prev, cur in updates:
        t.update("k", prev, cur)
    assert {k: (c.previous, c.current) for k, c in t.drain().items()} == want
    assert t.pending() == 0


# ---------------------------------------------------------------- categorize
SP = ServicePortInfo(ServicePortName("ns", "s", "", "TCP"), "10.96.0.1", 80, "TCP")
R, RL = EndpointInfo("10.0.0.1", 80), EndpointInfo("10.0.0.2", 80, local=True)
TERM = EndpointInfo("10.0.0.3", 80, ready=False, serving=True, terminating=True)
TERM_L = EndpointInfo("10.0.0.4", 80, ready=False, serving=True, terminating=True, local=True)
DEAD = EndpointInfo("10.0.0.5", 80, ready=False, serving=False, terminating=True)
CAT = [
    ("cluster-ready", SP, (R, RL), (R, RL), (), True),
    ("local-not-computed-for-cluster-policies", SP, (R, RL), (R, RL), (), True),
    ("terminating-fallback", SP, (TERM, DEAD), (TERM,), (), True),
    ("not-serving-ignored", SP, (DEAD,), (), (), False),
    ("etp-local", ServicePortInfo(SP.name, SP.cluster_ip, 80, "TCP", node_port=30000, etp_local=True), (R, RL), (R, RL), (RL,), True),
    ("itp-local-terminating-local", ServicePortInfo(SP.name, SP.cluster_ip, 80, "TCP", itp_local=True), (R, TERM_L), (R,), (TERM_L,), True),
    ("itp-local-none-local", ServicePortInfo(SP.name, SP.cluster_ip, 80, "TCP", itp_local=True), (R,), (R,), (), True),
]


@pytest.mark.parametrize("sp,eps,cluster,local,has_any", [c[1:] for c in CAT], ids=[c[0] for c in CAT])
def test_categorize(sp, eps, cluster, local, has_any):
    c = categorize(sp, eps)
    assert (c.cluster, c.local, c.has_any) == (cluster, local, has_any)


# ---------------------------------------------------------------- dispatch tree
@pytest.mark.parametrize("family,count,pattern", [(4, 3000, "random"), (4, 3000, "sequential"), (6, 500, "random"), (4, 10, "random")],
                         ids=["v4-random", "v4-sequential", "v6-random", "v4-small-is-flat"])
def test_dispatch_tree_reaches_every_destination_and_is_shallow(family, count, pattern):
    rnd = random.Random(7)
    base = ipaddress.ip_address("10.96.0.0" if family == 4 else "fd00:96::")
    span = 1 << 20 if family == 4 else 1 << 40
    offs = sorted(rnd.sample(range(1, span), count)) if pattern == "random" else list(range(1, count + 1))
    ips = [str(base + o) for o in offs]
    entries = [(ip, f"-d {ip} -j T{i}") for i, ip in enumerate(ips)]
    chains = build_tree("nat", "ROOT", entries)
    if count <= 16:
        assert list(chains) == ["ROOT"]
    for i, ip in enumerate(ips[:: max(1, count // 200)]):
        seen, depth, chain = 0, 0, "ROOT"
        while True:
            depth += 1
            hit = None
            for rule in chains[chain]:
                seen += 1
                dst, target = rule.split()[1], rule.split()[3]
                if ipaddress.ip_address(ip) in ipaddress.ip_network(dst, strict=False):
                    hit = target
                    break
            assert hit is not None, ip
            if hit.startswith("T"):
                assert entries[int(hit[1:])][0] == ip
                break
            chain = hit
        assert seen <= 80 and depth <= (6 if family == 4 else 12), (seen, depth)


# ---------------------------------------------------------------- plan / render
def test_partial_plan_writes_only_changed_chains_and_deletes_stale():
    desired = {"mangle": {}, "filter": {"PODNET-A": ("-j ACCEPT",)}, "nat": {"PODNET-B": ("-j RETURN",), "PODNET-C": ()}}
    applied = {"mangle": {}, "filter": {"PODNET-A": ("-j ACCEPT",)}, "nat": {"PODNET-B": ("-j DROP",), "PODNET-OLD": ()}}
    p = plan(desired, applied, full=False)
    assert p.write == {"mangle": [], "filter": [], "nat": ["PODNET-B", "PODNET-C"]}
    assert p.delete == {"mangle": [], "filter": [], "nat": ["PODNET-OLD"]}
    assert render(desired, p) == (
        "*nat\n:PODNET-B - [0:0]\n:PODNET-C - [0:0]\n:PODNET-OLD - [0:0]\n-A PODNET-B -j RETURN\n-X PODNET-OLD\nCOMMIT\n"
    )
    assert plan(desired, desired, full=False).empty


def test_full_plan_deletes_only_podnet_chains_found_in_kernel():
    desired = {"mangle": {}, "filter": {}, "nat": {"PODNET-B": ()}}
    p = plan(desired, None, full=True, existing={"nat": {"PODNET-STALE", "KUBE-SERVICES", "PODNET-B"}})
    assert p.write["nat"] == ["PODNET-B"] and p.delete["nat"] == ["PODNET-STALE"]


def test_render_is_deterministic_golden():
    services = [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),), sessionAffinity="ClientIP"), svc(name="empty", cluster_ip="172.30.0.42")]
    slices = [slice_(endpoints=[ep("10.0.1.2"), ep("10.0.1.1")], name="x")]
    _, _, text = program(services, slices)
    _, _, again = program(list(reversed(services)), slices)
    assert text == again
    golden = __import__("pathlib").Path(__file__).with_name("golden_nodeport_affinity.txt")
    assert text == golden.read_text()


# ---------------------------------------------------------------- pacing (fake clock readings)
def test_pacer_coalesces_and_respects_min_interval():
    p = Pacer(min_interval=1.0, max_interval=30.0, retry_interval=5.0)
    assert p.next_run(0.0) == float("inf")  # nothing asked, never ran
    p.request(0.0), p.request(0.1)
    assert p.next_run(0.1) == 0.1  # first run: at once
    p.started(0.1), p.finished(0.3, ok=True)
    p.request(0.4), p.request(0.5), p.request(0.6)
    assert p.next_run(0.6) == pytest.approx(1.3)  # one run, min interval after the end of the last
    p.started(1.3), p.finished(1.5, ok=True)
    assert p.next_run(2.0) == pytest.approx(31.5)  # periodic
    p.started(31.5), p.finished(32.0, ok=False)
    assert p.next_run(32.0) == pytest.approx(37.0)  # retry after failure
    p.request(32.5)
    assert p.next_run(32.5) == pytest.approx(33.0)  # a new request does not wait for the retry
    assert p.overdue(95.0, 60.0) and not p.overdue(40.0, 60.0)


async def test_sync_runner_with_fake_clock_runs_once_per_burst():
    from podnet.proxy.sync import SyncRunner
    from podnet.kube.testing import FakeClock

    clock = FakeClock(0.0)
    calls = []

    async def fn():
        calls.append(clock.now())
        return len(calls) != 2  # the second run fails

    r = SyncRunner(fn, Pacer(1.0, 30.0, 5.0), clock)
    for _ in range(5):
        r.request()
    assert await r.step() and calls == [0.0]
    r.request(), r.request()
    assert not await r.step()  # within min interval
    clock.t = 1.0
    assert await r.step() and calls == [0.0, 1.0]  # fails
    clock.t = 2.5
    assert not await r.step()
    clock.t = 6.0
    assert await r.step() and calls[-1] == 6.0  # retried


# ---------------------------------------------------------------- backend detection
MODES = [
    ("kubelet-hint-in-nft", ":KUBE-IPTABLES-HINT - [0:0]\n", "-A INPUT -j X\n" * 9, "nft"),
    ("hint-in-legacy", "", ":KUBE-KUBELET-CANARY - [0:0]\n", "legacy"),
    ("own-canary-in-legacy", "", ":PODNET-CANARY - [0:0]\n", "legacy"),
    ("more-legacy-rules", "-A INPUT -j A\n", "-A INPUT -j A\n-A INPUT -j B\n", "legacy"),
    ("empty-defaults-to-nft", "", "", "nft"),
]


@pytest.mark.parametrize("nft,legacy,want", [c[1:] for c in MODES], ids=[c[0] for c in MODES])
def test_choose_mode(nft, legacy, want):
    assert choose_mode(nft, legacy) == want


def test_restore_error_context_names_offending_lines():
    e = RestoreError("line 3 failed", "*nat\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n", 3)
    assert "     3 -A A -j NOPE" in e.context()


async def test_fake_iptables_restore_is_atomic():
    from podnet.proxy.testing import FakeIptables

    f = FakeIptables()
    await f.restore("*nat\n:PODNET-A - [0:0]\n-A PODNET-A -j RETURN\nCOMMIT\n")
    with pytest.raises(RestoreError) as ei:
        await f.restore("*nat\n:PODNET-A - [0:0]\n-A PODNET-A -j PODNET-MISSING\nCOMMIT\n")
    assert ei.value.line == 3 and f.rules("nat", "PODNET-A") == ["-j RETURN"]
    with pytest.raises(RestoreError):
        await f.restore("*nat\n:PODNET-B - [0:0]\n-A PODNET-B -j PODNET-A\n-X PODNET-A\nCOMMIT\n")


# ---------------------------------------------------------------- bad input never reaches a rule
HOSTILE = [
    ("newline-in-name", {"metadata": {"name": "a\n-A INPUT -j ACCEPT", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}),
    ("quote-in-port-name", {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80, "name": 'x" -j ACCEPT'}]}}),
    ("bad-cluster-ip", {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1 -j ACCEPT", "ports": [{"port": 80}]}}),
    ("port-out-of-range", {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 70000}]}}),
    ("bad-source-range", {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "type": "LoadBalancer", "loadBalancerSourceRanges": ["1.2.3.0/24 -j ACCEPT"], "ports": [{"port": 80}]}}),
]


@pytest.mark.parametrize("raw", [c[1] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_services_rejected_at_the_boundary(raw):
    from podnet.kube.resources import SERVICES, convert

    assert convert(SERVICES, raw) is None


def test_tracer_refuses_unknown_matches():
    from podnet.proxy.trace import Tracer

    t = Tracer({"nat": {"PREROUTING": ["-m owner --uid-owner 0 -j ACCEPT"]}, "filter": {}}, ())
    with pytest.raises(ValueError):
        t.trace(Packet("1.1.1.1", "2.2.2.2", 80))
