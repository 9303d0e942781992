"""podnet.policy on real kernels: ipsets and iptables in network namespaces, real TCP and UDP (root).

Topology (namespaces pnt-pol-*): a node namespace routes for four pod namespaces
x-a 10.1.0.1, x-b 10.1.0.2, y-a 10.1.1.1, z-a 10.1.2.1, each on its own veth
with a /32 route, so every pod-to-pod packet crosses the node's FORWARD hook.
Every pod serves TCP and UDP on 80 and 81 (tests/proxy/netprobe.py). The engine
runs in-process with fake informers and the real kernel runner pointed into the
node namespace (iptables-legacy, ipset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.host.netns import NetnsPool
from podnet.policy.engine import Engine
from podnet.policy.kernel import KernelRunner
from podnet.policy.programmer import Programmer, cleanup
from podnet.policy.testing import raw_ns, raw_pod, raw_policy

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PROBE = str(Path(__file__).resolve().parent.parent / "proxy" / "netprobe.py")
PY = sys.executable
PODS = {"x-a": "10.1.0.1", "x-b": "10.1.0.2", "y-a": "10.1.1.1", "z-a": "10.1.2.1"}
GW = "10.1.255.254"
PORTS = (("serve-80-tcp", 80, "TCP"), ("serve-81-tcp", 81, "TCP"), ("serve-80-udp", 80, "UDP"), ("serve-81-udp", 81, "UDP"))


@pytest.fixture(scope="module")
def lab():
    pool = NetnsPool("pnt-pol-")
    procs = []
    try:
        node = pool.netns("node")
        node.sysctl("net.ipv4.ip_forward", "1")
        nss = {"node": node}
        for i, (name, ip) in enumerate(PODS.items()):
            pod = pool.netns(name)
            pool.veth(node, f"p{i}", pod, "eth0")
            node.ip("addr", "add", f"{GW}/32", "dev", f"p{i}")
            node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
            pod.ip("addr", "add", f"{ip}/32", "dev", "eth0")
            pod.ip("route", "add", GW, "dev", "eth0")
            pod.ip("route", "add", "default", "via", GW)
            nss[name] = pod
            for port in (80, 81):
                p = pod.popen(PY, "-P", PROBE, "server", name, str(port), "280", stdout=subprocess.PIPE, text=True)
                procs.append(p)
                assert p.stdout.readline().strip() == "ready"
        yield nss
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pool.close()


def tcp(lab, src: str, dst: str, port: int) -> bool:
    out = json.loads(lab[src].run(PY, "-P", PROBE, "tcp", PODS[dst], str(port), "1", timeout=60))
    ok = out.get(f"{dst} {PODS[src] if src != 'node' else GW}", 0) == 1
    assert ok or any(k.startswith("error:") for k in out), out  # a reply from anyone else is a bug
    return ok


def udp(lab, src: str, dst: str, port: int) -> bool:
    out = json.loads(lab[src].run(PY, "-P", PROBE, "udp", PODS[dst], str(port), "2", "0", timeout=60))
    return out.get(f"{dst} {PODS[src]}", 0) >= 1


class Cluster:
    """The engine for the node namespace, fed by fake informers."""

    def __init__(self, lab):
        self.kernel = KernelRunner(4, "legacy", netns=lab["node"].name)
        self.engine = Engine([Programmer(self.kernel)], "node")
        self.pols, self.pods, self.nss = FakeInformer(), FakeInformer(), FakeInformer()
        self.anps, self.banps = FakeInformer(), FakeInformer()
        self.engine.attach(self.pols, self.pods, self.nss, self.anps, self.banps)
        self.nss.set(parse_namespace(raw_ns("x")))
        self.nss.set(parse_namespace(raw_ns("y", team="t")))
        self.nss.set(parse_namespace(raw_ns("z")))
        for name, ip in PODS.items():
            ns, pod = name.split("-")
            self.pods.set(parse_policy_pod(raw_pod(ns, pod, ip, node="node", labels={"pod": pod}, ports=PORTS)))
        for i in (self.pols, self.pods, self.nss, self.anps, self.banps):
            i.synced()

    async def apply(self, *policies: tuple[str, str, dict], admin: tuple[dict, ...] = ()) -> None:
        """Replace every policy with ``policies`` (NetworkPolicies) and ``admin`` (raw ANP/BANP objects)."""
        for inf in (self.pols, self.anps, self.banps):
            for key in list(inf.store):
                inf.delete(key)
        for ns, name, spec in policies:
            self.pols.set(parse_network_policy(raw_policy(ns, name, spec)))
        for raw in admin:
            if raw["metadata"]["name"] == "default" and "priority" not in raw["spec"]:
                self.banps.set(parse_baseline_admin_network_policy(raw))
            else:
                self.anps.set(parse_admin_network_policy(raw))
        assert await self.engine.sync(), self.engine.last_error


@pytest.fixture
async def cluster(lab):
    c = Cluster(lab)
    try:
        yield c
    finally:
        await cleanup(c.kernel)


A = {"matchLabels": {"pod": "a"}}


async def test_default_deny_ingress_replies_and_node_probes_pass(lab, cluster):
    await cluster.apply(("x", "deny", {"podSelector": {}, "ingress": []}))
    assert not tcp(lab, "y-a", "x-a", 80)
    assert not udp(lab, "y-a", "x-a", 80)
    assert tcp(lab, "x-a", "y-a", 80), "replies to an isolated pod's own connection must pass"
    assert udp(lab, "x-a", "y-a", 81), "UDP replies pass too"
    assert tcp(lab, "node", "x-a", 80), "the node reaches its pods (kubelet probes)"
    assert tcp(lab, "y-a", "z-a", 80), "pods no policy selects stay open"
    await cluster.apply()
    assert tcp(lab, "y-a", "x-a", 80), "deleting the policy reopens"


async def test_allow_by_pod_label_and_by_namespace_label(lab, cluster):
    await cluster.apply(("x", "web", {"podSelector": A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}, {"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]}))
    assert tcp(lab, "x-b", "x-a", 80)
    assert tcp(lab, "y-a", "x-a", 80)
    assert not tcp(lab, "z-a", "x-a", 80)


async def test_ipblock_with_except(lab, cluster):
    await cluster.apply(("x", "cidr", {"podSelector": A, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}]}]}))
    assert tcp(lab, "y-a", "x-a", 80)
    assert not tcp(lab, "z-a", "x-a", 80)


async def test_named_port_and_end_port(lab, cluster):
    await cluster.apply(("x", "named", {"podSelector": A, "ingress": [
        {"ports": [{"port": "serve-81-tcp"}, {"port": "serve-81-udp", "protocol": "UDP"}]}]}))
    assert tcp(lab, "y-a", "x-a", 81) and udp(lab, "y-a", "x-a", 81)
    assert not tcp(lab, "y-a", "x-a", 80)
    await cluster.apply(("x", "range", {"podSelector": A, "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]}))
    assert tcp(lab, "y-a", "x-a", 80)
    assert not tcp(lab, "y-a", "x-a", 81)


async def test_egress_to_namespace_only(lab, cluster):
    await cluster.apply(("x", "out", {"podSelector": A, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]}))
    assert tcp(lab, "x-a", "y-a", 80)
    assert not tcp(lab, "x-a", "z-a", 80)
    assert tcp(lab, "z-a", "x-a", 80), "ingress stays open: only Egress is listed"


async def test_established_connection_kept_when_a_deny_arrives(lab, cluster):
    """Documented behaviour (upstream allows either): a flow established before a policy denies
    it keeps flowing (conntrack ESTABLISHED passes first); new connections are refused."""
    await cluster.apply()
    hold = lab["y-a"].popen(PY, "-P", PROBE, "hold", PODS["x-a"], "80", "3", stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "connected"
        await cluster.apply(("x", "deny", {"podSelector": {}, "ingress": []}))
        res = json.loads(hold.stdout.readline())
    finally:
        hold.kill()
        hold.wait()
    assert res["error"] == "" and res["echoed"] == res["sent"] and res["sent"] >= 10, res
    assert not tcp(lab, "y-a", "x-a", 80)


NS_Y = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
ALLOW_Y_TO_XA = ("x", "allow-y", {"podSelector": A, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]})


def _anp(action: str, *, ports: list | None = None) -> dict:
    r: dict = {"action": action, "from": [NS_Y]}
    if ports is not None:
        r["ports"] = ports
    return {"metadata": {"name": "admin"}, "spec": {"priority": 5, "subject": {"namespaces": {}}, "ingress": [r]}}


def _banp_deny_y() -> dict:
    return {"metadata": {"name": "default"}, "spec": {"subject": {"namespaces": {}}, "ingress": [
        {"action": "Deny", "from": [NS_Y]}]}}


async def test_admin_deny_overrides_a_networkpolicy_allow(lab, cluster):
    await cluster.apply(ALLOW_Y_TO_XA)
    assert tcp(lab, "y-a", "x-a", 80)
    await cluster.apply(ALLOW_Y_TO_XA, admin=(_anp("Deny", ports=[{"portNumber": {"port": 80}}]),))
    assert not tcp(lab, "y-a", "x-a", 80), "the ANP deny wins over the NetworkPolicy allow"
    assert tcp(lab, "y-a", "x-a", 81), "the ANP rule names port 80 only"
    assert udp(lab, "y-a", "x-a", 80), "the ANP rule names TCP (the default protocol): UDP 80 stays allowed"
    assert tcp(lab, "z-a", "y-a", 80), "the ANP denies ingress from y only"


async def test_admin_pass_defers_to_networkpolicy(lab, cluster):
    await cluster.apply(ALLOW_Y_TO_XA, ("x", "deny-b", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": []}),
                        admin=(_anp("Pass"), _banp_deny_y()))
    assert tcp(lab, "y-a", "x-a", 80), "passed, then allowed by x/a's NetworkPolicy"
    assert not tcp(lab, "y-a", "x-b", 80), "passed, then denied by x/b's NetworkPolicy"
    assert not tcp(lab, "y-a", "z-a", 80), "passed; no NetworkPolicy selects z/a: the baseline denies"
    assert tcp(lab, "x-b", "z-a", 80), "the baseline denies from y only"


async def test_baseline_deny_only_where_no_networkpolicy_selects(lab, cluster):
    await cluster.apply(ALLOW_Y_TO_XA, admin=(_banp_deny_y(),))
    assert tcp(lab, "y-a", "x-a", 80), "x/a has a NetworkPolicy: the baseline does not apply"
    assert not tcp(lab, "y-a", "x-b", 80), "x/b has none: the baseline denies from y"
    assert not udp(lab, "y-a", "z-a", 81)
    assert tcp(lab, "z-a", "x-b", 80)
    await cluster.apply()
    assert tcp(lab, "y-a", "x-b", 80), "deleting the baseline reopens"


def _node_rules(lab) -> str:
    return lab["node"].run("iptables-legacy-save", "-t", "filter")


def test_podnet_policy_binary_against_a_served_api(lab):
    """The real binary in the node namespace: list+watch from a lab API server, program, follow a
    delete, stop on SIGTERM leaving the rules, then --cleanup removes everything it made."""
    import signal
    import time

    binary = str(Path(sys.executable).with_name("podnet-policy"))
    serve = str(Path(__file__).with_name("apiserve.py"))
    objs = [{"resource": "namespaces", "object": raw_ns(n)} for n in ("x", "y", "z")]
    for name, ip in PODS.items():
        ns, pod = name.split("-")
        objs.append({"resource": "pods", "namespace": ns,
                     "object": raw_pod(ns, pod, ip, node="node", labels={"pod": pod}, ports=PORTS)})
    objs.append({"resource": "networkpolicies", "namespace": "x",
                 "object": raw_policy("x", "deny", {"podSelector": {}, "ingress": []})})
    api = lab["node"].popen(PY, "-P", serve, "120", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    eng = None
    try:
        api.stdin.write(json.dumps(objs) + "\n")
        api.stdin.flush()
        url = api.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        eng = lab["node"].popen(binary, "--master", url, "--hostname-override", "node", "--iptables-mode", "legacy",
                                "--metrics-bind-address", "", "--min-sync-period", "10ms")
        for _ in range(300):  # bounded: 300 x 50 ms
            if "-d 10.1.0.1/32 -j PODNET-NP-I-" in _node_rules(lab):
                break
            time.sleep(0.05)
        assert not tcp(lab, "y-a", "x-a", 80)
        assert tcp(lab, "y-a", "z-a", 80)
        api.stdin.write(json.dumps({"op": "delete", "resource": "networkpolicies", "namespace": "x", "name": "deny"}) + "\n")
        api.stdin.flush()
        assert api.stdout.readline().strip() == "ok"
        for _ in range(300):
            if "-d 10.1.0.1/32" not in _node_rules(lab):
                break
            time.sleep(0.05)
        assert tcp(lab, "y-a", "x-a", 80)
        api.stdin.write(json.dumps({"op": "create", "resource": "networkpolicies", "namespace": "x",
                                    "object": raw_policy("x", "deny", {"podSelector": {}, "ingress": []})}) + "\n")
        api.stdin.flush()
        assert api.stdout.readline().strip() == "ok"
        for _ in range(300):
            if "-d 10.1.0.1/32 -j PODNET-NP-I-" in _node_rules(lab):
                break
            time.sleep(0.05)
        eng.send_signal(signal.SIGTERM)
        assert eng.wait(timeout=20) == 0
        assert "PODNET-NP-I-" in _node_rules(lab), "rules stay in force after the engine stops"
        assert not tcp(lab, "y-a", "x-a", 80)
        lab["node"].run(binary, "--cleanup", "--iptables-mode", "legacy")
        assert "PODNET-" not in _node_rules(lab)
        assert "PODNET-" not in lab["node"].run("ipset", "list", "-n")
    finally:
        if eng is not None and eng.poll() is None:
            eng.kill()
            eng.wait()
        api.stdin.close()
        api.kill()
        api.wait()
        lab["node"].run(binary, "--cleanup", "--iptables-mode", "legacy", check=False)


def test_ipv6_ipblock_and_pod_sets(lab):
    """IPv6: ip6tables chains and inet6 ipsets (hash:net with nomatch, hash:ip) on a real kernel."""
    import asyncio

    six = {"x-a": "fd00:1::1", "y-a": "fd00:1:1::1", "z-a": "fd00:1:2::1"}
    for i, (name, addr) in enumerate(PODS.items()):
        if name in six:
            lab["node"].ip("-6", "addr", "add", "fd00:ff::1/128", "dev", f"p{i}", "nodad")
            lab["node"].ip("-6", "route", "add", f"{six[name]}/128", "dev", f"p{i}")
            lab[name].ip("-6", "addr", "add", f"{six[name]}/128", "dev", "eth0", "nodad")
            lab[name].ip("-6", "route", "add", "fd00:ff::1", "dev", "eth0")
            lab[name].ip("-6", "route", "add", "default", "via", "fd00:ff::1")
    lab["node"].sysctl("net.ipv6.conf.all.forwarding", "1")

    def tcp6(src: str, dst: str) -> bool:
        out = json.loads(lab[src].run(PY, "-P", PROBE, "tcp", six[dst], "80", "1", timeout=60))
        return out.get(f"{dst} {six[src]}", 0) == 1

    async def scenario() -> None:
        kernel = KernelRunner(6, "legacy", netns=lab["node"].name)
        pods = [parse_policy_pod(raw_pod(n.split("-")[0], n.split("-")[1], a, node="node", labels={"pod": "a"}))
                for n, a in six.items()]
        from podnet.policy.model import Snapshot, compute
        nss = tuple(parse_namespace(raw_ns(n)) for n in ("x", "y", "z"))
        pol = parse_network_policy(raw_policy("x", "v6", {"podSelector": {}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "fd00:1::/32", "except": ["fd00:1:2::/64"]}}]}]}))
        prog = Programmer(kernel)
        try:
            await prog.apply(compute(Snapshot((pol,), tuple(pods), nss), "node"))
            assert tcp6("y-a", "x-a")
            assert not tcp6("z-a", "x-a")
            pol2 = parse_network_policy(raw_policy("x", "v6", {"podSelector": {}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}))
            await prog.apply(compute(Snapshot((pol2,), tuple(pods), nss), "node"))
            assert tcp6("z-a", "x-a")
            assert not tcp6("y-a", "x-a")
        finally:
            await cleanup(kernel)

    asyncio.run(scenario())


async def test_log_denied_nflog_line_and_denied_counter_on_a_real_kernel(lab, cluster):
    """--log-denied: the denied datagrams reach the engine's NFLOG socket in the node namespace
    with the pod's chain as prefix; one line per flow names the pod, direction and 5-tuple (the
    probe's datagrams each come from their own socket); the DROP counters still feed the metric."""
    from podnet.host.nsenter import made_inside
    from podnet.policy.nflog import DeniedLog, NflogReader, describe_chain

    prog = Programmer(cluster.kernel, log_denied=True)
    cluster.engine.programmers = [prog]
    await cluster.apply(("x", "deny", {"podSelector": A, "ingress": []}))
    assert '-j NFLOG --nflog-prefix "PODNET-NP-I-' in _node_rules(lab)  # iptables-save quotes the prefix
    packets, lines = [], []
    dlog = DeniedLog(lines.append, describe=lambda c: describe_chain(c, prog.chain_pods))
    reader = NflogReader(lambda d: (packets.append(d), dlog.add(d)))
    fd = os.open(lab["node"].path, os.O_RDONLY)
    try:
        made_inside(fd, reader.open)
        before = (await cluster.engine.collect_denied()).get("x/a", 0)
        assert not udp(lab, "y-a", "x-a", 80)  # two datagrams, both dropped
        assert (await cluster.engine.collect_denied())["x/a"] >= before + 2
        reader.read_ready()
    finally:
        reader.close()
        os.close(fd)
    mine = [d for d in packets if d.src == PODS["y-a"] and d.dst == PODS["x-a"]]
    assert len(mine) >= 2, packets
    assert {(d.prefix.startswith("PODNET-NP-I-"), d.protocol, d.dport) for d in mine} == {(True, "UDP", 80)}
    assert sorted(lines) == sorted(f"denied ingress of x/a ({mine[0].prefix}) UDP {PODS['y-a']}:{sport} -> "
                                   f"{PODS['x-a']}:80" for sport in {d.sport for d in mine})  # one per flow


