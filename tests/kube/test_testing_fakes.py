"""podnet.kube.testing: the one FakeInformer and FakeClock keep the real informer's handler guarantees
and both clock shapes podnet injects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from podnet.kube.testing import FakeClock, FakeInformer


@dataclass(frozen=True)
class Obj:
    key: str
    v: int = 0


def recorder(inf: FakeInformer) -> list[tuple]:
    seen: list[tuple] = []
    inf.add_handler(on_add=lambda o: seen.append(("add", o.key, o.v)),
                    on_update=lambda old, new: seen.append(("update", new.key, old.v, new.v)),
                    on_delete=lambda o: seen.append(("delete", o.key, o.v)),
                    on_synced=lambda: seen.append(("synced",)))
    return seen


CASES = [
    pytest.param((), lambda i: (i.set(Obj("a")), i.synced()), [("add", "a", 0), ("synced",)],
                 id="set-before-sync-is-delivered-at-once"),
    pytest.param((Obj("a"), Obj("b")), lambda i: i.synced(), [("add", "a", 0), ("add", "b", 0), ("synced",)],
                 id="constructor-objects-are-the-first-list"),
    pytest.param((Obj("a"),), lambda i: (i.set(Obj("a", 2)), i.synced()), [("add", "a", 2), ("synced",)],
                 id="first-list-delivers-current-values"),
    pytest.param((Obj("a"),), lambda i: (i.delete("a"), i.synced()), [("synced",)],
                 id="deleted-before-sync-never-seen"),
    pytest.param((Obj("a"),), lambda i: (i.synced(), i.set(Obj("a"))), [("add", "a", 0), ("synced",)],
                 id="no-op-update-is-dropped"),
    pytest.param((Obj("a"),), lambda i: (i.synced(), i.set(Obj("a", 1)), i.delete("a"), i.delete("a")),
                 [("add", "a", 0), ("synced",), ("update", "a", 0, 1), ("delete", "a", 1)],
                 id="update-then-delete-gets-last-value"),
    pytest.param((), lambda i: (i.synced(), i.synced()), [("synced",)], id="on-synced-fires-once"),
]


@pytest.mark.parametrize("objects,drive,want", CASES)
def test_informer_events(objects, drive, want):
    inf = FakeInformer(objects)
    seen = recorder(inf)
    drive(inf)
    assert seen == want


def test_late_handler_gets_store_replayed_then_synced():
    inf = FakeInformer([Obj("a", 1)])
    inf.synced()
    inf.set(Obj("b", 2))
    assert recorder(inf) == [("add", "a", 1), ("add", "b", 2), ("synced",)]
    assert (inf.has_synced, sorted(inf.keys()), len(inf), inf.get("b")) == (True, ["a", "b"], 2, Obj("b", 2))


async def test_wait_synced_returns_once_synced_and_awaitable_handlers_run():
    inf = FakeInformer()
    done: list[str] = []

    async def on_add(o):
        done.append(o.key)

    inf.add_handler(on_add=on_add)
    waiter = asyncio.ensure_future(inf.wait_synced())
    await asyncio.sleep(0)
    assert not waiter.done() and not inf.has_synced
    inf.set(Obj("x"))
    inf.synced()
    await asyncio.wait_for(waiter, 5)
    await asyncio.sleep(0)
    assert done == ["x"]


async def test_clock_shapes():
    clock = FakeClock(10.0)
    assert (clock(), clock.now()) == (10.0, 10.0)
    clock.advance(2.5)
    await clock.sleep(1.5)
    assert (clock(), clock.now(), clock.sleeps) == (14.0, 14.0, [1.5])
