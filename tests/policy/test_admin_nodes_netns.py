"""AdminNetworkPolicy ``nodes`` egress peers on a real kernel (root): a pod reaching its own node's address
(INPUT) and another node's address (FORWARD), as upstream's AdminNetworkPolicyEgressNodePeers probes a
host-network server.

Topology (namespaces pnt-s5af-*): node n1 routes for pod x-a (10.1.0.1, its own veth and /32 route);
n1 (192.168.78.1) and n2 (192.168.78.2) share a link, n2 routes 10.1.0.0/16 back via n1. Both nodes run
tests/proxy/netprobe.py servers on 36363 and 36364 in their own namespace (host network). The engine runs
in-process for n1 with fake informers (Nodes included) and the real kernel runner in n1 (iptables-legacy,
ipset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.kube.adminnetpol import parse_admin_network_policy
from podnet.kube.netpol import parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.host.netns import NetnsPool
from podnet.policy.engine import Engine
from podnet.policy.kernel import KernelRunner
from podnet.policy.nodes import PolicyNode
from podnet.policy.programmer import Programmer, cleanup
from podnet.policy.testing import raw_ns, raw_pod

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PROBE = str(Path(__file__).resolve().parent.parent / "proxy" / "netprobe.py")
PY = sys.executable
POD = "10.1.0.1"
GW = "10.1.255.254"
N1, N2 = "192.168.78.1", "192.168.78.2"
LINUX = {"matchLabels": {"kubernetes.io/os": "linux"}}


@pytest.fixture(scope="module")
def lab():
    pool = NetnsPool("pnt-s5af-")
    procs = []
    try:
        n1, n2, pod = pool.netns("n1"), pool.netns("n2"), pool.netns("xa")
        n1.sysctl("net.ipv4.ip_forward", "1")
        pool.veth(n1, "p0", pod, "eth0")
        n1.ip("addr", "add", f"{GW}/32", "dev", "p0")
        n1.ip("route", "add", f"{POD}/32", "dev", "p0")
        pod.ip("addr", "add", f"{POD}/32", "dev", "eth0")
        pod.ip("route", "add", GW, "dev", "eth0")
        pod.ip("route", "add", "default", "via", GW)
        pool.veth(n1, "eth0", n2, "eth0")
        n1.ip("addr", "add", f"{N1}/24", "dev", "eth0")
        n2.ip("addr", "add", f"{N2}/24", "dev", "eth0")
        n2.ip("route", "add", "10.1.0.0/16", "via", N1)
        for name, ns in (("n1", n1), ("n2", n2)):
            ns.ip("link", "set", "lo", "up")
            for port in (36363, 36364):
                p = ns.popen(PY, "-P", PROBE, "server", name, str(port), "280", stdout=subprocess.PIPE, text=True)
                procs.append(p)
                assert p.stdout.readline().strip() == "ready"
        yield {"n1": n1, "n2": n2, "xa": pod}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pool.close()


def reaches(lab, node: str, port: int) -> bool:
    """Whether pod x-a opens a TCP connection to ``node``'s address (the server there names itself)."""
    out = json.loads(lab["xa"].run(PY, "-P", PROBE, "tcp", {"n1": N1, "n2": N2}[node], str(port), "1", timeout=60))
    ok = out.get(f"{node} {POD}", 0) == 1
    assert ok or any(k.startswith("error:") for k in out), out
    return ok


class Cluster:
    def __init__(self, lab):
        self.kernel = KernelRunner(4, "legacy", netns=lab["n1"].name)
        self.engine = Engine([Programmer(self.kernel)], "n1")
        self.pols, self.pods, self.nss, self.anps, self.banps, self.nodes = (FakeInformer() for _ in range(6))
        self.engine.attach(self.pols, self.pods, self.nss, self.anps, self.banps, nodes=self.nodes)
        self.nss.set(parse_namespace(raw_ns("x")))
        self.pods.set(parse_policy_pod(raw_pod("x", "a", POD, node="n1")))
        self.node("n1", N1, role="worker")
        self.node("n2", N2, role="control-plane")
        for i in (self.pols, self.pods, self.nss, self.anps, self.banps, self.nodes):
            i.synced()

    def node(self, name: str, ip: str, **labels: str) -> None:
        self.nodes.set(PolicyNode(name, tuple(sorted({"kubernetes.io/os": "linux", **labels}.items())), (ip,)))

    async def admin(self, *egress: dict) -> None:
        raw = {"metadata": {"name": "node-peers"},
               "spec": {"priority": 75, "subject": {"namespaces": {}}, "egress": list(egress)}}
        self.anps.set(parse_admin_network_policy(raw))
        await self.sync()

    async def sync(self) -> None:
        assert await self.engine.sync(), self.engine.last_error


@pytest.fixture
async def cluster(lab):
    """The engine for n1; its chains and sets are removed after each test (pytest runs the code after
    ``yield`` whether the test passed or failed)."""
    c = Cluster(lab)
    yield c
    await cleanup(c.kernel)


async def test_upstream_node_peers_rules_on_both_paths(lab, cluster):
    assert reaches(lab, "n1", 36364) and reaches(lab, "n2", 36364), "no policy: both nodes reachable"
    await cluster.admin({"action": "Allow", "to": [{"nodes": LINUX}], "ports": [{"portNumber": {"port": 36363}}]},
                        {"action": "Deny", "to": [{"nodes": LINUX}]})
    assert reaches(lab, "n2", 36363), "allowed port on another node (FORWARD)"
    assert not reaches(lab, "n2", 36364), "the rest of that node is denied"
    assert reaches(lab, "n1", 36363), "allowed port on the pod's own node (INPUT)"
    assert not reaches(lab, "n1", 36364)


async def test_node_label_and_address_changes_are_followed(lab, cluster):
    await cluster.admin({"action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "worker"}}}]})
    assert not reaches(lab, "n1", 36364) and reaches(lab, "n2", 36364)
    cluster.node("n2", N2, role="worker")  # relabelled into the selector
    await cluster.sync()
    assert not reaches(lab, "n2", 36364)
    cluster.node("n2", "192.168.78.99", role="worker")  # its InternalIP moves away from the address we probe
    await cluster.sync()
    assert reaches(lab, "n2", 36364)
    cluster.nodes.delete("n1")  # the node leaves the cluster: its address is no peer any more
    await cluster.sync()
    assert reaches(lab, "n1", 36364)
