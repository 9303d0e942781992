"""One node namespace with three endpoint pods, a client pod and an outside host, for real proxy tests.

Loaded by path from the test modules (the checkout is never on sys.path). :func:`node_lab` builds it
under a netns prefix of the caller's and removes every namespace and server it started, also when a
step fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from podnet.host.netns import NetnsPool

PROBE = str(Path(__file__).with_name("netprobe.py"))
PY = sys.executable
PODS = {"ep1": "10.0.1.1", "ep2": "10.0.1.2", "ep3": "10.0.1.3", "client": "10.0.3.3"}
PODS6 = {"ep1": "fd00:1::1", "ep2": "fd00:1::2", "ep3": "fd00:1::3", "client": "fd00:3::3"}
NODE_IP, OUTSIDE_IP = "192.168.0.2", "192.168.0.9"
PORT = 8080


@contextmanager
def node_lab(prefix: str):
    """{name: netns}: "node" (forwarding, a /32 and /128 route per pod), the pods (echo servers on
    ``PORT`` in ep1-ep3) and "out" on the node's external segment."""
    pool = NetnsPool(prefix)
    procs = []
    try:
        node = pool.netns("node")
        node.sysctl("net.ipv4.ip_forward", "1")
        node.sysctl("net.ipv6.conf.all.forwarding", "1")
        nss = {"node": node}
        for i, (name, ip) in enumerate(PODS.items()):
            pod = pool.netns(name)
            pool.veth(node, f"p{i}", pod, "eth0")
            node.ip("addr", "add", "10.0.0.1/32", "dev", f"p{i}")
            node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
            pod.ip("addr", "add", f"{ip}/32", "dev", "eth0")
            pod.ip("route", "add", "10.0.0.1", "dev", "eth0")
            pod.ip("route", "add", "default", "via", "10.0.0.1")
            ip6 = PODS6[name]
            node.ip("-6", "addr", "add", "fd00:ff::1/128", "dev", f"p{i}", "nodad")
            node.ip("-6", "route", "add", f"{ip6}/128", "dev", f"p{i}")
            pod.ip("-6", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
            pod.ip("-6", "route", "add", "fd00:ff::1", "dev", "eth0")
            pod.ip("-6", "route", "add", "default", "via", "fd00:ff::1")
            nss[name] = pod
        out = pool.netns("out")
        pool.veth(node, "ext0", out, "eth0")
        node.ip("addr", "add", f"{NODE_IP}/24", "dev", "ext0")
        out.ip("addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
        node.ip("route", "add", "default", "via", OUTSIDE_IP)
        nss["out"] = out
        for name in ("ep1", "ep2", "ep3"):
            p = nss[name].popen(PY, "-P", PROBE, "server", name, str(PORT), "170", stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
        yield nss
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pool.close()


def probe(ns, *args: str) -> dict:
    """Run netprobe.py in ``ns`` and return its JSON report."""
    return json.loads(ns.run(PY, "-P", PROBE, *args, timeout=60))
