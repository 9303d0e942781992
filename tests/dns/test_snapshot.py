"""The pure record index: what exists, with which records, and incremental rebuilds."""

from __future__ import annotations

import pytest

from podnet.dns import answers, snapshot
from podnet.dns.testing import cluster_objects, eps, svc
from podnet.dns.wire import AAAA, PTR, SRV, A


@pytest.fixture
def snap():
    services, slices, namespaces = cluster_objects()
    return snapshot.build(services, slices, namespaces, serial=7)


@pytest.mark.parametrize(
    "name,exists,types",
    [
        ("web.default.svc.cluster.local", True, {A, SRV}),
        ("_tcp.web.default.svc.cluster.local", True, set()),
        ("_http._tcp.web.default.svc.cluster.local", True, {SRV}),
        ("db.default.svc.cluster.local", True, {A, AAAA, SRV}),
        ("empty-headless.default.svc.cluster.local", False, None),
        ("default.svc.cluster.local", True, set()),
        ("quiet.pod.cluster.local", True, set()),
        ("nope.svc.cluster.local", False, None),
        ("5.0.96.10.in-addr.arpa", True, {PTR}),
        ("dns.cluster.local", True, set()),
    ],
)
def test_lookup(snap, name, exists, types):
    got = snap.lookup(name)
    assert (got is not None) == exists
    if exists:
        assert set(got) == types


def test_ptr_shared_by_two_services():
    services = [svc("a", "one", clusterIP="10.96.0.1"), svc("a", "two", clusterIP="10.96.0.2")]
    slices = [eps("a", "one", "one-x", "IPv4", [{"addresses": ["10.1.0.1"]}]),
              eps("a", "two", "two-x", "IPv4", [{"addresses": ["10.1.0.1"]}])]
    s = snapshot.build(services, slices, ["a"])
    targets = sorted(rr.rdata for rr in s.lookup("1.0.1.10.in-addr.arpa")[PTR])
    assert targets == ["10-1-0-1.one.a.svc.cluster.local", "10-1-0-1.two.a.svc.cluster.local"]


def test_memo_reuses_unchanged_services():
    services, slices, namespaces = cluster_objects()
    memo, cmemo = snapshot.Memo(), answers.CompileMemo()
    s1 = snapshot.build(services, slices, namespaces, memo=memo)
    t1 = answers.compile_table(s1, cmemo)
    changed = [svc("default", "web", clusterIP="10.96.0.99")] + services[1:]
    s2 = snapshot.build(changed, slices, namespaces, memo=memo, serial=2)
    t2 = answers.compile_table(s2, cmemo)
    assert s2.services["default/db"] is s1.services["default/db"]
    assert s2.services["default/web"] is not s1.services["default/web"]
    key = b"\x02db\x07default\x03svc\x07cluster\x05local\x00\x00\x01"
    assert t2.hot[key] is t1.hot[key]
    web = b"\x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01"
    assert t2.hot[web] is not t1.hot[web]
    # And the memoised result equals a fresh build.
    fresh = answers.compile_table(snapshot.build(changed, slices, namespaces, serial=2))
    assert {k: (v.body, v.hdr) for k, v in fresh.hot.items()} == {k: (v.body, v.hdr) for k, v in t2.hot.items()}


def test_ttl_and_soa(snap):
    soa = snap.soa
    assert soa.rdata[2] == 7 and soa.rdata[-1] == 30 and soa.ttl == 30
    s = snapshot.build([], [], [], snapshot.Config(ttl=600))
    assert s.soa.ttl == 300 and s.soa.rdata[-1] == 600


def _table_view(t):
    return {k: (v.body, v.hdr) for k, v in t.hot.items()}, set(t.exists)


@pytest.mark.parametrize("in_place", [False, True], ids=["copies", "in-place"])
def test_incremental_updates_equal_fresh_builds(in_place):
    """A seeded random sequence of service/slice changes, applied with dirty keys, always gives the
    same table as a fresh full build of the same objects."""
    import random

    rng = random.Random(5)
    cfg = snapshot.Config()
    services: dict = {}
    slices: dict = {}
    memo, cmemo = snapshot.Memo(), answers.CompileMemo(in_place=in_place)
    for step in range(60):
        dirty = set()
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(12)
            key = f"ns{i % 3}/s{i}"
            op = rng.random()
            if op < 0.35:
                headless = rng.random() < 0.4
                services[key] = svc(f"ns{i % 3}", f"s{i}", clusterIP="None" if headless else f"10.96.0.{i + 1}",
                                    ports=[{"name": "p", "port": 80 + rng.randrange(3)}])
            elif op < 0.5:
                services.pop(key, None)
            elif op < 0.85:
                ips = [{"addresses": [f"10.1.{rng.randrange(3)}.{rng.randrange(1, 5)}"], "conditions": {"ready": rng.random() < 0.8}}
                       for _ in range(rng.randint(0, 3))]
                slices[key] = eps(f"ns{i % 3}", f"s{i}", f"s{i}-a", "IPv4", ips, [{"name": "p", "port": 8080}])
            else:
                slices.pop(key, None)
            dirty.add(key)
        by_service = {k: [v] for k, v in slices.items()}
        snap = snapshot.update(services, by_service, ["ns0", "ns1", "ns2"], cfg, serial=step, memo=memo,
                               dirty=dirty if step else None)
        got = answers.compile_table(snap, cmemo)
        fresh = answers.compile_table(snapshot.build(services.values(), slices.values(), ["ns0", "ns1", "ns2"], cfg, serial=step))
        assert _table_view(got) == _table_view(fresh), step


def test_compiled_records_are_released_and_recomputed_equal():
    """compile_table drops each service's record sets (wire bytes are what is served); asking for them
    again gives equal records, so slow-path lookups (ANY, ExternalName chasing) still see them."""
    services, slices, namespaces = cluster_objects()
    snap = snapshot.build(services, slices, namespaces, serial=7)
    before = {key: {n: dict(t) for n, t in recs.rrsets.items()} for key, recs in snap.services.items()}
    lookups = {n: snap.lookup(n) for recs in snap.services.values() for n in recs.rrsets}
    answers.compile_table(snap)
    assert all(recs.released for recs in snap.services.values())
    assert {key: recs.rrsets for key, recs in snap.services.items()} == before
    assert {n: snap.lookup(n) for n in lookups} == lookups


def _wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


@pytest.mark.parametrize(
    "name,exists",
    [
        ("web.default.svc.cluster.local", True),  # A + SRV entries
        ("_http._tcp.web.default.svc.cluster.local", True),  # SRV only
        ("_tcp.web.default.svc.cluster.local", True),  # empty non-terminal
        ("default.svc.cluster.local", True),  # namespace ENT (shared)
        ("cluster.local", True),  # apex: SOA + NS
        ("5.0.96.10.in-addr.arpa", True),  # PTR only
        ("ext.default.svc.cluster.local", True),  # CNAME only
        ("empty-headless.default.svc.cluster.local", False),
        ("nope.default.svc.cluster.local", False),
        ("0.96.10.in-addr.arpa", False),
    ],
)
def test_table_names_exist_without_storing_record_owners(table, name, exists):
    assert table.has_name(_wire(name)) == exists
    assert (_wire(name) in table.exists) == exists
    if exists and name.count(".") > 3 and not name.startswith("_tcp.") and name != "default.svc.cluster.local":
        assert _wire(name) not in table.ents  # owners of records are found through their entries
