"""The nftables mode's per-family sync: cached fragments -> one ``nft -f -`` per sync.

:class:`NftFamilyProxier` plugs into :class:`podnet.proxy.proxier.Proxier`
exactly where the iptables FamilyProxier does (same informer side, same
fragment cache per service key, same SyncReport). Guarantees:

* a full sync (first, after any failure, after a foreign change, and at
  least every ``FULL_SYNC_PERIOD``) rewrites podnet's whole table in one
  transaction, flushing it and keeping affinity entries (nft_render.render_full),
  or, after a failed full sync, deleting and recreating it; no other table is
  touched;
* a partial sync flushes and rewrites only the changed services' chains and
  their map/set elements (nft_render.render_partial); a failed partial sync
  is repaired at once by a full one;
* :meth:`canary_ok` lists every fixed chain (base chains, ``services``,
  ``canary``...) and compares its rule count with what was applied: a deleted
  table, a flushed table or chain, or a deleted base chain forces the next
  sync to be full, so it is repaired within one sync period;
* a service whose values cannot be written safely is logged, counted in
  podnet_proxy_skipped_services_total and left out; the others are written.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy import guard
from podnet.proxy import metrics as m
from podnet.proxy.conntrack import Reconciler
from podnet.proxy.model import DEFAULT_MAX_ENDPOINTS, endpoints_by_port, service_ports
from podnet.proxy.nft_render import render_full, render_partial
from podnet.proxy.nft_rules import (
    TABLE, Claims, NftService, NftState, UnsafeValue, add_claims, build_state, drop_claims, service_nft,
)
from podnet.proxy.nft_run import Nft, NftError
from podnet.proxy.proxier import FULL_SYNC_PERIOD, SyncReport
from podnet.proxy.rules import NodeContext

log = logging.getLogger("podnet.proxy")


def service_fragments(svc: Service, slices: list[EndpointSlice], ctx: NodeContext, node_name: str,
                      max_endpoints: int = DEFAULT_MAX_ENDPOINTS) -> tuple[NftService, ...]:
    """One Service's nft fragments; raises guard.Unsafe / UnsafeValue on an unsafe value."""
    ports = service_ports(svc, ctx.family)
    if not ports:
        return ()
    for sp in ports:
        guard.check_service_port(sp, ctx.family)
    guard.check_slices(slices, ctx.family)
    eps = endpoints_by_port(slices, ctx.family, node_name, max_endpoints, service=svc.key)
    return tuple(service_nft(sp, eps.get((sp.name.port, sp.protocol), ()), ctx) for sp in ports)


def build(services, slices, ctx: NodeContext, node_name: str = "") -> NftState:
    """The uncached whole (tests, benchmarks)."""
    by_service: dict[str, list[EndpointSlice]] = {}
    for sl in slices:
        if sl.service_name:
            by_service.setdefault(sl.service_key, []).append(sl)
    frags = {s.key: service_fragments(s, by_service.get(s.key, []), ctx, node_name) for s in services}
    return build_state({k: v for k, v in frags.items() if v}, ctx)


