"""A watch event is encoded once for all watchers, and never served stale."""

from __future__ import annotations

import json

import pytest

from podnet.netlab.apiserver.apiwatch import EventLines


def test_same_event_is_encoded_once_for_every_watcher():
    lines = EventLines()
    obj = {"metadata": {"name": "a", "resourceVersion": "1"}}
    first = lines.line("ADDED", obj)
    assert all(lines.line("ADDED", obj) is first for _ in range(20))
    assert lines.hits == 20
    assert json.loads(first) == {"type": "ADDED", "object": obj}


@pytest.mark.parametrize(("a", "b"), [
    pytest.param(("ADDED", "x"), ("MODIFIED", "x"), id="same-object-other-type"),
    pytest.param(("ADDED", "x"), ("ADDED", "y"), id="equal-content-other-object"),
])
def test_distinct_events_get_their_own_lines(a, b):
    lines = EventLines()
    objs = {"x": {"metadata": {"name": "n"}}, "y": {"metadata": {"name": "n"}}}
    la, lb = lines.line(a[0], objs[a[1]]), lines.line(b[0], objs[b[1]])
    assert json.loads(la)["type"] == a[0] and json.loads(lb)["type"] == b[0]
    assert lines.hits == 0


def test_bounded_and_a_reused_id_is_never_served_stale():
    lines = EventLines(size=2)
    for i in range(100):
        obj = {"metadata": {"name": f"o{i}"}}
        assert json.loads(lines.line("ADDED", obj))["object"]["metadata"]["name"] == f"o{i}"
        del obj  # its id may be reused by the next dict: the identity check must catch that
    assert len(lines._lines) <= 2
