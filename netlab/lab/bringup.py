"""``lab up``: build a lab cluster step by step (see the fabric and kubelet docstrings).

Order, each step waiting for what the next one needs:

 1. validate + plan (nothing is created for a bad topology), refuse an existing lab;
 2. the fabric (underlay bridge, nodes, outside and upstream hosts); meanwhile the static CNI shim of
    podnet's image is compiled into ``<run-dir>/image`` (the kubelets' ``--image-dir``);
 3. the API server (root 127.0.0.1:<ephemeral> for kubectl, <underlay .1>:6443 for nodes), RBAC on
    with only kube-apiserver's bootstrap roles, started together with one kubelet per node (each
    retries registering its Node until the API server answers) and the upstream DNS (dnsmasq in
    the upstream netns, a few fixed names); wait for the API server's port (dnsmasq is checked
    before podnet-dns, which forwards to it, is installed);
 4. podnet installed from deploy/podnet.yaml (:mod:`.install`: the user's edits only) through the
    API with the admin credential while the kubelets start: ServiceAccounts, RBAC, ConfigMaps, the
    node DaemonSet, the kube-dns Service; then wait for every node's pod CIDR (so every kubelet
    registered; when one did not, say which node cannot reach the API server);
 5. the DaemonSet controller puts one podnet-node pod on every node as it registers, whose init
    container writes the CNI plugin and conflist the kubelet then uses, and whose containers (CNI
    daemon, proxy, NetworkPolicy engine) run with the ``podnet-node`` ServiceAccount's
    TokenRequest token; wait until each node's CNI daemon can serve an ADD (its /healthz names
    the node's pod CIDR);
 6. the manifest's podnet-dns Deployment and the user's echo pods; wait until they are Ready, then
    (up to ``NODE_READY_GRACE``) every node's podnet-node pod: one that is not is named in the
    parts' status (a layout the CNI cannot route keeps the CNI daemon's readiness failing) and
    ``lab check`` shows what does not work;
 7. kubeconfig + usage.

podnet's daemons have no other start-up path: what runs is what the manifest says. ``--cni
reference`` points the kubelets at the reference bridge plugin and installs the manifest without
its CNI containers (:func:`.install.without_cni`).

:func:`up` itself never removes anything; the ``lab up`` verb (lab_up) rolls back
what was built on a failure, Ctrl-C or SIGTERM unless ``--retain``, as kind deletes a
failed cluster.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError, TRANSPORT_ERRORS
from podnet.host import procs
from podnet.host.netns import list_netns
from podnet.host.nsenter import exec_argv
from podnet.host import podman as podman_store_file
from podnet.host.podman import Store as PodmanStore
from podnet.netlab.lab import credentials, fabric, install, labstate, manifests, parts
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.progress import Progress
from podnet.netlab.lab.topology import LabPlan, LabSpec, plan as make_plan

__all__ = ["up", "LabExists", "wait_pods_ready", "wait_installed", "UPSTREAM_NAMES"]

NODE_READY_GRACE = 30.0
"""Seconds the node pods get to be Ready once the DNS and echo pods are (they started before them)."""

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
    """Start the API server (see apirunner); return its pid (:func:`wait_apiserver` waits for its port)."""
    port_file = p.run_dir / "apiserver.port"
    port_file.unlink(missing_ok=True)
    return procs.spawn(p.run_dir, p.spec.name, "apiserver", _python() + [
        "podnet.netlab.apiserver.apirunner", "--netns", p.underlay_netns,
        "--underlay-listen", f"{p.apiserver_ip}:{p.apiserver_port}", "--port-file", str(port_file),
        "--state", str(p.run_dir / "apiserver-state.json"),
        "--cluster-cidr", p.spec.cluster_cidr, "--service-cidr", p.spec.service_cidr,
        "--node-cidr-mask", str(p.spec.node_cidr_mask),
        "--token-auth-file", str(credentials.token_file(p)), "--pod-log-dir", str(p.run_dir / "logs" / "pods"),
        "--tls-cert-file", str(credentials.serving_files(p)[0]),
        "--tls-private-key-file", str(credentials.serving_files(p)[1]),
        "--rbac-file", str(credentials.bootstrap_rbac_file(p)),
    ])


def wait_apiserver(p: LabPlan, pid: int) -> int:
    """The API server's root-namespace port, once it listens."""
    return int(_wait_file(p.run_dir / "apiserver.port", 30, pid))


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
        if progress:  # every change, up to "N/N pods ready"
            progress.status(f"{len(ready)}/{len(want)} pods ready")
        if len(ready) == len(want):
            return ready
        if failed:
            raise RuntimeError("pods failed: " + "; ".join(f"{ns}/{n}: {m}" for (ns, n), m in sorted(failed.items())))
        now = time.monotonic()
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


