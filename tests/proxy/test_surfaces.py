"""CLI/config parsing, conntrack parsing, health servers over real sockets, dual stack via fakes."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from podnet.kube.testing import FakeClock, FakeInformer
from podnet.proxy.cli import build_config, parse_duration, parser
from podnet.proxy.conntrack import Flow, UdpService, parse_conntrack, stale_flows
from podnet.proxy.daemon import Config, Daemon
from podnet.proxy.healthcheck import HealthServer, ProxyHealth, ServiceHealthServers
from podnet.proxy.proxier import FamilyProxier
from podnet.proxy.rules import JUMPS
from podnet.proxy.testing import NODE, FakeIptables, ctx, ep, slice_, svc
from podnet.proxy.trace import Packet, Tracer


@pytest.mark.parametrize("text,want", [("30s", 30.0), ("1m", 60.0), ("500ms", 0.5), ("1h30m", 5400.0), ("0", 0.0)],
                         ids=["s", "m", "ms", "h-m", "bare-zero"])
def test_parse_duration(text, want):
    assert parse_duration(text) == want


def test_netlab_flags_and_config_file(tmp_path):
    args = parser().parse_args(["--master", "http://10.1.0.1:6443", "--hostname-override", "Node-1", "--cluster-cidr",
                                "10.244.0.0/16,fd00:244::/56", "--nodeport-addresses", "192.168.0.0/24",
                                "--healthz-bind-address", "0.0.0.0:10256", "--metrics-bind-address", "127.0.0.1:10249"])
    cfg = build_config(args)
    assert (cfg.master, cfg.hostname_override, cfg.cluster_cidr, cfg.nodeport_addresses) == (
        "http://10.1.0.1:6443", "node-1", ("10.244.0.0/16", "fd00:244::/56"), ("192.168.0.0/24",))
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                             "hostnameOverride": "n2", "clusterCIDR": "10.0.0.0/8", "nodePortAddresses": ["10.1.0.0/16"],
                             "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "2s"}}))
    cfg = build_config(parser().parse_args(["--config", str(f), "--iptables-min-sync-period", "3s"]))
    assert (cfg.hostname_override, cfg.masquerade_all, cfg.sync_period, cfg.min_sync_period, cfg.nodeport_addresses) == (
        "n2", True, 10.0, 3.0, ("10.1.0.0/16",))


def test_parse_conntrack_and_stale_flows():
    text = (
        "udp      17 29 src=10.0.3.3 dst=172.30.0.41 sport=40053 dport=53 src=10.0.1.1 dst=10.0.3.3 sport=8080 dport=40053 mark=0 use=1\n"
        "udp      17 10 src=10.0.3.3 dst=172.30.0.41 sport=40054 dport=53 [UNREPLIED] src=172.30.0.41 dst=10.0.3.3 sport=53 dport=40054 mark=0 use=1\n"
        "udp      17 10 src=9.9.9.9 dst=192.168.0.2 sport=1 dport=30053 src=10.0.1.2 dst=192.168.0.2 sport=8080 dport=1 mark=0 use=1\n"
        "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n"
    )
    flows = parse_conntrack(text)
    assert flows[0] == Flow("10.0.3.3", "172.30.0.41", 40053, 53, "10.0.1.1") and len(flows) == 3
    now = [UdpService(("172.30.0.41",), 53, 30053, frozenset({"10.0.1.1"}))]
    assert stale_flows(flows, now) == [flows[1], flows[2]]
    assert stale_flows([Flow("a", "172.30.0.99", 1, 53, "10.0.1.1")], now, gone_ips=["172.30.0.99"]) != []


async def test_health_servers_over_http():
    h = ProxyHealth(timeout=60)
    server = HealthServer(h)
    await server.start("127.0.0.1", 0)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    hc_port = probe.getsockname()[1]
    probe.close()
    svcs = ServiceHealthServers(h, host="127.0.0.1")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/livez") as r:
                assert r.status == 200 and (await r.json())["healthy"] is True
            await svcs.sync({"ns/web": (hc_port, 2)})
            async with s.get(f"http://127.0.0.1:{hc_port}/") as r:
                body = await r.json()
                assert r.status == 200 and body == {"service": {"namespace": "ns", "name": "web"}, "localEndpoints": 2,
                                                    "serviceProxyHealthy": True}
                assert r.headers["X-Load-Balancing-Endpoint-Weight"] == "2"
            await svcs.sync({"ns/web": (hc_port, 0)})
            async with s.get(f"http://127.0.0.1:{hc_port}/") as r:
                assert r.status == 503 and (await r.json())["localEndpoints"] == 0
            h.node_deleting = True
            async with s.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                assert r.status == 503 and (await r.json())["nodeEligible"] is False
            await svcs.sync({})
            with pytest.raises(aiohttp.ClientConnectionError):
                async with s.get(f"http://127.0.0.1:{hc_port}/"):
                    pass
    finally:
        await svcs.stop()
        await server.stop()


async def test_dual_stack_one_daemon_two_families():
    v4, v6 = FakeIptables(4), FakeIptables(6)
    fams = [FamilyProxier(v4, ctx(), NODE),
            FamilyProxier(v6, ctx(family=6, cluster_cidrs=("fd00::/48",), node_ips=("fd00:99::2",)), NODE)]
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), fams, FakeClock())
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc(cluster_ip=["172.30.0.41", "fd00:30::41"], ipFamilies=["IPv4", "IPv6"]))
    ei.set(slice_(endpoints=[ep("10.0.1.1")], name="v4"))
    ei.set(slice_(endpoints=[ep("fd00:1::1")], family="IPv6", name="v6"))
    si.synced(), ei.synced()
    assert await d.sync_once()
    assert Tracer(v4.tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", "172.30.0.41", 80)).endpoints == ("10.0.1.1:80",)
    assert Tracer(v6.tables, ("fd00:99::2",)).trace(Packet("fd00::3", "fd00:30::41", 80)).endpoints == ("[fd00:1::1]:80",)
    assert "fd00" not in "".join(v4.restores) and "10.0.1.1" not in "".join(v6.restores)


async def test_repeated_full_syncs_never_duplicate_jumps():
    fake = FakeIptables()
    fam = FamilyProxier(fake, ctx(), NODE)
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.synced(), ei.synced()
    for _ in range(3):
        fam.need_full = True
        assert await d.sync_once()
    for table, chain, rule in JUMPS:
        assert fake.rules(table, chain).count(rule) == 1
    # a restart (fresh process state) with a chain left over from an older run: removed
    await fake.restore("*nat\n:PODNET-SVC-OLDOLDOLDOLDOLDO - [0:0]\nCOMMIT\n")
    fresh = FamilyProxier(fake, ctx(), NODE)
    d2 = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), [fresh], FakeClock())
    si2, ei2 = FakeInformer(), FakeInformer()
    d2.attach(si2, ei2)
    si2.synced(), ei2.synced()
    assert await d2.sync_once()
    assert "PODNET-SVC-OLDOLDOLDOLDOLDO" not in fake.tables["nat"]
    assert sum(r.count("PODNET") for r in fake.rules("nat", "PREROUTING")) == 1


async def test_stale_chain_still_jumped_to_from_builtin_does_not_break_full_sync():
    fake = FakeIptables()
    await fake.restore("*nat\n:PODNET-OLD-ENTRY - [0:0]\n-A PREROUTING -j PODNET-OLD-ENTRY\nCOMMIT\n")
    fam = FamilyProxier(fake, ctx(), NODE)
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc()), ei.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    si.synced(), ei.synced()
    assert await d.sync_once()
    assert Tracer(fake.tables, ("192.168.0.2",)).trace(Packet("10.0.3.3", "172.30.0.41", 80)).endpoints == ("10.0.1.1:80",)
    await asyncio.sleep(0)


async def test_node_address_change_recomputes_and_full_syncs():
    fake = FakeIptables()
    fam = FamilyProxier(fake, ctx(node_ips=("192.168.0.2",)), NODE)
    clock = FakeClock()
    addrs = {4: ("192.168.0.2",)}

    async def addresses(family):
        return addrs[family]

    d = Daemon(Config(healthz_bind_address="", metrics_bind_address="", sync_period=30), [fam], clock, addresses=addresses)
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))), ei.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    si.synced(), ei.synced()
    assert await d.sync_once()
    assert not fam.update_node_ips(("192.168.0.2",))
    addrs[4] = ("192.168.0.2", "192.168.5.5")
    loop = asyncio.ensure_future(d.canary_loop())
    for _ in range(5):
        await asyncio.sleep(0)
    loop.cancel()
    assert fam.need_full and fam.ctx.node_ips == ("192.168.0.2", "192.168.5.5")
    assert await d.sync_once() and d.proxier.last_reports[0].full


def test_yaml_config_file(tmp_path):
    pytest.importorskip("yaml", reason="YAML configs need PyYAML; JSON needs nothing")
    f = tmp_path / "kube-proxy.yaml"
    f.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                 "clusterCIDR: 10.244.0.0/16\nhealthzBindAddress: 0.0.0.0:10256\n"
                 "iptables:\n  syncPeriod: 45s\n  localhostNodePorts: false\n")
    cfg = build_config(parser().parse_args(["--config", str(f)]))
    assert (cfg.cluster_cidr, cfg.sync_period, cfg.localhost_nodeports) == (("10.244.0.0/16",), 45.0, False)
