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
forwarding sysctls in the node namespace, reconcile IPAM with the veths that
exist, then listen; the node's pod CIDR comes from ``--pod-cidr`` or from its
Node object (watched with :class:`podnet.kube.informer.Informer`), and the
host-gw routes are re-synced on every Node change and every
``route_interval`` seconds. STATUS answers 50 until CIDR and routes are in place.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from podnet.cni import netops, routes, skel
from podnet.cni.ipam import Allocator
from podnet.cni.ipam_store import SqliteStore
from podnet.cni.plugin import KernelNetOps, Plugin, Readiness
from podnet.cni.types import CniError

log = logging.getLogger("podnet.cni.daemon")


@dataclass
class Options:
    socket: str
    node_name: str
    data_dir: str
    master: str = ""
    kubeconfig: str = ""
    cluster_cidr: list[str] = field(default_factory=list)
    pod_cidr: list[str] = field(default_factory=list)
    masquerade: bool = False
    mtu: int = 1500
    route_interval: float = 10.0
    reconcile_interval: float = 60.0
    workers: int = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", required=True, help="unix socket the shim connects to")
    p.add_argument("--node-name", required=True)
    p.add_argument("--data-dir", required=True, help="IPAM store directory")
    p.add_argument("--master", default="", help="API server URL, e.g. http://10.0.0.1:6443")
    p.add_argument("--kubeconfig", default="")
    p.add_argument("--cluster-cidr", action="append", default=[], help="repeat or comma-separate for dual stack")
    p.add_argument("--pod-cidr", action="append", default=[], help="static pod CIDR(s) instead of the Node object")
    p.add_argument("--masquerade", action="store_true", help="SNAT traffic leaving the cluster CIDR")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--route-interval", type=float, default=10.0, help="seconds between host-gw route re-checks")
    p.add_argument("--reconcile-interval", type=float, default=60.0,
                   help="seconds between releases of reservations whose pod veth vanished without a DEL")


def options_from(args: argparse.Namespace) -> Options:
    def split(vals: list[str]) -> list[str]:
        return [c.strip() for v in vals for c in v.split(",") if c.strip()]

    return Options(args.socket, args.node_name, args.data_dir, args.master, args.kubeconfig,
                   split(args.cluster_cidr), split(args.pod_cidr), args.masquerade, args.mtu, args.route_interval,
                   args.reconcile_interval)


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
        self.plugin = Plugin(None, KernelNetOps(), self.pool, opts.mtu, self.ready)
        self.nodes = None  # Informer once watching
        self._route_kick = asyncio.Event()
        self._unroutable: tuple[str, ...] = ()
        self._tasks: list[asyncio.Task] = []
        self.server: asyncio.AbstractServer | None = None

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
        if cidrs:
            try:
                routes.apply_masquerade(list(cidrs), self.opts.cluster_cidr, self.opts.masquerade)
            except Exception as e:  # noqa: BLE001
                log.error("masquerade rules: %s", e)
        self._route_kick.set()

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

    async def start(self) -> None:
        self.open_store()
        self.set_pod_cidrs(tuple(self.opts.pod_cidr))
        self.ensure_forwarding()
        released = await self.plugin.reconcile()
        if released:
            log.info("reconcile released %d stale reservation(s): %s", len(released), ", ".join(released))
        sock = Path(self.opts.socket)
        sock.parent.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self.handle, path=str(sock))
        os.chmod(sock, 0o600)
        if self.opts.master or self.opts.kubeconfig:
            self._tasks.append(asyncio.create_task(self.watch_nodes()))
        self._tasks.append(asyncio.create_task(self.route_loop()))
        self._tasks.append(asyncio.create_task(self.reconcile_loop()))
        log.info("serving on %s", sock)

    # ---------------------------------------------------------------- requests
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read(-1)
            if not data:
                return  # a liveness probe
            env, stdin = parse_request(data)
            resp = await skel.dispatch(env, stdin, self.plugin)
            writer.write(b"%d\n" % resp.code + resp.stdout)
            await writer.drain()
        except Exception as e:  # noqa: BLE001 - a broken client must not hurt the daemon
            log.warning("bad request: %s", e)
        finally:
            writer.close()

    # ---------------------------------------------------------------- nodes and routes
    async def watch_nodes(self) -> None:
        from podnet.kube import resources
        from podnet.kube.client import ApiClient
        from podnet.kube.informer import Informer

        client = ApiClient.from_flags(master=self.opts.master or None, kubeconfig=self.opts.kubeconfig or None)
        self.nodes = Informer(client, resources.NODES)

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

    def desired(self) -> routes.Desired:
        nodes = self.nodes.list() if self.nodes is not None else []
        return routes.desired_routes(nodes, self.opts.node_name, self.ready.pod_cidrs)

    async def sync_routes_once(self) -> None:
        self.ensure_forwarding()  # re-checked (and restored) with the routes
        if self.nodes is not None and not self.nodes.has_synced:
            return
        desired = self.desired()
        if desired.unroutable != self._unroutable:  # logged when it changes, not every tick
            self._unroutable = desired.unroutable
            if desired.unroutable:
                log.warning("no route to pod CIDR(s) of nodes without an address of that family: %s",
                            ", ".join(desired.unroutable))
        try:
            changes = await asyncio.get_running_loop().run_in_executor(self.pool, routes.sync, desired)
            for c in changes:
                log.info("route %s", c)
            self.ready.routes_synced = self.ready.routes_synced or bool(self.ready.pod_cidrs)
            self.ready.routes_error = ""
        except Exception as e:  # noqa: BLE001 - retried on the next tick
            log.error("route sync failed: %s", e)
            self.ready.routes_error = str(e)

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
        if self.server:
            self.server.close()
        if self.plugin.ipam:
            self.plugin.ipam.store.close()
        self.pool.shutdown(wait=False)


async def serve(opts: Options) -> None:
    d = Daemon(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await d.start()
    try:
        await stop.wait()
    finally:
        await d.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s podnet-cni %(levelname)s %(message)s")
    asyncio.run(serve(options_from(args)))
    return 0