def _reference_cni(p: LabPlan, cidrs: dict[str, str]) -> None:
    """``--cni reference``: the reference bridge + host-local plugins in each node's own CNI dirs (the
    kubelets exec them instead of the plugin the DaemonSet installs), and host-gw routes by the lab."""
    for n in p.nodes:
        np_ = parts.node_paths(p, n)
        np_.bin_dir.mkdir(parents=True, exist_ok=True)
        np_.conf_dir.mkdir(parents=True, exist_ok=True)
        for plugin in ("bridge", "host-local", "loopback"):
            dst = np_.bin_dir / plugin
            if not dst.exists():
                os.symlink(f"{parts.REFERENCE_CNI_DIR}/{plugin}", dst)
        (np_.conf_dir / "10-pnl-fallback.conflist").write_text(parts.reference_conflist(cidrs[n.name], p, n))
        fabric.batch(n.netns, [f"route replace {cidrs[o.name]} via {o.ip}" for o in p.nodes if o.name != n.name])


def _start_image_build(p: LabPlan) -> subprocess.Popen:
    """Build the files podnet's image has beyond the console scripts (the static CNI shim) into
    ``<run-dir>/image``, in a process of its own (the lab does not import podnet.cni)."""
    out = parts.image_dir(p) / parts.STATIC_SHIM
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-P", "-c", "import pathlib, sys; from podnet.cni.install import build_shim; "
         "build_shim(pathlib.Path(sys.argv[1]), static=True)", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish_image_build(build: subprocess.Popen) -> None:
    text, _ = build.communicate(timeout=120)
    if build.returncode != 0:
        raise RuntimeError("building the static CNI shim of podnet's image (needs gcc and libc6-dev): "
                           + text.strip()[-300:])


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


