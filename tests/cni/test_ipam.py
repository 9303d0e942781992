"""IPAM: ranges and the allocator over the in-memory fake and the real SQLite store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from podnet.cni.ipam import Allocator, Range
from podnet.cni.ipam_store import SqliteStore
from podnet.cni.testing import MemoryStore
from podnet.cni.types import CniError


def alloc(*cidrs: str, store=None) -> Allocator:
    return Allocator([Range.parse(c) for c in cidrs], store or MemoryStore())


RANGE_CASES = [
    ("v4-24", "10.244.1.0/24", "10.244.1.1", "10.244.1.2", "10.244.1.254"),
    ("v4-30", "10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.2"),
    ("v6-64", "fd00:1::/64", "fd00:1::1", "fd00:1::2", "fd00:1::ffff:ffff:ffff:ffff"),
]


@pytest.mark.parametrize("cidr,gw,first,last", [c[1:] for c in RANGE_CASES], ids=[c[0] for c in RANGE_CASES])
def test_range_skips_network_gateway_broadcast(cidr, gw, first, last):
    r = Range.parse(cidr)
    assert (r.gateway, r.address(r.first), r.address(r.last)) == (gw, first, last)


@pytest.mark.parametrize("cidr,needle", [("10.0.0.0/31", "too small"), ("10.0.0.1/24", "host bits"),
                                          ("nonsense", "nonsense")], ids=["slash31", "host-bits", "garbage"])
def test_bad_ranges_are_config_errors(cidr, needle):
    with pytest.raises(CniError) as e:
        Range.parse(cidr)
    assert e.value.code == 7 and needle in e.value.msg


def test_dual_stack_gets_one_address_per_family():
    a = alloc("10.244.1.0/24", "fd00:1::/64")
    ips = a.allocate("net", "c1", "eth0")
    assert [i.address for i in ips] == ["10.244.1.2/32", "fd00:1::2/128"]
    assert [i.gateway for i in ips] == ["10.244.1.1", "fd00:1::1"]


def test_round_robin_does_not_reuse_a_just_freed_address():
    a = alloc("10.0.0.0/29")  # .2 .. .6
    got = [a.allocate("net", f"c{i}", "eth0")[0].ip for i in range(3)]
    a.release("net", "c0", "eth0")
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert a.allocate("net", "c3", "eth0")[0].ip == "10.0.0.5"


def test_exhausted_range_is_an_error_and_wraps_after_release():
    a = alloc("10.0.0.0/29")
    for i in range(5):
        a.allocate("net", f"c{i}", "eth0")
    with pytest.raises(CniError) as e:
        a.allocate("net", "c9", "eth0")
    assert "no free address" in e.value.msg and "10.0.0.0/29" in e.value.msg
    a.release("net", "c1", "eth0")
    assert a.allocate("net", "c9", "eth0")[0].ip == "10.0.0.3"


def test_never_twice_over_many_allocations_and_releases():
    a = alloc("10.0.0.0/26")
    live: dict[str, str] = {}
    for i in range(500):
        if len(live) >= 50 or i % 3 == 2:
            cid = min(live, key=lambda c: int(c[1:]))
            a.release("net", cid, "eth0")
            live.pop(cid)
        ip = a.allocate("net", f"c{i}", "eth0")[0].ip
        assert ip not in live.values()
        live[f"c{i}"] = ip
    assert sorted(live.values()) == sorted(r.ip for r in a.reservations())


def test_release_is_idempotent_and_readd_returns_same_address():
    a = alloc("10.0.0.0/24")
    first = a.allocate("net", "c1", "eth0")
    assert a.allocate("net", "c1", "eth0") == first
    assert [r.ip for r in a.release("net", "c1", "eth0")] == [first[0].ip]
    assert a.release("net", "c1", "eth0") == []


def test_store_failure_leaves_memory_unchanged():
    store = MemoryStore()
    a = alloc("10.0.0.0/24", store=store)
    store.fail_next = CniError(5, "disk full")
    with pytest.raises(CniError):
        a.allocate("net", "c1", "eth0")
    assert a.reservations() == [] and store.rows == {}
    assert a.allocate("net", "c1", "eth0")[0].ip == "10.0.0.2"


def test_no_pod_cidr_yet():
    with pytest.raises(CniError) as e:
        Allocator([], MemoryStore()).allocate("net", "c1", "eth0")
    assert "no pod CIDR" in e.value.msg


# ------------------------------------------------------------------ SQLite store


def test_sqlite_store_survives_reopen(tmp_path):
    s = SqliteStore.open(tmp_path)
    a = Allocator([Range.parse("10.0.0.0/24")], s)
    a.allocate("net", "c1", "eth0", "/run/netns/x", "ns/p")
    a.allocate("net", "c2", "eth0")
    a.release("net", "c1", "eth0")
    s.close()
    b = Allocator([Range.parse("10.0.0.0/24")], SqliteStore.open(tmp_path))
    assert [(r.ip, r.container_id) for r in b.reservations()] == [("10.0.0.3", "c2")]
    assert b.allocate("net", "c3", "eth0")[0].ip == "10.0.0.4"  # cursor persisted too
    b.store.close()


def test_sqlite_store_is_single_writer(tmp_path):
    s = SqliteStore.open(tmp_path)
    with pytest.raises(CniError) as e:
        SqliteStore.open(tmp_path)
    assert e.value.code == 11 and "locked" in e.value.msg
    s.close()
    SqliteStore.open(tmp_path).close()


CORRUPTIONS = [
    ("garbage", lambda p: p.write_bytes(b"this is not a database at all" * 100)),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:100])),
    ("bad-row", lambda p: _sql(p, "INSERT INTO reservation VALUES ('not-an-ip','n','c','eth0','','')")),
]


def _sql(path, stmt):
    db = sqlite3.connect(path)
    db.execute(stmt)
    db.commit()
    db.close()


@pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_store_is_error_5_and_left_alone(tmp_path, corrupt):
    s = SqliteStore.open(tmp_path)
    Allocator([Range.parse("10.0.0.0/24")], s).allocate("net", "c1", "eth0")
    s.close()
    for extra in ("ipam.db-wal", "ipam.db-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    corrupt(tmp_path / "ipam.db")
    before = (tmp_path / "ipam.db").read_bytes()
    with pytest.raises(CniError) as e:
        Allocator([Range.parse("10.0.0.0/24")], SqliteStore.open(tmp_path))
    assert e.value.code == 5 and "ipam.db" in e.value.msg
    assert (tmp_path / "ipam.db").read_bytes() == before


WRITER = textwrap.dedent("""
    import sys
    from podnet.cni.ipam import Allocator, Range
    from podnet.cni.ipam_store import SqliteStore
    a = Allocator([Range.parse("10.0.0.0/16"), Range.parse("fd00::/64")], SqliteStore.open(sys.argv[1]))
    i = 0
    while True:
        a.allocate("net", f"c{i}", "eth0")
        if i % 4 == 3:
            a.release("net", f"c{i - 2}", "eth0")
        print(i, flush=True)
        i += 1
""")


def test_kill_9_mid_write_leaves_a_consistent_store(tmp_path):
    """A writer killed at an arbitrary moment: every attachment holds both families or none, no duplicates."""
    p = subprocess.Popen([sys.executable, "-P", "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(60):
            assert p.stdout.readline()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    s = SqliteStore.open(tmp_path)
    rows, _ = s.load()
    s.close()
    ips = [r.ip for r in rows]
    assert len(ips) == len(set(ips)) and len(rows) >= 60
    per_att: dict[str, int] = {}
    for r in rows:
        per_att[r.container_id] = per_att.get(r.container_id, 0) + 1
    assert set(per_att.values()) == {2}
