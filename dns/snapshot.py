"""The cluster zone as data: an immutable record index built from Services, EndpointSlices and Namespaces.

:func:`build` and :func:`update` are pure functions of their inputs: the same objects always give
an equal :class:`Snapshot`. Every name that exists is a key of some record map, including empty
non-terminals (a map with no types), so NODATA vs NXDOMAIN is a dictionary lookup (RFC 8020: a name
exists iff it or a name below it has records). An optional :class:`Memo` carries per-service results
and the merged PTR index between calls; :func:`update` with the service keys an event touched
recomputes only those services (a test checks the result equals a fresh build).

Record rules follow the Kubernetes DNS schema 1.1.0 and CoreDNS's kubernetes plugin:
ClusterIP A/AAAA (dual stack); headless A/AAAA per ready endpoint (none -> the service does not
exist); ``<hostname>.<svc>`` per ready endpoint (dashed IP without a hostname); SRV per named port
plus every port on the bare service name, weight ``floor(100 / n)`` (n: addresses x ports, at least 1) and priority 0; PTR for cluster IPs
and ready endpoint IPs; ExternalName as a CNAME; ``dns-version`` TXT; SOA and NS at the apex.

Every value is checked again here, whatever the API layer did (defence in depth): a Service whose
name, namespace, cluster IP, ExternalName, port name or protocol kube-apiserver would refuse is
left out of the zone (its names do not exist), an EndpointSlice with such a value is left out of its
Service (the other slices still answer), a Namespace with a bad name makes no names, and an object
that makes building fail in any other way is left out the same way. One bad object never stops the
others; :attr:`Snapshot.rejected` lists what was left out and why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from podnet.dns import names
from podnet.dns.wire import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A
from podnet.kube.objects import EndpointSlice, Service

__all__ = [
    "Config", "ServiceRecords", "Snapshot", "Memo", "build", "update", "service_records", "ptr_records", "SCHEMA_VERSION",
    "Rejected", "service_problem", "slice_problem",
]

SCHEMA_VERSION = "1.1.0"
VERSION_TTL = 28800
RRsets = dict[str, dict[int, tuple[RR, ...]]]
PROTOCOLS = ("TCP", "UDP", "SCTP")
Problem = tuple[str, str, str]
"""(kind, object key, reason): kind is service, endpointslice or namespace; reason a short word."""


class Rejected(ValueError):
    """A Service that must not be served; ``reason`` is a short word (a metric-safe label value)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"service {key[:120]!r}: {reason}")
        self.key, self.reason = key, reason


def _port_name(name: object) -> bool:
    return name == "" or names.dns_label(name)


def _port_number(port: object) -> bool:
    return type(port) is int and 0 < port <= 65535


def service_problem(svc: Service) -> str | None:
    """Why ``svc`` must not be served (a value kube-apiserver refuses), or None when it may be."""
    if not names.dns_label(svc.namespace):
        return "namespace"
    if not names.dns_label(svc.name):
        return "name"
    if svc.type == "ExternalName":
        return None if names.external_name(svc.external_name) is not None else "external-name"
    for ip in svc.cluster_ips:
        if names.go_ip(ip) is None:
            return "cluster-ip"
    for p in svc.ports:
        # Service and EndpointSlice port names are DNS-1123 labels (validateServicePort).
        if not _port_name(p.name):
            return "port-name"
        if p.protocol not in PROTOCOLS:
            return "protocol"
        if not _port_number(p.port):
            return "port"
    return None


def slice_problem(sl: EndpointSlice) -> str | None:
    """Why the EndpointSlice ``sl`` must not be used (IPv4/IPv6 slices only), or None when it may be."""
    v6 = sl.address_type == "IPv6"
    for ep in sl.endpoints:
        for ip in ep.addresses:
            if names.go_ip(ip) is None or (":" in ip) != v6:
                return "address"
        if ep.hostname and not names.dns_label(ep.hostname):
            return "hostname"
    for p in sl.ports:
        if not _port_name(p.name):
            return "port-name"
        if p.protocol not in PROTOCOLS:
            return "protocol"
        if p.port is not None and not _port_number(p.port):
            return "port"
    return None


