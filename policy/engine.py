"""The policy engine: informers in, one programmer per address family out.

It watches NetworkPolicies, Pods and Namespaces, and AdminNetworkPolicies and
the BaselineAdminNetworkPolicy when the API serves policy.networking.k8s.io/v1alpha1
(:func:`admin_informers` asks once at start; a 404 turns the feature off with one
log line).

Handlers only mark the state dirty; :meth:`Engine.run` recomputes from the
informers' frozen stores (incrementally, :mod:`.incremental`: only the local pods
a change can affect; ``incremental=False`` recomputes every pod) and applies (when no
verdict was recomputed, only the refilled sets' members), at most once per ``min_sync_period``
(like the proxy's ``--min-sync-period``: a burst of events costs one sync),
at least once per ``full_sync_period`` (which also re-reads the kernel, so a
foreign flush is repaired), and never before every informer has synced (an
empty store must not be taken for "no policies"). A failed sync is retried
with back-off and leaves the previous rules in force.

Metrics: ``podnet_policy_policies``, ``podnet_policy_isolated_pods``,
``podnet_policy_programmed_rules``, ``podnet_policy_sync_duration_seconds``
(compute + apply), ``podnet_policy_programming_latency_seconds`` (first
change event seen -> rules applied), ``podnet_policy_denied_packets{namespace,pod}``
(the DROP counters, read at each scrape) and ``podnet_policy_sync_failures_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Collection, Sequence

from prometheus_client import Counter, Gauge, Histogram

from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.resources import NAMESPACES, Resource
from podnet.policy.incremental import Incremental
from podnet.policy.model import Snapshot, compute
from podnet.policy.programmer import Programmer

__all__ = ["Engine", "NETWORK_POLICIES", "POLICY_PODS", "ADMIN_NETWORK_POLICIES", "BASELINE_ADMIN_NETWORK_POLICIES",
           "real_informers", "admin_informers"]

log = logging.getLogger("podnet.policy")

CONFIRM_YIELDS = 3
"""Event-loop turns a sync gives up after ``confirm()``: enough for a handshake waiting on it to send its answer."""

NETWORK_POLICIES = Resource("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, parse_network_policy)
POLICY_PODS = Resource("/api/v1", "pods", "Pod", True, parse_policy_pod)
ADMIN_API = "/apis/policy.networking.k8s.io/v1alpha1"
ADMIN_NETWORK_POLICIES = Resource(ADMIN_API, "adminnetworkpolicies", "AdminNetworkPolicy", False,
                                  parse_admin_network_policy)
BASELINE_ADMIN_NETWORK_POLICIES = Resource(ADMIN_API, "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False,
                                           parse_baseline_admin_network_policy)

POLICIES = Gauge("podnet_policy_policies", "NetworkPolicies, AdminNetworkPolicies and BaselineAdminNetworkPolicies "
                 "known to this node.")
ISOLATED = Gauge("podnet_policy_isolated_pods", "Local pods isolated in at least one direction.")
RULES = Gauge("podnet_policy_programmed_rules", "Rules in the policy chains, per IP family.", ["family"])
SYNC = Histogram("podnet_policy_sync_duration_seconds", "Compute and apply time of one sync.",
                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LATENCY = Histogram("podnet_policy_programming_latency_seconds", "First change event seen until its rules are applied.",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DENIED = Gauge("podnet_policy_denied_packets", "Packets dropped by policy so far, per isolated local pod "
               "(DROP rule counters; read at each scrape).", ["namespace", "pod"])
FAILURES = Counter("podnet_policy_sync_failures_total", "Syncs that failed (previous rules kept).")


def real_informers(client: Any) -> tuple[Any, Any, Any]:
    from podnet.kube.informer import Informer

    return Informer(client, NETWORK_POLICIES), Informer(client, POLICY_PODS), Informer(client, NAMESPACES)


async def admin_informers(client: Any) -> tuple[Any, ...]:
    """Informers for AdminNetworkPolicy and BaselineAdminNetworkPolicy when the API serves them, else ()
    (404 on the group-version: the CRDs are not installed; one log line, the feature stays off)."""
    from podnet.kube.client import ApiError
    from podnet.kube.informer import Informer

    try:
        await client.request("GET", ADMIN_API)
    except ApiError as e:
        if not e.is_not_found:
            raise
        log.info("%s is not served (404): AdminNetworkPolicy and BaselineAdminNetworkPolicy are off",
                 ADMIN_API.removeprefix("/apis/"))
        return ()
    return Informer(client, ADMIN_NETWORK_POLICIES), Informer(client, BASELINE_ADMIN_NETWORK_POLICIES)


class Engine:
    def __init__(self, programmers: Sequence[Programmer], node_name: str, *, min_sync_period: float = 0.1,
                 full_sync_period: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 incremental: bool = True) -> None:
        self.programmers = list(programmers)
        self.node_name = node_name
        self._incremental = Incremental(node_name) if incremental else None
        self.verdicts: dict[str, Any] = {}
        """The verdicts of the last sync (what was handed to the programmers)."""
        self.min_sync_period = min_sync_period
        self.full_sync_period = full_sync_period
        self._clock = clock
        self._informers: list[Any] = []
        self._nodes: Any = None
        self._dirty = asyncio.Event()
        self._first_change: float | None = None
        self._last_sync = float("-inf")
        self._last_full = clock()
        self.syncs = 0
        self.last_error: str | None = None
        self.overlay: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
        """Applied to the informer's pods in every snapshot (the CNI handshake's announced addresses)."""
        self._sync_lock = asyncio.Lock()

    def attach(self, policies: Any, pods: Any, namespaces: Any, *admin: Any, nodes: Any = None) -> None:
        """``admin``: the AdminNetworkPolicy and BaselineAdminNetworkPolicy informers, when served;
        ``nodes``: the Nodes informer (:func:`podnet.policy.nodes.node_informer`, the admin ``nodes`` peers)."""
        self._informers = [policies, pods, namespaces, *admin]
        self._nodes = nodes
        if nodes is not None:
            self._informers.append(nodes)
        for inf in self._informers:
            inf.add_handler(on_add=lambda _o: self.request(), on_update=lambda _o, _n: self.request(),
                            on_delete=lambda _o: self.request(), on_synced=self.request)

    def request(self) -> None:
        if self._first_change is None:
            self._first_change = self._clock()
        self._dirty.set()

    @property
    def synced(self) -> bool:
        return bool(self._informers) and all(i.has_synced for i in self._informers)

    def snapshot(self) -> Snapshot:
        policies, pods, namespaces, *admin = self._informers
        if self._nodes is not None:
            admin.remove(self._nodes)
        pod_list = tuple(pods.list())
        if self.overlay is not None:
            pod_list = self.overlay(pod_list)
        return Snapshot(tuple(policies.list()), pod_list, tuple(namespaces.list()),
                        tuple(a for inf in admin for a in inf.list()),
                        tuple(self._nodes.list()) if self._nodes is not None else ())

    def snapshot_pod(self, key: str) -> Any | None:
        """The pods informer's object for ``namespace/name``, or None."""
        return self._informers[1].get(key) if self._informers else None

    async def sync(self, pend: Collection[str] = (), confirm: Callable[[], None] | None = None) -> bool:
        """One recompute + apply; True when every family applied. Syncs never overlap.

        ``pend`` and ``confirm`` serve the CNI handshake: the pods ``pend`` names whose dispatch
        rules are new wait in the pending sets (isolated) while the chains are written, and
        ``confirm()`` is called once every family's sets and pending entries are in the kernel,
        before the chains, or (after a resync, when whether the pending-set rules are in force is
        not known) once the chains are; never when the sync fails before."""
        async with self._sync_lock:
            return await self._sync(pend, confirm)

    async def _sync(self, pend: Collection[str] = (), confirm: Callable[[], None] | None = None) -> bool:
        if not self.synced:
            return False
        started = self._clock()
        first, self._first_change = self._first_change, None
        self._dirty.clear()
        snap = self.snapshot()
        verdicts = self._incremental.compute(snap) if self._incremental is not None else compute(snap, self.node_name)
        self.verdicts = verdicts
        ok = True
        members_only = self._incremental is not None and self._incremental.last_recomputed == 0
        staged = []
        for prog in self.programmers:
            try:
                applied = await prog.apply_members(self._incremental.last_sets.values()) if members_only else None
                if applied is None:
                    staged.append((prog, await prog.prepare(verdicts, pend)))
                else:
                    RULES.labels(str(prog.family)).set(applied.rules)
            except Exception as e:  # noqa: BLE001 - the kernel said no: keep the old rules, retry later
                ok = False
                self._failed(prog, e)
        if ok and confirm is not None and all(stage.isolated for _p, stage in staged):
            confirm()
            confirm = None
            for _ in range(CONFIRM_YIELDS):  # let the confirmed answer go out before the restore's exec holds the loop
                await asyncio.sleep(0)
        for prog, stage in staged:
            try:
                applied = await prog.commit(stage)
                RULES.labels(str(prog.family)).set(applied.rules)
            except Exception as e:  # noqa: BLE001 - as above
                ok = False
                self._failed(prog, e)
        if ok and confirm is not None:
            confirm()
        done = self._clock()
        self._last_sync = done
        POLICIES.set(len(snap.policies) + len(snap.admin))
        ISOLATED.set(len(verdicts))
        SYNC.observe(done - started)
        if ok:
            self.syncs += 1
            self.last_error = None
            if first is not None:
                LATENCY.observe(done - first)
        else:
            FAILURES.inc()
            if self._first_change is None:
                self._first_change = first if first is not None else done
        return ok

    def _failed(self, prog: Programmer, e: Exception) -> None:
        self.last_error = str(e)
        log.error("IPv%d policy sync failed: %s", prog.family, e)

    async def collect_denied(self) -> dict[str, int]:
        """Refresh ``podnet_policy_denied_packets`` from the kernel's counters; pod key -> packets."""
        total: dict[str, int] = {}
        for prog in self.programmers:
            for key, n in (await prog.denied()).items():
                total[key] = total.get(key, 0) + n
        DENIED.clear()
        for key, n in total.items():
            ns, _, name = key.partition("/")
            DENIED.labels(ns, name).set(n)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(i.run()) for i in self._informers]
        backoff = 0.0
        try:
            while not stop.is_set():
                wait = self.full_sync_period - (self._clock() - self._last_full)
                waiter = asyncio.create_task(self._dirty.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    break
                pause = max(self.min_sync_period - (self._clock() - self._last_sync), backoff)
                if pause > 0:
                    await asyncio.sleep(pause)
                if self._clock() - self._last_full >= self.full_sync_period:
                    for p in self.programmers:
                        p.force_resync()
                    if self._incremental is not None:
                        self._incremental = Incremental(self.node_name)  # the full sync recomputes every pod too
                    self._last_full = self._clock()
                    self._dirty.set()
                if not self.synced:
                    self._dirty.clear()  # on_synced will request again
                    continue
                if await self.sync():
                    backoff = 0.0
                else:
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    self._dirty.set()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
