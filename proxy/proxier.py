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
* a failing restore is atomic per table only (iptables-restore commits at
  each COMMIT): the log says which tables were committed, which failed and
  which were not applied (render.restore_outcome), the failure is counted,
  and every table is rewritten by a full sync: at once when a partial sync
  failed, else at the next retry; when the refused line belongs to one
  service's chain, that service is left out (counted, reason
  restore-refused) until its objects change and the others are written at
  once (at most QUARANTINE_RETRIES times per sync; iptables-nft reports the
  COMMIT line, so only iptables-legacy names the refused line);
* one service whose values cannot be written safely (guard.py) or whose
  rules cannot be computed is logged, counted in
  podnet_proxy_skipped_services_total and skipped without stopping the others;
* ``canary_ok`` (every sync period) compares iptables-save with what was
  applied (or, between two full read-backs kept to CHECK_BUDGET, checks the
  canary rules and the jumps): a flushed table or chain, a changed rule count
  or a deleted jump from a built-in chain forces a full sync, logged and counted;
* after each family's successful sync, network programming latency is
  observed from the EndpointSlices' trigger-time annotations exactly as
  kube-proxy does (programming.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from podnet.host.loop import gc_paused
from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy import metrics as m
from podnet.proxy import guard, names
from podnet.proxy.conntrack import Reconciler
from podnet.proxy.iptables import Iptables, RestoreError, drift, jump_target, parse_save
from podnet.proxy.model import DEFAULT_MAX_ENDPOINTS
from podnet.proxy.programming import TriggerTimes, observe
from podnet.proxy.render import Plan, failing_chain, plan, render, render_chains, render_rules, restore_outcome
from podnet.proxy.rules import JUMPS, NodeContext, ServiceRules, Tables, assemble, reassemble, shared_part
from podnet.proxy.snapshot import fragments_or_skip, services_health
from podnet.proxy.tracker import ChangeTracker

log = logging.getLogger("podnet.proxy")

FULL_SYNC_PERIOD = 3600.0
QUARANTINE_RETRIES = 3
"""Full syncs retried at once in one sync, each after leaving out one service the kernel refused."""
CHECK_BUDGET = 0.05
"""At most this share of the time goes to the full read-back of the rules (see canary_ok)."""
STREAM_BLOCK = 128
"""Services per block of a streamed full sync (see FamilyProxier._full)."""


# gc_paused (podnet.host.loop): a full sync allocates a few hundred thousand small acyclic objects
# (rule strings, tuples, fragments), which trigger repeated generation-2 collections that walk every
# live object, about a third of the sync's own CPU time at 10k services; reference counting still
# frees everything, and the collector runs after the sync instead of during it.


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
    restore_failed: bool = False
    quarantined: str | None = None
    """The service left out because iptables-restore refused one of its lines."""
    committed: tuple[str, ...] = ()
    """After a failed restore: the tables iptables-restore had committed ('?': unknown)."""
    failed_table: str | None = None
    repaired_partial: bool = False
    """A partial sync failed and this report is the full sync that repaired it."""


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
    syncing: bool = False
    quarantined: set[str] = field(default_factory=set)
    """Services whose rules the kernel refused; left out until their objects change."""
    next_full_check: float | None = None
    """When canary_ok next reads back everything (None: at its next run)."""
    check_costs: tuple[float, float] = (0.0, 0.0)
    """Seconds the last (full, quick) check took; a quick check that costs half a full one or
    more (iptables-legacy reads the whole table for every ``-S``) is replaced by the full one."""
    _assembled: tuple[NodeContext, dict[str, tuple[ServiceRules, ...]], Tables] | None = field(
        default=None, init=False, repr=False)
    """(context, fragments, tables) of the last desired(): what the next one starts from."""

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
        self.quarantined.discard(key)  # changed: tried again
        svc, slices = self.source(key) if self.source else (None, [])
        if svc is None:
            self.fragments.pop(key, None)
            return
        frags = fragments_or_skip(key, svc, slices, self.ctx, self.node_name, self.max_endpoints)
        if frags is None:
            self.fragments.pop(key, None)
        else:
            self.fragments[key] = frags

    async def canary_ok(self) -> bool:
        """False (and the next sync forced full) when podnet's rules were changed from outside.

        The full check compares one ``iptables-save`` of the family with what the
        last sync applied: every applied chain must exist with exactly its number
        of rules, and every jump from a built-in chain must be there, so a flushed
        table (``iptables -t nat -F``: PODNET-CANARY keeps its chain but loses its
        rule), a flushed podnet chain and a deleted jump are all seen, in every
        table. It runs whenever its own cost allows (at most ``CHECK_BUDGET`` of
        the time: every period for small tables); the periods in between run the
        quick check, ``-S`` of PODNET-CANARY and of the built-in chains with jumps
        (a table flush or a deleted jump), unless that costs half as much as the
        full one (then the full one runs every period). Skipped (True) while a sync
        runs or when the rules could not be read.
        """
        applied = self.applied
        if applied is None or self.syncing:
            return True
        start = self.wall()
        full = (self.next_full_check is None or start >= self.next_full_check
                or self.check_costs[1] >= 0.5 * self.check_costs[0])
        if full:
            text = await self.ipt.save()
            found = drift(applied, parse_save(text), JUMPS) if text.strip() else None
            cost = self.wall() - start
            self.check_costs = (cost, self.check_costs[1])
            self.next_full_check = start + cost / CHECK_BUDGET
        else:
            found = await self._quick_drift(applied)
            self.check_costs = (self.check_costs[0], self.wall() - start)
        if self.applied is not applied or self.syncing:
            return True  # a sync ran meanwhile; the next check compares with its result
        if found is None:
            log.warning("%s: the rules could not be read; not checked this period", self.label)
            return True
        if not found:
            return True
        kinds: dict[tuple[str, str], list[str]] = {}
        for table, kind, chain in found:
            kinds.setdefault((table, kind), []).append(chain)
        for (table, kind), chains in sorted(kinds.items()):
            m.FOREIGN_CHANGES.labels(table, kind, self.label).inc()
            if names.CANARY in chains:
                m.CANARY_LOST.labels(table, self.label).inc()
        summary = "; ".join(
            f"{table} {kind}: {len(chains)} ({', '.join(chains[:3])}{', ...' if len(chains) > 3 else ''})"
            for (table, kind), chains in sorted(kinds.items())
        )
        log.warning("%s: podnet's rules were changed from outside (foreign flush?), seen by the %s check: %s; "
                    "forcing a full sync", self.label, "full" if full else "quick", summary)
        self.need_full = True
        self.applied = None
        return False

    async def _quick_drift(self, applied: Tables) -> list[tuple[str, str, str]]:
        """drift() restricted to PODNET-CANARY and the jumps, read with ``-S`` per chain."""
        out: list[tuple[str, str, str]] = []
        for table, chains in applied.items():
            if names.CANARY not in chains:
                continue
            rules = await self.ipt.chain_rules(table, names.CANARY)
            if rules is None:
                out.append((table, "chain-missing", names.CANARY))
            elif len(rules) != len(chains[names.CANARY]):
                out.append((table, "rules-changed", names.CANARY))
        builtin: dict[tuple[str, str], list[str] | None] = {}
        for table, chain, rule in JUMPS:
            if table not in applied:
                continue
            if (table, chain) not in builtin:
                builtin[(table, chain)] = await self.ipt.chain_rules(table, chain) or []
            target = jump_target(rule)
            if not any(jump_target(r) == target for r in builtin[(table, chain)] or ()):
                out.append((table, "jump-missing", f"{chain} -> {target}"))
        return out

    def desired(self) -> Tables:
        """assemble() of every fragment, reusing the last result when the services that changed
        since then touch no shared chain (an endpoint change): only their own chains are swapped."""
        last = self._assembled
        if last is not None and last[0] == self.ctx:
            _, frags, tables = last
            changed = [k for k in frags.keys() | self.fragments.keys() if frags.get(k) is not self.fragments.get(k)]
            old = [f for k in changed for f in frags.get(k, ())]
            new = [f for k in changed for f in self.fragments.get(k, ())]
            if list(map(shared_part, old)) == list(map(shared_part, new)):
                tables = reassemble(tables, old, new) if changed else tables
                self._assembled = (self.ctx, dict(self.fragments), tables)
                return tables
        tables = assemble((f for k in sorted(self.fragments) for f in self.fragments[k]), self.ctx)
        self._assembled = (self.ctx, dict(self.fragments), tables)
        return tables

    async def sync(self, force_full: bool = False) -> SyncReport:
        self.syncing = True
        try:
            rep = await self._sync(force_full)
            if rep.restore_failed and not rep.full:
                # A partial restore may have committed some tables (see render.restore_outcome):
                # repair at once with a full sync of every table rather than wait a retry period.
                log.warning("%s: repairing the failed partial sync with a full sync now", self.label)
                rep = await self._sync(True)
                rep.repaired_partial = True
            for _ in range(QUARANTINE_RETRIES):
                if not rep.quarantined:
                    break
                # The kernel refused one service's line: the others are written at once without it.
                rep = await self._sync(True)
            return rep
        finally:
            self.syncing = False

    def _quarantine(self, chain: str | None) -> str | None:
        """Leave out the service that owns ``chain`` until it changes; its key (None: no owner)."""
        if chain is None or not names.is_ours(chain):
            return None
        for key, frags in self.fragments.items():
            if any(chain in f.nat_chains for f in frags):
                self.fragments.pop(key)
                self.quarantined.add(key)
                m.SKIPPED_SERVICES.labels("restore-refused", self.label).inc()
                log.error("%s: iptables-restore refused a line of service %r (chain %s); it is left out "
                          "until it changes", self.label, key, chain)
                return key
        return None

    async def _sync(self, force_full: bool) -> SyncReport:
        start = self.wall()
        full = force_full or self.need_full or self.last_full is None or start - self.last_full > FULL_SYNC_PERIOD
        rep = SyncReport(self.ctx.family, full)
        try:
            guard.check_context(self.ctx)
        except guard.Unsafe as e:
            log.error("%s: node settings cannot be written safely, nothing is written: %s", self.label, e)
            rep.ok = False
            return rep
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
            committed, failed, later = restore_outcome(e.text, e.line)
            rep.committed, rep.failed_table, rep.restore_failed = tuple(committed), failed, True
            if failed is None:
                state = "unknown which tables were committed (no line number); all are rewritten by the next full sync"
            else:
                state = (f"committed: {', '.join(committed) or 'none'}; failed: {failed}; "
                         f"not applied: {', '.join(later) or 'none'}; every table is rewritten by the next full sync")
            log.error("%s %s restore failed (%s); %s. Lines:\n%s",
                      self.label, "full" if full else "partial", e, state, e.context())
            rep.quarantined = self._quarantine(failing_chain(e.text, e.line))
            self.need_full = True
            self.applied = None
            rep.ok = False
            return rep
        rep.wrote_chains = sum(len(v) for v in p.write.values())
        rep.deleted_chains = sum(len(v) for v in p.delete.values())
        if rep.restored:  # an empty plan leaves the same rules (and canary_ok's snapshot) in place
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
                # Services in descending names.service_order, each block's declarations in descending
                # name order, so every new chain sorts before all chains of its kind created so far.
                # libiptc (iptables-legacy) keeps user chains in one name-sorted list with a sparse
                # index; creating a chain costs two failed lookups and an insertion, each a walk from
                # the index entry before the name. At the front of its kind each walk stops within a
                # few steps; ascending order walks the whole tail bucket (up to ~400 chains) three
                # times per chain (bench/results/proxy.md).
                keys = sorted(set(self.fragments) | self.dirty, key=lambda k: (names.service_order(k), k),
                              reverse=True)
                # Blocks of services, each computed, then declared, then its rules: iptables-restore
                # parses one block while the next is computed. Declaring a block's chains before its
                # rules keeps most lookups in libiptc on chains that already exist.
                for lo in range(0, len(keys), STREAM_BLOCK):
                    frags: list[ServiceRules] = []
                    for key in keys[lo:lo + STREAM_BLOCK]:
                        if key in self.dirty:
                            self._refresh(key)
                        frags.extend(self.fragments.get(key, ()))
                    yield "".join(sorted([f":{c} - [0:0]\n" for f in frags for c in f.nat_chains], reverse=True))
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
                    # Shared chains in descending name order too (the dispatch tree's PODNET-DST-*).
                    rest = {c: desired[table][c] for c in reversed(p.write[table]) if c not in emitted or table != "nat"}
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
            m.IPTABLES_TOTAL.labels(table, fam).set(sum(map(len, desired[table].values())))
            m.IPTABLES_LAST.labels(table, fam).set(sum(len(desired[table][c]) for c in p.write.get(table, ())))
        no_local = Counter(policy for frs in self.fragments.values() for f in frs for policy in f.no_local_endpoints)
        for policy in ("internal", "external"):
            m.NO_LOCAL_ENDPOINTS.labels(policy, fam).set(no_local[policy])


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