@dataclass(frozen=True, slots=True)
class Config:
    zone: str = "cluster.local"
    ttl: int = 30
    dns_service: str = "kube-system/kube-dns"
    """namespace/name of our own Service: its IPs answer ns.dns.<zone>."""


RECOMPUTED_CACHE = 64
_RECOMPUTED: dict[int, tuple["ServiceRecords", RRsets]] = {}
"""id -> (released ServiceRecords, its recomputed record sets); oldest first, at most RECOMPUTED_CACHE."""


class ServiceRecords:
    """Records one Service owns: names at and below ``<svc>.<ns>.svc.<zone>`` plus its PTR targets.

    ``rrsets`` are kept until :meth:`release` (answers.compile_table calls it once the records are
    wire bytes); after that they are recomputed from the Service and its slices each time they are
    asked for (slow path only: ANY, ExternalName chasing), so a compiled zone does not hold every
    record twice. Equality compares the records, released or not.
    """

    __slots__ = ("service", "slices", "cfg", "ptrs", "cname_target", "_rrsets")

    def __init__(self, service: Service, slices: tuple[EndpointSlice, ...], cfg: Config, rrsets: RRsets,
                 ptrs: tuple[tuple[str, str], ...] = (), cname_target: str = "") -> None:
        self.service, self.slices, self.cfg = service, slices, cfg
        self._rrsets: RRsets | None = rrsets
        self.ptrs = ptrs
        """(reverse owner name, target name) pairs."""
        self.cname_target = cname_target
        """The ExternalName target, when the service is one."""

    @property
    def rrsets(self) -> RRsets:
        """Owner name -> type -> records (``{}`` types for an empty non-terminal).

        Once released, recomputed and kept in a small bounded cache (``RECOMPUTED_CACHE`` services),
        so a stream of ANY queries for one big headless service costs one recomputation, not one each."""
        if self._rrsets is not None:
            return self._rrsets
        hit = _RECOMPUTED.get(id(self))
        if hit is not None and hit[0] is self:
            return hit[1]
        again = service_records(self.service, self.slices, self.cfg)
        rrsets = again._rrsets if again is not None and again._rrsets is not None else {}
        if len(_RECOMPUTED) >= RECOMPUTED_CACHE:
            _RECOMPUTED.pop(next(iter(_RECOMPUTED)))
        _RECOMPUTED[id(self)] = (self, rrsets)
        return rrsets

    @property
    def released(self) -> bool:
        return self._rrsets is None

    def release(self) -> None:
        """Drop the record sets (they stay available, recomputed on demand)."""
        self._rrsets = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServiceRecords):
            return NotImplemented
        return (self.ptrs, self.cname_target, self.rrsets) == (other.ptrs, other.cname_target, other.rrsets)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ServiceRecords({self.service.key!r}, {len(self.ptrs)} ptrs{', released' if self.released else ''})"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the zone. ``services`` maps 'ns/name' to that service's records;
    ``shared`` holds names no single service owns (apex, ENTs, namespaces, PTRs)."""

    config: Config
    serial: int
    synced: bool
    namespaces: frozenset[str]
    services: Mapping[str, ServiceRecords]
    shared: RRsets
    soa: RR
    ptr: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Reverse owner name -> its PTR target names, sorted (merged over services; records are made on demand)."""
    generation: int = 0
    """Counts builds made with the same Memo; ``changed``/``changed_ptrs`` are relative to generation - 1."""
    changed: frozenset[str] | None = None
    """Service keys that may differ from the previous generation (None: unknown, compare everything)."""
    changed_ptrs: frozenset[str] | None = None
    rejected: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(kind, object key) -> reason, for every object left out of this zone (see the module docstring)."""

    def lookup(self, name: str) -> dict[int, tuple[RR, ...]] | None:
        """The records at ``name`` by type ({} for an empty non-terminal), or None if it does not exist."""
        if name in self.shared:
            return self.shared[name]
        targets = self.ptr.get(name)
        if targets is not None:
            return {PTR: ptr_records(name, targets, self.config.ttl)}
        rel = names.relative_labels(name, self.config.zone)
        if rel is not None and len(rel) >= 3 and rel[-1] == "svc":
            recs = self.services.get(f"{rel[-2]}/{rel[-3]}")
            if recs is not None:
                return recs.rrsets.get(name)
        return None


@dataclass
class Memo:
    """State carried between builds: per-service results (reused when the inputs are the same
    objects) and the merged PTR index, patched only for services that changed."""

    entries: dict[str, tuple[Service, tuple[EndpointSlice, ...], ServiceRecords]] = field(default_factory=dict)
    ptr_owners: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Reverse owner name -> sorted target names; a tuple is replaced, never mutated, when it changes."""
    per_service: dict[str, ServiceRecords] = field(default_factory=dict)
    cfg: Config | None = None
    generation: int = 0
    last_dirty_ptrs: set[str] = field(default_factory=set)
    problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    """service key -> what was left out while building it (the Service itself, or some of its slices)."""


