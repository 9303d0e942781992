"""The informer against the real lab API server over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from podnet.kube import resources as r
from podnet.kube.backoff import Backoff
from podnet.kube.client import ApiClient
from podnet.kube.informer import Informer
from podnet.netlab.apiserver.server import LabApiServer

FAST = Backoff(initial=0.02, factor=2.0, maximum=0.2, jitter=0.5)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _truth(api: LabApiServer, plural: str = "services") -> dict:
    res = r.BY_PLURAL[plural]
    objs = [r.convert(res, o) for o in api.store.items(plural)]
    return {o.key: o for o in objs if o is not None}


async def test_list_then_watch_add_update_delete(lab_api, client, h):
    for name in ("a", "b", "c"):
        await client.create(r.SERVICES, h.svc(name), namespace="default")
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.wait_synced(), 10)
        assert [e[0] for e in rec.events] == ["add", "add", "add", "synced"]
        assert sorted(inf.keys()) == ["default/a", "default/b", "default/c"]

        await client.create(r.SERVICES, h.svc("d"), namespace="default")
        await client.patch(r.SERVICES, "a", {"spec": {"ports": [{"name": "http", "port": 81, "targetPort": 8080}]}},
                           namespace="default")
        await client.delete(r.SERVICES, "b", namespace="default")
        await h.wait_for(lambda: inf.get("default/b") is None and inf.get("default/d") is not None
                         and inf.get("default/a").ports[0].port == 81, what="events")
        assert rec.kinds("default/d") == ["add"]
        assert rec.kinds("default/a") == ["add", "update"]
        assert rec.kinds("default/b") == ["add", "delete"]
        assert rec.replay() == _truth(lab_api) == {o.key: o for o in inf.list()}
    finally:
        await _stop(task)


async def test_noop_updates_are_dropped(lab_api, client, h):
    await client.create(r.SERVICES, h.svc("a"), namespace="default")
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced()
        # An annotation is not part of the frozen Service: a new resourceVersion, same value.
        out = await client.patch(r.SERVICES, "a", {"metadata": {"annotations": {"x": "1"}}}, namespace="default")
        await h.wait_for(lambda: inf.resource_version == out["metadata"]["resourceVersion"], what="annotation event")
        assert rec.kinds("default/a") == ["add"]
        out = await client.patch(r.SERVICES, "a", {"metadata": {"labels": {"tier": "web"}}}, namespace="default")
        await h.wait_for(lambda: inf.resource_version == out["metadata"]["resourceVersion"], what="label event")
        assert rec.kinds("default/a") == ["add", "update"]
        assert rec.events[-1][3].labels == (("tier", "web"),)
    finally:
        await _stop(task)


async def test_synced_fires_once_after_the_complete_paged_list(lab_api, client, h):
    for i in range(7):
        await client.create(r.SERVICES, h.svc(f"s{i}"), namespace="default")
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES, list_limit=2)  # four pages
    inf.add_handler(**rec.handlers())
    assert not inf.has_synced
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced()
        assert [e[0] for e in rec.events] == ["add"] * 7 + ["synced"]
        await client.create(r.SERVICES, h.svc("late"), namespace="default")
        await h.wait_for(lambda: inf.get("default/late") is not None)
        assert [e[0] for e in rec.events].count("synced") == 1
    finally:
        await _stop(task)


async def test_late_handler_gets_the_store_replayed(lab_api, client, h):
    await client.create(r.SERVICES, h.svc("a"), namespace="default")
    inf = Informer(client, r.SERVICES)
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced()
        rec = h.Recorder()
        inf.add_handler(**rec.handlers())
        assert [e[:2] for e in rec.events] == [("add", "default/a"), ("synced",)]
    finally:
        await _stop(task)


async def test_handler_exception_does_not_stop_the_informer(lab_api, client, h):
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES)

    def boom(obj):
        raise RuntimeError("handler bug")

    inf.add_handler(on_add=boom)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced()
        await client.create(r.SERVICES, h.svc("a"), namespace="default")
        await client.create(r.SERVICES, h.svc("b"), namespace="default")
        await h.wait_for(lambda: len(inf) == 2)
        assert rec.kinds("default/a") == ["add"] and rec.kinds("default/b") == ["add"]
        assert not task.done()
    finally:
        await _stop(task)


async def test_invalid_object_is_skipped_and_the_stream_goes_on(lab_api, client, h):
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    before = r.REJECTED.labels("services")._value.get()
    try:
        await inf.wait_synced()
        await client.create(r.SERVICES, h.svc("ok"), namespace="default")
        # Written behind the registry's back: an object a real server might hold but podnet must refuse.
        lab_api.store.create("services", {"metadata": {"name": "evil", "namespace": "default"},
                                          "spec": {"clusterIP": "10.0.0.1 -j ACCEPT", "ports": [{"port": 80}]}})
        await client.create(r.SERVICES, h.svc("after"), namespace="default")
        await h.wait_for(lambda: inf.get("default/after") is not None)
        assert inf.get("default/evil") is None
        assert r.REJECTED.labels("services")._value.get() == before + 1
        # A stored object that turns invalid is seen as deleted.
        ok = lab_api.store.get("services", "default", "ok")
        lab_api.store.update("services", {**ok, "spec": {**ok["spec"], "ports": [{"port": 70000}]}})
        await h.wait_for(lambda: inf.get("default/ok") is None)
        assert rec.kinds("default/ok") == ["add", "delete"]
    finally:
        await _stop(task)


async def test_bookmarks_advance_the_resume_version(lab_api, client, h):
    inf = Informer(client, r.SERVICES)
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced()
        await client.create(r.NODES, {"metadata": {"name": "n1"}})  # another resource: no service event
        target = str(lab_api.store.rv)
        await h.wait_for(lambda: inf.resource_version == target, what="a bookmark")
        assert len(inf) == 0
    finally:
        await _stop(task)


async def test_relist_after_410_delivers_exact_differences(h):
    async with LabApiServer(history=3, bookmark_interval=30) as api:
        async with h.FlakyClient.from_url(api.url) as client:
            for name in ("keep", "change", "drop"):
                await client.create(r.SERVICES, h.svc(name), namespace="default")
            rec = h.Recorder()
            inf = Informer(client, r.SERVICES, backoff=FAST)
            inf.add_handler(**rec.handlers())
            task = asyncio.create_task(inf.run())
            try:
                await inf.wait_synced()
                await h.wait_for(lambda: len(client.watch_rvs) == 1, what="watch")
                await client.cut(stay_down=True)
                admin = ApiClient.from_url(api.url)
                async with admin:
                    await admin.create(r.SERVICES, h.svc("new"), namespace="default")
                    await admin.patch(r.SERVICES, "change", {"metadata": {"labels": {"v": "2"}}}, namespace="default")
                    await admin.delete(r.SERVICES, "drop", namespace="default")
                    for i in range(5):  # push the informer's version out of the 3-event window
                        await admin.create(r.NODES, {"metadata": {"name": f"n{i}"}})
                        await admin.patch(r.SERVICES, "keep", {"metadata": {"annotations": {"i": str(i)}}},
                                          namespace="default")
                assert api.store.compacted_rv > int(inf.resource_version)
                client.down = False
                await h.wait_for(lambda: inf.relists == 2, what="relist after 410")
                await h.wait_for(lambda: inf.get("default/new") is not None)
                assert rec.kinds("default/new") == ["add"]
                assert rec.kinds("default/change") == ["add", "update"]
                assert rec.kinds("default/drop") == ["add", "delete"]
                assert rec.kinds("default/keep") == ["add"]  # annotations only: nothing to report
                assert rec.replay() == _truth(api) == {o.key: o for o in inf.list()}
                assert [e[0] for e in rec.events].count("synced") == 1
            finally:
                await _stop(task)


async def test_error_event_410_in_the_stream_relists(h):
    """The 410 arrives as an ERROR event inside a 200 stream (how kube-apiserver sends it)."""
    async with LabApiServer(history=2) as api, ApiClient.from_url(api.url) as client:
        for name in ("a", "b", "c", "d"):
            await client.create(r.SERVICES, h.svc(name), namespace="default")
        inf = Informer(client, r.SERVICES, backoff=FAST)
        await inf.replace([], "1")  # pretend we listed long ago at version 1: now compacted
        rec = h.Recorder()
        inf.add_handler(**rec.handlers())
        need_list, outcome = await inf.step(need_list=False)
        assert (need_list, outcome) == (True, "expired")
        need_list, outcome = await asyncio.wait_for(_step_until_watch(inf), 10)
        assert sorted(inf.keys()) == ["default/a", "default/b", "default/c", "default/d"]


async def _step_until_watch(inf: Informer):
    # A list followed by a watch that we cut short with a tiny server-side timeout.
    inf._min_watch_timeout = 1
    return await inf.step(need_list=True)


async def test_server_restart_with_state_file_loses_nothing(tmp_path, h):
    state = tmp_path / "state.json"
    api = await LabApiServer(state_path=state).start(["127.0.0.1:0"])
    port = int(api.url.rsplit(":", 1)[1])
    client = ApiClient.from_url(api.url)
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES, backoff=FAST)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    try:
        for name in ("a", "b", "c"):
            await client.create(r.SERVICES, h.svc(name), namespace="default")
        await inf.wait_synced()
        await h.wait_for(lambda: len(inf) == 3)
        before = {k: o.cluster_ips for k, o in ((o.key, o) for o in inf.list())}
        await api.stop()  # the informer's stream ends; reconnects are refused for a while
        await asyncio.sleep(0.3)

        api2 = await LabApiServer(state_path=state).start([f"127.0.0.1:{port}"])
        try:
            async with ApiClient.from_url(api2.url) as admin:
                assert {o["metadata"]["name"] for o in api2.store.items("services")} == {"a", "b", "c"}
                await admin.create(r.SERVICES, h.svc("d"), namespace="default")
                await admin.delete(r.SERVICES, "a", namespace="default")
                await admin.patch(r.SERVICES, "b", {"metadata": {"labels": {"v": "2"}}}, namespace="default")
            await h.wait_for(lambda: inf.get("default/d") is not None and inf.get("default/a") is None
                             and inf.get("default/b").labels == (("v", "2"),), what="post-restart events")
            assert rec.replay() == _truth(api2) == {o.key: o for o in inf.list()}
            for key in ("default/b", "default/c", "default/d"):
                assert rec.kinds(key).count("add") == 1
            # Allocations survived the restart: nothing was reallocated.
            assert inf.get("default/c").cluster_ips == before["default/c"]
            assert inf.get("default/d").cluster_ips not in before.values()
        finally:
            await api2.stop()
    finally:
        await _stop(task)
        await client.close()


async def test_unreachable_server_backs_off_without_busy_looping():
    """Nothing listens on the port: every retry sleeps, and the sleeps grow."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    sleeps: list[float] = []

    async def fake_sleep(d: float) -> None:
        sleeps.append(d)
        if len(sleeps) >= 6:
            raise asyncio.CancelledError

    async with ApiClient.from_url(f"http://127.0.0.1:{port}") as client:
        inf = Informer(client, r.SERVICES, backoff=Backoff(initial=1, factor=2, maximum=8, jitter=0),
                       sleep=fake_sleep, rand=lambda: 0.0)
        with pytest.raises(asyncio.CancelledError):
            await inf.run()
    assert sleeps == [1, 2, 4, 8, 8, 8]
    assert not inf.has_synced


