"""No unprotected window, on real kernels: a pod that a default-deny policy isolates is never reachable, from
before its CNI ADD starts until after it returns; a pod without policy is reachable right after its ADD.

A node namespace (pnt-cni-*) runs the real podnet-cni daemon with ``--policy-socket --policy-required``; the
policy engine runs in this test's event loop (fake informers, the real iptables-legacy and ipset runner pointed
into the node namespace) behind the real handshake socket. Pods are namespaces the installed plugin binary
plumbs, exactly as a runtime execs it.

The control pod's first connections can wait up to one ARP retransmission (1 s): podnet's ADD installs the
node-side host route before the pod end has its address, so a packet that arrives in between leaves an
unanswered ARP request behind (the control hammer therefore runs until its first connection, bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.policy.engine import Engine
from podnet.policy.handshake import HandshakeServer
from podnet.policy.kernel import KernelRunner
from podnet.policy.programmer import Programmer, cleanup
from podnet.policy.testing import raw_ns, raw_pod, raw_policy

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

CIDR = "10.244.1.0/24"
CLIENT, SECRET, CONTROL = "10.244.1.2", "10.244.1.3", "10.244.1.4"  # the IPAM hands out addresses in order
PORT = 8080

# Serves PORT on every address of its namespace (bound before the pod has any) and counts accepted connections
# until the stop file appears (at most 60 s).
SERVER = r"""
import os, select, socket, sys, time
stop = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(128); s.setblocking(False)
print("ready", flush=True)
accepted, end = 0, time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < end:
    if select.select([s], [], [], 0.01)[0]:
        c, _ = s.accept(); accepted += 1; c.close()
print(accepted, flush=True)
"""

# Opens a non-blocking connection to ADDR:PORT every millisecond, without waiting for earlier ones (each gets
# 200 ms to complete), and classifies every outcome; once the mark file exists (the test creates it when the
# pod's ADD has returned) it goes on for AFTER more attempts (with STOP=1: until its first connection, at most
# AFTER attempts), then reports. Bounded: 20000 attempts or 30 s.
HAMMER = r"""
import errno, json, os, select, socket, sys, time
addr, mark, after, stop_on_connect = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"

out = {"attempts": 0, "before_mark": None, "connected": 0, "errors": {}}
pending = {}
def done(c, kind):
    del pending[c]
    c.close()
    if kind == "connected":
        out["connected"] += 1
    else:
        out["errors"][kind] = out["errors"].get(kind, 0) + 1
def reap(wait):
    if not pending:
        return
    _, w, _ = select.select([], list(pending), [], wait)
    for c in w:
        e = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        done(c, "connected" if e == 0 else errno.errorcode.get(e, str(e)))
    now = time.monotonic()
    for c, t in list(pending.items()):
        if now - t > 0.2:
            done(c, "timeout")
end = time.monotonic() + 30
while out["attempts"] < 20000 and time.monotonic() < end:
    if out["before_mark"] is None and os.path.exists(mark):
        out["before_mark"] = out["attempts"]
    if out["before_mark"] is not None and (out["attempts"] - out["before_mark"] >= after
                                           or stop_on_connect and out["connected"]):
        break
    c = socket.socket(); c.setblocking(False)
    e = c.connect_ex((addr, 8080))
    pending[c] = time.monotonic()
    if e not in (0, errno.EINPROGRESS):
        done(c, errno.errorcode.get(e, str(e)))
    elif e == 0:
        done(c, "connected")
    out["attempts"] += 1
    if out["attempts"] == 1:
        print("started", flush=True)
    reap(0.001)
while pending and time.monotonic() < end + 1:
    reap(0.05)
print(json.dumps(out), flush=True)
"""


# One blocking connection attempt (1 s timeout): "connected" or the error.
HAMMER_ONCE = r"""
import socket, sys
c = socket.socket(); c.settimeout(1)
try:
    c.connect((sys.argv[1], 8080)); print("connected")
except OSError as e:
    print(e)