def _ready(svc: Service, ep) -> bool:
    return ep.conditions.ready or svc.publish_not_ready_addresses


def _add(rrsets: RRsets, name: str, rtype: int | None = None, rrs: Iterable[RR] = ()) -> None:
    types = rrsets.setdefault(name, {})
    if rtype is not None:
        merged = types.get(rtype, ()) + tuple(rr for rr in rrs if rr not in types.get(rtype, ()))
        if merged:
            types[rtype] = merged


def _srv_set(name: str, ttl: int, items: list[tuple[int, str]]) -> tuple[RR, ...]:
    """``items``: one (port, target) per address and port, as CoreDNS's kubernetes plugin makes its
    services; the weight is CoreDNS's floor(100 / (100 n) * 100) in float64, at least 1
    (plugin/backend_lookup.go SRV), and records are deduplicated by (port, target) as there."""
    unique = sorted(set(items), key=lambda t: (t[1], t[0]))
    weight = max(1, math.floor(100.0 / (100 * len(items)) * 100)) if items else 0
    return tuple(RR(name, SRV, ttl, (0, weight, port, target)) for port, target in unique)


def service_records(svc: Service, slices: tuple[EndpointSlice, ...], cfg: Config) -> ServiceRecords | None:
    """The records of one Service, or None when its name must not exist (headless, nothing ready).

    Raises :class:`Rejected` when the Service has a :func:`service_problem`; slices with a
    :func:`slice_problem` are left out (``slices`` is kept whole in the result)."""
    return _checked_records(svc, slices, cfg)[0]


def _checked_records(svc: Service, slices: tuple[EndpointSlice, ...], cfg: Config) -> tuple[ServiceRecords | None, tuple[Problem, ...]]:
    reason = service_problem(svc)
    if reason is not None:
        raise Rejected(svc.key, reason)
    usable: list[EndpointSlice] = []
    problems: list[Problem] = []
    if svc.type != "ExternalName":
        for sl in slices:
            if sl.address_type not in ("IPv4", "IPv6"):
                continue
            why = slice_problem(sl)
            if why is None:
                usable.append(sl)
            else:
                problems.append(("endpointslice", sl.key, why))
    return _records(svc, slices, tuple(usable), cfg), tuple(problems)


