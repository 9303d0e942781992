"""Real iptables in network namespaces, real TCP and UDP (root; runs in CI).

Topology (all namespaces pnt-px-*): a node namespace routes for three pods
(10.0.1.1-3, each on its own veth, /32 routes, so every packet crosses the
node's conntrack), a client pod (10.0.3.3) and an outside host
(192.168.0.9 <-> node 192.168.0.2). The proxy runs in-process with fake
informers and the real iptables runner pointed into the node namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from podnet.kube.testing import FakeInformer
from podnet.host.netns import NetnsPool
from podnet.proxy.conntrack import ConntrackTool, Reconciler
from podnet.proxy.daemon import Config, Daemon
from podnet.host.xtables import detect_mode
from podnet.proxy.iptables import IptablesRunner
from podnet.proxy.proxier import FamilyProxier
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


@pytest.fixture(scope="module")
def lab():
    with nodelab.node_lab("pnt-px-") as nss:
        yield nss


class Proxy:
    """A freshly started proxy (no memory of earlier runs) for the node namespace."""

    def __init__(self, lab, **ctx_kw):
        self.prefix = ["ip", "netns", "exec", lab["node"].name]
        self.ctx = NodeContext(family=4, cluster_cidrs=("10.0.0.0/16",), node_ips=(NODE_IP, "10.0.0.1"), **ctx_kw)

    async def start(self, services, slices, nodes=None):
        mode = await detect_mode(self.prefix)
        self.fam = FamilyProxier(IptablesRunner(4, mode, self.prefix), self.ctx, NODE,
                                 conntrack=Reconciler(ConntrackTool(self.prefix), 4))
        self.daemon = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [self.fam])
        self.services, self.slices = FakeInformer(), FakeInformer()
        self.daemon.attach(self.services, self.slices, nodes)
        for s in services:
            self.services.set(s)
        for s in slices:
            self.slices.set(s)
        self.services.synced(), self.slices.synced()
        assert await self.daemon.sync_once()
        return self

    async def sync(self):
        assert await self.daemon.sync_once()


def eps(*names, node="node-b"):
    return [ep(PODS[n], node=node) for n in names]


TCP = ((80, "TCP", "http"),)
TCP_EP = ((PORT, "TCP", "http"),)


async def test_clusterip_balances_tcp(lab):
    await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=TCP_EP, name="a")])
    got = probe(lab["client"], "tcp", "172.30.0.41", "80", "90")
    per = {k.split()[0]: v for k, v in got.items()}
    assert set(per) == {"ep1", "ep2", "ep3"}, got
    assert all(v >= 10 for v in per.values()), got  # 90 draws, p(any < 10) is about 1e-5
    assert all(k.split()[1] == PODS["client"] for k in got), "pod-to-service traffic is not masqueraded"


async def test_nodeport_from_outside_and_no_endpoint_reject(lab):
    await Proxy(lab).start(
        [svc(type="NodePort", ports=((80, "TCP", "http", 30080),)), svc(name="empty", cluster_ip="172.30.0.42", ports=TCP)],
        [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")],
    )
    got = probe(lab["out"], "tcp", NODE_IP, "30080", "3")
    # eTP Cluster: masqueraded to the node's address toward the pod
    assert got == {"ep1 10.0.0.1": 3}, got
    refused = probe(lab["client"], "tcp", "172.30.0.42", "80", "2")
    assert refused == {"error:ConnectionRefusedError": 2}


async def test_etp_local_preserves_client_ip(lab):
    s = svc(type="NodePort", externalTrafficPolicy="Local", ports=((80, "TCP", "http", 30081),))
    await Proxy(lab).start([s], [slice_(endpoints=eps("ep2", node=NODE) + eps("ep1"), ports=TCP_EP, name="a")])
    got = probe(lab["out"], "tcp", NODE_IP, "30081", "10")
    assert got == {f"ep2 {OUTSIDE_IP}": 10}


async def test_topology_hints_follow_the_node_zone(lab):
    """Zone hints on real iptables: the node's zone (from its Node) picks the endpoints; a label change re-syncs."""
    from podnet.kube.objects import parse_node

    def node(zone):
        return parse_node({"metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": zone}}})

    hinted = [ep(PODS["ep1"], zones=("zone-a",)), ep(PODS["ep2"], zones=("zone-b",)), ep(PODS["ep3"], zones=("zone-a",))]
    nodes = FakeInformer()
    px = await Proxy(lab).start([svc(ports=TCP, annotations={"service.kubernetes.io/topology-mode": "Auto"})],
                                [slice_(endpoints=hinted, ports=TCP_EP, name="a")], nodes)
    nodes.set(node("zone-a"))
    await px.sync()
    got = probe(lab["client"], "tcp", "172.30.0.41", "80", "40")
    assert {k.split()[0] for k in got} == {"ep1", "ep3"}, got  # 40 draws over 2: missing one is ~1e-12
    nodes.set(node("zone-b"))
    await px.sync()
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "5") == {f"ep2 {PODS['client']}": 5}


