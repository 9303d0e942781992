"""NetworkPolicy: programming latency and new-connection latency, side by side in one run.

1. Programming latency: 1,000 pods (100 on this node) in 10 namespaces, 500 policies loaded;
   then K times: one new policy arrives -> engine sync (compute + render + ipset restore +
   iptables-restore) returns, i.e. the rules are in the kernel. Real ipset and
   iptables-legacy in a node namespace; the informer hop is not included (in-process fakes).
   Also one peer pod IP change (set members only, chains untouched). Three engines side by side,
   each on its own node namespace, the same changes interleaved: full recompute (every local pod)
   with set changes through ``ipset restore``; incremental recompute (only the pods a change can
   affect; a peer's change refills the sets that name it) with member changes through ``ipset
   restore``; the same with member changes over netlink (no exec).
2. New-connection latency client -> server pod through the node, with: no policies; the 500
   policies as podnet writes them (ipsets); the same policies written as plain per-peer
   iptables rules without ipsets (the naive anchor). Interleaved rounds; medians of p50/p99.

The xtables lock of iptables-legacy is one file for the whole host, whatever the network
namespace: on the shared machine other sessions' iptables runs held it for seconds inside single
samples. The bench's namespaces are its own, so it gives their tools a private lock file
(``XTABLES_LOCKFILE``) and measures the engine rather than other sessions; ``--shared-lock``
keeps the host's lock.

Run: .venv/bin/python -P bench/policy_programming.py [K] [N] [--shared-lock]   (N=0: no connection latency)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.kube.testing import FakeInformer
from podnet.host.netns import NetnsPool
from podnet.policy import render as r
from podnet.policy.engine import Engine
from podnet.policy.kernel import KernelRunner
from podnet.policy.model import compute
from podnet.policy.programmer import Programmer
from podnet.policy.testing import raw_ns, raw_pod, raw_policy

NODE = "bench"
NS = 10
PODS = 1000
POLICIES = 500
APPS = 50


def pod_ip(i: int) -> str:
    return f"10.2.{i // 250}.{i % 250 + 1}"


def objects():
    nss = [parse_namespace(raw_ns(f"ns{n}", tier=("front" if n < 5 else "back"))) for n in range(NS)]
    pods = [parse_policy_pod(raw_pod(f"ns{i % NS}", f"pod{i}", pod_ip(i), node=NODE if i % 10 == 0 else "other",
                                     labels={"app": f"app-{i % APPS}"}, ports=(("http", 80, "TCP"),)))
            for i in range(PODS)]
    pols = []
    for i in range(POLICIES):
        app = i % APPS
        peers = [{"podSelector": {"matchLabels": {"app": f"app-{(app + 1) % APPS}"}}, "namespaceSelector": {}}]
        if i % 5 == 0:
            peers.append({"namespaceSelector": {"matchLabels": {"tier": "front"}}})
        spec = {"podSelector": {"matchLabels": {"app": f"app-{app}"}},
                "ingress": [{"from": peers, "ports": [{"port": "http"}, {"port": 8000 + i % 100, "endPort": 8100}]}]}
        pols.append(parse_network_policy(raw_policy(f"ns{i % NS}", f"pol{i}", spec)))
    return nss, pods, pols


def naive(text: str, sets: dict[str, r.SetSpec]) -> str:
    """The same chains with every set match expanded into one rule per member (no ipsets)."""
    out = []
    for line in text.splitlines():
        if "--match-set" not in line:
            out.append(line)
            continue
        t = line.split()
        i = t.index("--match-set")
        name, where = t[i + 1], t[i + 2]
        flag = "-s" if where == "src" else "-d"
        rest = t[:i - 2] + t[i + 3:]  # drop "-m set --match-set NAME dir"
        for m in sets[name].members:
            out.append(" ".join(rest[:2] + [flag, m] + rest[2:]))
    return "\n".join(out) + "\n"


CLIENT = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
for i in range(n + 50):
    s = socket.socket()
    t = time.perf_counter_ns()
    s.connect((host, port))
    dt = time.perf_counter_ns() - t
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    if i >= 50:
        lat.append(dt / 1000)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
"""
SERVER = r"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(4096); print("ready", flush=True)
end = time.time() + 900
s.settimeout(5)
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""


