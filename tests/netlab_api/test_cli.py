"""`podnet lab apiserver` as a process: serves, persists on SIGTERM, restarts with its state."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import parse_listen

PODNET = Path(sys.executable).with_name("podnet")


@pytest.mark.parametrize(
    "addr, expect",
    [
        pytest.param("127.0.0.1:6443", ("127.0.0.1", 6443), id="ipv4"),
        pytest.param("[::1]:0", ("::1", 0), id="ipv6"),
        pytest.param(":8080", ("0.0.0.0", 8080), id="any"),
    ],
)
def test_parse_listen(addr, expect):
    assert parse_listen(addr) == expect


@pytest.mark.parametrize("addr", [pytest.param("localhost", id="no-port"), pytest.param("1.2.3.4:http", id="named")])
def test_parse_listen_rejects(addr):
    with pytest.raises(ValueError):
        parse_listen(addr)


async def _start(state: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        str(PODNET), "lab", "apiserver", "--listen", "127.0.0.1:0", "--state", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert "serving on http://127.0.0.1:" in line, line
    return proc, line.split()[-1]


async def test_apiserver_process_persists_state_across_restart(tmp_path):
    state = tmp_path / "state.json"
    proc, url = await _start(state)
    try:
        async with ApiClient.from_url(url) as client:
            out = await client.create(r.SERVICES, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}},
                                      namespace="default")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert state.exists()
    proc, url = await _start(state)
    try:
        async with ApiClient.from_url(url) as client:
            got = await client.get(r.SERVICES, "web", namespace="default")
            assert got == out
            items, rv = await client.list(r.SERVICES)
            assert int(rv) >= int(out["metadata"]["resourceVersion"])
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
