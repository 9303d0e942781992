"""The nftables mode's per-family sync: cached fragments -> one ``nft -f -`` per sync.

:class:`NftFamilyProxier` plugs into :class:`podnet.proxy.proxier.Proxier`
exactly where the iptables FamilyProxier does (same informer side, same
fragment cache per service key, same SyncReport). Guarantees:

* a full sync (first, after any failure, after a foreign change, and at
  least every ``FULL_SYNC_PERIOD``) rewrites podnet's whole table in one
  transaction, flushing it and keeping affinity entries (nft_render.render_full),
  or, after a failed full sync, deleting and recreating it; no other table is
  touched. The text is streamed to ``nft -f -`` while it is computed, in
  blocks of ``STREAM_BLOCK`` services (nft parses one block while the next is
  computed), and the listing of the table's current chains and sets runs
  meanwhile, as the iptables mode streams its restore;
* a partial sync flushes and rewrites only the changed services' chains and
  their map/set elements (nft_render.render_partial); a failed partial sync
  is repaired at once by a full one;
* :meth:`canary_ok` (every sync period) reads the nftables generation; when
  anything was committed since the table was last verified (by anyone, podnet
  included), it counts the rules of *every* chain podnet wrote (one small
  kernel dump per chain: 0.3-1 s at 10k services, see nft_count) and the
  elements of every named map and set, and compares them with what was
  applied. Counting every chain takes at most ``CHECK_BUDGET`` of the time
  (the iptables mode's budget): when it last cost more than that share of
  the time since, the period counts only the fixed chains and the elements
  (a deleted or flushed table, a fixed chain, lost map elements), and the next
  affordable period counts everything (a flushed service chain). Damage to service chains alone (a flushed or deleted ``svc-*``)
  is repaired by the next sync rewriting just those chains; anything else (a
  deleted or flushed table, a fixed or base chain, lost map elements) forces a
  full sync. Either way the repair lands within one sync period;
* a change that keeps every count (a rule replaced by another) is found by
  content digests (nft_count): the first census that counts every chain
  after podnet wrote a chain learns the kernel's digest of it, and each such
  census also digests the next ``DIGEST_SLICE`` chains in rotation, so every
  chain is compared within ceil(chains / DIGEST_SLICE) of them (10 at 10k
  services) and a changed one is rewritten alone. The generation read alone
  suffices only once every chain was digested since the generation last
  changed. What a digest cannot see: a same-count change made between
  podnet's write of a chain and the next census is learned as podnet's (it
  goes at the chain's next rewrite, at the latest the next full sync);
* a service whose values cannot be written safely is logged, counted in
  podnet_proxy_skipped_services_total and left out; the others are written.
"""

from __future__ import annotations

import asyncio
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
from podnet.proxy.nft_render import full_block, full_header, full_tail, render_partial, render_repair
from podnet.proxy.nft_rules import (
    TABLE, Claims, NftService, NftState, UnsafeValue, add_claims, build_state, drop_claims, fixed_chains, map_types,
    service_nft, static_sets,
)
from podnet.proxy.nft_run import Nft, NftError
from podnet.proxy.proxier import CHECK_BUDGET, FULL_SYNC_PERIOD, STREAM_BLOCK, SyncReport
from podnet.proxy.rules import NodeContext

log = logging.getLogger("podnet.proxy")

