"""The nftables mode on real nftables in network namespaces, real TCP and UDP (root).

Topology (all namespaces pnt-nft-*), the same as test_netns.py's: a node
namespace routing for three echo pods (10.0.1.1-3, /32 routes over veths), a
client pod (10.0.3.3) and an outside host (192.168.0.9 <-> node 192.168.0.2).
The proxy runs in-process with fake informers and the real NftRunner pointed
into the node namespace (netprobe.py is the traffic source and the pods).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from podnet.kube.testing import FakeInformer
from podnet.proxy.conntrack import ConntrackTool, Reconciler
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.nft_node import remove_iptables_rules, remove_tables
from podnet.proxy.nft_proxier import NftFamilyProxier
from podnet.proxy.nft_rules import service_chain_names
from podnet.proxy.nft_run import NftRunner
from podnet.proxy.rules import NodeContext
from podnet.proxy.testing import NODE, ep, slice_, svc

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _load_helper(name: str):
    """A helper module next to this file, loaded by path (the checkout is never on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"podnet_tests_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nodelab = _load_helper("nodelab")
PROBE, PY, PODS, PODS6, PORT = nodelab.PROBE, nodelab.PY, nodelab.PODS, nodelab.PODS6, nodelab.PORT
NODE_IP, OUTSIDE_IP = nodelab.NODE_IP, nodelab.OUTSIDE_IP
probe = nodelab.probe
TCP = ((80, "TCP", "http"),)
TCP_EP = ((PORT, "TCP", "http"),)


@pytest.fixture(scope="module")
def lab():
    with nodelab.node_lab("pnt-nft-") as nss:
        yield nss


def eps(*names, node="node-b"):
    return [ep(PODS[n], node=node) for n in names]


class Proxy:
    """A freshly started nftables-mode proxy for the node namespace."""

    def __init__(self, lab, **ctx_kw):
        self.prefix = ["ip", "netns", "exec", lab["node"].name]
        self.ctx = NodeContext(family=4, cluster_cidrs=("10.0.0.0/16",), node_ips=(NODE_IP, "10.0.0.1"), **ctx_kw)

    async def start(self, services, slices):
        self.fam = NftFamilyProxier(NftRunner(4, self.prefix), self.ctx, NODE,
                                    conntrack=Reconciler(ConntrackTool(self.prefix), 4))
        self.daemon = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address="",
                                    proxy_mode="nftables"), [self.fam])
        self.services, self.slices = FakeInformer(), FakeInformer()
        self.daemon.attach(self.services, self.slices)
        for s in services:
            self.services.set(s)
        for s in slices:
            self.slices.set(s)
        self.services.synced(), self.slices.synced()
        assert await self.daemon.sync_once()
        return self

    async def sync(self):
        assert await self.daemon.sync_once()
        return self.daemon.proxier.last_reports[0]


async def test_clusterip_balances_tcp_and_keeps_pod_source(lab):
    await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=TCP_EP, name="a")])
    got = probe(lab["client"], "tcp", "172.30.0.41", "80", "90")
    per = {k.split()[0]: v for k, v in got.items()}
    assert set(per) == {"ep1", "ep2", "ep3"}, got
    assert all(v >= 10 for v in per.values()), got  # 90 draws, p(any < 10) is about 1e-5
    assert all(k.split()[1] == PODS["client"] for k in got), "pod-to-service traffic is not masqueraded"


async def test_clusterip_balances_udp(lab):
    udp = ((53, "UDP", "dns"),)
    await Proxy(lab).start([svc(ports=udp)], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=((PORT, "UDP", "dns"),), name="a")])
    got = probe(lab["client"], "udp", "172.30.0.41", "53", "30", "0")  # a new source port (flow) per datagram
    assert {k.split()[0] for k in got} == {"ep1", "ep2", "ep3"}, got  # p(one missing) ~ 3 * (2/3)^30 = 1.5e-5


