"""The CNI daemon's /healthz, /livez and /metrics (pure status, listen parsing, and the HTTP layer)."""

from __future__ import annotations

import aiohttp
import pytest

from podnet.cni import health
from podnet.cni.plugin import Readiness
from podnet.cni.types import CniError


def _ready(**kw) -> Readiness:
    r = Readiness()
    for k, v in kw.items():
        setattr(r, k, v)
    return r


OK = dict(pod_cidrs=("10.244.1.0/24",), forwarding_ok=True, routes_synced=True)


@pytest.mark.parametrize(
    "ready, status, reason",
    [
        pytest.param(_ready(**OK), 200, None, id="can-serve-adds"),
        pytest.param(_ready(), 503, "node has no pod CIDR yet", id="no-cidr"),
        pytest.param(_ready(**{**OK, "pod_cidrs": ()}), 503, "node has no pod CIDR yet", id="cidr-lost"),
        pytest.param(_ready(**{**OK, "routes_synced": False}), 503, "not programmed yet", id="routes-not-yet"),
        pytest.param(_ready(**{**OK, "forwarding_ok": False}), 503, "forwarding", id="forwarding-off"),
        pytest.param(_ready(**OK, store_error=CniError(5, "store is corrupt")), 503, "store is corrupt",
                     id="store-broken"),
    ],
)
def test_health(ready, status, reason):
    code, body = health.health(ready)
    assert code == status
    assert body["podCIDRs"] == list(ready.pod_cidrs)
    if reason is None:
        assert body["status"] == "ok"
    else:
        assert reason in body["reason"] and body["cniCode"] in (50, 51)


@pytest.mark.parametrize(
    "value, expect",
    [
        pytest.param("0.0.0.0:9967", ("0.0.0.0", 9967), id="v4"),
        pytest.param(":9967", ("0.0.0.0", 9967), id="empty-host"),
        pytest.param("[::1]:9967", ("::1", 9967), id="v6"),
        pytest.param("127.0.0.1:0", ("127.0.0.1", 0), id="ephemeral"),
        pytest.param("::1:9967", None, id="v6-without-brackets"),
        pytest.param("localhost:9967", None, id="name"),
        pytest.param("1.2.3.4", None, id="no-port"),
        pytest.param("1.2.3.4:65536", None, id="port-range"),
        pytest.param("1.2.3.4:+80", None, id="signed-port"),
        pytest.param("010.1.1.1:80", None, id="leading-zero"),
        pytest.param("[fe80::1%eth0]:80", None, id="zone"),
        pytest.param("[1.2.3.4]:80", None, id="v4-in-brackets"),
    ],
)
def test_parse_listen(value, expect):
    if expect is None:
        with pytest.raises(ValueError):
            health.parse_listen(value)
    else:
        assert health.parse_listen(value) == expect


async def test_endpoints_follow_readiness():
    ready = _ready()
    srv = health.HealthServer(ready, "127.0.0.1:0")
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/healthz") as r:
                assert r.status == 503 and (await r.json())["reason"] == "node has no pod CIDR yet"
            async with s.get(base + "/livez") as r:
                assert r.status == 200
            health.observe("ADD", 0, 0.01)
            health.observe("bogus", 4, 0.01)
            async with s.get(base + "/metrics") as r:
                text = await r.text()
                assert r.status == 200 and "podnet_cni_ready 0.0" in text
                assert 'podnet_cni_requests_total{code="0",command="ADD"}' in text
                assert 'podnet_cni_requests_total{code="4",command="other"}' in text
            for k, v in OK.items():
                setattr(ready, k, v)
            async with s.get(base + "/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.get(base + "/metrics") as r:
                assert "podnet_cni_ready 1.0" in await r.text()
    finally:
        await srv.close()