def lab(p: NetnsPool, tag: str):
    node, cli, srv = p.netns(f"n{tag}"), p.netns(f"c{tag}"), p.netns(f"s{tag}")
    node.sysctl("net.ipv4.ip_forward", "1")
    for i, (ns, ip) in enumerate(((srv, pod_ip(0)), (cli, pod_ip(1)))):
        p.veth(node, f"p{i}", ns, "eth0")
        node.ip("addr", "add", "10.2.255.254/32", "dev", f"p{i}")
        node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
        ns.ip("addr", "add", f"{ip}/32", "dev", "eth0")
        ns.ip("route", "add", "10.2.255.254", "dev", "eth0")
        ns.ip("route", "add", "default", "via", "10.2.255.254")
    return node, cli, srv


def q(values: list[float], frac: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * frac))]


class Side:
    """One engine (full or incremental recompute; member changes over netlink or through ``ipset
    restore``) with its own informers and node namespace."""

    def __init__(self, p: NetnsPool, tag: str, incremental: bool, netlink: bool, ns_objs, pod_objs, pol_objs) -> None:
        node = p.netns(f"prog-{tag}")
        # a runner given only an exec prefix sends member changes through `ipset restore`
        self.kernel = (KernelRunner(4, "legacy", netns=node.name) if netlink
                       else KernelRunner(4, "legacy", ["ip", "netns", "exec", node.name]))
        self.eng = Engine([Programmer(self.kernel)], NODE, incremental=incremental)
        self.pols, self.pods, self.nss = FakeInformer(), FakeInformer(), FakeInformer()
        self.eng.attach(self.pols, self.pods, self.nss)
        for o in ns_objs:
            self.nss.set(o)
        for o in pod_objs:
            self.pods.set(o)
        for o in pol_objs:
            self.pols.set(o)
        for i in (self.pols, self.pods, self.nss):
            i.synced()
        self.create: list[float] = []
        self.churn: list[float] = []

    async def timed_sync(self) -> float:
        t = time.perf_counter()
        assert await self.eng.sync(), self.eng.last_error
        return time.perf_counter() - t