async def test_nodeport_from_outside_and_no_endpoints_reject(lab):
    await Proxy(lab).start(
        [svc(type="NodePort", ports=((80, "TCP", "http", 30080),)), svc(name="empty", cluster_ip="172.30.0.42", ports=TCP)],
        [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")],
    )
    assert probe(lab["out"], "tcp", NODE_IP, "30080", "3") == {"ep1 10.0.0.1": 3}  # eTP Cluster: masqueraded
    assert probe(lab["client"], "tcp", "172.30.0.42", "80", "2") == {"error:ConnectionRefusedError": 2}


async def test_etp_local_keeps_client_ip_and_hairpin_is_masqueraded(lab):
    s = svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "http", 30081),))
    await Proxy(lab).start([s], [slice_(endpoints=eps("ep2", node=NODE) + eps("ep1"), ports=TCP_EP, name="a")])
    assert probe(lab["out"], "tcp", NODE_IP, "30081", "10") == {f"ep2 {OUTSIDE_IP}": 10}
    # ep2 reaching its own Service lands on itself or ep1: either way it gets an answer
    got = probe(lab["ep2"], "tcp", "172.30.0.41", "80", "10")
    assert not any(k.startswith("error") for k in got), got
    assert got.get("ep2 10.0.0.1", 0) + got.get(f"ep1 {PODS['ep2']}", 0) == 10, got


async def test_session_affinity_sticks(lab):
    s = svc(ports=TCP, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    await Proxy(lab).start([s], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=TCP_EP, name="a")])
    got = probe(lab["client"], "tcp", "172.30.0.41", "80", "20")
    assert len(got) == 1 and list(got.values()) == [20], got


def listing(lab) -> list[str]:
    return lab["node"].run("nft", "list", "table", "ip", "podnet").splitlines()


def _objects(n):
    services = [svc(name=f"s{i:04d}", cluster_ip=f"172.30.{i // 250}.{i % 250 + 1}", ports=TCP) for i in range(n)]
    slices = [slice_(service=f"s{i:04d}", name=f"s{i:04d}-a", ports=TCP_EP,
                     endpoints=[ep(f"10.1.{i // 50}.{(i % 50) * 5 + j + 1}") for j in range(5)]) for i in range(n)]
    return services, slices


@pytest.mark.slow
async def test_partial_sync_touches_only_the_changed_service(lab):
    """A 10k-service table; one endpoint change; `nft list table` before/after differs only in that service."""
    services, slices = _objects(10000)
    px = await Proxy(lab).start(services, slices)
    before = listing(lab)
    assert sum(1 for ln in before if ln.strip().startswith("chain svc-")) == 10000
    slices[1234] = slice_(service="s1234", name="s1234-a", ports=TCP_EP, endpoints=[ep("10.9.9.9")])
    px.slices.set(slices[1234])
    rep = await px.sync()
    assert not rep.full and rep.ok
    after = listing(lab)
    svc_chain = service_chain_names("ns/s1234:http", "TCP")[0]
    # Every line that changed belongs to s1234: its chain's rules, or its endpoints in the hairpin set.
    old_eps = {f"10.1.{1234 // 50}.{(1234 % 50) * 5 + j + 1}" for j in range(5)}
    before_set, after_set = set(before), set(after)
    removed = [ln for ln in before if ln not in after_set]
    added = [ln for ln in after if ln not in before_set]
    assert added and removed

    def ours(line: str) -> bool:
        ips = set(re.findall(r"\d+\.\d+\.\d+\.\d+", line))
        return bool(ips) and ips <= old_eps | {"10.9.9.9"}

    assert all(ours(ln) for ln in removed + added), (removed, added)
    at = after.index(f"\tchain {svc_chain} {{")
    assert after[at + 1:at + 3] == ["\t\tmeta l4proto tcp dnat to 10.9.9.9:8080", "\t}"]


