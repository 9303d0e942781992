"""``lab up``: build a lab cluster step by step (see the fabric and kubelet docstrings).

Order, each step waiting for what the next one needs:

 1. validate + plan (nothing is created for a bad topology), refuse an existing lab;
 2. the fabric (underlay bridge, nodes, outside and upstream hosts);
 3. the API server (root 127.0.0.1:<ephemeral> for kubectl, <underlay .1>:6443 for nodes);
 4. the upstream DNS (dnsmasq in the upstream netns, a few fixed names);
 5. one kubelet per node: registers its Node; wait for every node's pod CIDR;
 6. per node: CNI (podnet-cni install + daemon, or the labelled reference-plugin
    fallback), the proxy and the policy engine; routes to pod CIDRs on the underlay/upstream hosts;
 7. kube-dns Service + the podnet-dns pod; the user's pods; wait until all are Ready;
 8. kubeconfig + usage.

On any failure, what was built stays for inspection and the message says to
run ``podnet lab down``; ``up`` never half-removes a lab.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError, TRANSPORT_ERRORS
from podnet.host import procs
from podnet.host.netns import list_netns, run
from podnet.netlab.lab import credentials, fabric, labstate, manifests, parts
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.progress import Progress
from podnet.netlab.lab.topology import LabPlan, LabSpec, plan as make_plan

__all__ = ["up", "LabExists", "wait_pods_ready", "UPSTREAM_NAMES"]

# Names the lab's upstream DNS answers (no traffic ever leaves the machine).
UPSTREAM_NAMES = {"example.org": "203.0.113.10", "outside.lab": None, "www.example.net": "203.0.113.20"}


class LabExists(RuntimeError):
    pass


def _python() -> list[str]:
    return [sys.executable, "-P", "-m"]


def _wait_file(path: Path, timeout: float, proc_pid: int | None = None) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc_pid is not None and not procs.alive(proc_pid):
            raise RuntimeError(f"process {proc_pid} exited before writing {path}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout:.0f} s")


def start_apiserver(p: LabPlan) -> int:
    """Start the API server (see apirunner); return its root-namespace port once it listens."""
    port_file = p.run_dir / "apiserver.port"
    port_file.unlink(missing_ok=True)
    pid = procs.spawn(p.run_dir, p.spec.name, "apiserver", _python() + [
        "podnet.netlab.apiserver.apirunner", "--netns", p.underlay_netns,
        "--underlay-listen", f"{p.apiserver_ip}:{p.apiserver_port}", "--port-file", str(port_file),
        "--state", str(p.run_dir / "apiserver-state.json"),
        "--cluster-cidr", p.spec.cluster_cidr, "--service-cidr", p.spec.service_cidr,
        "--node-cidr-mask", str(p.spec.node_cidr_mask),
        "--token-auth-file", str(credentials.token_file(p)), "--pod-log-dir", str(p.run_dir / "logs" / "pods"),
        "--tls-cert-file", str(credentials.serving_files(p)[0]),
        "--tls-private-key-file", str(credentials.serving_files(p)[1]),
        "--rbac-file", str(credentials.rbac_manifest()),
    ])
    return int(_wait_file(port_file, 30, pid))


def start_upstream_dns(p: LabPlan) -> None:
    args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
            f"--listen-address={p.upstream_ip}", "--port=53", "--log-facility=-", "--cache-size=0",
            f"--pid-file={p.run_dir / 'dnsmasq.pid'}", "--user=root", "--group=root"]
    for name, ip in UPSTREAM_NAMES.items():
        args.append(f"--address=/{name}/{ip or p.outside_ip}")
    procs.spawn(p.run_dir, p.spec.name, "upstream-dns", args, netns=p.upstream_netns)


async def _wait_pod_cidrs(client: ApiClient, p: LabPlan, timeout: float) -> dict[str, str]:
    end = time.monotonic() + timeout
    while True:
        try:
            items, _ = await client.list(r.NODES)
        except (ApiError, *TRANSPORT_ERRORS):
            items = []
        got = {}
        for n in items:
            spec = n.get("spec") or {}
            cidr = spec.get("podCIDR") or (spec.get("podCIDRs") or [None])[0]
            if cidr:
                got[n["metadata"]["name"]] = cidr
        if all(n.name in got for n in p.nodes):
            return {n.name: got[n.name] for n in p.nodes}
        if time.monotonic() > end:
            missing = [n.name for n in p.nodes if n.name not in got]
            raise TimeoutError(f"nodes without a pod CIDR after {timeout:.0f} s: {', '.join(missing)} "
                               "(is the API server's node IPAM controller running?)")
        await asyncio.sleep(0.1)


async def wait_pods_ready(client: ApiClient, keys: list[tuple[str, str]], timeout: float,
                          progress: Progress | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Wait until every (namespace, name) pod is Ready; raise naming the laggards (and failures)."""
    end = time.monotonic() + timeout
    want = set(keys)
    last_report = 0.0
    while True:
        items, _ = await client.list(r.PODS)
        by = {(i["metadata"].get("namespace", "default"), i["metadata"]["name"]): i for i in items}
        ready, failed = {}, {}
        for k in want:
            pod = by.get(k)
            if not pod:
                continue
            st = pod.get("status") or {}
            if st.get("phase") == "Failed":
                failed[k] = st.get("message", "")
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or ()):
                ready[k] = pod
        if len(ready) == len(want):
            return ready
        if failed:
            raise RuntimeError("pods failed: " + "; ".join(f"{ns}/{n}: {m}" for (ns, n), m in sorted(failed.items())))
        now = time.monotonic()
        if progress and now - last_report > 2:
            progress.note(f"{len(ready)}/{len(want)} pods ready")
            last_report = now
        if now > end:
            lag = sorted(f"{ns}/{n}" for ns, n in want - set(ready))
            raise TimeoutError(f"pods not ready after {timeout:.0f} s: {', '.join(lag[:10])}")
        await asyncio.sleep(0.1)