def up(spec: LabSpec, out: TextIO = sys.stdout, *, ready_timeout: float = 180.0, cni: str = "podnet",
       progress: Progress | None = None, proxy_min_sync: str = parts.PROXY_MIN_SYNC_PERIOD,
       claimed: Callable[[], None] = lambda: None, podman_store: PodmanStore | None = None) -> LabState:
    """Build the lab. ``claimed`` is called once the name is known to be free, before anything
    is created: from then on a rollback (``teardown.down``) removes only what this call built.
    ``podman_store``: the kubelets run podnet's image with podman from that store (``--runtime podman``)."""
    p = make_plan(spec)  # raises TopologyError before anything exists
    _check_free(p)
    if os.geteuid() != 0:
        raise PermissionError("podnet lab up needs root (network namespaces)")
    if podman_store is not None:
        missing = sorted(i for i in install.images(install.load()) if not podman_store.image_exists(i))
        if missing:
            raise RuntimeError(f"--runtime podman: podman has no {', '.join(missing)} "
                               "(build it with: bash dev.sh image)")
    claimed()
    progress = progress or Progress(out)
    st = LabState(spec=spec, created=time.time())
    labstate.save(p.run_dir, st)
    if podman_store is not None:
        podman_store_file.save(p.run_dir, podman_store)
        st.parts["runtime"] = "podman: podnet's image runs in podman containers"
    p.data_dir.mkdir(parents=True, exist_ok=True)
    layout = (f"{spec.layout} underlay {spec.underlay}" if spec.layout == "flat" else
              f"{spec.layout} underlay: {len(p.segments)} subnets of {spec.underlay} behind {p.router_netns}")
    st.parts["underlay"] = f"{layout}; CNI backend {spec.backend}"
    # podnet's image files compile while the fabric and the API server come up (only the CNI
    # install container needs them, so not for --cni reference); every container of the image
    # mounts the directory, so it exists either way
    parts.image_dir(p).mkdir(parents=True, exist_ok=True)
    image_build = _start_image_build(p) if cni == "podnet" else None
    with progress.step(f"fabric: {layout}, {spec.nodes} node{'s' * (spec.nodes != 1)}, outside and upstream hosts"):
        fabric.build(p, progress.note)
    # the API server, the kubelets (they retry registering until it answers) and the upstream DNS start
    # together: their interpreters start up side by side instead of one after the other
    with progress.step("API server + controllers (kubelets and upstream DNS starting meanwhile)"):
        tokens = credentials.issue(p)
        api_pid = start_apiserver(p)
        for n in p.nodes:
            procs.spawn(p.run_dir, spec.name, f"kubelet-{n.name}", _kubelet_cmd(p, n, cni, podman_store))
        start_upstream_dns(p)
        st.api_port = wait_apiserver(p, api_pid)
        labstate.save(p.run_dir, st)
        credentials.write_private(p.run_dir / "kubeconfig",
                                  credentials.kubeconfig_text(spec.name, st.local_master, tokens["admin"],
                                                              credentials.ca_file(p).read_text()))
        progress.note(f"kubectl side: {st.local_master}; nodes: {p.master}")
    asyncio.run(_up_api(p, st, progress, ready_timeout, cni, proxy_min_sync, image_build))
    kc = p.run_dir / "kubeconfig"
    labstate.save(p.run_dir, st)
    out.write(
        f"\nlab {spec.name!r} is up in {progress.elapsed:.1f} s: {spec.nodes} node{'s' * (spec.nodes != 1)} x "
        f"{spec.pods_per_node} pod{'s' * (spec.pods_per_node != 1)}\n"
        + "".join(f"  {k:8s}: {v}\n" for k, v in sorted(st.parts.items()))
        + f"  kubectl: export KUBECONFIG={kc}; kubectl get pods -A -o wide\n"
        + f"  check:   podnet lab check --name {spec.name}\n"
        + f"  down:    podnet lab down --name {spec.name}\n"
    )
    return st


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def _why_not_ready(pod: dict[str, Any]) -> str:
    """One pod's lagging containers with their state, for a timeout message."""
    st = pod.get("status") or {}
    bad = []
    for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        state = c.get("state") or {}
        if c.get("ready") or (state.get("terminated") or {}).get("reason") == "Completed":
            continue
        what = next(iter(state), "?")
        reason = (state.get(what) or {}).get("reason", "")
        bad.append(f"{c.get('name')}: {what}{' ' + reason if reason else ''} (restarts {c.get('restartCount', 0)})")
    return f"{pod['metadata']['name']} on {(pod.get('spec') or {}).get('nodeName') or '-'} " \
           f"{st.get('phase', '?')}{': ' + '; '.join(bad) if bad else ''}{' ' + st['message'] if st.get('message') else ''}"


def _container_ready(pod: dict[str, Any], name: str) -> bool:
    return any(c.get("name") == name and c.get("ready") for c in (pod.get("status") or {}).get("containerStatuses") or ())