async def test_foreign_table_at_the_same_hooks_coexists(lab):
    node = lab["node"]
    node.run("nft", "-f", "-", input="""
table ip pnt-foreign {
  chain c_pre {
    type nat hook prerouting priority dstnat; policy accept;
    counter
  }
  chain c_out {
    type nat hook output priority -100; policy accept;
    counter
  }
  chain c_in {
    type filter hook input priority -110; policy accept;
    counter
  }
  chain c_fwd {
    type filter hook forward priority -110; policy accept;
    counter
  }
}
""")
    try:
        await Proxy(lab).start([svc(type="NodePort", ports=((80, "TCP", "http", 30082),))],
                               [slice_(endpoints=eps("ep3"), ports=TCP_EP, name="a")])
        assert probe(lab["client"], "tcp", "172.30.0.41", "80", "3") == {f"ep3 {PODS['client']}": 3}
        assert probe(lab["out"], "tcp", NODE_IP, "30082", "2") == {"ep3 10.0.0.1": 2}
        foreign = node.run("nft", "list", "table", "ip", "pnt-foreign")
        assert re.search(r"chain c_fwd \{[^}]*counter packets [1-9]", foreign), foreign  # it saw the traffic too
        assert await remove_tables((4,), ["ip", "netns", "exec", node.name]) == 1
        assert "pnt-foreign" in node.run("nft", "list", "tables")
        assert "podnet" not in node.run("nft", "list", "tables").split()
    finally:
        node.run("nft", "delete", "table", "ip", "pnt-foreign", check=False)


SVC_CHAIN = service_chain_names("ns/svc:http", "TCP")[0]


@pytest.mark.parametrize("damage,full", [
    pytest.param(["delete", "table", "ip", "podnet"], True, id="table-deleted"),
    pytest.param(["flush", "table", "ip", "podnet"], True, id="table-flushed"),
    pytest.param(["flush", "chain", "ip", "podnet", "services"], True, id="chain-flushed"),
    pytest.param(["delete", "chain", "ip", "podnet", "nat-prerouting"], True, id="base-chain-deleted"),
    pytest.param(["flush", "chain", "ip", "podnet", SVC_CHAIN], False, id="service-chain-flushed"),
    pytest.param(["delete", "element", "ip", "podnet", "service-ips", "{", "172.30.0.41", ".", "tcp", ".", "80", "}"],
                 True, id="map-element-deleted"),
])
async def test_foreign_damage_found_and_repaired(lab, damage, full):
    px = await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")])
    assert await px.fam.canary_ok()
    if damage[1] == "chain" and damage[0] == "delete":
        lab["node"].run("nft", "flush", "chain", "ip", "podnet", damage[-1])
    lab["node"].run("nft", *damage)
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "1") != {f"ep1 {PODS['client']}": 1}
    px.fam.next_full_check = None  # a period in which counting every chain fits the check's time budget
    assert not await px.fam.canary_ok()
    rep = await px.sync()
    assert (rep.full, rep.ok) == (full, True)
    assert await px.fam.canary_ok()
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "2") == {f"ep1 {PODS['client']}": 2}


async def test_rule_replaced_by_hand_keeping_every_count_is_repaired(lab):
    """``nft replace rule`` of the service chain's one rule by another DNAT (every rule and element count
    unchanged) is found by the chain's content digest and only that chain is rewritten."""
    px = await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")])
    assert await px.fam.canary_ok()  # learns the digests of what it wrote
    listing = lab["node"].run("nft", "-a", "list", "chain", "ip", "podnet", SVC_CHAIN)
    handle = re.search(r"dnat to \S+ # handle (\d+)", listing).group(1)
    lab["node"].run("nft", "replace", "rule", "ip", "podnet", SVC_CHAIN, "handle", handle,
                    "meta", "l4proto", "tcp", "dnat", "to", f"{PODS['ep2']}:{PORT}")
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "1") == {f"ep2 {PODS['client']}": 1}
    px.fam.next_full_check = None  # a period in which counting every chain fits the check's time budget
    assert not await px.fam.canary_ok()
    assert px.fam.repair == {SVC_CHAIN}
    rep = await px.sync()
    assert (rep.full, rep.ok) == (False, True)
    assert await px.fam.canary_ok()
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "2") == {f"ep1 {PODS['client']}": 2}


