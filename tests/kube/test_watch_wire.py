"""watch_events against hand-made streams: HTTP 410, ERROR events, junk lines, long lines."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.watch import WatchExpired, watch_events

STATUS_410 = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
              "message": "too old resource version: 5 (99)"}


def event(t, obj):
    return json.dumps({"type": t, "object": obj}).encode() + b"\n"


SVC = {"metadata": {"name": "a", "namespace": "default", "resourceVersion": "7",
                    "annotations": {"big": "x" * 300_000}},  # a line far above aiohttp's readline limit
       "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
async def fake_server():
    """An aiohttp server whose watch answer each test chooses."""
    state = {}

    async def handler(request):
        status, body = state["answer"]
        if status != 200:
            return web.json_response(body, status=status)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for chunk in body:
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/services", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with ApiClient.from_url(f"http://127.0.0.1:{port}") as client:
        yield state, client
    await runner.cleanup()


async def _drain(client):
    return [e async for e in watch_events(client, r.SERVICES, resource_version="5", timeout_seconds=5)]


async def test_http_410_is_watch_expired(fake_server):
    state, client = fake_server
    state["answer"] = (410, STATUS_410)
    with pytest.raises(WatchExpired):
        await _drain(client)


async def test_error_event_410_is_watch_expired(fake_server):
    state, client = fake_server
    state["answer"] = (200, [event("ERROR", STATUS_410)])
    with pytest.raises(WatchExpired):
        await _drain(client)


async def test_other_error_event_is_api_error_with_status(fake_server):
    state, client = fake_server
    status = {**STATUS_410, "code": 500, "reason": "InternalError", "message": "etcd down"}
    state["answer"] = (200, [event("ERROR", status)])
    with pytest.raises(ApiError) as e:
        await _drain(client)
    assert e.value.code == 500 and e.value.status["message"] == "etcd down"


async def test_http_error_carries_status_json(fake_server):
    state, client = fake_server
    state["answer"] = (403, {**STATUS_410, "code": 403, "reason": "Forbidden", "message": "no"})
    with pytest.raises(ApiError) as e:
        await _drain(client)
    assert (e.value.code, e.value.reason) == (403, "Forbidden")


async def test_junk_is_skipped_and_lines_may_span_chunks(fake_server):
    state, client = fake_server
    line = event("ADDED", SVC)
    state["answer"] = (200, [b"not json\n", b'{"type":"NOPE","object":{}}\n', line[:1000], line[1000:],
                             event("BOOKMARK", {"metadata": {"resourceVersion": "9"}})])
    events = await _drain(client)
    assert [(e.type, e.resource_version) for e in events] == [("ADDED", "7"), ("BOOKMARK", "9")]