async def test_restart_from_an_older_state_relists_to_the_server_truth(tmp_path, h):
    """A crash lost the last writes: the informer is ahead of the server, gets 410 and converges back."""
    import shutil

    state = tmp_path / "state.json"
    api = await LabApiServer(state_path=state).start(["127.0.0.1:0"])
    port = int(api.url.rsplit(":", 1)[1])
    client = ApiClient.from_url(api.url)
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES, backoff=FAST)
    inf.add_handler(**rec.handlers())
    task = asyncio.create_task(inf.run())
    try:
        await client.create(r.SERVICES, h.svc("old"), namespace="default")
        await inf.wait_synced()
        await h.wait_for(lambda: len(inf) == 1)
        api.persister.flush()
        shutil.copy(state, tmp_path / "older.json")
        await client.create(r.SERVICES, h.svc("lost"), namespace="default")
        await h.wait_for(lambda: inf.get("default/lost") is not None)
        await api.stop()
        shutil.copy(tmp_path / "older.json", state)  # the write of "lost" never reached the disk

        api2 = await LabApiServer(state_path=state).start([f"127.0.0.1:{port}"])
        try:
            await h.wait_for(lambda: inf.get("default/lost") is None, what="relist after rollback")
            assert rec.kinds("default/lost") == ["add", "delete"]
            assert rec.kinds("default/old") == ["add"]
            assert rec.replay() == _truth(api2) == {o.key: o for o in inf.list()}
            assert inf.relists == 2
        finally:
            await api2.stop()
    finally:
        await _stop(task)
        await client.close()


async def test_inactivity_timeout_resumes_the_watch_without_relisting(h):
    """A silent stream (no events, no bookmarks) is abandoned and resumed from the same version."""
    async with LabApiServer(bookmark_interval=3600) as api, h.FlakyClient.from_url(api.url) as client:
        await client.create(r.SERVICES, h.svc("a"), namespace="default")
        inf = Informer(client, r.SERVICES, backoff=FAST, inactivity_timeout=0.2)
        task = asyncio.create_task(inf.run())
        try:
            await inf.wait_synced()
            await h.wait_for(lambda: len(client.watch_rvs) >= 3, what="two inactivity reconnects")
            assert inf.relists == 1
            assert len(set(client.watch_rvs)) == 1  # always resumed from the list's version
            await client.create(r.SERVICES, h.svc("b"), namespace="default")
            await h.wait_for(lambda: inf.get("default/b") is not None)
        finally:
            await _stop(task)