async def test_session_affinity_sticks(lab):
    s = svc(ports=TCP, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    await Proxy(lab).start([s], [slice_(endpoints=eps("ep1", "ep2", "ep3"), ports=TCP_EP, name="a")])
    got = probe(lab["client"], "tcp", "172.30.0.41", "80", "20")
    assert len(got) == 1 and list(got.values()) == [20], got


async def test_udp_endpoint_replaced_without_black_hole(lab):
    udp = ((53, "UDP", "dns"),)
    proxy = await Proxy(lab).start([svc(ports=udp)], [slice_(endpoints=eps("ep1"), ports=((PORT, "UDP", "dns"),), name="a")])
    assert probe(lab["client"], "udp", "172.30.0.41", "53", "3", "40053") == {"ep1 10.0.3.3": 3}
    proxy.slices.set(slice_(endpoints=eps("ep2"), ports=((PORT, "UDP", "dns"),), name="a"))
    await proxy.sync()
    # same client source port: without the conntrack cleanup this would stay pinned to ep1
    assert probe(lab["client"], "udp", "172.30.0.41", "53", "3", "40053") == {"ep2 10.0.3.3": 3}
    proxy.slices.delete("ns/a")
    await proxy.sync()
    got = probe(lab["client"], "udp", "172.30.0.41", "53", "2", "40053")
    assert not any(k.startswith("ep") for k in got), got


async def test_restart_under_traffic_keeps_connections(lab):
    objs = ([svc(ports=TCP)], [slice_(endpoints=eps("ep1", "ep2"), ports=TCP_EP, name="a")])
    await Proxy(lab).start(*objs)
    holder = lab["client"].popen(PY, "-P", PROBE, "hold", "172.30.0.41", "80", "3", stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "connected"
        for _ in range(3):  # three restarts: each a fresh full sync of the same state
            await Proxy(lab).start(*objs)
            time.sleep(0.3)
        res = json.loads(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    assert res["error"] == "" and res["sent"] >= 10 and res["echoed"] == res["sent"], res


async def test_api_outage_changes_nothing(lab):
    import asyncio

    from podnet.kube import resources as r
    from podnet.kube.client import ApiClient
    from podnet.netlab.apiserver.server import LabApiServer
    from podnet.proxy.daemon import real_informers

    prefix = ["ip", "netns", "exec", lab["node"].name]
    mode = await detect_mode(prefix)
    api = await LabApiServer().start(["127.0.0.1:0"])
    client = ApiClient.from_url(api.url)
    stop, task = asyncio.Event(), None
    try:
        await client.create(r.SERVICES, {"metadata": {"name": "web", "namespace": "default"},
                                         "spec": {"clusterIP": "10.96.0.41", "ports": [{"name": "http", "port": 80, "targetPort": PORT}]}},
                            namespace="default")
        await client.create(r.ENDPOINT_SLICES, {"metadata": {"name": "web-1", "namespace": "default",
                                                             "labels": {"kubernetes.io/service-name": "web"}},
                                                "addressType": "IPv4", "endpoints": [{"addresses": [PODS["ep1"]], "nodeName": "node-b"}],
                                                "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}]}, namespace="default")
        ctx = NodeContext(family=4, cluster_cidrs=("10.0.0.0/16",), node_ips=(NODE_IP,))
        fam = FamilyProxier(IptablesRunner(4, mode, prefix), ctx, NODE)
        cfg = Config(hostname_override=NODE, sync_period=0.5, min_sync_period=0.1, healthz_bind_address="", metrics_bind_address="")
        daemon = Daemon(cfg, [fam])
        daemon.attach(*real_informers(client, NODE))
        task = asyncio.create_task(daemon.run(stop))
        for _ in range(200):
            if fam.applied is not None:
                break
            await asyncio.sleep(0.05)
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "3") == {"ep1 10.0.3.3": 3}
        save = lambda: "\n".join(ln for ln in lab["node"].run(f"iptables-{mode}-save").splitlines() if not ln.startswith("#"))  # noqa: E731
        before, runs = save(), daemon.runner.runs
        await api.stop()
        await asyncio.sleep(2.0)  # several periodic syncs and informer reconnect attempts
        assert daemon.runner.runs > runs
        assert save() == before
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "3") == {"ep1 10.0.3.3": 3}
    finally:
        stop.set()
        if task:
            await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await api.stop()


def test_cli_once_daemon_sigterm_and_cleanup(lab):
    import signal
    import urllib.request  # noqa: F401  (used inside the namespace below)

    node = lab["node"]
    cli = str(Path(PY).with_name("podnet-proxy"))
    api = node.popen(PY, "-P", str(Path(__file__).with_name("apiserve.py")), PODS["ep1"], "120",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = api.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        flags = ["--master", url, "--hostname-override", NODE, "--cluster-cidr", "10.0.0.0/16",
                 "--healthz-bind-address", "0.0.0.0:10256", "--metrics-bind-address", "127.0.0.1:10249"]
        node.run(cli, *flags, "--once", timeout=60)
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "2") == {"ep1 10.0.3.3": 2}
        assert probe(lab["out"], "tcp", NODE_IP, "30090", "1") == {"ep1 10.0.0.1": 1}
        # localhost NodePort: route_localnet was set in the node namespace (only there) when writing
        assert node.run("sysctl", "-n", "net.ipv4.conf.all.route_localnet").strip() == "1"
        assert probe(node, "tcp", "127.0.0.1", "30090", "1") == {"ep1 10.0.0.1": 1}

        daemon = node.popen(cli, *flags, "--iptables-sync-period", "2s", stderr=subprocess.PIPE, text=True)
        try:
            fetch = ("import sys, time, urllib.request as u\n"
                     "for url in sys.argv[1:]:\n"
                     "    for _ in range(150):\n"
                     "        try: body = u.urlopen(url, timeout=2).read().decode()\n"
                     "        except Exception: body = ''\n"
                     "        if body and '1970-01-01' not in body: print(body); break\n"
                     "        time.sleep(0.1)\n")
            out = node.run(PY, "-P", "-c", fetch, "http://127.0.0.1:10256/healthz", "http://127.0.0.1:10249/metrics", timeout=60)
            assert '"healthy": true' in out and '"nodeEligible"' in out
            assert "kubeproxy_sync_proxy_rules_duration_seconds_bucket" in out
            assert "kubeproxy_sync_proxy_rules_iptables_restore_failures_total" in out
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err[-2000:]
        assert "rules left in place" in err
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "1") == {"ep1 10.0.3.3": 1}

        node.run(cli, "--cleanup", timeout=60)
        mode_saves = node.run("iptables-save") + node.run("iptables-legacy-save", check=False)
        assert "PODNET" not in mode_saves
    finally:
        api.stdin.close()
        api.wait(timeout=30)


def test_cli_nodeport_addresses_primary_and_programming_latency(lab):
    """--nodeport-addresses primary takes the InternalIP from the Node object (NodePort answered there,
    not on the node's other address nor on localhost); an EndpointSlice update carrying the
    last-change-trigger-time annotation is observed in kubeproxy_network_programming_duration_seconds."""
    node = lab["node"]
    cli = str(Path(PY).with_name("podnet-proxy"))
    api = node.popen(PY, "-P", str(Path(__file__).with_name("apiserve.py")), PODS["ep1"], "120", f"{NODE}={NODE_IP}",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    daemon = None
    try:
        url = api.stdout.readline().strip()
        flags = ["--master", url, "--hostname-override", NODE, "--cluster-cidr", "10.0.0.0/16",
                 "--nodeport-addresses", "primary", "--healthz-bind-address", "",
                 "--metrics-bind-address", "127.0.0.1:10249", "--iptables-min-sync-period", "0.1s"]
        daemon = node.popen(cli, *flags, stderr=subprocess.PIPE, text=True)
        # both the NodePort and the metric are checked from inside the node namespace by one bounded script
        script = (
            "import json, sys, time, asyncio, urllib.request as u\n"
            "from datetime import datetime, timezone\n"
            "from podnet.kube import resources as r\n"
            "from podnet.kube.client import ApiClient\n"
            "def metric():\n"
            "    try: body = u.urlopen('http://127.0.0.1:10249/metrics', timeout=2).read().decode()\n"
            "    except Exception: return None\n"
            "    for ln in body.splitlines():\n"
            "        if ln.startswith('kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}'):\n"
            "            return float(ln.split()[-1])\n"
            "    return 0.0 if 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{' in body else None\n"
            "for _ in range(300):\n"
            "    if metric() is not None: break\n"
            "    time.sleep(0.1)\n"
            "before = metric()\n"
            "async def touch():\n"
            "    async with ApiClient.from_url(sys.argv[1]) as c:\n"
            "        s = await c.get(r.ENDPOINT_SLICES, 'web-1', namespace='default')\n"
            "        s['metadata'].setdefault('annotations', {})['endpoints.kubernetes.io/last-change-trigger-time'] = "
            "datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')\n"
            "        s['endpoints'][0]['conditions'] = {'ready': True, 'serving': True, 'terminating': False}\n"
            "        s['endpoints'].append({'addresses': [sys.argv[2]], 'nodeName': 'node-b'})\n"
            "        await c.replace(r.ENDPOINT_SLICES, s, namespace='default')\n"
            "asyncio.run(touch())\n"
            "after = before\n"
            "for _ in range(300):\n"
            "    after = metric()\n"
            "    if after and after > (before or 0): break\n"
            "    time.sleep(0.1)\n"
            "print(json.dumps({'before': before, 'after': after}))\n"
        )
        out = json.loads(node.run(PY, "-P", "-c", script, url, PODS["ep2"], timeout=90))
        assert out["before"] == 0.0 and out["after"] == 1.0, out
        assert probe(lab["out"], "tcp", NODE_IP, "30090", "2").keys() <= {"ep1 10.0.0.1", "ep2 10.0.0.1"}
        assert sum(probe(lab["out"], "tcp", NODE_IP, "30090", "4").values()) == 4
        not_primary = probe(node, "tcp", "10.0.0.1", "30090", "1")  # another local address of the node
        assert not any(k.startswith("ep") for k in not_primary), not_primary
        localhost = probe(node, "tcp", "127.0.0.1", "30090", "1")
        assert not any(k.startswith("ep") for k in localhost), localhost
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.communicate()
        api.stdin.close()
        api.wait(timeout=30)
        node.run(cli, "--cleanup", timeout=60)


async def test_ipv6_clusterip_through_ip6tables(lab):
    prefix = ["ip", "netns", "exec", lab["node"].name]
    mode = await detect_mode(prefix)
    ctx6 = NodeContext(family=6, cluster_cidrs=("fd00::/16",), node_ips=("fd00:ff::1",))
    fam = FamilyProxier(IptablesRunner(6, mode, prefix), ctx6, NODE)
    d = Daemon(Config(healthz_bind_address="", metrics_bind_address=""), [fam])
    si, ei = FakeInformer(), FakeInformer()
    d.attach(si, ei)
    si.set(svc(cluster_ip="fd00:30::41", ports=TCP))
    ei.set(slice_(endpoints=[ep(PODS6["ep1"]), ep(PODS6["ep2"])], ports=TCP_EP, family="IPv6", name="v6"))
    si.synced(), ei.synced()
    assert await d.sync_once()
    got = probe(lab["client"], "tcp", "fd00:30::41", "80", "30")
    assert {k.split()[0] for k in got} == {"ep1", "ep2"} and {k.split()[1] for k in got} == {PODS6["client"]}, got
    assert "DNAT" in lab["node"].run(f"ip6tables-{mode}-save", "-t", "nat")


async def test_failed_restore_keeps_rules_and_foreign_flush_is_repaired(lab):
    from podnet.proxy.iptables import RestoreError

    proxy = await Proxy(lab).start([svc(ports=TCP)], [slice_(endpoints=eps("ep1"), ports=TCP_EP, name="a")])
    runner, node = proxy.fam.ipt, lab["node"]
    save = lambda: "\n".join(ln for ln in node.run(runner._save).splitlines() if not ln.startswith("#"))  # noqa: E731
    before = save()
    with pytest.raises(RestoreError) as ei:
        await runner.restore("*nat\n:PODNET-SERVICES - [0:0]\n-A PODNET-SERVICES -j PODNET-NOT-THERE\nCOMMIT\n")
    assert ei.value.line in (3, 4) and "PODNET-NOT-THERE" in ei.value.context()  # nft reports the COMMIT line
    assert save() == before
    node.run(runner._iptables, "-t", "nat", "-F")  # a firewall reload wipes nat
    node.run(runner._iptables, "-t", "nat", "-X")
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "1") != {"ep1 10.0.3.3": 1}
    assert not await proxy.fam.canary_ok()
    await proxy.sync()
    assert proxy.daemon.proxier.last_reports[0].full
    assert probe(lab["client"], "tcp", "172.30.0.41", "80", "2") == {"ep1 10.0.3.3": 2}


@pytest.mark.parametrize("mode", ["legacy", "nft"])
async def test_fake_iptables_conforms_to_real_restore(mode):
    """Same restore text into FakeIptables and the real backend: same podnet chains, same rule counts."""
    from podnet.proxy.testing import FakeIptables
    from podnet.proxy.iptables import parse_save
    from podnet.proxy.render import render_full
    from podnet.proxy.rules import JUMPS
    from podnet.proxy.snapshot import build
    from podnet.proxy.testing import ctx

    services = [svc(type="LoadBalancer", ports=((80, "TCP", "p80", 30080),), externalIPs=["192.0.2.10"],
                    loadBalancerSourceRanges=["203.0.113.0/24"], status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
                    sessionAffinity="ClientIP"),
                svc(name="empty", cluster_ip="172.30.0.42"),
                svc(name="u", cluster_ip="172.30.0.43", ports=((53, "UDP", "dns"), (9, "SCTP", "s")))]
    services += [svc(name=f"many{i}", cluster_ip=f"172.30.1.{i}") for i in range(1, 40)]
    slices = [slice_(endpoints=[ep("10.0.1.1"), ep("10.0.1.2", node=NODE)], name="a"),
              slice_(service="u", endpoints=[ep("10.0.1.3")], ports=((53, "UDP", "dns"), (9, "SCTP", "s")), name="b")]
    slices += [slice_(service=f"many{i}", endpoints=[ep(f"10.0.2.{i}")], name=f"m{i}") for i in range(1, 40)]
    text = render_full(build(services, slices, ctx(), NODE))
    fake = FakeIptables()
    await fake.restore(text)
    pool = NetnsPool("pnt-px-")
    try:
        ns = pool.netns("conf")
        runner = IptablesRunner(4, mode, ["ip", "netns", "exec", ns.name])
        await runner.restore(text)
        for table, chain, rule in JUMPS:
            assert await runner.ensure_jump(table, chain, rule)
            assert not await runner.ensure_jump(table, chain, rule)  # idempotent against real -C
        real = await runner.save()
    finally:
        pool.close()
    saved = parse_save(real)
    for table in ("filter", "nat", "mangle"):
        ours = {c for c in fake.tables[table] if c.startswith("PODNET-")}
        assert {c for c in saved.chains[table] if c.startswith("PODNET-")} == ours
        for chain in ours:
            n_real = sum(1 for ln in real.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0].splitlines() if ln.startswith(f"-A {chain} "))
            assert n_real == len(fake.tables[table][chain]), (table, chain)
    assert {(t, c, r.rsplit("-j ", 1)[1]) for t, c, r in JUMPS} == saved.jumps