def _records(svc: Service, slices: tuple[EndpointSlice, ...], usable: tuple[EndpointSlice, ...], cfg: Config) -> ServiceRecords | None:
    ttl = cfg.ttl
    base = names.join(svc.name, svc.namespace, "svc", cfg.zone)
    rrsets: RRsets = {}
    ptrs: list[tuple[str, str]] = []
    if svc.type == "ExternalName":
        target = names.external_name(svc.external_name) or ""
        rrsets[base] = {CNAME: (RR(base, CNAME, ttl, target),)}
        return ServiceRecords(svc, slices, cfg, rrsets, (), target)

    # Ready endpoints: (hostname, ip) pairs, deduplicated across slices; ports per slice.
    endpoints: dict[str, list[str]] = defaultdict(list)  # hostname -> ips
    ep_ports: list[tuple[str, str, int, str]] = []  # (port name, proto, number, hostname)
    for sl in usable:
        hosts_here: list[str] = []
        for ep in sl.endpoints:
            if not _ready(svc, ep):
                continue
            for ip in ep.addresses:
                host = ep.hostname or names.dashed_ip(ip)
                if ip not in endpoints[host]:
                    endpoints[host].append(ip)
                hosts_here.append(host)
        for p in sl.ports:
            if p.port is not None:
                ep_ports.extend((p.name, p.protocol.lower(), p.port, h) for h in hosts_here)

    for host, ips in endpoints.items():
        ep_name = names.join(host, base)
        for ip in ips:
            rtype = AAAA if ":" in ip else A
            _add(rrsets, ep_name, rtype, [RR(ep_name, rtype, ttl, ip)])
            ptrs.append((names.reverse_name(ip), ep_name))

    port_sets: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    bare: list[tuple[int, str]] = []
    if svc.headless:
        if not endpoints:
            return None
        all_ips = list(dict.fromkeys(ip for ips in endpoints.values() for ip in ips))
        _add(rrsets, base)
        for rtype in (A, AAAA):
            rrs = tuple(RR(base, rtype, ttl, ip) for ip in all_ips if (":" in ip) == (rtype == AAAA))
            if rrs:
                rrsets[base][rtype] = rrs
        for pname, proto, number, host in ep_ports:
            target = names.join(host, base)
            bare.append((number, target))
            if pname:
                port_sets[(pname, proto)].append((number, target))
    else:
        _add(rrsets, base)
        for ip in svc.cluster_ips:
            rtype = AAAA if ":" in ip else A
            _add(rrsets, base, rtype, [RR(base, rtype, ttl, ip)])
            ptrs.append((names.reverse_name(ip), base))
        per_ip = max(1, len(svc.cluster_ips))  # CoreDNS: one service per cluster IP and port
        for p in svc.ports:
            bare.extend([(p.port, base)] * per_ip)
            if p.name:
                port_sets[(p.name, p.protocol.lower())].extend([(p.port, base)] * per_ip)

    if bare:
        rrsets[base][SRV] = _srv_set(base, ttl, bare)
    for (pname, proto), items in port_sets.items():
        proto_name = names.join(f"_{proto}", base)
        port_name = names.join(f"_{pname}", proto_name)
        _add(rrsets, proto_name)
        _add(rrsets, port_name)
        rrsets[port_name][SRV] = _srv_set(port_name, ttl, items)
    return ServiceRecords(svc, slices, cfg, rrsets, tuple(dict.fromkeys(ptrs)))


def build(
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
    namespaces: Iterable[str],
    cfg: Config = Config(),
    *,
    serial: int = 1,
    synced: bool = True,
    memo: Memo | None = None,
) -> Snapshot:
    """A Snapshot of the zone from plain object lists (every service is looked at)."""
    by_service: dict[str, list[EndpointSlice]] = defaultdict(list)
    for sl in slices:
        if sl.service_name:
            by_service[sl.service_key].append(sl)
    return update({s.key: s for s in services}, by_service, namespaces, cfg, serial=serial, synced=synced, memo=memo)


