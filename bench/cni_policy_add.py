"""CNI ADD time with the policy handshake against without, side by side in one run.

    .venv/bin/python -P bench/cni_policy_add.py [--pods 40] [--peers 200] [--policies 20] [--out FILE] [--shared-lock]

Two node namespaces (prefix ``pnt-cnipol-bench-``), each with a podnet-cni daemon
and the installed plugin (Python shim): node ``hs`` runs its daemon with
``--policy-socket --policy-required`` and a policy engine process *inside* the
node namespace (real iptables-legacy and ipset, as on a node; fake informers
holding ``--peers`` pods on other nodes, ``--policies`` NetworkPolicies, and one
Pod object per benchmarked pod, bound to the node, without an address); node
``base`` runs the daemon without the handshake. A worker process inside each
node execs the plugin exactly as a runtime does and times the exec. Pods are
ADDed pod by pod interleaved (base, open, isolated) into fresh pod namespaces,
each followed by an untimed DEL (which starts the engine's sync withdrawing the
pod's rules; an ADD that arrives while that sync runs waits for it: the "open"
ADD follows the base node's ADD and DEL, so it rarely does). "isolated": a default-deny policy selects the
pod, so its address goes into the pending sets (isolated) before the engine answers and its
chain and rules are written (one ``iptables-restore``) right after; "open": no policy selects it and no local pod's rule names it, so the
engine confirms without writing to the kernel.

The bench's namespaces are its own, so its tools use a private xtables lock file
(``XTABLES_LOCKFILE``, inherited by the daemon and the engine) and the ADDs are not timed
waiting for other sessions' iptables runs on the host-wide lock; ``--shared-lock`` keeps the host's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
ME = str(Path(__file__).resolve())


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------- inside the hs node: the engine
async def engine_main(sock: str, node: str, pods: int, peers: int, policies: int) -> None:
    from podnet.kube.netpol import parse_network_policy, parse_policy_pod
    from podnet.kube.objects import parse_namespace
    from podnet.policy.engine import Engine
    from podnet.policy.handshake import HandshakeServer
    from podnet.policy.kernel import KernelRunner
    from podnet.policy.programmer import Programmer, cleanup
    from podnet.kube.testing import FakeInformer
    from podnet.policy.testing import raw_ns, raw_pod, raw_policy

    kernel = KernelRunner(4, "legacy", ())
    engine = Engine([Programmer(kernel)], node)
    pols, pinf, nss = FakeInformer(), FakeInformer(), FakeInformer()
    engine.attach(pols, pinf, nss)
    nss.set(parse_namespace(raw_ns("default")))
    pols.set(parse_network_policy(raw_policy("default", "deny-iso", {"podSelector": {"matchLabels": {"iso": "y"}},
                                                                      "ingress": []})))
    for k in range(policies):  # every pod of the namespace is a peer of these (app=web)
        pols.set(parse_network_policy(raw_policy("default", f"p{k}", {
            "podSelector": {"matchLabels": {"role": f"r{k}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80 + k}]}]})))
    for k in range(peers):
        pinf.set(parse_policy_pod(raw_pod("default", f"peer{k}", f"10.250.{k // 250}.{k % 250 + 1}", node=f"other{k % 3}",
                                          labels={"app": "web", "role": f"r{k % max(policies, 1)}"})))
    for i in range(pods):
        pinf.set(parse_policy_pod(raw_pod("default", f"iso{i}", "", node=node, labels={"iso": "y", "app": "web"})))
        pinf.set(parse_policy_pod(raw_pod("default", f"open{i}", "", node=node, labels={"app": "web"})))
    for i in (pols, pinf, nss):
        i.synced()
    assert await engine.sync(), engine.last_error
    server = HandshakeServer(engine, sock)
    spent: dict[str, list[float]] = {"iso": [], "open": []}
    answer = server.answer

    async def timed(req):  # the engine's share: request parsed -> reply ready
        t0 = time.perf_counter()
        try:
            return await answer(req)
        finally:
            if req.op == "add":
                spent["iso" if req.name.startswith("iso") else "open"].append((time.perf_counter() - t0) * 1000)

    server.answer = timed
    await server.start()
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))  # paced syncs, as on a node (a DEL's withdrawal lands here)
    print("ready", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    finally:
        stop.set()
        await running
        await server.close()
        print(json.dumps(spent), flush=True)
        await cleanup(kernel)


# ---------------------------------------------------------------- inside a node: exec the plugin, timed
def worker_main(binary: str, conf: str) -> None:
    for line in sys.stdin:
        job = json.loads(line)
        env = {"CNI_COMMAND": job["verb"], "CNI_CONTAINERID": job["cid"], "CNI_NETNS": job["netns"],
               "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(binary).parent),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={job['cid']}",
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        t0 = time.perf_counter()
        p = subprocess.run([binary], input=conf.encode(), env=env, capture_output=True)
        ms = (time.perf_counter() - t0) * 1000
        print(json.dumps({"ms": ms, "rc": p.returncode, "out": p.stdout.decode()[:300]}), flush=True)


class Worker:
    def __init__(self, ns: str, binary: str, conf: str) -> None:
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-P", ME, "--worker", binary, conf],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, verb: str, cid: str, netns: str) -> float:
        self.p.stdin.write(json.dumps({"verb": verb, "cid": cid, "netns": netns}) + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if r["rc"] != 0:
            raise RuntimeError(f"{verb} {cid}: {r['out']}")
        return r["ms"]

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(30)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=40)
    ap.add_argument("--peers", type=int, default=200)
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--out", default="")
    ap.add_argument("--worker", nargs=2, metavar=("BINARY", "CONF"))
    ap.add_argument("--engine", nargs=2, metavar=("SOCK", "NODE"))
    ap.add_argument("--shared-lock", action="store_true")
    a = ap.parse_args()
    if a.worker:
        worker_main(*a.worker)
        return 0
    if a.engine:
        asyncio.run(engine_main(a.engine[0], a.engine[1], a.pods, a.peers, a.policies))
        return 0

    from podnet.cni import install
    from podnet.host.netns import NetnsPool

    tmp = Path(tempfile.mkdtemp(prefix="podnet-cnipol-bench-"))
    if not a.shared_lock:
        os.environ["XTABLES_LOCKFILE"] = str(tmp / "xtables.lock")
    pool = NetnsPool("pnt-cnipol-bench-")
    procs: list[subprocess.Popen] = []
    workers: dict[str, Worker] = {}
    before = load()
    times: dict[str, list[float]] = {"base": [], "iso": [], "open": []}
    engine_side: dict[str, list[float]] = {}
    try:
        for name, cidr in (("hs", "10.244.1.0/24"), ("base", "10.244.2.0/24")):
            ns = pool.netns(name)
            d = tmp / name
            d.mkdir()
            sock = str(d / "cni.sock")
            install.install(str(d / "bin"), str(d / "net.d"), sock, str(d / "data"), form="bytecode")
            extra = ["--policy-socket", str(d / "policy.sock"), "--policy-required"] if name == "hs" else []
            if name == "hs":
                eng = subprocess.Popen(["ip", "netns", "exec", ns.name, PY, "-P", ME, "--engine", str(d / "policy.sock"),
                                        ns.name, "--pods", str(a.pods), "--peers", str(a.peers), "--policies",
                                        str(a.policies)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                procs.append(eng)
                assert eng.stdout.readline().strip() == "ready"
            log = open(d / "daemon.log", "ab")
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns.name, str(Path(PY).parent / "podnet-cni"), "daemon",
                                           "--socket", sock, "--node-name", ns.name, "--data-dir", str(d / "data"),
                                           f"--pod-cidr={cidr}", *extra], stdout=log, stderr=subprocess.STDOUT))
            for _ in range(200):
                if Path(sock).exists():
                    break
                time.sleep(0.05)
            plugin = json.loads((d / "net.d" / "10-podnet.conflist").read_text())["plugins"][0]
            conf = json.dumps({**plugin, "cniVersion": "1.0.0", "name": "podnet"})
            workers[name] = Worker(ns.name, str(d / "bin" / "podnet-cni"), conf)
        pod_ns = pool.netns("pod")
        for warm in range(2):  # warm-up: the daemons' first ADD pays for imports
            for name in ("base", "hs"):
                workers[name].call("ADD", f"open{a.pods - 1 - warm}" if name == "hs" else "warm", pod_ns.path)
                workers[name].call("DEL", f"open{a.pods - 1 - warm}" if name == "hs" else "warm", pod_ns.path)
        for i in range(a.pods - 2):
            for label, node, cid in (("base", "base", f"b{i}"), ("open", "hs", f"open{i}"), ("iso", "hs", f"iso{i}")):
                pns = pool.netns("p")
                times[label].append(workers[node].call("ADD", cid, pns.path))
                workers[node].call("DEL", cid, pns.path)
                pool.made.remove(pns)
                subprocess.run(["ip", "netns", "del", pns.name], check=False)
    finally:
        for w in workers.values():
            w.close()
        for p in procs:
            if p.stdin:
                p.stdin.close()
                engine_side = json.loads(p.stdout.readline() or "{}")
            else:
                p.terminate()
            p.wait(30)
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    after = load()
    b50 = statistics.median(times["base"])
    lines = [f"## CNI ADD with the policy handshake ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"load average {before} -> {after})", "",
             f"`.venv/bin/python -P bench/cni_policy_add.py --pods {a.pods} --peers {a.peers} --policies {a.policies}`: "
             f"{len(times['base'])} ADDs each, interleaved, plugin exec wall time (Python shim) measured inside the "
             "node netns; the engine holds "
             f"{a.peers} peer pods on other nodes and {a.policies + 1} policies.", "",
             "| ADD | median ms | p90 ms | median vs no handshake |", "|---|---|---|---|"]
    for label, what in (("base", "no handshake"), ("open", "handshake, pod not isolated (no kernel write)"),
                        ("iso", "handshake, pod isolated (chain + rules written)")):
        m = statistics.median(times[label])
        lines.append(f"| {what} | {m:.2f} | {pct(times[label], 0.9):.2f} | {m - b50:+.2f} ms |")
    for label in ("open", "iso"):
        ms = engine_side.get(label, [])[2 if label == "open" else 0:]  # without the warm-up rounds
        if ms:
            lines.append(f"| engine's share of the {label} handshakes (request -> reply) | {statistics.median(ms):.2f} | "
                         f"{pct(ms, 0.9):.2f} | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        path = Path(a.out)
        path.write_text((path.read_text() + "\n" if path.exists() else "") + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
