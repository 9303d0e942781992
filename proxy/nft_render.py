"""``nft -f`` text from :class:`podnet.proxy.nft_rules.NftState`: full and partial.

Pure and deterministic (sorted). Both texts are one nft transaction: the kernel
applies all of it or none of it.

* :func:`render_full` creates the table if missing, then either deletes and
  declares it again, or (given the chains and sets it holds) flushes it and
  deletes what podnet no longer wants, keeping affinity sets' entries; either
  way no stale chain, map element or foreign rule inside podnet's table
  survives, and no other table is touched. It is :func:`full_header`, then
  :func:`full_block` per service, then :func:`full_tail`, so a streamed full
  sync writes the same transaction piece by piece.
* :func:`render_partial` changes only what differs between two states: new
  chains added, changed chains flushed and rewritten, gone chains deleted,
  map and set elements deleted/added one by one. Order inside the
  transaction: declare new chains and sets, rewrite chains, delete stale
  elements, add new elements, delete chains and sets no longer referenced.
"""

from __future__ import annotations

from podnet.proxy.nft_rules import (
    BASE_CHAINS, TABLE, Element, NftState, addr_type, family_kw, map_types, static_sets, winner,
)


_DELETE_ORDER = {"fw": 0, "ext": 1, "svc": 2, "svl": 3}


def _pair(ip: str) -> str:
    return f"{ip} . {ip}"


def render_full(state: NftState, existing: tuple[set[str], set[str]] | None = None) -> str:
    """Everything, in one transaction. Without ``existing`` the table is deleted and declared
    again. With ``existing`` (the chains and sets the table holds now) it is flushed instead:
    every rule and every static map/set element goes, chains and sets podnet no longer wants
    are deleted, and the dynamic affinity sets it still wants keep their entries (ClientIP
    affinity survives a full sync, as xt_recent's lists survive an iptables-restore).

    The text is :func:`full_header`, one :func:`full_block` of every service in key order, then
    :func:`full_tail`: the pieces a streamed full sync writes while it computes."""
    out = [full_header(state.family, state.fixed, flush=existing is not None)]
    out.append(full_block(state.family, [f for k in sorted(state.services) for f in state.services[k]]))
    out.append(full_tail(state, existing))
    return "".join(out)


def full_header(family: int, fixed: dict[str, tuple[str, ...]], flush: bool) -> str:
    """The table (flushed, or deleted and declared again), its maps and static sets (emptied), the
    fixed chains with their rules. Everything a service block refers to is declared here."""
    fam = family_kw(family)
    out = [f"add table {fam} {TABLE}\n", f"{'flush' if flush else 'delete'} table {fam} {TABLE}\n",
           f"table {fam} {TABLE} {{\n"]
    for name, decl in map_types(family).items():
        out.append(f"  map {name} {{ {decl} }}\n")
    for name, typ in static_sets(family).items():
        out.append(f"  set {name} {{ type {typ} ; }}\n")
    # Declare every fixed chain first so their rules may reference each other in any order.
    for name in sorted(fixed):
        out.append(f"  chain {name} {{ {BASE_CHAINS.get(name) or ''} }}\n")
    out.append("}\n")
    if flush:
        out.extend(f"flush map {fam} {TABLE} {m}\n" for m in map_types(family))
        out.extend(f"flush set {fam} {TABLE} {name}\n" for name in static_sets(family))
    out.append(_rules_block(fam, fixed, sorted(fixed)))
    return "".join(out)


def full_block(family: int, frags) -> str:
    """Some services' affinity sets and chains, declared, then given their rules (a service's chains
    refer only to each other, to the fixed chains and to its own sets). Blocks should be large:
    each ``table`` block costs nft time of its own (10k one-service blocks load 20x slower than one
    block of all of them)."""
    fam = family_kw(family)
    a = addr_type(family)
    chains: dict[str, tuple[str, ...]] = {}
    aff: dict[str, int] = {}
    for f in frags:
        chains.update(f.chains)
        aff.update(f.affinity_sets)
    if not chains and not aff:
        return ""
    names = sorted(chains)
    out = [f"table {fam} {TABLE} {{\n"]
    out.extend(f"  set {n} {{ type {a} ; flags dynamic,timeout ; timeout {t}s ; }}\n" for n, t in sorted(aff.items()))
    out.extend(f"  chain {c} {{ }}\n" for c in names)
    out.append("}\n")
    out.append(_rules_block(fam, chains, names))
    return "".join(out)


def full_tail(state: NftState, existing: tuple[set[str], set[str]] | None) -> str:
    """Chains and sets podnet no longer wants deleted (when the table was flushed, not recreated),
    then every map and set element."""
    fam = family_kw(state.family)
    out = []
    if existing is not None:
        old_chains, old_sets = existing
        out.extend(f"delete chain {fam} {TABLE} {c}\n" for c in sorted(old_chains - set(state.chains())))
        keep = set(state.affinity_sets()) | set(static_sets(state.family))
        out.extend(f"delete set {fam} {TABLE} {s}\n" for s in sorted(old_sets - keep))
    out.extend(_elements("add", fam, sorted(state.elements())))
    return "".join(out)