def update(
    services: Mapping[str, Service],
    slices_by_service: Mapping[str, Iterable[EndpointSlice]],
    namespaces: Iterable[str],
    cfg: Config,
    *,
    serial: int,
    synced: bool = True,
    memo: Memo | None = None,
    dirty: Iterable[str] | None = None,
) -> Snapshot:
    """A Snapshot of the zone. With a ``memo`` (updated in place) and ``dirty`` (the service keys whose
    Service or EndpointSlices changed since the previous call with that memo), only those services
    are recomputed; ``dirty=None`` looks at every service (still reusing unchanged results).
    The result is the same as a fresh full build of the same objects."""
    zone, ttl = cfg.zone, cfg.ttl
    if memo is None or memo.cfg != cfg:
        memo = memo if memo is not None else Memo()
        memo.entries, memo.per_service, memo.ptr_owners, memo.problems, memo.cfg = {}, {}, {}, {}, cfg
        dirty = None
    old = memo.entries
    keys = set(services) | set(old) if dirty is None else set(dirty)
    changed: list[tuple[ServiceRecords | None, ServiceRecords | None]] = []
    for key in keys:
        svc = services.get(key)
        prev = old.get(key)
        prev_recs = prev[2] if prev is not None else None
        if svc is None:
            old.pop(key, None)
            memo.per_service.pop(key, None)
            memo.problems.pop(key, None)
            if prev_recs is not None:
                changed.append((prev_recs, None))
            continue
        given = slices_by_service.get(key, ())
        if type(given) is tuple and all(given[i].name < given[i + 1].name for i in range(len(given) - 1)):
            svc_slices = given  # already a name-sorted tuple (ZoneSync's index): share it
        else:
            svc_slices = tuple(sorted(given, key=lambda s: s.name))
        if prev is not None and prev[0] is svc and prev[1] == svc_slices:
            continue
        try:
            recs, problems = _checked_records(svc, svc_slices, cfg)
        except Rejected as e:
            recs, problems = None, (("service", key, e.reason),)
        except Exception:  # noqa: BLE001 - an object nobody foresaw: left out, never the whole zone
            recs, problems = None, (("service", key, "unbuildable"),)
        if problems:
            memo.problems[key] = problems
        else:
            memo.problems.pop(key, None)
        old[key] = (svc, svc_slices, recs)
        if recs is None:
            memo.per_service.pop(key, None)
        else:
            memo.per_service[key] = recs
        if recs is not prev_recs:
            changed.append((prev_recs, recs))
    _patch_ptrs(memo, changed, ttl)
    memo.generation += 1

    dns_recs = memo.per_service.get(cfg.dns_service)
    dns_ips = dns_recs.service.cluster_ips if dns_recs is not None else ()
    rejected: dict[tuple[str, str], str] = {}
    for problems in memo.problems.values():
        for kind, obj_key, reason in problems:
            rejected[(kind, obj_key)] = reason
    ns_set: set[str] = set()
    for ns in namespaces:
        if names.dns_label(ns):
            ns_set.add(ns)
        else:
            rejected[("namespace", ns if isinstance(ns, str) else repr(ns))] = "name"
    # A Service's namespace exists too (a Service with a bad one is already listed as rejected).
    ns_set.update(ns for ns in {getattr(svc, "namespace", None) for svc in services.values()} if names.dns_label(ns))
    ns_host = names.join("ns.dns", zone)
    soa = RR(zone, SOA, min(ttl, 300), (ns_host, names.join("hostmaster", zone), serial, 7200, 1800, 86400, ttl))
    shared: RRsets = {}
    _add(shared, zone, SOA, [soa])
    _add(shared, zone, NS, [RR(zone, NS, ttl, ns_host)])
    _add(shared, names.join("dns", zone))
    _add(shared, ns_host)
    for ip in dns_ips:
        rtype = AAAA if ":" in ip else A
        _add(shared, ns_host, rtype, [RR(ns_host, rtype, ttl, ip)])
    version = names.join("dns-version", zone)
    _add(shared, version, TXT, [RR(version, TXT, VERSION_TTL, (SCHEMA_VERSION,))])
    _add(shared, names.join("svc", zone))
    _add(shared, names.join("pod", zone))
    for ns in ns_set:
        _add(shared, names.join(ns, "svc", zone))
        _add(shared, names.join(ns, "pod", zone))
    return Snapshot(cfg, serial, synced, frozenset(ns_set), dict(memo.per_service), shared, soa, dict(memo.ptr_owners),
                    generation=memo.generation, changed=frozenset(keys) if dirty is not None else None,
                    changed_ptrs=frozenset(memo.last_dirty_ptrs) if dirty is not None else None, rejected=rejected)


def ptr_records(name: str, targets: tuple[str, ...], ttl: int) -> tuple[RR, ...]:
    """The PTR records at ``name`` for its target names."""
    return tuple(RR(name, PTR, ttl, t) for t in targets)


def _patch_ptrs(memo: Memo, changed: list[tuple[ServiceRecords | None, ServiceRecords | None]], ttl: int) -> None:
    """Apply PTR targets removed/added by changed services to the merged reverse index."""
    owners, dirty = memo.ptr_owners, set()
    for before, after in changed:
        for rev, target in before.ptrs if before is not None else ():
            targets = owners.get(rev, ())
            if target in targets:
                rest = tuple(t for t in targets if t != target)
                if rest:
                    owners[rev] = rest
                else:
                    del owners[rev]
            dirty.add(rev)
        for rev, target in after.ptrs if after is not None else ():
            targets = owners.get(rev, ())
            if target not in targets:
                owners[rev] = tuple(sorted((*targets, target)))
            dirty.add(rev)
    memo.last_dirty_ptrs = dirty
