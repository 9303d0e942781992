"""Informer store semantics driven directly with lists and events (no server)."""

from __future__ import annotations

import pytest

from podnet.kube import resources as r
from podnet.kube.informer import Informer
from podnet.kube.watch import WatchEvent, decode_event


def raw_svc(name, port=80, rv="1", ns="default", labels=None):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": labels or {}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": port}]}}


def make(h):
    inf = Informer(client=None, resource=r.SERVICES)  # the store side needs no client
    rec = h.Recorder()
    inf.add_handler(**rec.handlers())
    return inf, rec


async def test_relist_diff(h):
    inf, rec = make(h)
    await inf.replace([raw_svc("a"), raw_svc("b"), raw_svc("c")], "10")
    rec.events.clear()
    await inf.replace([raw_svc("a", rv="11"), raw_svc("b", port=81, rv="12"), raw_svc("d", rv="13")], "13")
    assert [(e[0], e[1]) for e in rec.events] == [("delete", "default/c"), ("update", "default/b"),
                                                  ("add", "default/d")]
    assert inf.resource_version == "13" and inf.relists == 2
    assert [e[0] for e in rec.events].count("synced") == 0  # synced fired once, at the first list


async def test_large_replace_yields_to_the_loop(h):
    """A big list must not hold the event loop for its whole length: a ticking task
    runs between chunks, and the result is the same as for a small list."""
    import asyncio
    from podnet.kube.informer import REPLACE_CHUNK

    inf, rec = make(h)
    n = REPLACE_CHUNK * 8
    ticks = 0
    done = False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    start = ticks
    await inf.replace([raw_svc(f"s{i}") for i in range(n)], "5")
    done = True
    await task
    assert ticks - start >= 2 * 8 - 1  # one yield per chunk while converting, one per chunk while delivering
    assert len(inf) == n and [e[0] for e in rec.events].count("add") == n


@pytest.mark.parametrize(
    "events, kinds",
    [
        pytest.param([("ADDED", raw_svc("a"))], ["add"], id="add"),
        pytest.param([("ADDED", raw_svc("a")), ("ADDED", raw_svc("a", rv="2"))], ["add"], id="duplicate-add-dropped"),
        pytest.param([("ADDED", raw_svc("a")), ("MODIFIED", raw_svc("a", port=81))], ["add", "update"], id="update"),
        pytest.param([("MODIFIED", raw_svc("a"))], ["add"], id="modified-unknown-is-add"),
        pytest.param([("ADDED", raw_svc("a")), ("MODIFIED", raw_svc("a", rv="9"))], ["add"], id="noop-update"),
        pytest.param([("ADDED", raw_svc("a")), ("DELETED", raw_svc("a"))], ["add", "delete"], id="delete"),
        pytest.param([("DELETED", raw_svc("a"))], [], id="delete-unknown-ignored"),
        pytest.param([("ADDED", raw_svc("a")), ("MODIFIED", raw_svc("a", port=0))], ["add", "delete"],
                     id="turned-invalid-is-delete"),
        pytest.param([("ADDED", raw_svc("a", port=70000))], [], id="invalid-add-skipped"),
        pytest.param([("BOOKMARK", {"metadata": {"resourceVersion": "50"}})], [], id="bookmark"),
    ],
)
async def test_event_semantics(h, events, kinds):
    inf, rec = make(h)
    await inf.replace([], "1")
    rec.events.clear()
    for t, obj in events:
        await inf.apply_event(WatchEvent(t, obj))
    assert [e[0] for e in rec.events] == kinds
    rec.replay()


async def test_events_advance_resource_version(h):
    inf, _ = make(h)
    await inf.replace([], "1")
    await inf.apply_event(WatchEvent("ADDED", raw_svc("a", rv="5")))
    assert inf.resource_version == "5"
    await inf.apply_event(WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "9"}}))
    assert inf.resource_version == "9"


async def test_async_handlers_are_awaited_in_order(h):
    inf = Informer(client=None, resource=r.SERVICES)
    seen = []

    async def on_add(obj):
        seen.append(obj.name)

    inf.add_handler(on_add=on_add)
    await inf.replace([raw_svc("a"), raw_svc("b")], "2")
    assert seen == ["a", "b"]


@pytest.mark.parametrize(
    "line, ok",
    [
        pytest.param(b'{"type":"ADDED","object":{"metadata":{}}}', True, id="good"),
        pytest.param(b"not json", False, id="not-json"),
        pytest.param(b'{"type":"WHAT","object":{}}', False, id="unknown-type"),
        pytest.param(b'{"type":"ADDED","object":[]}', False, id="object-not-a-map"),
        pytest.param(b"[]", False, id="not-an-object"),
    ],
)
def test_decode_event(line, ok):
    assert (decode_event(line) is not None) is ok
