"""The lab kubelet's Events: the object it posts and the per-pod rate limit (client-go's spam filter)."""

from __future__ import annotations

import asyncio

import pytest

from podnet.netlab.node import events

POD = {"namespace": "ns", "name": "web", "uid": "u1"}


@pytest.mark.parametrize("container, init, want", [
    pytest.param("main", False, "spec.containers{main}", id="container"),
    pytest.param("setup", True, "spec.initContainers{setup}", id="init-container"),
])
def test_field_path(container, init, want):
    assert events.field_path(container, init) == want


def test_event_object():
    e = events.event(POD, "n1", "BackOff", "Back-off restarting failed container main in pod web_ns(u1)",
                     type_="Warning", path="spec.containers{main}", now=0)
    assert e["metadata"]["namespace"] == "ns" and e["metadata"]["name"].startswith("web.")
    assert e["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "ns", "name": "web", "uid": "u1",
                                   "fieldPath": "spec.containers{main}"}
    assert (e["reason"], e["type"], e["count"]) == ("BackOff", "Warning", 1)
    assert e["source"] == {"component": "kubelet", "host": "n1"}
    assert e["firstTimestamp"] == e["lastTimestamp"] == "1970-01-01T00:00:00Z"


async def test_recorder_posts_within_budget_per_pod_and_refills():
    posted = []
    now = [0.0]

    async def post(body):
        posted.append((body["involvedObject"]["uid"], body["reason"]))

    rec = events.Recorder(post, "n1", burst=3, qps=1.0, clock=lambda: now[0])
    for i in range(5):
        rec.record(POD, f"R{i}", "m")
    rec.record({**POD, "uid": "u2"}, "Other", "m")  # another pod has its own budget
    await rec.drain()
    assert posted == [("u1", "R0"), ("u1", "R1"), ("u1", "R2"), ("u2", "Other")]
    assert rec.dropped == 2
    now[0] = 1.0  # one token back
    rec.record(POD, "Later", "m")
    rec.record(POD, "TooSoon", "m")
    await rec.drain()
    assert posted[-1] == ("u1", "Later") and rec.dropped == 3


async def test_recorder_survives_a_failing_api():
    async def post(body):
        raise ConnectionError("api down")

    rec = events.Recorder(post, "n1")
    rec.record(POD, "Started", "Started container main")
    await rec.drain()
    assert rec.dropped == 0 and not rec._pending


async def test_recorder_bounds_posts_in_flight():
    gate = asyncio.Event()

    async def post(body):
        await gate.wait()

    rec = events.Recorder(post, "n1", max_pending=2)
    for i in range(4):
        rec.record({**POD, "uid": f"u{i}"}, "Started", "m")
    assert len(rec._pending) == 2 and rec.dropped == 2
    gate.set()
    await rec.drain()
