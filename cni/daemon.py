"""The per-node CNI daemon: a warm process that serves the shim over a unix socket.

It holds everything that is expensive to start (pyroute2, the IPAM store, the
API watch), so an ADD costs one socket round trip plus the netlink work.

Wire format (shared with :mod:`podnet.cni.shim`, which must stay stdlib-only):
request = ``KEY=VALUE\\0`` for each ``CNI_*`` variable, one more ``\\0``, then the
raw stdin; the shim half-closes, the daemon answers ``<exit code>\\n<stdout>``
and closes. Requests are served concurrently; see :mod:`podnet.cni.plugin`
for what is serialised.

Start-up order: open the IPAM store (a corrupt store is reported by every
verb as error 5, and by STATUS as 50, instead of the daemon dying), set
forwarding sysctls and the anti-spoofing check (:mod:`podnet.cni.antispoof`) in
the node namespace, reconcile IPAM with the veths that exist, then listen; the
node's pod CIDR comes from ``--pod-cidr`` or from its
Node object (watched with :class:`podnet.kube.informer.Informer`), and the
routes to other nodes (host-gw or VXLAN per ``--backend``, see
:mod:`podnet.cni.overlay`) are re-synced on every Node change and every
``route_interval`` seconds. STATUS answers 50 until CIDR and routes are in place.

Command line: the binaries' one shape, flags (:func:`add_arguments`) -> :func:`options_from` ->
a frozen :class:`Options` -> :func:`run`; interval flags take Kubernetes durations (``10s``,
``1m``) or a bare number of seconds; SIGTERM/SIGINT stop the daemon
(:func:`podnet.host.loop.stop_on_signals`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from podnet.cni import antispoof, health, netops, overlay, pmtu, routes, skel
from podnet.cni.ipam import Allocator
from podnet.cni.ipam_store import SqliteStore
from podnet.cni.plugin import KernelNetOps, Plugin, Readiness
from podnet.cni.policy_hook import PolicyHook
from podnet.cni.types import CniError
from podnet.host.loop import stop_on_signals
from podnet.kube import logsetup
from podnet.kube.durations import duration_flag
from podnet.kube.errors import ConfigError

log = logging.getLogger("podnet.cni.daemon")


@dataclass(frozen=True)
class Options:
    """Everything the daemon runs with, from its flags."""

    socket: str
    node_name: str
    data_dir: str
    master: str = ""
    kubeconfig: str = ""
    cluster_cidr: tuple[str, ...] = ()
    pod_cidr: tuple[str, ...] = ()
    masquerade: bool = False
    mtu: int = 0
    """Pod MTU; 0 = the underlay interface's MTU less the backend's encapsulation."""
    route_interval: float = 10.0
    reconcile_interval: float = 60.0
    workers: int = 8
    health_listen: str = ""
    backend: str = "auto"
    vni: int = overlay.DEFAULT_VNI
    vxlan_port: int = overlay.DEFAULT_PORT
    vxlan_df: str = "inherit"
    """The IPv4 VXLAN device's outer DF mode (:data:`podnet.cni.overlay.DF_MODES`)."""
    policy_socket: str = ""
    """The policy engine's handshake socket; '' = no handshake."""
    policy_required: bool = False
    policy_timeout: float = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", required=True, help="unix socket the shim connects to")
    p.add_argument("--node-name", required=True)
    p.add_argument("--data-dir", required=True, help="IPAM store directory")
    p.add_argument("--master", default="", help="API server URL, e.g. http://10.0.0.1:6443")
    p.add_argument("--kubeconfig", default="")
    p.add_argument("--cluster-cidr", action="append", default=[], help="repeat or comma-separate for dual stack")
    p.add_argument("--pod-cidr", action="append", default=[], help="static pod CIDR(s) instead of the Node object")
    p.add_argument("--masquerade", action="store_true", help="SNAT traffic leaving the cluster CIDR")
    p.add_argument("--mtu", type=int, default=0, help="pod MTU; default: the underlay's, less 50 (IPv4) / 70 (IPv6) "
                   "bytes of VXLAN encapsulation unless the backend is host-gw")
    p.add_argument("--backend", choices=overlay.BACKENDS, default="auto",
                   help="routes to other nodes' pods: host-gw, vxlan, or auto (host-gw on the same subnet, else vxlan)")
    p.add_argument("--vni", type=overlay.int_arg(1, 0xFFFFFF, "VNI"), default=overlay.DEFAULT_VNI,
                   help="VXLAN network identifier")
    p.add_argument("--vxlan-port", type=overlay.int_arg(1, 65535, "VXLAN port"), default=overlay.DEFAULT_PORT,
                   help=f"VXLAN UDP port ({overlay.DEFAULT_PORT} as flannel, {overlay.IANA_PORT} is IANA's)")
    p.add_argument("--vxlan-df", choices=tuple(overlay.DF_MODES), default="inherit",
                   help="outer DF of the IPv4 VXLAN device: inherit (a pod packet with DF is never fragmented; a "
                        "smaller underlay hop is found by path-MTU discovery and pods are told) or unset (underlay "
                        "routers fragment the outer packets, as flannel)")
    p.add_argument("--route-interval", type=duration_flag, default=10.0,
                   help="time between route re-checks (e.g. 10s; a bare number is seconds)")
    p.add_argument("--reconcile-interval", type=duration_flag, default=60.0,
                   help="time between releases of reservations whose pod veth vanished without a DEL (e.g. 1m)")
    p.add_argument("--policy-socket", default="", metavar="PATH",
                   help="the node policy engine's handshake socket (podnet-policy --cni-socket): ADD tells it the pod's "
                        "addresses and waits for its rules before plumbing the pod; '' disables")
    p.add_argument("--policy-required", action="store_true",
                   help="fail ADD with code 11 (try again later) when the policy engine does not confirm in time")
    p.add_argument("--policy-timeout", type=duration_flag, default=2.0,
                   help="how long ADD waits for the policy engine (e.g. 2s; a bare number is seconds)")
    p.add_argument("--health-listen", default="", metavar="HOST:PORT", type=health.listen_arg,
                   help="serve /healthz (200 only when ADDs can be served), /livez and /metrics here; '' disables")