@dataclass
class NftFamilyProxier:
    nft: Nft
    ctx: NodeContext
    node_name: str
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS
    wall: Callable[[], float] = time.monotonic
    fragments: dict[str, tuple[NftService, ...]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    source: Callable[[str], tuple[Service | None, list[EndpointSlice]]] | None = None
    before_first_write: Callable[[], None] | None = None
    conntrack: Reconciler | None = None
    applied: NftState | None = None
    claims: Claims = field(default_factory=dict)
    """Who claims each map/set key, kept in step with :attr:`fragments` (partial syncs read it)."""
    need_full: bool = True
    last_full: float | None = None
    syncing: bool = False
    recreate: bool = False
    """Next full sync deletes and recreates the table (after a failed full sync) instead of flushing it."""

    @property
    def label(self) -> str:
        return f"IPv{self.ctx.family}"

    def update_node_ips(self, ips: tuple[str, ...]) -> bool:
        if ips == self.ctx.node_ips:
            return False
        self.ctx = dataclasses.replace(self.ctx, node_ips=ips)
        self.dirty |= set(self.fragments)
        self.need_full = True
        return True

    def update_zone(self, zone: str) -> bool:
        if zone == self.ctx.zone:
            return False
        self.ctx = dataclasses.replace(self.ctx, zone=zone)
        self.dirty |= set(self.fragments)
        return True

    def mark_dirty(self, key: str) -> None:
        self.dirty.add(key)

    def _refresh(self, key: str) -> None:
        self.dirty.discard(key)
        svc, slices = self.source(key) if self.source else (None, [])
        drop_claims(self.claims, key, self.fragments.pop(key, ()))
        if svc is None:
            return
        try:
            frags = service_fragments(svc, list(slices), self.ctx, self.node_name, self.max_endpoints)
        except guard.Unsafe as e:
            m.SKIPPED_SERVICES.labels(e.reason, self.label).inc()
            log.error("%s: service %r skipped, nothing of it is written: %s", self.label, key, e)
            return
        except UnsafeValue as e:
            m.SKIPPED_SERVICES.labels("nft-value", self.label).inc()
            log.error("%s: service %r skipped, nothing of it is written: %s", self.label, key, e)
            return
        except Exception:  # noqa: BLE001 - one bad service must not stop the others
            m.SKIPPED_SERVICES.labels("error", self.label).inc()
            log.exception("%s: cannot compute nft rules for service %r; skipped", self.label, key)
            return
        if frags:
            self.fragments[key] = frags
            add_claims(self.claims, key, frags)

    def desired(self) -> NftState:
        return build_state(self.fragments, self.ctx, self.claims)

    async def canary_ok(self) -> bool:
        """False (next sync forced full) when a fixed chain is missing or lost rules.

        One kernel dump per fixed chain (nft_count), cheap at any table size: a
        deleted table, a flushed table, a flushed or deleted fixed chain and a
        missing base chain are all seen. A flush of one service chain alone is not
        (it is rewritten by the next full sync)."""
        applied = self.applied
        if applied is None or self.syncing:
            return True
        counts = await self.nft.count_rules(TABLE, sorted(applied.fixed))
        if self.applied is not applied or self.syncing:
            return True  # a sync ran meanwhile; the next check compares with its result
        lost = [(c, "missing" if counts.get(c, 0) == 0 else "flushed")
                for c, rules in sorted(applied.fixed.items()) if counts.get(c, 0) != len(rules)]
        if not lost:
            return True
        for chain, kind in lost:
            m.FOREIGN_CHANGES.labels("nft", kind, self.label).inc()
        m.CANARY_LOST.labels("nft", self.label).inc()
        log.warning("%s: podnet's nftables table was changed from outside (%s); forcing a full sync",
                    self.label, ", ".join(f"{c} {k}" for c, k in lost[:5]))
        self.need_full = True
        self.applied = None
        return False

    async def sync(self, force_full: bool = False) -> SyncReport:
        self.syncing = True
        try:
            rep = await self._sync(force_full)
            if not rep.ok and not rep.full:
                log.warning("%s: repairing the failed partial nft sync with a full sync now", self.label)
                rep = await self._sync(True)
                rep.repaired_partial = True
            return rep
        finally:
            self.syncing = False

    async def _sync(self, force_full: bool) -> SyncReport:
        start = self.wall()
        full = (force_full or self.need_full or self.applied is None or self.last_full is None
                or start - self.last_full > FULL_SYNC_PERIOD)
        rep = SyncReport(self.ctx.family, full)
        changed = set(self.dirty)
        for key in list(self.dirty):
            self._refresh(key)
        desired = self.desired()
        if full:
            if self.before_first_write is not None:
                self.before_first_write()
                self.before_first_write = None
            existing = None
            if not self.recreate:
                try:
                    existing = await self.nft.names(TABLE)
                except (NftError, OSError) as e:
                    log.warning("%s: cannot list podnet's nft table (%s); recreating it", self.label, e)
            text = render_full(desired, existing)
        else:
            assert self.applied is not None
            text = render_partial(desired, self.applied, changed)
        try:
            if text:
                await self.nft.apply(text)
                rep.restored = True
        except NftError as e:
            m.RESTORE_FAILURES.labels(self.label).inc()
            if not full:
                m.PARTIAL_RESTORE_FAILURES.labels(self.label).inc()
            log.error("%s %s nft sync failed: %s", self.label, "full" if full else "partial", e)
            self.recreate = self.recreate or full
            self.need_full = True
            self.applied = None
            rep.ok = False
            return rep
        rep.wrote_chains = text.count(" {\n    ")  # chains given rules: one block each
        rep.deleted_chains = text.count("delete chain ")
        self.applied = dataclasses.replace(desired, claims=None)  # self.claims moves on; applied must not
        self.need_full = False
        if full:
            self.last_full = start
            self.recreate = False
        rep.seconds = self.wall() - start
        fam = self.label
        m.SYNC_DURATION.labels(fam).observe(rep.seconds)
        (m.SYNC_FULL_DURATION if full else m.SYNC_PARTIAL_DURATION).labels(fam).observe(rep.seconds)
        m.LAST_SYNC.labels(fam).set(time.time())
        for policy in ("internal", "external"):
            n = sum(1 for frs in self.fragments.values() for f in frs if policy in f.no_local_endpoints)
            m.NO_LOCAL_ENDPOINTS.labels(policy, fam).set(n)
        return rep