async def programming(p: NetnsPool, k: int) -> dict:
    """The same changes to each engine, interleaved (the order rotates), each on its own node namespace."""
    ns_objs, pod_objs, pol_objs = objects()
    sides = {"full, ipset exec": Side(p, "full", False, False, ns_objs, pod_objs, pol_objs),
             "incremental, ipset exec": Side(p, "inc", True, False, ns_objs, pod_objs, pol_objs),
             "incremental, netlink": Side(p, "nl", True, True, ns_objs, pod_objs, pol_objs)}
    first = {tag: await s.timed_sync() for tag, s in sides.items()}
    snap = sides["full, ipset exec"].eng.snapshot()
    t = time.perf_counter()
    verdicts = compute(snap, NODE)
    compute_s = time.perf_counter() - t
    rendered = r.render(verdicts, 4)
    for i in range(k):
        spec = {"podSelector": {"matchLabels": {"app": f"app-{i % APPS}"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{(i + 7) % APPS}"}}}], "ports": [{"port": 9000 + i}]}]}
        pol = parse_network_policy(raw_policy(f"ns{i % NS}", f"new{i}", spec))
        moved = pod_objs[11 + 10 * (i % 50)]
        pod = parse_policy_pod(raw_pod(moved.namespace, moved.name, f"10.3.{i // 250}.{i % 250 + 1}", node="other",
                                       labels=dict(moved.labels), ports=(("http", 80, "TCP"),)))
        order = list(sides.values())
        order = order[i % len(order):] + order[:i % len(order)]
        for s in order:
            s.pols.set(pol)
            s.create.append(await s.timed_sync())
        for s in order:
            s.pods.set(pod)
            s.churn.append(await s.timed_sync())
    engines = [s.eng for s in sides.values()]
    same = all(e.verdicts == compute(e.snapshot(), NODE) == engines[0].verdicts for e in engines)
    return {"first_sync_s": first, "compute_s": compute_s, "rules": rendered.rules, "sets": len(rendered.sets),
            "isolated_local_pods": len(verdicts), "create": {t: s.create for t, s in sides.items()},
            "churn": {t: s.churn for t, s in sides.items()}, "same": same,
            "text": rendered.iptables,
            "setspecs": {**rendered.sets, **{n: r.SetSpec(n, "hash:ip", 4, ()) for n in r.pending_sets(4)}}}


def datapath(p: NetnsPool, prog: dict, n: int, rounds: int) -> dict:
    shapes = {}
    procs = []
    try:
        for tag, text, sets in (("none", "", {}), ("podnet", prog["text"], prog["setspecs"]),
                                ("naive", naive(prog["text"], prog["setspecs"]), {})):
            node, cli, srv = lab(p, tag[:2])
            if sets:
                lines = []
                for s in sets.values():
                    lines += s.restore_lines()
                node.run("ipset", "restore", input="\n".join(lines) + "\n")
            if text:
                node.run("iptables-legacy-restore", "--noflush", input=text)
                for _t, chain, rule in r.JUMPS:
                    node.run("iptables-legacy", "-I", chain, "1", *rule.split())
            rules = sum(1 for ln in node.run("iptables-legacy-save", "-t", "filter").splitlines() if ln.startswith("-A"))
            s = srv.popen(sys.executable, "-P", "-c", SERVER, stdout=subprocess.PIPE, text=True)
            procs.append(s)
            assert s.stdout.readline().strip() == "ready"
            shapes[tag] = (cli, rules)
        res: dict[str, list[dict]] = {t: [] for t in shapes}
        for _ in range(rounds):
            for tag, (cli, _rules) in shapes.items():
                res[tag].append(json.loads(cli.run(sys.executable, "-P", "-c", CLIENT, pod_ip(0), "80", str(n), timeout=300)))
    finally:
        for s in procs:
            s.kill()
            s.wait()
    return {t: {"p50": statistics.median(x["p50"] for x in v), "p99": statistics.median(x["p99"] for x in v),
                "rules": shapes[t][1]} for t, v in res.items()}


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main(k: int, n: int, rounds: int = 5) -> None:
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load average", load())
    p = NetnsPool("pnt-pol-bench-")
    try:
        prog = asyncio.run(programming(p, k))
        print("load average after programming:", load(), flush=True)
        dp = datapath(p, prog, n, rounds) if n else {}
    finally:
        p.close()
    print("load average after:", load())
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    print(f"cluster: {PODS} pods ({prog['isolated_local_pods']} isolated on this node), {POLICIES} policies, "
          f"{prog['rules']} rules, {prog['sets']} ipsets")
    print(f"first full sync: {ms(prog['first_sync_s']['full, ipset exec'])} (pure compute alone {ms(prog['compute_s'])})")
    for tag in prog["create"]:
        c, ch = prog["create"][tag], prog["churn"][tag]
        print(f"{tag:>23}: policy create -> in kernel ({k} samples): median {ms(statistics.median(c))}, "
              f"p99 {ms(q(c, 0.99))}, max {ms(max(c))}; peer pod IP change: median {ms(statistics.median(ch))}, "
              f"p99 {ms(q(ch, 0.99))}, max {ms(max(ch))}")
    print(f"every engine's verdicts equal a full compute at the end: {prog['same']}")
    if not dp:
        return
    print(f"new TCP connection, medians over {rounds} interleaved rounds of {n}:")
    for tag, v in dp.items():
        print(f"  {tag:>7}: p50 {v['p50']:.1f} us  p99 {v['p99']:.1f} us  ({v['rules']} filter rules)")
    print(f"ratio p50 podnet/none: {dp['podnet']['p50'] / dp['none']['p50']:.2f}x; "
          f"naive/none: {dp['naive']['p50'] / dp['none']['p50']:.2f}x")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--shared-lock"]
    if "--shared-lock" not in sys.argv:
        import atexit
        import shutil
        import tempfile

        lockdir = tempfile.mkdtemp(prefix="pnt-pol-bench-")
        atexit.register(shutil.rmtree, lockdir, True)
        os.environ["XTABLES_LOCKFILE"] = os.path.join(lockdir, "xtables.lock")
    print(f"xtables lock: {os.environ.get('XTABLES_LOCKFILE', 'the host-wide /run/xtables.lock')}")
    main(int(args[0]) if args else 50, int(args[1]) if len(args) > 1 else 1000)