"""


def policy_pod(name: str, node: str, app: str):
    return parse_policy_pod(raw_pod("default", name, "", node=node, labels={"app": app}))


def engine_for(node):
    """(engine, kernel, pods informer): the engine knows the Pods (bound to ``node``, no addresses yet) and a
    default-deny ingress policy for app=secret before any sandbox exists."""
    kernel = KernelRunner(4, "legacy", netns=node.ns.name)
    engine = Engine([Programmer(kernel)], node.ns.name)
    pols, pods, nss = FakeInformer(), FakeInformer(), FakeInformer()
    engine.attach(pols, pods, nss)
    nss.set(parse_namespace(raw_ns("default")))
    pols.set(parse_network_policy(raw_policy("default", "deny-secret",
                                             {"podSelector": {"matchLabels": {"app": "secret"}}, "ingress": []})))
    for name, app in (("client", "client"), ("secret", "secret"), ("control", "open")):
        pods.set(policy_pod(name, node.ns.name, app))
    for i in (pols, pods, nss):
        i.synced()
    return engine, kernel, pods


@pytest.fixture
async def policy_node(make_node, tmp_path):
    """(node, engine, kernel): a node whose CNI daemon requires the handshake with the engine."""
    sock = str(tmp_path / "policy.sock")
    # a generous handshake timeout: the engine's restore may wait on the host-wide xtables lock
    node = make_node((CIDR,), extra=["--policy-socket", sock, "--policy-required", "--policy-timeout", "20s"])
    engine, kernel, _ = engine_for(node)
    assert await engine.sync(), engine.last_error
    server = HandshakeServer(engine, sock)
    await server.start()
    try:
        yield node, engine, kernel
    finally:
        await server.close()
        await cleanup(kernel)


def start(ns, script: str, *args: str, first: str) -> subprocess.Popen:
    p = ns.popen(sys.executable, "-P", "-c", script, *args, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == first
    return p


def finish(p: subprocess.Popen) -> str:
    out, _ = p.communicate(timeout=60)
    return out.strip()


async def add(node, pod_ns, name: str) -> str:
    code, res = await asyncio.to_thread(node.cni, "ADD", name, pod_ns.path)  # K8S_POD_NAME is the container ID
    assert code == 0, res
    return res["ips"][0]["address"].split("/")[0]


async def test_isolated_pod_is_never_reachable_and_open_pod_becomes_reachable(policy_node, pool, tmp_path):
    node, engine, _ = policy_node
    client, secret, control = pool.netns("cl"), pool.netns("se"), pool.netns("co")
    assert await add(node, client, "client") == CLIENT
    stop, marks = str(tmp_path / "stop"), [str(tmp_path / "secret-added"), str(tmp_path / "control-added")]
    servers = [start(ns, SERVER, stop, first="ready") for ns in (secret, control)]
    hammers = [start(client, HAMMER, SECRET, marks[0], "300", "0", first="started"),
               start(client, HAMMER, CONTROL, marks[1], "3000", "1", first="started")]
    try:
        assert await add(node, secret, "secret") == SECRET
        open(marks[0], "w").close()
        assert await add(node, control, "control") == CONTROL
        open(marks[1], "w").close()
        to_secret, to_control = (json.loads(finish(h)) for h in hammers)
    finally:
        open(stop, "w").close()
        for h in hammers:
            h.kill()
        accepted_secret, accepted_control = (int(finish(s)) for s in servers)
    print("isolated pod:", to_secret, "\ncontrol pod:", to_control)
    assert to_secret["connected"] == 0 and accepted_secret == 0, to_secret
    assert to_secret["before_mark"] >= 1 and to_secret["attempts"] - to_secret["before_mark"] >= 300, to_secret
    assert to_secret["errors"].get("timeout", 0) > 0, f"the hammer never met the policy's DROP: {to_secret}"
    assert to_control["connected"] > 0 and accepted_control > 0, to_control


async def test_open_pod_answers_the_first_connection_after_add(policy_node, pool, tmp_path):
    node, _, _ = policy_node
    client, control = pool.netns("cl"), pool.netns("co")
    await add(node, client, "client")
    stop = str(tmp_path / "stop")
    server = start(control, SERVER, stop, first="ready")
    try:
        assert await add(node, control, "control") == SECRET  # the second address of this node
        first = client.run(sys.executable, "-P", "-c", HAMMER_ONCE, SECRET, timeout=30).strip()
    finally:
        open(stop, "w").close()
        finish(server)
    assert first == "connected"


async def test_unknown_pod_fails_add_with_11_and_leaves_nothing(policy_node, pool):
    node, engine, _ = policy_node
    ghost = pool.netns("gh")
    code, out = await asyncio.to_thread(node.cni, "ADD", "ghost", ghost.path)
    assert code == 11 and "unknown" in out["msg"], out
    assert node.reservations() == [] and node.host_veths() == []


async def test_without_the_handshake_the_window_is_there(make_node, pool, tmp_path):
    """The same hammer sees the window the handshake closes: no --policy-socket, the engine learns the address
    from the Pod's status (as kubelet reports it after ADD) and syncs only once a probe has got through."""
    node = make_node((CIDR,))
    engine, kernel, pods = engine_for(node)
    try:
        assert await engine.sync(), engine.last_error
        client, secret = pool.netns("cl"), pool.netns("se")
        assert await add(node, client, "client") == CLIENT
        stop, mark = str(tmp_path / "stop"), str(tmp_path / "secret-added")
        server = start(secret, SERVER, stop, first="ready")
        hammer = start(client, HAMMER, SECRET, mark, "300", "0", first="started")
        try:
            assert await add(node, secret, "secret") == SECRET
            pods.set(parse_policy_pod(raw_pod("default", "secret", SECRET, node=node.ns.name, labels={"app": "secret"})))
            # the window: the pod answers while the engine has not synced yet (bounded: 20 probes of up to 1 s)
            probes = [client.run(sys.executable, "-P", "-c", HAMMER_ONCE, SECRET, timeout=30).strip()]
            while probes[-1] != "connected" and len(probes) < 20:
                probes.append(client.run(sys.executable, "-P", "-c", HAMMER_ONCE, SECRET, timeout=30).strip())
            assert probes[-1] == "connected", probes
            assert await engine.sync(), engine.last_error
            open(mark, "w").close()
            out = json.loads(finish(hammer))
        finally:
            open(stop, "w").close()
            hammer.kill()
            accepted = int(finish(server))
        print("without handshake:", out)
        assert out["connected"] > 0 and accepted > 0, out
        assert out["errors"].get("timeout", 0) > 0, "after the sync the pod is isolated"
    finally:
        await cleanup(kernel)