def _check_free(p: LabPlan) -> None:
    leftovers = [n for n in list_netns() if n.startswith(p.prefix)]
    if (p.run_dir / "lab.json").exists() or leftovers:
        raise LabExists(
            f"lab {p.spec.name!r} already exists ({'run dir ' + str(p.run_dir) if (p.run_dir / 'lab.json').exists() else ''}"
            f"{' netns ' + ', '.join(leftovers[:3]) if leftovers else ''}): run `podnet lab down --name {p.spec.name}` "
            "first, or pick another --name"
        )


def _setup_node_network(p: LabPlan, st: LabState, cidrs: dict[str, str], progress: Progress,
                        cni: str = "podnet", proxy_min_sync: str = parts.PROXY_MIN_SYNC_PERIOD) -> None:
    lab = p.spec.name
    use_cni = cni == "podnet" and parts.usable("cni") and parts.usable("cni-daemon")
    if cni == "reference":
        st.parts["cni"] = "reference bridge+host-local plugins (asked for with --cni reference); routes by the lab"
    else:
        st.parts["cni"] = "podnet-cni" if use_cni else (
            "FALLBACK: reference bridge+host-local plugins (podnet-cni install/daemon not usable); "
            "routes to other nodes added by the lab")
    installs: list[subprocess.Popen] = []
    if not use_cni and cni == "podnet":
        progress.note("CNI: podnet-cni is not usable -> FALLBACK to the reference bridge plugin (labelled)")
    for n in p.nodes:
        np_ = parts.node_paths(p, n)
        np_.socket.parent.mkdir(parents=True, exist_ok=True)
        np_.data_dir.mkdir(parents=True, exist_ok=True)
        if use_cni:
            np_.bin_dir.mkdir(parents=True, exist_ok=True)
            np_.conf_dir.mkdir(parents=True, exist_ok=True)
            installs.append(subprocess.Popen(parts.cni_install_cmd(np_), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True))
            procs.spawn(p.run_dir, lab, f"cni-{n.name}", parts.cni_daemon_cmd(p, n, np_), netns=n.netns)
        else:
            np_.bin_dir.mkdir(parents=True, exist_ok=True)
            np_.conf_dir.mkdir(parents=True, exist_ok=True)
            for plugin in ("bridge", "host-local", "loopback"):
                dst = np_.bin_dir / plugin
                if not dst.exists():
                    os.symlink(f"{parts.REFERENCE_CNI_DIR}/{plugin}", dst)
            (np_.conf_dir / "10-pnl-fallback.conflist").write_text(parts.reference_conflist(cidrs[n.name], p, n))
            routes = [f"route replace {cidrs[o.name]} via {o.ip}" for o in p.nodes if o.name != n.name]
            fabric.batch(n.netns, routes)
    # The proxies and policy engines need nothing from the CNI daemons: every daemon starts now and
    # is waited for afterwards, so their start-up times overlap instead of adding up.
    use_proxy = parts.usable("proxy")
    if use_proxy:
        for n in p.nodes:
            procs.spawn(p.run_dir, lab, f"proxy-{n.name}", parts.proxy_cmd(p, n, proxy_min_sync), netns=n.netns)
    use_policy = _spawn_policy(p, st, progress, proxy_min_sync)
    for inst in installs:  # `podnet-cni install` per node, run in parallel
        text, _ = inst.communicate(timeout=60)
        if inst.returncode != 0:
            raise RuntimeError(f"podnet-cni install failed: {text.strip()[-300:]}")
    if use_cni:
        for n in p.nodes:
            _wait_file_exists(parts.node_paths(p, n).socket, 30, f"CNI daemon socket on {n.name}")
    if use_proxy:
        failed = [f"{n.name}: {err}" for n in p.nodes
                  if (err := _wait_listening(p, f"proxy-{n.name}", n.netns, n.ip, 10256, 20))]
        st.parts["proxy"] = "podnet-proxy" if not failed else "FAILED: podnet-proxy " + "; ".join(failed)
        if failed:
            progress.note("proxy: " + st.parts["proxy"])
    else:
        st.parts["proxy"] = "MISSING: podnet-proxy is not usable; Services are not routed"
        progress.note("proxy: podnet-proxy is not usable -> Services will NOT be routed")
    if use_policy:
        _wait_policy(p, st, progress)


