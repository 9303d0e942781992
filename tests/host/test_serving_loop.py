"""HttpEndpoint (bound port public, clean failure, idempotent close) and the loop helpers."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket

import aiohttp
import pytest
from aiohttp import web

from podnet.host import loop
from podnet.host.serving import HttpEndpoint


async def _ok(_r: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_endpoint_reports_the_bound_port_and_serves_its_paths():
    ep = HttpEndpoint({"/healthz": _ok, "/livez": _ok})
    port = await ep.start("127.0.0.1", 0)
    try:
        assert port == ep.port and port > 0 and ep.running
        async with aiohttp.ClientSession() as s:
            for path, status in (("/healthz", 200), ("/livez", 200), ("/metrics", 404)):
                async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                    assert r.status == status, path
    finally:
        await ep.close()
    assert not ep.running
    await ep.close()  # idempotent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the port is free again


async def test_endpoint_that_cannot_bind_raises_and_holds_nothing():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ep = HttpEndpoint({"/": _ok})
        with pytest.raises(OSError):
            await ep.start("127.0.0.1", taken.getsockname()[1], reuse_address=False)
        assert not ep.running and ep.port is None


async def test_stop_on_signals_sets_the_event():
    stop = loop.stop_on_signals(signals=(signal.SIGUSR1,))
    try:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stop.wait(), 10)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)


async def test_stop_on_signals_calls_the_callback_instead():
    seen: list[str] = []
    stop = loop.stop_on_signals(lambda: seen.append("lameduck"), signals=(signal.SIGUSR2,))
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["lameduck"] and not stop.is_set()
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)


def test_run_returns_the_result_on_uvloop_when_installed():
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = loop.run(main())
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert module.startswith("asyncio")
    else:
        assert module.startswith("uvloop")


@pytest.mark.parametrize("enabled", [pytest.param(True, id="was-enabled"), pytest.param(False, id="was-disabled")])
def test_gc_paused_restores_the_collector_even_on_error(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError):
            with loop.gc_paused():
                assert not gc.isenabled()
                raise RuntimeError("boom")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_gc_paused_freeze_moves_survivors_to_the_permanent_generation():
    before = gc.get_freeze_count()
    try:
        with loop.gc_paused(freeze=True):
            kept = [[i] for i in range(1000)]
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()
