"""The CNI verbs: IPAM + plumbing for one node, with rollback.

:class:`Plugin` implements :class:`podnet.cni.skel.Handler`. It runs in the
daemon's event loop: IPAM calls run on the loop thread (which serialises
them); netns work runs in a thread pool, so ADDs of different attachments
proceed in parallel.

Guarantees:

* ADD, DEL and CHECK of one attachment (container ID, ifname) run one at a
  time, in arrival order, so the IPAM store and the kernel never disagree about
  it once a call has answered: the attachment has a reservation exactly when
  its node-side veth exists and the pod end holds the reserved addresses.

* ADD hands out exactly the requested IPs and MAC when the runtime asks for them
  (:mod:`podnet.cni.requested`), or fails with nothing reserved.
* ADD is all or nothing: if plumbing fails, the veth is deleted and the
  addresses are released before the error is returned (unless an earlier ADD
  of the attachment still has its veth elsewhere, which keeps them).
* ADD is idempotent: when ``CNI_IFNAME`` already exists in the pod and is the
  pod end of this attachment's own veth (left by an ADD the daemon died in, or
  repeated without DEL), it is removed and built again with the addresses the
  attachment holds (or new ones if it holds none). Any other interface of that
  name is an error (code 4), as the spec requires.
* ``CNI_NETNS`` is opened and checked before anything is reserved: the
  daemon's own network namespace and the host's initial one are refused
  (:func:`podnet.cni.netops.open_netns`).
* DEL is idempotent and best-effort: it succeeds when the netns is missing,
  empty or not a netns, and for attachments it never saw; it always releases
  the attachment's addresses once the node-side veth (and with it every host
  route ADD made) is gone.
* GC releases every reservation and node-side veth of this network whose
  attachment is not in ``cni.dev/valid-attachments``; it keeps going past
  errors and reports them together.
* :meth:`Plugin.reconcile` (at daemon start and periodically) releases what a
  vanished pod held even if no DEL or GC ever comes, without racing ADDs.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from podnet.cni import netops, requested
from podnet.cni.ipam import Allocator, Range
from podnet.cni.keyed_lock import KeyedLock
from podnet.cni.skel import Request
from podnet.cni.types import (
    INTERNAL,
    NOT_AVAILABLE,
    NOT_AVAILABLE_DEGRADED,
    TRY_AGAIN_LATER,
    Attachment,
    CniError,
    IPConfig,
    build_result,
)
from podnet.cni.version import upgrade


class NetOps(Protocol):
    def validate_netns(self, path: str) -> None: ...
    def add_pod(self, netns: str, ifname: str, host: str, ips: list[IPConfig], mtu: int,
                mac: str = "") -> netops.Plumbed: ...
    def del_pod(self, netns: str, ifname: str, host: str) -> None: ...
    def check_pod(self, netns: str, ifname: str, host: str, ips: list[IPConfig]) -> None: ...
    def podnet_links(self) -> set[str]: ...
    def delete_host_link(self, name: str) -> bool: ...


class KernelNetOps:
    """:class:`NetOps` on the real kernel (pyroute2)."""

    def validate_netns(self, path: str) -> None:
        os.close(netops.open_netns(path))

    add_pod = staticmethod(netops.add_pod)
    del_pod = staticmethod(netops.del_pod)
    check_pod = staticmethod(netops.check_pod)
    podnet_links = staticmethod(netops.podnet_links)
    delete_host_link = staticmethod(netops.delete_host_link)


@dataclass
class Readiness:
    """What STATUS reports; the daemon updates it as the node watch and route sync progress.

    50 (cannot ADD): no usable IPAM store, no pod CIDR yet, routes never synced.
    51 (cannot ADD, existing pods degraded): forwarding is off in the node namespace,
    or a route sync failed after routes had been in place.
    """

    store_error: CniError | None = None
    pod_cidrs: tuple[str, ...] = ()
    routes_synced: bool = False
    forwarding_ok: bool = False
    routes_error: str = ""

    def problem(self) -> tuple[int, str] | None:
        if self.store_error:
            return NOT_AVAILABLE, self.store_error.msg
        if not self.pod_cidrs:
            return NOT_AVAILABLE, "node has no pod CIDR yet"
        if not self.forwarding_ok:
            return NOT_AVAILABLE_DEGRADED, "IP forwarding is not enabled in the node namespace"
        if self.routes_error:
            code = NOT_AVAILABLE_DEGRADED if self.routes_synced else NOT_AVAILABLE
            return code, f"routes to other nodes' pod CIDRs: {self.routes_error}"
        if not self.routes_synced:
            return NOT_AVAILABLE, "routes to other nodes' pod CIDRs are not programmed yet"
        return None


class Plugin:
    def __init__(self, allocator: Allocator | None, net: NetOps, pool: Executor, mtu: int = 1500,
                 readiness: Readiness | None = None) -> None:
        self.ipam = allocator
        self.net = net
        self.pool = pool
        self.mtu = mtu
        self.ready = readiness or Readiness()
        self.attachments = KeyedLock()  # (container ID, ifname) -> one ADD/DEL/CHECK at a time
        self._busy: dict[str, int] = {}  # node-side veth name -> ADDs/DELs in flight for it
        self._touched: set[str] | None = None  # names busy at any time during a running reconcile
        self.policy: Any = None
        """A :class:`podnet.cni.policy_hook.PolicyHook`: told a pod's addresses before its veth exists."""

    def _enter(self, host: str) -> None:
        self._busy[host] = self._busy.get(host, 0) + 1
        if self._touched is not None:
            self._touched.add(host)

    def _leave(self, host: str) -> None:
        self._busy[host] -= 1
        if not self._busy[host]:
            del self._busy[host]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _allocator(self) -> Allocator:
        if self.ready.store_error or self.ipam is None:
            raise self.ready.store_error or CniError(INTERNAL, "IPAM store is not open")
        return self.ipam

    def set_pod_cidrs(self, cidrs: tuple[str, ...]) -> None:
        self.ready.pod_cidrs = cidrs
        if self.ipam is not None:
            self.ipam.set_ranges(Range.parse(c) for c in cidrs)

    async def add(self, req: Request) -> dict[str, Any]:
        ipam = self._allocator()
        if not self.ready.pod_cidrs:
            raise CniError(TRY_AGAIN_LATER, "node has no pod CIDR yet; try again later")
        wanted = requested.from_request(req.conf.raw, req.args)
        net, cid, ifname = req.conf.name, req.container_id, req.ifname
        host = netops.host_ifname(cid, ifname)
        async with self.attachments.hold((cid, ifname)):
            self.net.validate_netns(req.netns)
            self._enter(host)
            try:
                ips = ipam.allocate(net, cid, ifname, req.netns, req.pod, wanted.ips)
                announced = False
                try:
                    if self.policy is not None:  # the pod's policy state exists before its route does
                        await self.policy.added(req.pod, [ip.ip for ip in ips])
                        announced = True
                    plumbed = await self._run(self.net.add_pod, req.netns, ifname, host, ips, self.mtu, wanted.mac)
                except Exception:
                    # add_pod leaves the attachment's veth either as it was (refused before any change)
                    # or gone (rolled back): the reservation follows the veth.
                    if host not in await self._run(self.net.podnet_links):
                        ipam.release(net, cid, ifname)
                        if announced:
                            await self.policy.deleted(req.pod, [ip.ip for ip in ips])
                    raise
            finally:
                self._leave(host)
        prev = upgrade(req.conf.prev_result) if req.conf.prev_result else None
        return build_result(
            req.conf.cni_version,
            {"name": host, "mac": plumbed.host_mac},
            {"name": ifname, "mac": plumbed.pod_mac, "mtu": self.mtu, "sandbox": req.netns},
            ips, netops.pod_routes(ips), req.conf.dns, prev,
        )

    async def delete(self, req: Request) -> None:
        ipam = self._allocator()
        host = netops.host_ifname(req.container_id, req.ifname)
        async with self.attachments.hold((req.container_id, req.ifname)):
            self._enter(host)
            try:
                await self._run(self.net.del_pod, req.netns, req.ifname, host)
                held = ipam.lookup(req.conf.name, req.container_id, req.ifname)
                ipam.release(req.conf.name, req.container_id, req.ifname)
                if self.policy is not None and held:
                    await self.policy.deleted(req.pod, [r.ip for r in held])
            finally:
                self._leave(host)

    async def check(self, req: Request) -> None:
        async with self.attachments.hold((req.container_id, req.ifname)):
            await self._check(req)

    async def _check(self, req: Request) -> None:
        ipam = self._allocator()
        self.net.validate_netns(req.netns)
        held = ipam.lookup(req.conf.name, req.container_id, req.ifname)
        if not held:
            raise CniError(INTERNAL, f"no address is reserved for {req.container_id}/{req.ifname}")
        ips = [ipam.config_for(r) for r in held]
        if req.conf.prev_result is not None:
            listed = {ip.get("address", "").split("/")[0] for ip in req.conf.prev_result.get("ips") or []}
            for ip in ips:
                if ip.ip not in listed:
                    raise CniError(INTERNAL, f"address {ip.ip} is not in prevResult")
        await self._run(self.net.check_pod, req.netns, req.ifname,
                        netops.host_ifname(req.container_id, req.ifname), ips)

    async def status(self, req: Request) -> None:
        problem = self.ready.problem()
        if problem:
            raise CniError(*problem)

    async def gc(self, req: Request) -> None:
        ipam = self._allocator()
        valid = req.conf.valid_attachments or frozenset()
        network = req.conf.name
        errors: list[str] = []
        keep = {netops.host_ifname(a.container_id, a.ifname) for a in valid}
        # veths of other networks' reservations are not ours to collect; unowned ones always are
        others = {netops.host_ifname(r.container_id, r.ifname) for r in ipam.reservations() if r.network != network}
        for name in await self._run(self.net.podnet_links):
            if name not in keep and name not in others:
                try:
                    await self._run(self.net.delete_host_link, name)
                except Exception as e:  # noqa: BLE001 - GC keeps going
                    errors.append(f"deleting {name}: {e}")
        try:
            ipam.release_where(lambda r: r.network == network and Attachment(r.container_id, r.ifname) not in valid)
        except CniError as e:
            errors.append(e.msg)
        if errors:
            raise CniError(INTERNAL, "GC: " + "; ".join(errors))

    async def reconcile(self) -> list[str]:
        """Release reservations whose node-side veth is gone (the pod's netns was deleted without a
        DEL, or the daemon died mid-ADD) and delete veths without a reservation; returns the released IPs.

        Safe while ADDs and DELs run: anything whose veth name was busy at any moment since the
        link listing began is left alone until the next round, so an ADD between "reserved" and
        "veth created" is never mistaken for a leak.
        """
        if self.ipam is None or self._touched is not None:
            return []
        self._touched = set(self._busy)
        try:
            links = await self._run(self.net.podnet_links)
            skip = self._touched
            owned = {netops.host_ifname(r.container_id, r.ifname) for r in self.ipam.reservations()}
            for name in set(links) - owned - skip:
                await self._run(self.net.delete_host_link, name)
            skip = self._touched
            gone = self.ipam.release_where(
                lambda r: (h := netops.host_ifname(r.container_id, r.ifname)) not in links and h not in skip)
        finally:
            self._touched = None
        return [r.ip for r in gone]