def options_from(args: argparse.Namespace) -> Options:
    """The daemon's options from its parsed flags; ConfigError for a combination that cannot run."""
    def split(vals: list[str]) -> tuple[str, ...]:
        return tuple(c.strip() for v in vals for c in v.split(",") if c.strip())

    if getattr(args, "policy_required", False) and not getattr(args, "policy_socket", ""):
        raise ConfigError("--policy-required needs --policy-socket")
    return Options(args.socket, args.node_name, args.data_dir, args.master, args.kubeconfig,
                   split(args.cluster_cidr), split(args.pod_cidr), args.masquerade, args.mtu, args.route_interval,
                   args.reconcile_interval, health_listen=args.health_listen,
                   backend=getattr(args, "backend", "auto"), vni=getattr(args, "vni", overlay.DEFAULT_VNI),
                   vxlan_port=getattr(args, "vxlan_port", overlay.DEFAULT_PORT),
                   vxlan_df=getattr(args, "vxlan_df", "inherit"),
                   policy_socket=getattr(args, "policy_socket", ""),
                   policy_required=getattr(args, "policy_required", False),
                   policy_timeout=getattr(args, "policy_timeout", 2.0))


def parse_request(data: bytes) -> tuple[dict[str, str], bytes]:
    env: dict[str, str] = {}
    pos = 0
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise ValueError("truncated request")
        if end == pos:
            return env, data[end + 1:]
        k, _, v = data[pos:end].decode("utf-8", "surrogateescape").partition("=")
        env[k] = v
        pos = end + 1