async def test_switching_from_iptables_mode_removes_its_chains(lab):
    from podnet.host.xtables import detect_mode
    from podnet.proxy.iptables import IptablesRunner
    from podnet.proxy.proxier import FamilyProxier

    prefix = ["ip", "netns", "exec", lab["node"].name]
    mode = await detect_mode(prefix)
    ipt = FamilyProxier(IptablesRunner(4, mode, prefix), NodeContext(family=4, cluster_cidrs=("10.0.0.0/16",)), NODE)
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [ipt])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc(ports=TCP)), si.synced(), ei.synced()
    assert await d.sync_once()
    assert "PODNET-" in lab["node"].run(f"iptables-{mode}-save")
    await remove_iptables_rules(prefix)
    assert "PODNET-" not in lab["node"].run(f"iptables-{mode}-save")
    await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep2"), ports=TCP_EP, name="a")])
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "2") == {f"ep2 {PODS['client']}": 2}


def test_cli_once_in_nftables_mode_switches_modes_and_cleans_up(lab):
    node = lab["node"]
    cli = str(Path(PY).with_name("podnet-proxy"))
    api = node.popen(PY, "-P", str(Path(__file__).with_name("apiserve.py")), PODS["ep1"], "120",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def iptables_rules() -> str:
        return node.run("iptables-save", check=False) + node.run("iptables-legacy-save", check=False)

    def tables() -> list[str]:
        return node.run("nft", "list", "tables").split()

    try:
        url = api.stdout.readline().strip()
        flags = ["--master", url, "--hostname-override", NODE, "--cluster-cidr", "10.0.0.0/16",
                 "--healthz-bind-address", "", "--metrics-bind-address", "", "--once"]
        node.run(cli, *flags, "--proxy-mode", "iptables", timeout=60)
        assert "PODNET-" in iptables_rules()
        node.run(cli, *flags, "--proxy-mode", "nftables", timeout=60)
        assert "PODNET-" not in iptables_rules()  # iptables -> nftables removed the other mode's rules
        assert "podnet" in tables()
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "2") == {"ep1 10.0.3.3": 2}
        assert probe(lab["out"], "tcp", NODE_IP, "30090", "1") == {"ep1 10.0.0.1": 1}
        assert probe(node, "tcp", "127.0.0.1", "30090", "1") == {"ep1 10.0.0.1": 1}  # localhost NodePort
        node.run(cli, *flags, "--proxy-mode", "iptables", timeout=60)
        assert "podnet" not in tables()  # nftables -> iptables removed podnet's table
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "1") == {"ep1 10.0.3.3": 1}
        node.run(cli, *flags, "--proxy-mode", "nftables", timeout=60)
        node.run(cli, "--cleanup", timeout=60)
        assert "podnet" not in tables() and "PODNET-" not in iptables_rules()
    finally:
        api.stdin.close()
        api.wait(timeout=30)


