"""Each daemon's CPU and memory at N Services, run as deploy/podnet.yaml runs it.

    .venv/bin/python -P bench/daemon_resources.py [--services 1000,10000] [--rounds 3] [--idle 20]
        [--churn-rate 10] [--churn 30] [--iptables-backend legacy|nft|auto] [--out bench/results/resources.md]

Per size N: a lab API server (``podnet lab apiserver --no-controllers``) in its own network namespace
holding N Services x 5 endpoints (one EndpointSlice each, spread over 10 namespaces), 10 Nodes, N/5
Pods (a tenth on this node) and 20 NetworkPolicies. Then, ``--rounds`` times, the five daemons are
started together, each in its own fresh network namespace (veth to the API server's), with the
command line of its container in deploy/podnet.yaml (``$(VAR)`` from the manifest's ConfigMaps,
host paths moved into a temporary directory, ``--master`` added): podnet-proxy in iptables mode
(the manifest's KubeProxyConfiguration) and in nftables mode (the same plus ``--proxy-mode
nftables``), podnet-policy, podnet-dns with the manifest's Corefile, and the CNI daemon with the
Node's pod CIDR. Per daemon:

- CPU seconds to the first complete sync: user+system of the process and its reaped children
  (iptables-restore, nft, ipset), from exec to the first complete sync (see ``DAEMONS``: the
  proxy's last-sync metric, the others' readiness endpoints);
- peak RSS (VmHWM) at that moment and at the end of the round;
- steady RSS: VmRSS at the end of ``--idle`` seconds without changes;
- CPU idle, and under a bounded churn: ``--churn-rate`` changes per second for ``--churn``
  seconds, each a new address set for one Service's EndpointSlice and a new label on one Pod
  (in millicores: CPU milliseconds per second of wall time).

Prints medians (and every round), the load average before and after; ``--out`` appends the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from podnet.host.netns import Netns, NetnsPool
from podnet.host.nsenter import enter, made_inside, netns_path, setns
from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.policy.engine import NETWORK_POLICIES

SERVICE_ACCOUNTS = r.Resource("/api/v1", "serviceaccounts", "ServiceAccount", True, lambda raw: raw)
BIN = Path(sys.executable).parent
MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "podnet.yaml"
PREFIX = "pnt-s5res-"
NODE = "node-a"
NODES = 10
NAMESPACES = 10
POLICIES = 20
ENDPOINTS = 5
API_PORT = 6443
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class DaemonSpec:
    """One daemon as the manifest runs it: its container, extra flags, and where its first complete
    sync shows: a 200 from ``sync_path`` on 127.0.0.1:``sync_port`` or, with ``sync_metric``, that
    Prometheus sample above 0 in the page."""

    label: str
    container: str
    extra: tuple[str, ...]
    sync_port: int
    sync_path: str
    sync_metric: str = ""


# podnet-proxy's /healthz answers 200 before its first sync, as kube-proxy's does (healthy until a
# queued sync is overdue); its first sync (after Services and EndpointSlices listed) sets the
# last-sync timestamp on the metrics page (the KubeProxyConfiguration's default 127.0.0.1:10249).
PROXY_SYNCED = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'
DAEMONS = (
    DaemonSpec("podnet-proxy (iptables)", "proxy", (), 10249, "/metrics", PROXY_SYNCED),
    DaemonSpec("podnet-proxy (nftables)", "proxy", ("--proxy-mode=nftables",), 10249, "/metrics", PROXY_SYNCED),
    DaemonSpec("podnet-policy", "policy", (), 9968, "/healthz"),  # 200 after the first sync with every informer synced
    DaemonSpec("podnet-dns", "dns", (), 8181, "/ready"),  # every informer listed, the answer table served
    DaemonSpec("podnet-cni daemon", "cni-daemon", (), 9967, "/healthz"),  # pod CIDR, IPAM store, routes to every node
)


# -- the manifest --------------------------------------------------------------------------------

def manifest_commands(tmp: Path) -> dict[str, list[str]]:
    """Container name -> its command with $(VAR)s filled from the manifest and host paths under ``tmp``;
    also writes the proxy's config file and the Corefile there."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    (tmp / "proxy").mkdir()
    (tmp / "proxy" / "config.conf").write_text(maps["podnet-proxy"]["config.conf"])
    (tmp / "coredns").mkdir()
    (tmp / "coredns" / "Corefile").write_text(maps["podnet-dns"]["Corefile"])
    moved = {"/var/lib/podnet-proxy": str(tmp / "proxy"), "/etc/coredns": str(tmp / "coredns"),
             "/var/lib/podnet/cni": str(tmp / "cni"), "/run/podnet": str(tmp / "run")}
    (tmp / "run").mkdir()
    out: dict[str, list[str]] = {}
    for d in docs:
        if d["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = {"NODE_NAME": NODE}
            for e in c.get("env", ()):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    env[e["name"]] = maps[ref["name"]][ref["key"]]
            argv = []
            for arg in c["command"]:
                for k, v in env.items():
                    arg = arg.replace(f"$({k})", v)
                for host, here in moved.items():
                    arg = arg.replace(host, here)
                argv.append(arg)
            out[c["name"]] = argv
    return out


# -- the API server's objects ----------------------------------------------------------------------

def node_ip(k: int) -> str:
    return f"10.250.{len(DAEMONS)}.{k + 2}"  # on the CNI daemon's veth subnet: host-gw to every node


def objects(n: int) -> list[tuple[r.Resource, dict]]:
    out: list[tuple[r.Resource, dict]] = []
    for k in range(NAMESPACES):
        out.append((r.NAMESPACES, {"metadata": {"name": f"ns-{k}", "labels": {"tier": "front" if k < 5 else "back"}}}))
        out.append((SERVICE_ACCOUNTS, {"metadata": {"name": "default", "namespace": f"ns-{k}"}}))  # pods' admission
    for k in range(NODES):
        name = NODE if k == 0 else f"node-{k}"
        out.append((r.NODES, {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                              "spec": {"podCIDR": f"10.244.{k}.0/24", "podCIDRs": [f"10.244.{k}.0/24"]},
                              "status": {"addresses": [{"type": "InternalIP", "address": node_ip(k)}]}}))
    for i in range(n):
        ns, name = f"ns-{i % NAMESPACES}", f"svc-{i:05d}"
        out.append((r.SERVICES, {"metadata": {"name": name, "namespace": ns},
                                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        out.append((r.ENDPOINT_SLICES, endpoint_slice(i, 0)))
    for i in range(n // 5):
        k = i % NODES
        out.append((r.PODS, {
            "metadata": {"name": f"pod-{i:05d}", "namespace": f"ns-{i % NAMESPACES}",
                         "labels": {"app": f"app-{i % 20}"}},
            "spec": {"nodeName": NODE if k == 0 else f"node-{k}",
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                     "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": f"10.244.{k}.{i // NODES % 250 + 2}",
                       "podIPs": [{"ip": f"10.244.{k}.{i // NODES % 250 + 2}"}]}}))
    for i in range(POLICIES):
        spec = {"podSelector": {"matchLabels": {"app": f"app-{i}"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{(i + 1) % 20}"}},
                                       "namespaceSelector": {"matchLabels": {"tier": "front"}}}],
                             "ports": [{"port": "http"}]}]}
        out.append((NETWORK_POLICIES, {"metadata": {"name": f"pol-{i}", "namespace": f"ns-{i % NAMESPACES}"},
                                       "spec": spec}))
    return out


def endpoint_ip(k: int) -> str:
    """The k-th address of 10.128.0.0/10 (wrapping)."""
    return f"10.{128 + (k >> 16) % 64}.{(k >> 8) & 255}.{k & 255}"


def endpoint_slice(i: int, generation: int) -> dict:
    """Service i's slice; ``generation`` shifts its addresses (a churn step)."""
    base = (i * ENDPOINTS + generation * 7) % (1 << 20)
    name = f"svc-{i:05d}"
    return {"metadata": {"name": f"{name}-bench", "namespace": f"ns-{i % NAMESPACES}",
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "bench.podnet.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [endpoint_ip(base + j)],
                           "conditions": {"ready": True}, "nodeName": f"node-{1 + (i + j) % (NODES - 1)}"}
                          for j in range(ENDPOINTS)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


async def preload(client: ApiClient, n: int) -> None:
    sem = asyncio.Semaphore(32)

    async def make(res: r.Resource, body: dict) -> None:
        async with sem:
            await client.create(res, body, namespace=body["metadata"].get("namespace"))

    items = objects(n)
    first = (r.NAMESPACES, r.NODES, SERVICE_ACCOUNTS)  # before the pods and what else lives in the namespaces
    for res in first:
        await asyncio.gather(*(make(x, b) for x, b in items if x is res))
    await asyncio.gather(*(make(x, b) for x, b in items if x not in first))


async def churn(client: ApiClient, n: int, rate: float, seconds: float, first: int) -> int:
    """``rate`` changes per second for ``seconds``, paced: each a new address set for one Service's
    EndpointSlice and new labels on one Pod (what the policy engine recomputes for).
    Change number ``first + step`` writes values no earlier change wrote, so none is a no-op
    (a no-op update makes no watch event)."""
    loop = asyncio.get_running_loop()
    t0, total, pods = loop.time(), int(rate * seconds), n // 5
    for step in range(total):
        await asyncio.sleep(max(0.0, t0 + step / rate - loop.time()))
        i = (step * 7919) % n
        generation = first + step + 1
        body = endpoint_slice(i, generation)
        p = (step * 104729) % pods
        await asyncio.gather(
            client.patch(r.ENDPOINT_SLICES, body["metadata"]["name"], {"endpoints": body["endpoints"]},
                         namespace=body["metadata"]["namespace"]),
            client.patch(r.PODS, f"pod-{p:05d}", {"metadata": {"labels": {
                "app": f"app-{(p + generation) % 20}", "bench.podnet.io/generation": str(generation)}}},
                         namespace=f"ns-{p % NAMESPACES}"))
    return total


# -- one process's figures -----------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system time of the process and of its children it has waited for."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def http_get(ns_fd: int, port: int, path: str) -> tuple[int, bytes]:
    """Status code and body of GET http://127.0.0.1:port/path inside the namespace ``ns_fd``
    (status 0: no answer)."""
    loop = asyncio.get_running_loop()
    sock = made_inside(ns_fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 1)
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while len(data) < 1 << 22:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return (int(head.split()[1]) if head.startswith(b"HTTP/") else 0), body
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return 0, b""
    finally:
        sock.close()


def metric_positive(page: bytes, sample: str) -> bool:
    for line in page.decode(errors="replace").splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1]) > 0
    return False


async def synced(spec: DaemonSpec, ns_fd: int) -> bool:
    status, body = await http_get(ns_fd, spec.sync_port, spec.sync_path)
    return status == 200 and (not spec.sync_metric or metric_positive(body, spec.sync_metric))


@dataclass
class Running:
    spec: DaemonSpec
    ns: Netns
    ns_fd: int
    proc: subprocess.Popen
    started: float
    synced_after: float | None = None
    cpu_sync: float | None = None
    hwm_sync_kb: int = 0


async def wait_synced(d: Running, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        if d.proc.poll() is not None:
            raise SystemExit(f"{d.spec.label} exited with {d.proc.returncode} before its first sync")
        if await synced(d.spec, d.ns_fd):
            d.cpu_sync = cpu_seconds(d.proc.pid)
            d.hwm_sync_kb = status_kb(d.proc.pid, "VmHWM")
            d.synced_after = time.monotonic() - d.started
            return
        await asyncio.sleep(0.2)  # polled 5 times a second: the pages cost the daemon little next to its sync
    raise SystemExit(f"{d.spec.label} not synced in time")


# -- a round -------------------------------------------------------------------------------------

async def one_round(api_ns: Netns, client: ApiClient, tmp: Path, n: int, round_no: int,
                    a: argparse.Namespace) -> dict[str, dict[str, float]]:
    commands = manifest_commands(tmp)
    running: list[Running] = []
    pool = NetnsPool(PREFIX)
    try:
        for k, spec in enumerate(DAEMONS, start=1):
            ns = pool.netns("d")
            pool.veth(api_ns, f"res{k}", ns, "eth0")
            api_ns.ip("addr", "add", f"10.250.{k}.1/24", "dev", f"res{k}")
            ns.ip("addr", "add", f"10.250.{k}.2/24", "dev", "eth0")
            ns.write_resolv_conf("nameserver 127.0.0.9\n")
            if a.iptables_backend != "auto":  # kubelet's canary chain decides the backend, as on a node
                ns.run(f"iptables-{a.iptables_backend}", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
            argv = commands[spec.container] + list(spec.extra) + [f"--master=http://10.250.{k}.1:{API_PORT}"]
            with open(tmp / f"{spec.container}{k}.log", "w") as log:
                proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=tmp, env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
            fd = os.open(netns_path(ns.name), os.O_RDONLY | os.O_CLOEXEC)
            running.append(Running(spec, ns, fd, proc, time.monotonic()))
        deadline = asyncio.get_running_loop().time() + a.sync_timeout
        await asyncio.gather(*(wait_synced(d, deadline) for d in running))
        cpu0 = {d.spec.label: cpu_seconds(d.proc.pid) for d in running}
        await asyncio.sleep(a.idle)
        cpu1 = {d.spec.label: cpu_seconds(d.proc.pid) for d in running}
        steady = {d.spec.label: status_kb(d.proc.pid, "VmRSS") for d in running}
        t0 = time.monotonic()
        changes = await churn(client, n, a.churn_rate, a.churn, first=round_no * int(a.churn_rate * a.churn))
        achieved = changes / (time.monotonic() - t0)
        await asyncio.sleep(1.0)  # the last change's sync (min-sync-period 1 s in the proxy)
        churn_s = time.monotonic() - t0
        cpu2 = {d.spec.label: cpu_seconds(d.proc.pid) for d in running}
        out = {}
        for d in running:
            k = d.spec.label
            out[k] = {"synced after (s, wall)": d.synced_after, "CPU s to first sync": d.cpu_sync,
                      "VmHWM at sync (MiB)": d.hwm_sync_kb / 1024,
                      "VmRSS idle (MiB)": steady[k] / 1024,
                      "VmHWM end (MiB)": status_kb(d.proc.pid, "VmHWM") / 1024,
                      "CPU idle (millicores)": (cpu1[k] - cpu0[k]) / a.idle * 1000,
                      "CPU churn (millicores)": (cpu2[k] - cpu1[k]) / churn_s * 1000,
                      "churn changes/s (achieved)": achieved}
        return out
    finally:
        for d in running:
            if d.proc.poll() is None:
                d.proc.terminate()
        for d in running:
            try:
                d.proc.wait(15)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
            os.close(d.ns_fd)
        pool.close()  # this round's namespaces; the API server's stays for the next round
        for k in range(1, len(running) + 1):
            api_ns.ip("link", "del", f"res{k}", check=False)


async def api_answers(client: ApiClient, deadline: float) -> None:
    """Returns once the API server lists Namespaces; raises after ``deadline`` (time.monotonic)."""
    while True:
        try:
            await client.list(r.NAMESPACES)
            return
        except Exception:  # noqa: BLE001  (not listening yet: connection refused, or not ready)
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def one_size(n: int, a: argparse.Namespace) -> tuple[list[dict[str, dict[str, float]]], str]:
    pool = NetnsPool(PREFIX)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    api = None
    try:
        api_ns = pool.netns("api")
        api = subprocess.Popen(["ip", "netns", "exec", api_ns.name, str(BIN / "podnet"), "lab", "apiserver",
                                "--listen", f"0.0.0.0:{API_PORT}", "--no-controllers",
                                "--service-cluster-ip-range", "10.96.0.0/12", "--watch-history", "2000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        enter(api_ns.name)  # this thread's sockets (the API client) in the API server's namespace
        async with ApiClient.from_url(f"http://127.0.0.1:{API_PORT}") as client:
            await api_answers(client, time.monotonic() + 30)
            t0 = time.monotonic()
            await preload(client, n)
            note = f"preloaded in {time.monotonic() - t0:.0f} s"
            print(f"{n} Services: {note}; load {os.getloadavg()}", file=sys.stderr, flush=True)
            rounds = []
            for i in range(a.rounds):
                with tempfile.TemporaryDirectory(prefix="podnet-res-") as tmp:
                    rounds.append(await one_round(api_ns, client, Path(tmp), n, i, a))
                for label, row in rounds[-1].items():
                    print(f"  round {i + 1} {label}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()),
                          file=sys.stderr, flush=True)
        return rounds, note
    finally:
        setns(own)
        os.close(own)
        if api is not None:
            api.terminate()
            api.wait(15)
        pool.close()


def table(n: int, rounds: list[dict[str, dict[str, float]]], note: str, load: tuple, a: argparse.Namespace) -> str:
    keys = list(next(iter(rounds[0].values())))
    lines = [f"#### {n} Services x {ENDPOINTS} endpoints, {NODES} Nodes, {n // 5} Pods, {POLICIES} NetworkPolicies "
             f"({note}); medians of {len(rounds)} rounds, [min-max]", "",
             "| daemon | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label in rounds[0]:
        cells = []
        for k in keys:
            vals = [rd[label][k] for rd in rounds]
            cells.append(f"**{statistics.median(vals):.3g}** [{min(vals):.3g}-{max(vals):.3g}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"load average before/after: {load[0]} / {load[1]}")
    return "\n".join(lines) + "\n"


async def main_async(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        return 1
    sizes = [max(10, min(int(x), 20_000)) for x in a.services.split(",")]
    a.rounds = max(1, min(a.rounds, 5))
    a.idle, a.churn = max(5.0, min(a.idle, 120.0)), max(5.0, min(a.churn, 120.0))
    a.churn_rate = max(1.0, min(a.churn_rate, 50.0))
    header = [f"### daemon resources, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
              f"`.venv/bin/python -P bench/daemon_resources.py --services {a.services} --rounds {a.rounds} "
              f"--idle {a.idle:g} --churn-rate {a.churn_rate:g} --churn {a.churn:g} --iptables-backend "
              f"{a.iptables_backend}` ({os.cpu_count()} cores; "
              f"the five daemons run at the same time, each in its own network namespace)", ""]
    parts = ["\n".join(header)]
    for n in sizes:
        load0 = os.getloadavg()
        rounds, note = await one_size(n, a)
        parts.append(table(n, rounds, note, (load0, os.getloadavg()), a))
    text = "\n".join(parts)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the namespaces and daemons are removed on the way out
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", default="1000,10000", help="comma-separated Service counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds without changes (CPU idle, steady RSS)")
    ap.add_argument("--churn-rate", type=float, default=10.0, help="EndpointSlice (and Pod label) changes per second")
    ap.add_argument("--churn", type=float, default=30.0, help="seconds of churn")
    ap.add_argument("--iptables-backend", choices=("legacy", "nft", "auto"), default="legacy",
                    help="the iptables the node's kubelet writes (its KUBE-KUBELET-CANARY chain in each daemon's "
                         "namespace: podnet-proxy's iptables mode and podnet-policy follow it); auto: no chain "
                         "(an empty node: both choose nft)")
    ap.add_argument("--sync-timeout", type=float, default=300.0, help="seconds every daemon has for its first sync")
    ap.add_argument("--out", help="append the markdown tables to this file")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