def _spawn_policy(p: LabPlan, st: LabState, progress: Progress, min_sync: str) -> bool:
    """podnet-policy on every node, beside the proxy; False (and the part marked missing) if unusable."""
    if not parts.usable("policy"):
        st.parts["policy"] = "MISSING: podnet-policy is not usable; NetworkPolicies are not enforced"
        progress.note("policy: podnet-policy is not usable -> NetworkPolicies will NOT be enforced")
        return False
    for n in p.nodes:
        procs.spawn(p.run_dir, p.spec.name, f"policy-{n.name}", parts.policy_cmd(p, n, min_sync), netns=n.netns)
    return True


def _wait_policy(p: LabPlan, st: LabState, progress: Progress) -> None:
    """Every policy engine is up once its health port listens."""
    failed = [f"{n.name}: {err}" for n in p.nodes
              if (err := _wait_listening(p, f"policy-{n.name}", n.netns, "127.0.0.1", parts.POLICY_HEALTH_PORT, 20))]
    st.parts["policy"] = "podnet-policy" if not failed else "FAILED: podnet-policy " + "; ".join(failed)
    if failed:
        progress.note("policy: " + st.parts["policy"])


def _last_log_line(p: LabPlan, name: str) -> str:
    try:
        lines = [x for x in (p.run_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1][-160:] if lines else ""


def _wait_listening(p: LabPlan, name: str, netns: str, ip: str, port: int, timeout: float) -> str | None:
    """None once the part's process listens on ip:port; else why not (exited + its last log line)."""
    pid = procs.read_pid(p.run_dir, name)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pid is None or not procs.alive(pid):
            return f"exited ({_last_log_line(p, name)}; log {p.run_dir / 'logs' / (name + '.log')})"
        if fabric.wait_reachable(netns, ip, port, 1.0):
            return None
    return f"not listening on {ip}:{port} after {timeout:.0f} s (log {p.run_dir / 'logs' / (name + '.log')})"


def _wait_file_exists(path: Path, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} ({path}) did not appear within {timeout:.0f} s")
        time.sleep(0.05)


def up(spec: LabSpec, out: TextIO = sys.stdout, *, ready_timeout: float = 180.0, cni: str = "podnet",
       progress: Progress | None = None, proxy_min_sync: str = parts.PROXY_MIN_SYNC_PERIOD) -> LabState:
    p = make_plan(spec)  # raises TopologyError before anything exists
    _check_free(p)
    if os.geteuid() != 0:
        raise PermissionError("podnet lab up needs root (network namespaces)")
    progress = progress or Progress(out)
    st = LabState(spec=spec, created=time.time())
    labstate.save(p.run_dir, st)
    p.data_dir.mkdir(parents=True, exist_ok=True)
    with progress.step(f"fabric: underlay {spec.underlay}, {spec.nodes} nodes, outside and upstream hosts"):
        fabric.build(p, progress.note)
    with progress.step("API server + controllers"):
        tokens = credentials.issue(p)
        st.api_port = start_apiserver(p)
        labstate.save(p.run_dir, st)
        credentials.write_private(p.run_dir / "kubeconfig",
                                  credentials.kubeconfig_text(spec.name, st.local_master, tokens["admin"],
                                                              credentials.ca_file(p).read_text()))
        progress.note(f"kubectl side: {st.local_master}; nodes: {p.master}")
        if not fabric.wait_reachable(p.nodes[0].netns, p.apiserver_ip, p.apiserver_port, 15):
            raise RuntimeError(f"API server not reachable from {p.nodes[0].netns} at {p.master}")
    with progress.step("upstream DNS (dnsmasq) in " + p.upstream_netns):
        start_upstream_dns(p)
        err = _wait_listening(p, "upstream-dns", p.upstream_netns, p.upstream_ip, 53, 10)
        if err:
            raise RuntimeError(f"upstream DNS (dnsmasq): {err}")
    asyncio.run(_up_api(p, st, progress, ready_timeout, cni, proxy_min_sync))
    kc = p.run_dir / "kubeconfig"
    labstate.save(p.run_dir, st)
    out.write(
        f"\nlab {spec.name!r} is up in {progress.elapsed:.1f} s: {spec.nodes} node{'s' * (spec.nodes != 1)} x "
        f"{spec.pods_per_node} pod{'s' * (spec.pods_per_node != 1)}\n"
        + "".join(f"  {k:6s}: {v}\n" for k, v in sorted(st.parts.items()))
        + f"  kubectl: export KUBECONFIG={kc}; kubectl get pods -A -o wide\n"
        + f"  check:   podnet lab check --name {spec.name}\n"
        + f"  down:    podnet lab down --name {spec.name}\n"
    )
    return st


async def _up_api(p: LabPlan, st: LabState, progress: Progress, ready_timeout: float, cni: str,
                  proxy_min_sync: str) -> None:
    lab = p.spec.name
    async with ApiClient.from_flags(kubeconfig=str(p.run_dir / "kubeconfig")) as client:
        with progress.step("kubelets: register nodes, wait for pod CIDRs"):
            for n in p.nodes:
                np_ = parts.node_paths(p, n)
                procs.spawn(p.run_dir, lab, f"kubelet-{n.name}", _python() + [
                    "podnet.netlab.node.kubelet", "--netns", n.netns, "--node", n.name, "--node-ip", n.ip,
                    "--master", p.master, "--lab", lab, "--run-dir", str(p.run_dir),
                    "--cni-bin-dir", str(np_.bin_dir), "--cni-conf-dir", str(np_.conf_dir),
                    "--cluster-dns", p.dns_service_ip,
                    "--kubeconfig", str(credentials.kubeconfig_path(p, f"kubelet-{n.name}")),
                ])
            st.pod_cidrs = await _wait_pod_cidrs(client, p, 30)
            labstate.save(p.run_dir, st)
            fabric.add_pod_cidr_routes(p, st.pod_cidrs)
            for n in p.nodes:
                progress.note(f"{n.name}: {n.ip} pod CIDR {st.pod_cidrs[n.name]}")
        with progress.step("node networking: CNI + proxy + policy on every node"):
            _setup_node_network(p, st, st.pod_cidrs, progress, cni, proxy_min_sync)
        labstate.save(p.run_dir, st)
        keys = []
        with progress.step("cluster DNS: kube-dns Service + podnet-dns pod"):
            await _ensure_namespace(client, "kube-system")
            await client.create(r.SERVICES, manifests.dns_service(p.dns_service_ip), namespace="kube-system")
            if parts.usable("dns"):
                st.parts["dns"] = "podnet-dns"
                await client.create(r.PODS, manifests.dns_pod(p.nodes[0].name, parts.dns_cmd(p)), namespace="kube-system")
                keys.append(("kube-system", "podnet-dns"))
            else:
                st.parts["dns"] = "MISSING: podnet-dns is not usable; names do not resolve"
                progress.note("DNS: podnet-dns is not usable -> names will NOT resolve")
        with progress.step(f"pods: {p.spec.pods_per_node} per node through CNI ADD, readiness to the API"):
            for k in range(1, p.spec.pods_per_node + 1):
                for n in p.nodes:
                    name = manifests.base_pod_name(n.index, k)
                    await client.create(r.PODS, manifests.pod(name, n.name, {"app": "echo"}), namespace="default")
                    keys.append(("default", name))
            await wait_pods_ready(client, keys, ready_timeout, progress)


async def _ensure_namespace(client: ApiClient, name: str) -> None:
    try:
        await client.create(r.NAMESPACES, {"metadata": {"name": name}})
    except ApiError as e:
        if not e.is_conflict:
            raise
