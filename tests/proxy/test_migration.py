"""Migration from kube-proxy: its KUBE-* rules removed once podnet's are in place, no connection dropped.

``KUBE_PROXY_SAVE`` is what ``iptables-save`` shows on a kubeadm node running kube-proxy
in iptables mode for one Service default/web (ClusterIP 10.96.0.41:80, NodePort 30090,
one endpoint 10.0.1.1:8080, clusterCIDR 10.0.0.0/16): the jump chains, comments, mark
rules and chain names of pkg/proxy/iptables/proxier.go (``KUBE-SVC-``/``KUBE-SEP-``
names are base32(sha256(...))[:16] of "default/web:http" + "tcp" [+ "10.0.1.1:8080"]),
plus the chains kubelet owns (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT),
which kube-proxy's own cleanup leaves alone ("Duplicates of chains created in
pkg/kubelet/kubelet_network_linux.go; we create these on startup but do not delete them
in CleanupLeftovers") and so does podnet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.host.netns import NetnsPool
from podnet.proxy.cleanup import cleanup, cleanup_kube_proxy, is_kube_proxy_chain, kube_proxy_removal
from podnet.proxy.rules import JUMPS
from podnet.proxy.testing import FakeIptables

SVC, SEP = "KUBE-SVC-CDGGSHYLG3RE2FKL", "KUBE-SEP-4ZKWQ6HMCZEIOYPO"
EXT = "KUBE-EXT-CDGGSHYLG3RE2FKL"

KUBE_PROXY_SAVE = f"""\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:{EXT} - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:{SEP} - [0:0]
:KUBE-SERVICES - [0:0]
:{SVC} - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A {EXT} -m comment --comment "masquerade traffic for default/web:http external destinations" -j KUBE-MARK-MASQ
-A {EXT} -j {SVC}
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30090 -j {EXT}
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A {SEP} -s 10.0.1.1/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A {SEP} -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.0.1.1:8080
-A KUBE-SERVICES -d 10.96.0.41/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j {SVC}
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A {SVC} ! -s 10.0.0.0/16 -d 10.96.0.41/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A {SVC} -m comment --comment "default/web:http -> 10.0.1.1:8080" -j {SEP}
COMMIT
"""

KUBELET_CHAINS = {("mangle", "KUBE-IPTABLES-HINT"), ("mangle", "KUBE-KUBELET-CANARY"), ("filter", "KUBE-FIREWALL"),
                  ("filter", "KUBE-KUBELET-CANARY"), ("nat", "KUBE-KUBELET-CANARY")}


def chains_of(save_text: str) -> set[tuple[str, str]]:
    out, table = set(), ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            out.add((table, line[1:].split()[0]))
    return out


def kube_proxy_lines(save_text: str) -> list[str]:
    return [ln for ln in save_text.splitlines()
            if ln.startswith((":", "-A")) and any(is_kube_proxy_chain(t) for t in ln.replace(":", " ").split())]


CLASSES = [
    ("services", "KUBE-SERVICES", True), ("svc", SVC, True), ("sep", SEP, True), ("ext", EXT, True),
    ("svl", "KUBE-SVL-ABCDEFGHIJKLMNOP", True), ("fw", "KUBE-FW-ABCDEFGHIJKLMNOP", True),
    ("proxy-canary", "KUBE-PROXY-CANARY", True), ("mark-masq", "KUBE-MARK-MASQ", True),
    ("kubelet-firewall", "KUBE-FIREWALL", False), ("kubelet-canary", "KUBE-KUBELET-CANARY", False),
    ("hint", "KUBE-IPTABLES-HINT", False), ("mark-drop", "KUBE-MARK-DROP", False), ("podnet", "PODNET-SERVICES", False),
    ("builtin", "PREROUTING", False),
]


@pytest.mark.parametrize("chain,theirs", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_which_chains_are_kube_proxys(chain, theirs):
    assert is_kube_proxy_chain(chain) is theirs


def test_removal_plan_from_save_text():
    jumps, chains = kube_proxy_removal(KUBE_PROXY_SAVE)
    assert ("filter", "INPUT", "-j KUBE-FIREWALL") not in jumps  # kubelet's jump stays
    assert {(t, c) for t, c, _ in jumps} == {("filter", "INPUT"), ("filter", "FORWARD"), ("filter", "OUTPUT"),
                                             ("nat", "PREROUTING"), ("nat", "OUTPUT"), ("nat", "POSTROUTING")}
    assert len(jumps) == 12
    removed = {(t, c) for t, cs in chains.items() for c in cs}
    assert removed == {tc for tc in chains_of(KUBE_PROXY_SAVE) if is_kube_proxy_chain(tc[1])}
    assert not removed & KUBELET_CHAINS


async def test_cleanup_on_fake_leaves_podnet_and_kubelet_and_is_idempotent():
    fake = FakeIptables()
    await fake.restore(KUBE_PROXY_SAVE)
    podnet_jump = next(r for t, c, r in JUMPS if (t, c) == ("nat", "PREROUTING"))
    await fake.restore(f"*nat\n:PODNET-SERVICES - [0:0]\n-A PREROUTING {podnet_jump}\nCOMMIT\n")
    assert await cleanup_kube_proxy(fake) == 15
    after = await fake.save()
    assert kube_proxy_lines(after) == []
    assert KUBELET_CHAINS <= chains_of(after) and ("nat", "PODNET-SERVICES") in chains_of(after)
    assert fake.rules("filter", "INPUT") == ["-j KUBE-FIREWALL"] and fake.rules("nat", "PREROUTING") == [podnet_jump]
    assert await cleanup_kube_proxy(fake) == 0 and await fake.save() == after
    # and podnet's own --cleanup never touches what is left of KUBE-*
    await cleanup(fake)
    assert KUBELET_CHAINS <= chains_of(await fake.save())


# -- real iptables, real TCP, in network namespaces (root)

HERE = Path(__file__).parent
PROBE, APISERVE = str(HERE / "netprobe.py"), str(HERE / "apiserve.py")
PY = sys.executable
PROXY = str(Path(PY).with_name("podnet-proxy"))
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def probe(ns, *args: str) -> dict:
    return json.loads(ns.run(PY, "-P", PROBE, *args, timeout=60))


@pytest.mark.root
@root
def test_kube_proxy_node_switches_to_podnet_without_dropping_a_connection():
    pool = NetnsPool("pnt-mig-")
    procs: list[subprocess.Popen] = []
    try:
        node = pool.netns("node")
        node.sysctl("net.ipv4.ip_forward", "1")
        nss = {}
        for i, (name, ip) in enumerate((("ep1", "10.0.1.1"), ("client", "10.0.3.3"))):
            pod = pool.netns(name)
            pool.veth(node, f"p{i}", pod, "eth0")
            node.ip("addr", "add", "10.0.0.1/32", "dev", f"p{i}")
            node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
            pod.ip("addr", "add", f"{ip}/32", "dev", "eth0")
            pod.ip("route", "add", "10.0.0.1", "dev", "eth0")
            pod.ip("route", "add", "default", "via", "10.0.0.1")
            nss[name] = pod
        srv = nss["ep1"].popen(PY, "-P", PROBE, "server", "ep1", "8080", "120", stdout=subprocess.PIPE, text=True)
        procs.append(srv)
        assert srv.stdout.readline().strip() == "ready"

        # 1. the node as kube-proxy left it (kube-proxy stopped; its rules stay, as they do on exit)
        node.run("iptables-restore", input=KUBE_PROXY_SAVE)
        assert probe(nss["client"], "tcp", "10.96.0.41", "80", "2") == {"ep1 10.0.3.3": 2}
        # 2. a connection established through kube-proxy's DNAT, kept busy across the switch
        holder = nss["client"].popen(PY, "-P", PROBE, "hold", "10.96.0.41", "80", "12",
                                     stdout=subprocess.PIPE, text=True)
        procs.append(holder)
        assert holder.stdout.readline().strip() == "connected"

        # 3. podnet-proxy programs the same Service, then removes kube-proxy's rules
        api = node.popen(PY, "-P", APISERVE, "10.0.1.1", "120", "node-a=10.0.0.1",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(api)
        url = api.stdout.readline().strip()
        res = subprocess.run(["ip", "netns", "exec", node.name, PROXY, "--master", url, "--hostname-override", "node-a",
                              "--cluster-cidr", "10.0.0.0/16", "--once", "--cleanup-kube-proxy"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "removed 15 kube-proxy chains" in res.stderr, res.stderr[-3000:]

        save = node.run("iptables-save")
        assert kube_proxy_lines(save) == [], save
        assert KUBELET_CHAINS <= chains_of(save) and ("nat", "PODNET-SERVICES") in chains_of(save)
        # 4. new connections go through podnet's rules ...
        assert probe(nss["client"], "tcp", "10.96.0.41", "80", "3") == {"ep1 10.0.3.3": 3}
        # ... and the connection made through kube-proxy's rules never noticed
        done = json.loads(holder.stdout.readline())
        assert done["error"] == "" and done["sent"] >= 20 and done["echoed"] == done["sent"], done
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pool.close()


async def test_daemon_removes_kube_proxy_rules_only_after_its_first_good_sync():
    from podnet.proxy.cli import _kube_proxy_cleaner
    from podnet.proxy.daemon import Config, Daemon
    from podnet.proxy.proxier import FamilyProxier
    from podnet.kube.testing import FakeClock, FakeInformer
    from podnet.proxy.testing import NODE, ctx, ep, slice_, svc

    fake = FakeIptables()
    await fake.restore(KUBE_PROXY_SAVE)
    fam = FamilyProxier(fake, ctx(), NODE)
    d = Daemon(Config(hostname_override=NODE, healthz_bind_address="", metrics_bind_address=""), [fam], FakeClock())
    d.after_first_sync = _kube_proxy_cleaner([fam])
    services, slices = FakeInformer(), FakeInformer()
    d.attach(services, slices)
    services.set(svc()), slices.set(slice_(endpoints=[ep("10.0.1.1")], name="a"))
    services.synced()
    await d.sync_once()  # Services listed, EndpointSlices not yet: nothing of podnet's written, kube-proxy's kept
    assert kube_proxy_lines(await fake.save()) != [] and d.after_first_sync is not None
    slices.synced()
    fake.fail_next = "iptables-restore: line 1 failed"
    assert not await d.sync_once()  # podnet's first restore failed: kube-proxy's rules still serve
    assert kube_proxy_lines(await fake.save()) != [] and d.after_first_sync is not None
    assert await d.sync_once()
    after = await fake.save()
    assert kube_proxy_lines(after) == [] and "PODNET-SERVICES" in after and d.after_first_sync is None
