"""The sync step: tracked changes -> cached fragments -> plan -> one restore.

:class:`Proxier` holds the informers' view (Services and EndpointSlices by
key) and, per IP family, a :class:`FamilyProxier` that owns that family's
iptables. Guarantees:

* nothing is written until both Services and EndpointSlices have synced, so
  a restart never replaces good rules with a half-listed view;
* a sync recomputes only the services whose objects changed (fragment
  cache) and, unless full, writes only chains whose rules changed;
* a full sync happens first, after any failure, after a lost canary and at
  least every ``full_sync_period``; it also re-ensures the jumps from the
  built-in chains and deletes stale ``PODNET-`` chains found in the kernel;
* a failing restore changes nothing in the kernel (iptables-restore is
  atomic per table): the offending lines are logged, the failure counted and
  the next sync forced full; one service whose rules cannot be computed is
  logged and skipped without stopping the others;
* after each family's successful sync, network programming latency is
  observed from the EndpointSlices' trigger-time annotations exactly as
  kube-proxy does (programming.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy import metrics as m
from podnet.proxy import names
from podnet.proxy.conntrack import Reconciler
from podnet.proxy.fake_iptables import jump_target
from podnet.proxy.iptables import Iptables, RestoreError, parse_save
from podnet.proxy.model import DEFAULT_MAX_ENDPOINTS
from podnet.proxy.programming import TriggerTimes, observe
from podnet.proxy.render import Plan, plan, render, render_chains, render_rules
from podnet.proxy.rules import JUMPS, NodeContext, ServiceRules, Tables, assemble
from podnet.proxy.snapshot import service_fragments, services_health
from podnet.proxy.tracker import ChangeTracker

log = logging.getLogger("podnet.proxy")

FULL_SYNC_PERIOD = 3600.0
STREAM_BLOCK = 128
"""Services per block of a streamed full sync (see FamilyProxier._full)."""


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection inside the block; restored afterwards.

    A full sync allocates a few hundred thousand small acyclic objects (rule
    strings, tuples, fragments), which triggers repeated generation-2
    collections that walk every live object: about a third of the sync's own
    CPU time at 10k services. Reference counting still frees everything;
    the collector simply runs after the sync instead of during it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class SyncReport:
    """What the last sync did (tests and logs)."""

    family: int
    full: bool
    wrote_chains: int = 0
    deleted_chains: int = 0
    restored: bool = False
    ok: bool = True
    seconds: float = 0.0
    changed_services: tuple[str, ...] = ()
    udp_changed: bool = False


@dataclass
class FamilyProxier:
    ipt: Iptables
    ctx: NodeContext
    node_name: str
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS
    wall: Callable[[], float] = time.monotonic
    fragments: dict[str, tuple[ServiceRules, ...]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    source: Callable[[str], tuple[Service | None, list[EndpointSlice]]] | None = None
    """Current Service and slices for a key (set by Proxier)."""
    before_first_write: Callable[[], None] | None = None
    """Node preparation (route_localnet) done only when rules are about to be written."""
    conntrack: Reconciler | None = None
    applied: Tables | None = None
    need_full: bool = True
    last_full: float | None = None

    @property
    def label(self) -> str:
        return f"IPv{self.ctx.family}"

    def update_node_ips(self, ips: tuple[str, ...]) -> bool:
        """New local addresses (NodePort targets, FW check): recompute everything, full sync."""
        if ips == self.ctx.node_ips:
            return False
        log.info("%s: node addresses changed to %s; next sync is full", self.label, ", ".join(ips))
        self.ctx = dataclasses.replace(self.ctx, node_ips=ips)
        self.dirty |= set(self.fragments)
        self.need_full = True
        return True

    def update_zone(self, zone: str) -> bool:
        """This node's zone label changed: every service is recomputed (topology hints)."""
        if zone == self.ctx.zone:
            return False
        log.info("%s: node zone is now %s; recomputing every service", self.label, zone or "(none)")
        self.ctx = dataclasses.replace(self.ctx, zone=zone)
        self.dirty |= set(self.fragments)
        return True

    def mark_dirty(self, key: str) -> None:
        self.dirty.add(key)

    def _refresh(self, key: str) -> None:
        self.dirty.discard(key)
        svc, slices = self.source(key) if self.source else (None, [])
        if svc is None:
            self.fragments.pop(key, None)
            return
        try:
            self.fragments[key] = service_fragments(svc, slices, self.ctx, self.node_name, self.max_endpoints)
        except Exception:  # noqa: BLE001 - one bad service must not stop the others
            log.exception("cannot compute rules for service %s; leaving it out", key)
            self.fragments.pop(key, None)

    async def canary_ok(self) -> bool:
        """False (and the next sync forced full) when any table lost PODNET-CANARY.

        kube-proxy polls only mangle; a firewall reload that flushes just nat or
        filter would go unseen there, so every table podnet writes is checked.
        """
        if self.applied is None:
            return True
        lost = [t for t in ("mangle", "filter", "nat") if not await self.ipt.has_chain(t, names.CANARY)]
        for t in lost:
            m.CANARY_LOST.labels(t, self.label).inc()
        if lost:
            log.warning("%s: PODNET-CANARY missing from %s (foreign flush?); forcing a full sync", self.label, ", ".join(lost))
            self.need_full = True
            self.applied = None
        return not lost

    def desired(self) -> Tables:
        return assemble((f for k in sorted(self.fragments) for f in self.fragments[k]), self.ctx)

    async def sync(self, force_full: bool = False) -> SyncReport:
        start = self.wall()
        full = force_full or self.need_full or self.last_full is None or start - self.last_full > FULL_SYNC_PERIOD
        rep = SyncReport(self.ctx.family, full)
        try:
            if full:
                desired, p = await self._full()
                rep.restored = True
            else:
                for key in list(self.dirty):
                    self._refresh(key)
                desired = self.desired()
                p = plan(desired, self.applied, full=False)
                if not p.empty:
                    await self.ipt.restore(render(desired, p))
                    rep.restored = True
        except RestoreError as e:
            m.RESTORE_FAILURES.labels(self.label).inc()
            if not full:
                m.PARTIAL_RESTORE_FAILURES.labels(self.label).inc()
            log.error("%s restore failed (%s); kernel keeps its previous rules; next sync is full. Lines:\n%s",
                      self.label, e, e.context())
            self.need_full = True
            self.applied = None
            rep.ok = False
            return rep
        rep.wrote_chains = sum(len(v) for v in p.write.values())
        rep.deleted_chains = sum(len(v) for v in p.delete.values())
        self.applied = desired
        self.need_full = False
        if full:
            self.last_full = start
        rep.seconds = self.wall() - start
        self._observe(rep, desired, p)
        return rep

    async def _full(self) -> tuple[Tables, Plan]:
        """Write every chain, streaming text to iptables-restore while computing it.

        ``iptables-save`` runs concurrently (stale chains, missing jumps); nat is
        written first, in blocks of ``STREAM_BLOCK`` services (each block's chains
        declared, then its rules, so iptables-restore parses a block while the next
        is computed), then the shared chains, then filter and mangle. Missing jumps
        from built-in chains go in the same restore. The text is deterministic: the
        same inputs give the same bytes in the same order.
        """
        if self.before_first_write is not None:
            self.before_first_write()
            self.before_first_write = None
        save_task = asyncio.ensure_future(self.ipt.save())
        result: dict[str, Any] = {}

        async def chunks():
            try:
                yield f"*nat\n:{names.MARK_MASQ} - [0:0]\n"  # referenced by service chains; rules come later
                emitted: set[str] = set()
                keys = sorted(set(self.fragments) | self.dirty)
                # Blocks of services, each computed, then declared, then its rules: iptables-restore
                # parses one block while the next is computed. Declaring a block's chains before its
                # rules keeps most lookups in libiptc on chains that already exist.
                for lo in range(0, len(keys), STREAM_BLOCK):
                    frags: list[ServiceRules] = []
                    for key in keys[lo:lo + STREAM_BLOCK]:
                        if key in self.dirty:
                            self._refresh(key)
                        frags.extend(self.fragments.get(key, ()))
                    yield "".join([f":{c} - [0:0]\n" for f in frags for c in f.nat_chains])
                    yield "".join([render_rules(f.nat_chains) for f in frags])
                    for f in frags:
                        emitted.update(f.nat_chains)
                    await asyncio.sleep(0)
                desired = self.desired()
                saved = parse_save(await save_task)
                # Stale podnet chains are deleted, except any a built-in chain still jumps to
                # (an older podnet's jump): -X would fail, so they are only flushed.
                pinned = {(t, target) for t, _, target in saved.jumps}
                existing = {t: {c for c in cs if names.is_ours(c) and (t, c) not in pinned} for t, cs in saved.chains.items()}
                p = plan(desired, None, full=True, existing=existing)
                result["desired"], result["plan"] = desired, p
                for table in ("nat", "filter", "mangle"):
                    if table != "nat":
                        yield f"*{table}\n"
                    rest = {c: desired[table][c] for c in p.write[table] if c not in emitted or table != "nat"}
                    yield render_chains(rest)
                    yield "".join(f":{c} - [0:0]\n" for c in p.delete[table])
                    yield "".join(f"-X {c}\n" for c in p.delete[table])
                    yield "".join(
                        f"-I {chain} 1 {rule}\n"
                        for t, chain, rule in JUMPS
                        if t == table and (t, chain, jump_target(rule)) not in saved.jumps
                    )
                    yield "COMMIT\n"
            finally:
                if not save_task.done():
                    save_task.cancel()

        await self.ipt.restore_stream(chunks())
        return result["desired"], result["plan"]

    def _observe(self, rep: SyncReport, desired: Tables, p) -> None:
        fam = self.label
        m.SYNC_DURATION.labels(fam).observe(rep.seconds)
        (m.SYNC_FULL_DURATION if rep.full else m.SYNC_PARTIAL_DURATION).labels(fam).observe(rep.seconds)
        m.LAST_SYNC.labels(fam).set(time.time())
        for table in ("filter", "nat"):
            m.IPTABLES_TOTAL.labels(table, fam).set(sum(len(r) for r in desired[table].values()))
            m.IPTABLES_LAST.labels(table, fam).set(sum(len(desired[table][c]) for c in p.write.get(table, ())))
        for policy in ("internal", "external"):
            n = sum(1 for frs in self.fragments.values() for f in frs if policy in f.no_local_endpoints)
            m.NO_LOCAL_ENDPOINTS.labels(policy, fam).set(n)