def _rules_block(fam: str, chains: dict[str, tuple[str, ...]], names: list[str]) -> str:
    """Rules appended to already declared chains, in one table block (parsed faster than ``add rule`` lines)."""
    body = "".join(f"  chain {c} {{\n" + "".join(f"    {r}\n" for r in chains[c]) + "  }\n" for c in names if chains[c])
    return f"table {fam} {TABLE} {{\n{body}}}\n" if body else ""


def _elements(verb: str, fam: str, elements: list[Element]) -> list[str]:
    by_map: dict[str, list[str]] = {}
    for m, key, verdict in elements:
        by_map.setdefault(m, []).append(f"{key} : {verdict}" if verb == "add" and verdict else key)
    return [f"{verb} element {fam} {TABLE} {m} {{ {', '.join(items)} }}\n" for m, items in sorted(by_map.items())]


def render_partial(desired: NftState, applied: NftState, changed: set[str] | None = None) -> str:
    """The transaction that turns ``applied`` into ``desired``; '' when they are equal.

    ``changed`` (service keys) limits the comparison to those services; fixed
    chains are always compared (they depend on the node, not on services).
    """
    fam = family_kw(desired.family)
    a = addr_type(desired.family)
    keys = set(desired.services) | set(applied.services) if changed is None else changed
    old_chains: dict[str, tuple[str, ...]] = {}
    new_chains: dict[str, tuple[str, ...]] = {}
    old_el: set[Element] = set()
    new_el: set[Element] = set()
    old_aff: dict[str, int] = {}
    new_aff: dict[str, int] = {}
    for k in keys:
        for f in applied.services.get(k, ()):
            old_chains.update(f.chains)
            old_el.update(f.elements)
            old_aff.update(f.affinity_sets)
        for f in desired.services.get(k, ()):
            new_chains.update(f.chains)
            new_el.update(f.elements)
            new_aff.update(f.affinity_sets)
    for name, rules in desired.fixed.items():
        if applied.fixed.get(name) != rules:
            old_chains[name] = applied.fixed.get(name, ())
            new_chains[name] = rules
    out: list[str] = []
    for name in sorted(set(new_aff) - set(old_aff)):
        out.append(f"add set {fam} {TABLE} {name} {{ type {a} ; flags dynamic,timeout ; timeout {new_aff[name]}s ; }}\n")
    added = sorted(set(new_chains) - set(old_chains))
    out.extend(f"add chain {fam} {TABLE} {c}\n" for c in added)
    rewrite = [c for c in sorted(new_chains) if c not in old_chains or old_chains[c] != new_chains[c]]
    out.extend(f"flush chain {fam} {TABLE} {c}\n" for c in rewrite if c in old_chains)
    if rewrite:
        out.append(_rules_block(fam, new_chains, rewrite))
    old_keys = {(m, k): v for m, k, v in old_el}
    new_keys = {(m, k): v for m, k, v in new_el}
    # Per key the changed services touch: the kernel holds applied's winner; it is replaced by
    # desired's (another, unchanged service may now win a shared key), deleted, or left alone.
    # Only the touched keys are looked at: desired's claims index says who claims a key now;
    # before, the changed services claimed what applied's fragments say, the others the same.
    now_claims = desired.index()
    old_claims: dict[tuple[str, str], dict[str, str]] = {}
    for k in keys:
        for f in applied.services.get(k, ()):
            for m, key, v in f.elements:
                old_claims.setdefault((m, key), {})[k] = v
    stale: list[Element] = []
    fresh: list[Element] = []
    for mk in set(old_keys) | set(new_keys):
        after = now_claims.get(mk, {})
        before = {k: v for k, v in after.items() if k not in keys}
        before.update(old_claims.get(mk, {}))
        was = winner(before) if before else None
        now = winner(after) if after else None
        if was != now:
            if was is not None:
                stale.append((*mk, was))
            if now is not None:
                fresh.append((*mk, now))
    out.extend(_elements("delete", fam, sorted(stale)))
    out.extend(_elements("add", fam, sorted(fresh)))
    # Referrers before the chains they jump to: fw -> ext -> svc/svl.
    gone = sorted(set(old_chains) - set(new_chains), key=lambda c: (_DELETE_ORDER.get(c.split("-")[0], 9), c))
    out.extend(f"delete chain {fam} {TABLE} {c}\n" for c in gone)
    out.extend(f"delete set {fam} {TABLE} {s}\n" for s in sorted(set(old_aff) - set(new_aff)))
    return "".join(out)


def render_repair(state: NftState, chains: set[str]) -> str:
    """``chains`` of ``state`` (regular chains) written again as ``state`` has them: declared
    (re-created if something deleted one), flushed, filled. Names ``state`` lacks are ignored."""
    fam = family_kw(state.family)
    have = state.chains()
    names = sorted(c for c in chains if c in have and c not in BASE_CHAINS)
    out = [f"add chain {fam} {TABLE} {c}\n" for c in names]
    out += [f"flush chain {fam} {TABLE} {c}\n" for c in names]
    out.append(_rules_block(fam, have, names))
    return "".join(out)


def render_delete(family: int) -> str:
    """Remove podnet's table of ``family`` (and nothing else); a no-op when it is absent."""
    fam = family_kw(family)
    return f"add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n"