class Daemon:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="netops")
        self.ready = Readiness()
        self.plugin = Plugin(None, KernelNetOps(), self.pool, opts.mtu or overlay.DEFAULT_UNDERLAY_MTU, self.ready)
        if opts.policy_socket:
            self.plugin.policy = PolicyHook(opts.policy_socket, opts.policy_required, opts.policy_timeout)
        self.overlay = overlay.Overlay(overlay.Config(opts.backend, opts.vni, opts.vxlan_port, opts.mtu,
                                                      overlay.DF_MODES[opts.vxlan_df]), overlay.KernelOverlayOps())
        self.too_big = pmtu.TooBigWatch(opts.vxlan_port, lambda _got: self._route_kick.set())
        self.api = None  # the API client once watching Nodes (publishes this node's VTEP)
        self._publishing: asyncio.Task | None = None
        self.nodes = None  # Informer once watching
        self._route_kick = asyncio.Event()
        self._masquerade_done = False
        self.antispoof_tables: antispoof.Tables = antispoof.KernelTables()
        self._unroutable: tuple[str, ...] = ()
        self._tasks: list[asyncio.Task] = []
        self.server: asyncio.AbstractServer | None = None
        self.health = health.HealthServer(self.ready, opts.health_listen) if opts.health_listen else None

    # ---------------------------------------------------------------- start-up
    def open_store(self) -> None:
        try:
            self.plugin.ipam = Allocator([], SqliteStore.open(self.opts.data_dir))
        except CniError as e:
            log.error("IPAM store unusable: %s", e.msg)
            self.ready.store_error = e

    def set_pod_cidrs(self, cidrs: tuple[str, ...]) -> None:
        if cidrs == self.ready.pod_cidrs:
            return
        log.info("pod CIDRs %s", ", ".join(cidrs) or "(none)")
        self.plugin.set_pod_cidrs(cidrs)
        self.ensure_forwarding()
        self._masquerade_done = False
        self.ensure_masquerade()
        self._route_kick.set()

    def ensure_masquerade(self) -> None:
        """The PODNET-MASQ rules for the pod CIDRs; a failed attempt (e.g. the iptables lock, or a
        chain another writer removed between two steps) is retried with every route re-check until
        it succeeds."""
        if self._masquerade_done or not self.ready.pod_cidrs:
            return
        try:
            routes.apply_masquerade(list(self.ready.pod_cidrs), self.opts.cluster_cidr, self.opts.masquerade)
            self._masquerade_done = True
        except subprocess.CalledProcessError as e:
            log.error("masquerade rules (retried with the routes): %s: %s", e, (e.stderr or "").strip()[:300])
        except Exception as e:  # noqa: BLE001 - retried with the routes
            log.error("masquerade rules (retried with the routes): %s", e)

    def ensure_antispoof(self) -> None:
        """The anti-spoofing check (:mod:`podnet.cni.antispoof`) for IPv4 and every pod CIDR family, in the
        node namespace: read with every route re-check and rewritten when it is not as rendered; its drop
        counter is exported as ``podnet_cni_spoofed_packets``. A failure is logged and retried on the next tick."""
        families = {4} | {ipaddress.ip_network(c).version for c in self.ready.pod_cidrs}
        for family in sorted(families):
            try:
                state = antispoof.ensure(self.antispoof_tables, family)
            except subprocess.CalledProcessError as e:
                log.error("IPv%d anti-spoofing rules (retried with the routes): %s: %s", family, e,
                          (e.stderr or "").strip()[:300])
                continue
            except OSError as e:
                log.error("IPv%d anti-spoofing rules (retried with the routes): %s", family, e)
                continue
            antispoof.SPOOFED.labels(str(family)).set(state.dropped)

    def ensure_forwarding(self) -> None:
        """Set the forwarding sysctls the routed design needs, in the node namespace only."""
        keys = ["net.ipv4.ip_forward"]
        if any(ipaddress.ip_network(c).version == 6 for c in self.ready.pod_cidrs):
            keys.append("net.ipv6.conf.all.forwarding")
        try:
            for k in keys:
                if netops.read_sysctl(k) != "1":
                    log.warning("%s was off; setting it to 1", k)
                    netops.write_sysctl(k, "1")
            self.ready.forwarding_ok = all(netops.read_sysctl(k) == "1" for k in keys)
        except OSError as e:
            log.error("forwarding sysctls: %s", e)
            self.ready.forwarding_ok = False

    def api_client(self):
        """The API client found by the shared discovery (flags, $KUBECONFIG, ~/.kube/config, in-cluster).

        No API anywhere: with a static ``--pod-cidr`` the daemon runs without
        one (no routes to other nodes, said once); without, ConfigError.
        """
        from podnet.kube.client import ApiClient

        try:
            return ApiClient.from_flags(master=self.opts.master or None, kubeconfig=self.opts.kubeconfig or None)
        except ConfigError as e:
            if not self.opts.pod_cidr:
                raise
            log.warning("%s; running with the static --pod-cidr only (no routes to other nodes)", e)
            return None

    async def start(self) -> None:
        client = self.api_client()
        self.open_store()
        self.set_pod_cidrs(tuple(self.opts.pod_cidr))
        self.ensure_forwarding()
        await asyncio.get_running_loop().run_in_executor(self.pool, self.ensure_antispoof)  # before any ADD
        released = await self.plugin.reconcile()
        if released:
            log.info("reconcile released %d stale reservation(s): %s", len(released), ", ".join(released))
        sock = Path(self.opts.socket)
        sock.parent.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self.handle, path=str(sock))
        os.chmod(sock, 0o600)
        if client is not None:
            self._tasks.append(asyncio.create_task(self.watch_nodes(client)))
        if self.opts.backend != "host-gw":  # a smaller underlay path is re-read at once, not on the next tick
            for e in self.too_big.start(asyncio.get_running_loop()):
                log.warning("path-MTU notifications (%s): changes wait for the route re-check", e)
        self._tasks.append(asyncio.create_task(self.route_loop()))
        self._tasks.append(asyncio.create_task(self.reconcile_loop()))
        if self.health is not None:
            await self.health.start()
            log.info("health and metrics on %s:%d", self.health.host, self.health.port)
        log.info("serving on %s", sock)

    # ---------------------------------------------------------------- requests
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read(-1)
            if not data:
                return  # a liveness probe
            env, stdin = parse_request(data)
            t0 = time.monotonic()
            resp = await skel.dispatch(env, stdin, self.plugin)
            health.observe(env.get("CNI_COMMAND", ""), resp.code, time.monotonic() - t0)
            writer.write(b"%d\n" % resp.code + resp.stdout)
            await writer.drain()
        except Exception as e:  # noqa: BLE001 - a broken client must not hurt the daemon
            log.warning("bad request: %s", e)
        finally:
            writer.close()

    # ---------------------------------------------------------------- nodes and routes
    async def watch_nodes(self, client) -> None:
        from podnet.kube.informer import Informer

        self.nodes = Informer(client, overlay.NODES)
        self.api = client

        def changed(node) -> None:
            if node.name == self.opts.node_name and not self.opts.pod_cidr:  # static --pod-cidr wins
                self.set_pod_cidrs(tuple(node.pod_cidrs))
            self._route_kick.set()

        self.nodes.add_handler(on_add=changed, on_update=lambda old, new: changed(new),
                               on_delete=lambda o: self._route_kick.set(),
                               on_synced=lambda: self._route_kick.set())
        try:
            await self.nodes.run()
        finally:
            await client.close()

    async def sync_routes_once(self) -> None:
        self.ensure_forwarding()  # re-checked (and restored) with the routes
        self.ensure_masquerade()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.ensure_antispoof)
        if self.nodes is not None and not self.nodes.has_synced:
            return
        nodes = self.nodes.list() if self.nodes is not None else []
        try:
            plan = await loop.run_in_executor(self.pool, self.overlay.prepare, nodes, self.opts.node_name,
                                              self.ready.pod_cidrs)
            if not self.opts.mtu:
                self.plugin.mtu = self.overlay.mtu
            desired = plan.routes
            if desired.unroutable != self._unroutable:  # logged when it changes, not every tick
                self._unroutable = desired.unroutable
                if desired.unroutable:
                    log.warning("no route to pod CIDR(s) of nodes without an address of that family or a usable "
                                "VTEP: %s", ", ".join(desired.unroutable))
            changes = await loop.run_in_executor(self.pool, self.overlay.apply, plan)
            for c in changes:
                log.info("%s", c)
            if self._publishing is None or self._publishing.done():  # never holds up the route loop
                self._publishing = asyncio.create_task(self.publish_vtep(nodes))
            self.ready.routes_synced = self.ready.routes_synced or bool(self.ready.pod_cidrs)
            self.ready.routes_error = ""
        except Exception as e:  # noqa: BLE001 - retried on the next tick
            log.error("route sync failed: %s", e)
            self.ready.routes_error = str(e)

    async def publish_vtep(self, nodes) -> None:
        """Merge-patch this node's VTEP MAC and underlay address onto its Node when they differ (RBAC: patch nodes)."""
        own = next((n for n in nodes if n.name == self.opts.node_name), None)
        patch = overlay.annotation_patch(self.overlay.cfg, self.overlay.vteps, own)
        if patch is None or self.api is None:
            return
        try:
            await asyncio.wait_for(self.api.patch(overlay.NODES, self.opts.node_name, patch), 10)
            log.info("published %s", ", ".join(f"{k}={v}" for k, v in patch["metadata"]["annotations"].items() if v))
        except Exception as e:  # noqa: BLE001 - retried on the next tick
            log.error("publishing the VTEP on Node %s: %s", self.opts.node_name, repr(e) if not str(e) else e)

    async def route_loop(self) -> None:
        while True:
            self._route_kick.clear()
            await self.sync_routes_once()
            try:
                await asyncio.wait_for(self._route_kick.wait(), self.opts.route_interval)
            except asyncio.TimeoutError:
                pass

    async def reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.reconcile_interval)
            try:
                released = await self.plugin.reconcile()
                if released:
                    log.info("released %d reservation(s) whose pod vanished without DEL: %s",
                             len(released), ", ".join(released))
            except Exception as e:  # noqa: BLE001 - retried next round
                log.error("reconcile failed: %s", e)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        self.too_big.close()
        if self.server:
            self.server.close()
        if self.health is not None:
            await self.health.close()
        if self.plugin.ipam:
            self.plugin.ipam.store.close()
        self.pool.shutdown(wait=False)


async def serve(opts: Options) -> None:
    d = Daemon(opts)
    stop = stop_on_signals()
    await d.start()
    try:
        await stop.wait()
    finally:
        await d.close()


def run(opts: Options) -> int:
    """Serve until SIGTERM/SIGINT; 0, or 2 (one line) when the configuration cannot be used."""
    try:
        asyncio.run(serve(opts))
    except ConfigError as e:
        return logsetup.config_error("cni", e)
    return 0