class Proxier:
    """The informer-facing side: handlers record, :meth:`sync` applies."""

    def __init__(self, families: list[FamilyProxier], wall: Callable[[], float] = time.time) -> None:
        self.families = families
        self.wall = wall
        """Wall clock (POSIX seconds): the annotation's trigger times are wall times."""
        self.trigger_times = TriggerTimes(started_at=wall())
        for fam in families:
            fam.source = self.inputs
        self.services: dict[str, Service] = {}
        self.slices: dict[str, EndpointSlice] = {}
        self.by_service: dict[str, dict[str, EndpointSlice]] = {}
        self.service_changes: ChangeTracker[str, Service] = ChangeTracker()
        self.slice_changes: ChangeTracker[str, EndpointSlice] = ChangeTracker()
        self.services_synced = False
        self.slices_synced = False
        self.on_change: Callable[[], None] = lambda: None
        self.on_synced: Callable[[list[SyncReport], dict[str, tuple[int, int]]], None] = lambda r, h: None
        self.last_reports: list[SyncReport] = []
        self.first_pending: float | None = None

    def inputs(self, key: str) -> tuple[Service | None, list[EndpointSlice]]:
        return self.services.get(key), list(self.by_service.get(key, {}).values())

    # -- informer handlers (event loop; cheap)
    def on_service(self, old: Service | None, new: Service | None) -> None:
        key = (new or old).key  # type: ignore[union-attr]
        if self.service_changes.update(key, old, new):
            m.SERVICE_CHANGES_TOTAL.inc()
        m.SERVICE_CHANGES_PENDING.set(self.service_changes.pending())
        self._changed()

    def on_slice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        key = (new or old).key  # type: ignore[union-attr]
        self.trigger_times.slice_changed(old, new)
        if self.slice_changes.update(key, old, new):
            m.ENDPOINT_CHANGES_TOTAL.inc()
        m.ENDPOINT_CHANGES_PENDING.set(self.slice_changes.pending())
        self._changed()

    def on_services_synced(self) -> None:
        self.services_synced = True
        self._changed()

    def on_slices_synced(self) -> None:
        self.slices_synced = True
        self._changed()

    def _changed(self) -> None:
        if self.first_pending is None:
            self.first_pending = time.monotonic()
        self.on_change()

    @property
    def ready(self) -> bool:
        return self.services_synced and self.slices_synced

    def set_zone(self, zone: str) -> bool:
        """The node's topology.kubernetes.io/zone label ('' when absent or the Node is gone);
        True when it changed, so a sync is needed."""
        changed = False
        for fam in self.families:
            changed |= fam.update_zone(zone)
        return changed

    def force_full(self) -> None:
        for f in self.families:
            f.need_full = True

    def _fold_changes(self) -> tuple[set[str], bool]:
        """Apply tracked changes to the maps; return changed service keys, UDP involved?"""
        changed: set[str] = set()
        udp = False
        for key, ch in self.service_changes.drain().items():
            changed.add(key)
            for s in (ch.previous, ch.current):
                udp |= s is not None and any(p.protocol == "UDP" for p in s.ports)
            if ch.current is None:
                self.services.pop(key, None)
            else:
                self.services[key] = ch.current
        for key, ch in self.slice_changes.drain().items():
            for sl in (ch.previous, ch.current):
                if sl is not None and sl.service_name:
                    changed.add(sl.service_key)
                    udp |= any(p.protocol == "UDP" for p in sl.ports)
            if ch.previous is not None and ch.previous.service_name:
                self.by_service.get(ch.previous.service_key, {}).pop(key, None)
            if ch.current is None:
                self.slices.pop(key, None)
            else:
                self.slices[key] = ch.current
                if ch.current.service_name:
                    self.by_service.setdefault(ch.current.service_key, {})[key] = ch.current
        m.SERVICE_CHANGES_PENDING.set(0)
        m.ENDPOINT_CHANGES_PENDING.set(0)
        return changed, udp

    async def sync(self) -> bool:
        """One sync of every family; False when any failed (the runner retries)."""
        with gc_paused():
            return await self._sync()

    async def _sync(self) -> bool:
        if not self.ready:
            log.info("waiting for Services and EndpointSlices to sync before programming anything")
            return True
        pending_since, self.first_pending = self.first_pending, None
        triggers = self.trigger_times.checkout()
        changed, udp = self._fold_changes()
        for key in changed:
            for fam in self.families:
                fam.mark_dirty(key)
        reports = []
        for fam in self.families:
            rep = await fam.sync()
            rep.changed_services = tuple(sorted(changed))
            rep.udp_changed = udp
            reports.append(rep)
            if rep.ok:
                observe(triggers, fam.label, self.wall())
                if pending_since is not None and changed:
                    m.CHANGE_TO_PROGRAMMED.labels(fam.label).observe(time.monotonic() - pending_since)
            if rep.ok and udp and fam.conntrack is not None:
                try:
                    await fam.conntrack.run(self.services.values(), self.by_service)
                except Exception:  # noqa: BLE001 - cleanup is best effort; rules are already in place
                    log.exception("%s: conntrack cleanup failed", fam.label)
        self.last_reports = reports
        ok = all(r.ok for r in reports)
        if not ok:
            self.first_pending = pending_since
        health: dict[str, tuple[int, int]] = {}
        for fam in self.families:
            for key, (port, local) in services_health(self.services, fam.fragments).items():
                health[key] = (port, max(local, health.get(key, (port, 0))[1]))
        self.on_synced(reports, health)
        return ok