DIGEST_SLICE = 1024
"""Chains whose content digest a census reads besides the ones not learned yet: every chain of a
10k-service table (10,013 chains) is digested within ten censuses that count every chain."""


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
    verified_gen: int | None = None
    """The nftables generation at which the kernel's table last matched :attr:`applied`."""
    repair: set[str] = field(default_factory=set)
    """Service chains found damaged; the next partial sync writes them again."""
    next_full_check: float | None = None
    """When canary_ok may next count every chain (None: at its next run); see CHECK_BUDGET."""
    digests: dict[str, str] = field(default_factory=dict)
    """Chain -> the content digest the kernel gave for it after podnet last wrote it (learned)."""
    digest_cursor: int = 0
    """Where the next rotating slice of chains to digest starts (index into the sorted chains)."""
    covered: int = 0
    """Chains digested since the generation last changed; the table is settled (a generation read
    suffices) only once every chain was digested at the current generation."""
    census_gen: int | None = None
    """The generation the last census read."""
    totals: dict[str, int] = field(default_factory=dict)
    """Chains, rules, affinity sets, services without local endpoints per policy, and keys per named
    map or set, of :attr:`fragments` (and :attr:`claims`), kept in step with them: the metrics of a
    sync cost no walk over every service."""

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
        old = self.fragments.pop(key, ())
        drop_claims(self.claims, key, old)
        self._count(old, -1)
        self._count_keys({(name, k) for f in old for name, k, _ in f.elements if (name, k) not in self.claims}, -1)
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
            self._count_keys({(name, k) for f in frags for name, k, _ in f.elements if (name, k) not in self.claims}, 1)
            add_claims(self.claims, key, frags)
            self._count(frags, 1)

    def _count(self, frags: tuple[NftService, ...], sign: int) -> None:
        t = self.totals
        for f in frags:
            t["chains"] = t.get("chains", 0) + sign * len(f.chains)
            t["rules"] = t.get("rules", 0) + sign * sum(len(r) for r in f.chains.values())
            t["affinity"] = t.get("affinity", 0) + sign * len(f.affinity_sets)
            for policy in f.no_local_endpoints:
                t[policy] = t.get(policy, 0) + sign

    def _count_keys(self, keys: set[tuple[str, str]], sign: int) -> None:
        """``keys`` (map or set, key) appeared in (+1) or left (-1) the claims."""
        t = self.totals
        for name, _ in keys:
            t["keys " + name] = t.get("keys " + name, 0) + sign

    def desired(self) -> NftState:
        return build_state(self.fragments, self.ctx, self.claims)

    def _named_sets(self) -> list[str]:
        return sorted(set(map_types(self.ctx.family)) | set(static_sets(self.ctx.family)))

    async def canary_ok(self) -> bool:
        """False (and the next sync repairs) when podnet's table differs from what was applied.

        Nothing committed since the table was last verified and every chain's digest read since
        the generation last changed: one generation read. Else every chain's rule count, every
        named map's and set's element count, and the content digest of a slice of the chains (the
        ones written since their digest was last learned, and the next ``DIGEST_SLICE`` in
        rotation) against :attr:`applied` and the learned digests (see the module docstring)."""
        applied = self.applied
        if applied is None or self.syncing:
            return True
        sets = self._named_sets()
        start = self.wall()
        every = self.next_full_check is None or start >= self.next_full_check
        all_chains = applied.chains()
        want_chains = all_chains if every else applied.fixed
        settled = self.covered >= len(all_chains)
        digest = self._digest_slice(sorted(all_chains)) if every else frozenset()
        census = await self.nft.census(TABLE, self.verified_gen if settled else None, sets, sorted(want_chains), digest)
        if self.applied is not applied or self.syncing:
            return True  # a sync ran meanwhile; the next check compares with its result
        if census.chains is None:
            return True
        if census.gen != self.census_gen:
            self.covered = 0
        self.census_gen = census.gen
        if every:
            self.next_full_check = start + (self.wall() - start) / CHECK_BUDGET
        elements = census.elements or {}
        want_elements: dict[str, int] = {}
        for name, _key in applied.element_map():
            want_elements[name] = want_elements.get(name, 0) + 1
        lost = [(c, "emptied" if not census.chains.get(c) else "changed")
                for c, rules in sorted(want_chains.items()) if census.chains.get(c, 0) != len(rules)]
        lost += [(s, "elements") for s in sets if elements.get(s) != want_elements.get(s, 0)]
        counted_ok = {c for c in digest if census.chains.get(c, 0) == len(all_chains[c])}
        for c, value in sorted((census.digests or {}).items()):
            if c not in counted_ok:
                continue
            known = self.digests.get(c)
            if known is None:
                self.digests[c] = value  # first read since podnet wrote it: learned
            elif known != value:
                lost.append((c, "content"))
        if every:
            self.covered += len(digest)
        if not lost:
            if every:
                self.verified_gen = census.gen
            return True
        for name, kind in lost:
            m.FOREIGN_CHANGES.labels("nft", kind, self.label).inc()
        if any(name in applied.fixed for name, _ in lost):
            m.CANARY_LOST.labels("nft", self.label).inc()
        services_only = all(kind != "elements" and name not in applied.fixed for name, kind in lost)
        log.warning("%s: podnet's nftables table was changed from outside (%d: %s); %s", self.label, len(lost),
                    ", ".join(f"{c} {k}" for c, k in lost[:5]),
                    "rewriting those chains" if services_only else "forcing a full sync")
        if services_only:
            self.repair |= {name for name, _ in lost}
        else:
            self.need_full = True
            self.applied = None
        return False

    def _digest_slice(self, chains: list[str]) -> frozenset[str]:
        """The chains whose digest is not learned yet, and the next ``DIGEST_SLICE`` in rotation."""
        if not chains:
            return frozenset()
        lo = self.digest_cursor % len(chains)
        turn = chains[lo:lo + DIGEST_SLICE] + chains[:max(0, lo + DIGEST_SLICE - len(chains))]
        self.digest_cursor = (lo + DIGEST_SLICE) % len(chains)
        return frozenset(turn).union(c for c in chains if c not in self.digests)

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

    async def _full(self) -> NftState:
        """The whole table in one streamed ``nft -f -``; returns what was written.

        The header (table, maps, sets, fixed chains) goes first; then blocks of
        services in key order, each computed (dirty ones refreshed), declared and
        given its rules while nft parses the previous one; then, with the
        listing of the table's chains and sets that ran meanwhile, the deletion
        of those podnet no longer wants and every map element. After a failed
        full sync the table is deleted and declared again instead (no listing);
        when the listing fails, chains podnet no longer wants stay, empty and
        unreferenced, until a later full sync deletes them."""
        if self.before_first_write is not None:
            self.before_first_write()
            self.before_first_write = None
        names = None if self.recreate else asyncio.ensure_future(self.nft.names(TABLE))
        result: dict[str, NftState] = {}

        async def chunks():
            try:
                yield full_header(self.ctx.family, fixed_chains(self.ctx), flush=names is not None)
                keys = sorted(set(self.fragments) | self.dirty)
                for lo in range(0, len(keys), STREAM_BLOCK):
                    frags: list[NftService] = []
                    for key in keys[lo:lo + STREAM_BLOCK]:
                        if key in self.dirty:
                            self._refresh(key)
                        frags.extend(self.fragments.get(key, ()))
                    yield full_block(self.ctx.family, frags)
                    await asyncio.sleep(0)
                desired = self.desired()
                existing = None
                if names is not None:
                    try:
                        existing = await names
                    except (NftError, OSError) as e:
                        log.warning("%s: cannot list podnet's nft table (%s); chains it no longer needs stay "
                                    "(empty) until the next full sync", self.label, e)
                yield full_tail(desired, existing)
                result["desired"] = desired
            finally:
                if names is not None and not names.done():
                    names.cancel()

        await self.nft.apply_stream(chunks())
        return result["desired"]

    async def _sync(self, force_full: bool) -> SyncReport:
        start = self.wall()
        full = (force_full or self.need_full or self.applied is None or self.last_full is None
                or start - self.last_full > FULL_SYNC_PERIOD)
        rep = SyncReport(self.ctx.family, full)
        text = ""
        try:
            if full:
                desired = await self._full()
                rep.restored = True
            else:
                assert self.applied is not None
                changed = set(self.dirty)
                for key in list(self.dirty):
                    self._refresh(key)
                desired = self.desired()
                text = render_partial(desired, self.applied, changed)
                if self.repair:
                    text = render_repair(self.applied, self.repair) + text
                if text:
                    await self.nft.apply(text)
                    rep.restored = True
                    for key in changed:
                        for f in (*self.applied.services.get(key, ()), *desired.services.get(key, ())):
                            self._forget(f.chains)
                    self._forget(self.repair)
                    self._forget(c for c, rules in desired.fixed.items() if self.applied.fixed.get(c) != rules)
        except NftError as e:
            m.RESTORE_FAILURES.labels(self.label).inc()
            m.NFT_SYNC_FAILURES.labels(self.label).inc()
            if not full:
                m.PARTIAL_RESTORE_FAILURES.labels(self.label).inc()
            log.error("%s %s nft sync failed: %s", self.label, "full" if full else "partial", e)
            self.recreate = self.recreate or full
            self.need_full = True
            self.applied = None
            rep.ok = False
            return rep
        if full:
            rep.wrote_chains = sum(1 for rules in desired.chains().values() if rules)
            self.digests.clear()
        else:
            rep.wrote_chains = text.count(" {\n    ")  # chains given rules: one block each
            rep.deleted_chains = text.count("delete chain ")
        self.applied = dataclasses.replace(desired, claims=None)  # self.claims moves on; applied must not
        self.need_full = False
        self.repair = set()
        if full:
            self.last_full = start
            self.recreate = False
        rep.seconds = self.wall() - start
        fam = self.label
        m.SYNC_DURATION.labels(fam).observe(rep.seconds)
        (m.SYNC_FULL_DURATION if full else m.SYNC_PARTIAL_DURATION).labels(fam).observe(rep.seconds)
        m.LAST_SYNC.labels(fam).set(time.time())
        for policy in ("internal", "external"):
            m.NO_LOCAL_ENDPOINTS.labels(policy, fam).set(self.totals.get(policy, 0))
        self._publish_counts(desired, full, text)
        return rep

    def _forget(self, chains) -> None:
        """``chains`` were written: their digests are learned again at their next read."""
        for c in chains:
            self.digests.pop(c, None)

    def _publish_counts(self, desired: NftState, full: bool, partial_text: str) -> None:
        """The rule-count gauges for the table as just applied (running totals: no walk of every chain)."""
        fam = self.label
        t = self.totals
        fixed_rules = sum(len(r) for r in desired.fixed.values())
        m.NFT_OBJECTS.labels("chain", fam).set(len(desired.fixed) + t.get("chains", 0))
        m.NFT_OBJECTS.labels("rule", fam).set(fixed_rules + t.get("rules", 0))
        m.NFT_OBJECTS.labels("map", fam).set(len(map_types(self.ctx.family)))
        m.NFT_OBJECTS.labels("set", fam).set(len(static_sets(self.ctx.family)) + t.get("affinity", 0))
        for name in self._named_sets():
            m.NFT_ELEMENTS.labels(name, fam).set(t.get("keys " + name, 0))
        written = fixed_rules + t.get("rules", 0) if full else partial_text.count("\n    ")
        m.NFT_RULES_LAST.labels(fam).set(written)