async def test_clusterip_judged_after_dnat_and_proxy_sync_keeps_policy_chains(lab, cluster):
    """With podnet-proxy in the same node namespace: a client reaching x-a through a ClusterIP is
    judged by x-a's ingress rules on its own address (FORWARD sees the DNATed packet), and the
    proxy's full syncs (which delete stale PODNET- chains) leave the policy chains alone."""
    from podnet.proxy.daemon import Config, Daemon
    from podnet.proxy.iptables import IptablesRunner
    from podnet.proxy.proxier import FamilyProxier
    from podnet.proxy.rules import NodeContext
    from podnet.proxy.testing import ep, slice_, svc

    prefix = ["ip", "netns", "exec", lab["node"].name]
    ctx = NodeContext(family=4, cluster_cidrs=("10.1.0.0/16",), node_ips=(GW,))
    fam = FamilyProxier(IptablesRunner(4, "legacy", prefix), ctx, "node")
    daemon = Daemon(Config(hostname_override="node", healthz_bind_address="", metrics_bind_address=""), [fam])
    services, slices = FakeInformer(), FakeInformer()
    daemon.attach(services, slices, None)
    services.set(svc("web", "x", "10.96.0.50", ports=((80, "TCP", "http"),)))
    slices.set(slice_("web", "x", endpoints=[ep(PODS["x-a"], node="node")], ports=((80, "TCP", "http"),), name="web-1"))
    services.synced(), slices.synced()
    try:
        assert await daemon.sync_once()
        await cluster.apply(("x", "web", {"podSelector": A, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
        assert await daemon.sync_once()  # a proxy sync after the policy's: must not remove our chains
        vip = json.loads(lab["x-b"].run(PY, "-P", PROBE, "tcp", "10.96.0.50", "80", "1", timeout=60))
        assert vip.get(f"x-a {PODS['x-b']}") == 1, vip  # allowed, and x-a saw the client's own address
        denied = json.loads(lab["y-a"].run(PY, "-P", PROBE, "tcp", "10.96.0.50", "80", "1", timeout=60))
        assert not any(k.startswith("x-a") for k in denied), denied
        assert "PODNET-NP-I-" in _node_rules(lab)
    finally:
        from podnet.proxy.cleanup import cleanup as proxy_cleanup

        await proxy_cleanup(IptablesRunner(4, "legacy", prefix))
    assert "PODNET-NP-I-" in _node_rules(lab), "the proxy's --cleanup leaves the policy chains"


def test_podnet_policy_once_syncs_and_exits(lab):
    binary = str(Path(sys.executable).with_name("podnet-policy"))
    serve = str(Path(__file__).with_name("apiserve.py"))
    objs = [{"resource": "namespaces", "object": raw_ns("x")},
            {"resource": "pods", "namespace": "x", "object": raw_pod("x", "a", PODS["x-a"], node="node")},
            {"resource": "networkpolicies", "namespace": "x",
             "object": raw_policy("x", "deny", {"podSelector": {}, "policyTypes": ["Egress"]})}]
    api = lab["node"].popen(PY, "-P", serve, "60", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        api.stdin.write(json.dumps(objs) + "\n")
        api.stdin.flush()
        url = api.stdout.readline().strip()
        lab["node"].run(binary, "--master", url, "--hostname-override", "node", "--iptables-mode", "legacy", "--once",
                        timeout=60)
        assert "-s 10.1.0.1/32 -j PODNET-NP-E-" in _node_rules(lab)
        assert not tcp(lab, "x-a", "y-a", 80)
    finally:
        api.stdin.close()
        api.kill()
        api.wait()
        lab["node"].run(binary, "--cleanup", "--iptables-mode", "legacy", check=False)
    assert "PODNET-" not in _node_rules(lab)