async def wait_installed(client: ApiClient, selector: str, want: int, timeout: float, what: str,
                         progress: Progress | None = None, per_node: bool = False,
                         container: str | None = None) -> list[dict[str, Any]]:
    """Wait until ``want`` active pods of kube-system matching ``selector`` are Ready (``container``:
    that container of theirs is ready; ``per_node``: on distinct nodes); raise naming the laggards
    and their containers' states."""
    end = time.monotonic() + timeout
    last = ""
    while True:
        items, _ = await client.list(r.PODS, "kube-system", label_selector=selector)
        active = [i for i in items if (i.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and not i["metadata"].get("deletionTimestamp")]
        ready = [i for i in active if (_container_ready(i, container) if container else _is_ready(i))]
        n_ready = len({(i.get("spec") or {}).get("nodeName") for i in ready}) if per_node else len(ready)
        line = f"{what}: {n_ready}/{want} ready"
        if progress and line != last:
            progress.status(line)
            last = line
        if n_ready >= want:
            return ready
        if time.monotonic() > end:
            lag = [_why_not_ready(i) for i in active if i not in ready] or [f"only {len(active)} pods exist"]
            raise TimeoutError(f"{what}: {n_ready}/{want} ready after {timeout:.0f} s: " + " | ".join(lag[:6]))
        await asyncio.sleep(0.2)


_CNI_SERVING = (
    "import json,sys,time,urllib.request,urllib.error\n"
    "end=time.monotonic()+float(sys.argv[1])\n"
    "while time.monotonic()<end:\n"
    "  try:\n"
    "    body=urllib.request.urlopen(sys.argv[2],timeout=1).read()\n"
    "  except urllib.error.HTTPError as e: body=e.read()\n"
    "  except OSError: body=b''\n"
    "  try:\n"
    "    if json.loads(body or b'{}').get('podCIDRs'): sys.exit(0)\n"
    "  except ValueError: pass\n"
    "  time.sleep(0.1)\n"
    "sys.exit(1)\n"
)


async def _wait_cni_serving(p: LabPlan, timeout: float, progress: Progress) -> None:
    """Wait until every node's CNI daemon can serve an ADD: its /healthz body (200 or 503) names the
    node's pod CIDR, the one condition ADD needs (the readiness probe also wants the routes to every
    other node, which a topology that cannot route between nodes never gets)."""
    url = f"http://127.0.0.1:{parts.CNI_HEALTH_PORT}/healthz"
    procs_ = [await asyncio.create_subprocess_exec(
        *exec_argv(n.netns, ["python3", "-S", "-c", _CNI_SERVING, str(timeout), url]),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL) for n in p.nodes]
    codes = await asyncio.gather(*(pr.wait() for pr in procs_))
    late = [n.name for n, rc in zip(p.nodes, codes) if rc != 0]
    if late:
        raise TimeoutError(f"podnet-node cni-daemon serves no pod CIDR after {timeout:.0f} s on {', '.join(late)}")
    progress.status(f"podnet-node cni-daemon: serving on {len(p.nodes)}/{len(p.nodes)} nodes")


async def _node_pods_ready(client: ApiClient, p: LabPlan, timeout: float, progress: Progress) -> dict[str, str]:
    """Wait up to ``timeout`` for every node's podnet-node pod to be Ready; return, per container
    that is not ready somewhere, "NOT READY on <nodes>" ({} when all are). The lab is up either way
    and says so: a layout the CNI cannot route keeps the CNI daemon's readiness failing."""
    try:
        await wait_installed(client, install.NODE_SELECTOR, len(p.nodes), timeout, "podnet-node pods", progress,
                             per_node=True)
        return {}
    except TimeoutError as e:
        progress.note(f"NOT READY: {e}")
    items, _ = await client.list(r.PODS, "kube-system", label_selector=install.NODE_SELECTOR)
    lagging: dict[str, list[str]] = {}
    for n in p.nodes:
        pod = next((i for i in items if (i.get("spec") or {}).get("nodeName") == n.name and
                    (i.get("status") or {}).get("phase") not in ("Succeeded", "Failed")), None)
        for c in install.NODE_CONTAINERS.values():
            if pod is None or not _container_ready(pod, c):
                lagging.setdefault(c, []).append(n.name)
    return {c: f"NOT READY on {', '.join(nodes)}" for c, nodes in lagging.items()}


def _kubelet_cmd(p: LabPlan, n: Any, cni: str, podman_store: PodmanStore | None = None) -> list[str]:
    """One node's kubelet: podnet's CNI is whatever the node DaemonSet installs into the node's own
    /opt/cni/bin and /etc/cni/net.d (seen by the plugin at its host paths); ``--cni reference``: the
    lab's reference-plugin dirs."""
    root = parts.node_root(p, n)
    if cni == "reference":
        np_ = parts.node_paths(p, n)
        cni_args = ["--cni-bin-dir", str(np_.bin_dir), "--cni-conf-dir", str(np_.conf_dir)]
    else:
        cni_args = ["--cni-node-view", "--cni-bin-dir", str(root / "opt/cni/bin"),
                    "--cni-conf-dir", str(root / "etc/cni/net.d")]
    return _python() + [
        "podnet.netlab.node.kubelet", "--netns", n.netns, "--node", n.name, "--node-ip", n.ip,
        "--master", p.master, "--lab", p.spec.name, "--run-dir", str(p.run_dir), "--root-dir", str(root),
        *cni_args, "--image-dir", str(parts.image_dir(p)), "--cluster-dns", p.dns_service_ip,
        "--kubeconfig", str(credentials.kubeconfig_path(p, f"kubelet-{n.name}")),
        *(podman_store.kubelet_args() if podman_store else []),
    ]



async def _up_api(p: LabPlan, st: LabState, progress: Progress, ready_timeout: float, cni: str,
                  proxy_min_sync: str, image_build: subprocess.Popen | None) -> None:
    docs = install.lab_documents(
        install.load(), cluster_cidr=p.spec.cluster_cidr, backend=p.spec.backend, api_host=p.apiserver_ip,
        api_port=p.apiserver_port, dns_service_ip=p.dns_service_ip, upstream_dns=p.upstream_ip,
        proxy_min_sync=proxy_min_sync)
    if cni == "reference":
        docs = install.without_cni(docs)
    node_docs, dns_docs = install.staged(docs)
    # pods can be wired once every node's CNI daemon serves (its init container installed the plugin
    # first) or, with --cni reference, once the node pod runs (its proxy is ready); the rest of the
    # node pod finishes starting meanwhile
    first = install.NODE_CONTAINERS["proxy"]
    upstream_dns = asyncio.create_task(asyncio.to_thread(
        _wait_listening, p, "upstream-dns", p.upstream_netns, p.upstream_ip, 53, 10))
    async with ApiClient.from_flags(kubeconfig=str(p.run_dir / "kubeconfig")) as client:
        # the manifest goes in while the kubelets still start: the DaemonSet controller makes each
        # node's pod the moment its Node registers
        with progress.step(f"podnet: apply {install.MANIFEST.name} (kubelets starting meanwhile)"):
            if image_build is not None:
                _finish_image_build(image_build)
            await _ensure_namespace(client, "kube-system")
            await install.apply(client, node_docs)
        with progress.step("kubelets: register nodes, wait for pod CIDRs"):
            try:
                st.pod_cidrs = await _wait_pod_cidrs(client, p, 30)
            except TimeoutError:
                for n in p.nodes:  # routed layouts: through the router, from every segment
                    if not fabric.wait_reachable(n.netns, p.apiserver_ip, p.apiserver_port, 1):
                        raise RuntimeError(f"API server not reachable from {n.netns} at {p.master}") from None
                raise
            labstate.save(p.run_dir, st)
            fabric.add_pod_cidr_routes(p, st.pod_cidrs)
            for n in p.nodes:
                progress.note(f"{n.name}: {n.ip} pod CIDR {st.pod_cidrs[n.name]}")
        if cni == "reference":
            _reference_cni(p, st.pod_cidrs)
        how = f"from {install.MANIFEST.name} (DaemonSet {'/'.join(install.NODE_DAEMONSET)})"
        ready_what = "every node's CNI daemon serving" if cni == "podnet" else f"the {first} container of every node Ready"
        with progress.step(f"podnet-node: {ready_what}"):
            if cni == "podnet":
                await _wait_cni_serving(p, ready_timeout, progress)
            else:
                await wait_installed(client, install.NODE_SELECTOR, len(p.nodes), ready_timeout,
                                     f"podnet-node {first}", progress, per_node=True, container=first)
        err = await upstream_dns  # podnet-dns forwards to it
        if err:
            raise RuntimeError(f"upstream DNS (dnsmasq) in {p.upstream_netns}: {err}")
        keys = []
        with progress.step(f"podnet-dns Deployment, {p.spec.pods_per_node} echo pods per node; all Ready"):
            await install.apply(client, dns_docs)
            replicas = sum(int((d.get("spec") or {}).get("replicas", 1)) for d in dns_docs)
            for k in range(1, p.spec.pods_per_node + 1):
                for n in p.nodes:
                    name = manifests.base_pod_name(n.index, k)
                    await client.create(r.PODS, manifests.pod(name, n.name, {"app": "echo"}), namespace="default")
                    keys.append(("default", name))
            await wait_installed(client, install.DNS_SELECTOR, replicas, ready_timeout, "podnet-dns pods", progress)
            st.parts["dns"] = f"podnet-dns from {install.MANIFEST.name} (Deployment {'/'.join(install.DNS_DEPLOYMENT)})"
            await wait_pods_ready(client, keys, ready_timeout, progress)
            lagging = await _node_pods_ready(client, p, NODE_READY_GRACE, progress)
            for part, container in install.NODE_CONTAINERS.items():
                note = f"; {lagging[container]}" if container in lagging else ""
                st.parts[part] = f"podnet-{part} {how}{note}"
            if cni == "reference":
                st.parts["cni"] = "reference bridge+host-local plugins (asked for with --cni reference); routes by the lab"
            labstate.save(p.run_dir, st)


async def _ensure_namespace(client: ApiClient, name: str) -> None:
    try:
        await client.create(r.NAMESPACES, {"metadata": {"name": name}})
    except ApiError as e:
        if not e.is_conflict:
            raise
