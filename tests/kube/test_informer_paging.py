"""The informer's list read page by page, and its transform, against a scripted client (no server)."""

from __future__ import annotations

import dataclasses

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiError
from podnet.kube.informer import Informer
from podnet.kube.watch import WatchEvent


def raw_svc(name: str, rv: str = "1") -> dict:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": rv,
                         "labels": {"app": name}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}


class PagedClient:
    """Answers list GETs from scripted pages; records every request in ``log``."""

    def __init__(self, attempts: list[list[list[str]]], expire_at: set[tuple[int, int]] = frozenset(), log=None):
        self.attempts = attempts  # attempt -> pages -> names
        self.expire_at = set(expire_at)  # (attempt, page) answered 410 once
        self.log = log if log is not None else []
        self.attempt = 0

    async def request(self, method: str, path: str, *, params=None, **kw):
        params = dict(params or {})
        self.log.append(("GET", path, params))
        cont = params.get("continue", "")
        page = int(cont) if cont else 0
        if (self.attempt, page) in self.expire_at:
            self.expire_at.discard((self.attempt, page))
            self.attempt += 1
            raise ApiError(410, {"reason": "Expired", "message": "continue token expired"})
        pages = self.attempts[self.attempt]
        if "limit" not in params:  # an unpaged list: every page at once
            names = [n for p in pages for n in p]
            return {"metadata": {"resourceVersion": "99"}, "items": [raw_svc(n) for n in names]}
        more = page + 1 < len(pages)
        meta = {"resourceVersion": "99", **({"continue": str(page + 1)} if more else {})}
        return {"metadata": meta, "items": [raw_svc(n) for n in pages[page]]}


def strip(log):
    def transform(obj):
        log.append(("transform", obj.name))
        return dataclasses.replace(obj, uid="", labels=())
    return transform


async def test_each_page_is_converted_before_the_next_is_read():
    log: list = []
    client = PagedClient([[["a", "b"], ["c", "d"], ["e"]]], log=log)
    inf = Informer(client, r.SERVICES, list_limit=2, transform=strip(log))
    await inf._list()
    steps = [("GET", e[2].get("continue", "")) if e[0] == "GET" else e for e in log]
    assert steps == [("GET", ""), ("transform", "a"), ("transform", "b"),
                     ("GET", "1"), ("transform", "c"), ("transform", "d"),
                     ("GET", "2"), ("transform", "e")]
    assert sorted(inf.keys()) == [f"default/{n}" for n in "abcde"]
    assert {(o.uid, o.labels) for o in inf.list()} == {("", ())}
    assert inf.resource_version == "99" and inf.has_synced


async def test_store_is_replaced_only_once_the_last_page_is_in(h):
    client = PagedClient([[["a"], ["b"]]])
    inf = Informer(client, r.SERVICES, list_limit=1)
    rec = h.Recorder()
    inf.add_handler(**rec.handlers())
    await inf._list()
    assert [e[0] for e in rec.events] == ["add", "add", "synced"]


@pytest.mark.parametrize("expire_page", [
    pytest.param(1, id="second-page"),
    pytest.param(2, id="last-page"),
])
async def test_expired_continue_token_restarts_the_list_unpaged(expire_page):
    # The first attempt's pages hold "gone", deleted before the restart: it must not be stored.
    client = PagedClient([[["gone", "a"], ["b"], ["c"]], [["a"], ["b"], ["c", "new"]]], expire_at={(0, expire_page)})
    inf = Informer(client, r.SERVICES, list_limit=2)
    await inf._list()
    assert sorted(inf.keys()) == ["default/a", "default/b", "default/c", "default/new"]
    assert "limit" not in client.log[-1][2] and "continue" not in client.log[-1][2]


async def test_first_page_410_is_an_error_not_a_restart():
    client = PagedClient([[["a"]]], expire_at={(0, 0)})
    inf = Informer(client, r.SERVICES, list_limit=1)
    with pytest.raises(ApiError):
        await inf._list()
    assert not inf.has_synced


async def test_transform_applies_to_watch_events_and_keeps_equality(h):
    log: list = []
    inf = Informer(None, r.SERVICES, transform=strip(log))
    rec = h.Recorder()
    inf.add_handler(**rec.handlers())
    await inf.apply_event(WatchEvent("ADDED", raw_svc("a", rv="2")))
    # A new uid/labels/resourceVersion alone is no change once stripped: no update is delivered.
    changed = raw_svc("a", rv="3")
    changed["metadata"]["uid"], changed["metadata"]["labels"] = "uid-other", {"x": "y"}
    await inf.apply_event(WatchEvent("MODIFIED", changed))
    assert [e[0] for e in rec.events] == ["add"]
    assert inf.get("default/a").uid == ""
    await inf.apply_event(WatchEvent("DELETED", raw_svc("a", rv="4")))
    assert [e[0] for e in rec.events] == ["add", "delete"] and inf.get("default/a") is None