async def test_dual_stack_service_in_both_tables(lab):
    prefix = ["ip", "netns", "exec", lab["node"].name]
    fams = [NftFamilyProxier(NftRunner(4, prefix), NodeContext(family=4, cluster_cidrs=("10.0.0.0/16",), node_ips=(NODE_IP,)), NODE),
            NftFamilyProxier(NftRunner(6, prefix), NodeContext(family=6, cluster_cidrs=("fd00::/16",), node_ips=("fd00:ff::1",)), NODE)]
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address="", proxy_mode="nftables"), fams)
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc(cluster_ip=["172.30.0.41", "fd00:30::41"], ports=TCP, ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack"))
    ei.set(slice_(endpoints=eps("ep1"), ports=TCP_EP, name="v4"))
    ei.set(slice_(endpoints=[ep(PODS6["ep2"]), ep(PODS6["ep3"])], ports=TCP_EP, family="IPv6", name="v6"))
    si.synced(), ei.synced()
    assert await d.sync_once()
    assert {"podnet"} <= set(lab["node"].run("nft", "list", "tables", "ip6").split())
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "2") == {f"ep1 {PODS['client']}": 2}
    got = probe(lab["client"], "tcp", "fd00:30::41", "80", "30")
    assert {k.split()[0] for k in got} == {"ep2", "ep3"} and {k.split()[1] for k in got} == {PODS6["client"]}, got
    assert await remove_tables((4, 6), prefix) == 2


@pytest.mark.parametrize("ranges,answered", [
    pytest.param(["192.168.0.0/24"], True, id="client-inside-source-ranges"),
    pytest.param(["203.0.113.0/24"], False, id="client-outside-source-ranges-dropped"),
])
async def test_loadbalancer_source_ranges(lab, ranges, answered):
    lab["out"].ip("route", "replace", "192.0.2.10/32", "via", NODE_IP)
    s = svc(type="LoadBalancer", ports=((80, "TCP", "http", 30083),), loadBalancerSourceRanges=ranges,
            status={"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}})
    await Proxy(lab).start([s], [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")])
    got = probe(lab["out"], "tcp", "192.0.2.10", "80", "1")
    assert got == ({"ep1 10.0.0.1": 1} if answered else {"error:TimeoutError": 1}), got


async def test_udp_endpoint_replaced_without_black_hole(lab):
    udp = ((53, "UDP", "dns"),)
    proxy = await Proxy(lab).start([svc(ports=udp)], [slice_(endpoints=eps("ep1"), ports=((PORT, "UDP", "dns"),), name="a")])
    assert probe(lab["client"], "udp", "172.30.0.41", "53", "3", "40053") == {"ep1 10.0.3.3": 3}
    proxy.slices.set(slice_(endpoints=eps("ep2"), ports=((PORT, "UDP", "dns"),), name="a"))
    rep = await proxy.sync()
    assert not rep.full
    # same client source port: without the stale-flow cleanup this would stay pinned to ep1
    assert probe(lab["client"], "udp", "172.30.0.41", "53", "3", "40053") == {"ep2 10.0.3.3": 3}
    proxy.slices.delete("ns/a")
    await proxy.sync()
    got = probe(lab["client"], "udp", "172.30.0.41", "53", "2", "40053")
    assert not any(k.startswith("ep") for k in got), got


async def test_session_affinity_survives_a_full_sync(lab):
    s = svc(ports=TCP, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    px = await Proxy(lab).start([s], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=TCP_EP, name="a")])
    first = probe(lab["client"], "tcp", "172.30.0.41", "80", "5")
    assert len(first) == 1, first
    px.fam.need_full = True
    rep = await px.sync()
    assert rep.full and rep.ok
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "10") == {k: 10 for k in first}  # (1/3)^10 by chance


async def test_streamed_apply_commits_nothing_when_the_producer_fails(lab):
    node = lab["node"]
    runner = NftRunner(4, ["ip", "netns", "exec", node.name])

    async def chunks(fail: bool):
        yield "add table ip pnt-stream\n"
        yield "".join(f"add chain ip pnt-stream c{i}\n" for i in range(3000))  # > 32 KiB: reaches nft at once
        if fail:
            raise RuntimeError("the producer failed half way")

    try:
        with pytest.raises(RuntimeError):
            await runner.apply_stream(chunks(True))
        assert "pnt-stream" not in node.run("nft", "list", "tables")
        await runner.apply_stream(chunks(False))
        assert "c2999" in node.run("nft", "list", "chains", "ip")
    finally:
        node.run("nft", "delete", "table", "ip", "pnt-stream", check=False)
