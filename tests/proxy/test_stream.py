"""The streamed full sync: the pipe feeder, restore_stream's failure paths, the
streamed text versus render_full, and the GC pause. No root needed: the child
processes are plain ``sh``/``cat``, and the rules go to the in-memory fake."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import pytest

from podnet.proxy import proxier as proxier_mod
from podnet.proxy.feeder import PipeFeeder
from podnet.proxy.iptables import IptablesRunner, RestoreError
from podnet.proxy.proxier import FamilyProxier, Proxier, gc_paused
from podnet.proxy.render import render_full
from podnet.proxy.snapshot import build
from podnet.proxy.testing import FakeIptables, ctx, ep, slice_, svc

# ---------------------------------------------------------------- PipeFeeder

FEEDS = [
    ("many-small-pieces", [f"line {i}\n".encode() for i in range(20_000)]),
    ("one-piece-bigger-than-the-pipe", [bytes(range(256)) * 20_000]),
    ("empty-pieces-ignored", [b"", b"a", b"", b"b"]),
]


@pytest.mark.parametrize("pieces", [c[1] for c in FEEDS], ids=[c[0] for c in FEEDS])
async def test_feeder_delivers_everything_in_order_then_eof(pieces):
    rfd, wfd = os.pipe()
    got = bytearray()

    def reader() -> None:  # a slow-ish reader in another thread
        with os.fdopen(rfd, "rb", buffering=0) as f:
            while chunk := f.read(4096):
                got.extend(chunk)

    feeder = await PipeFeeder.open(wfd)
    read = asyncio.get_running_loop().run_in_executor(None, reader)
    for p in pieces:
        feeder.put(p)  # never blocks, even far beyond the pipe's size
    await feeder.finish()
    await asyncio.wait_for(read, 30)  # returns only at EOF: the write end was closed
    assert bytes(got) == b"".join(pieces)
    assert not feeder.broken


async def test_feeder_reader_gone_marks_broken_without_raising():
    rfd, wfd = os.pipe()
    feeder = await PipeFeeder.open(wfd)
    os.close(rfd)
    for _ in range(100):
        feeder.put(b"x" * 65536)  # EPIPE inside the transport, never in put()
        await asyncio.sleep(0)
    await feeder.finish()
    assert feeder.broken


async def test_feeder_run_ahead_is_bounded():
    """Past RUN_AHEAD bytes the feeder reports full; room() returns once the reader caught up."""
    from podnet.proxy.feeder import RUN_AHEAD

    rfd, wfd = os.pipe()
    feeder = await PipeFeeder.open(wfd)
    piece = b"y" * 65536
    for _ in range(RUN_AHEAD // len(piece) + 40):  # nobody reads: pipe plus buffer fill up
        feeder.put(piece)
    assert feeder.full
    got = bytearray()

    def reader() -> None:
        with os.fdopen(rfd, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                got.extend(chunk)

    read = asyncio.get_running_loop().run_in_executor(None, reader)
    await asyncio.wait_for(feeder.room(), 30)
    assert not feeder.full
    await feeder.finish()
    await asyncio.wait_for(read, 30)
    assert len(got) == (RUN_AHEAD // len(piece) + 40) * len(piece)


# ---------------------------------------------------------------- restore_stream with stand-in children


def _runner(script: str) -> IptablesRunner:
    """A runner whose 'iptables-restore' is ``sh -c script`` (extra argv ignored)."""
    return IptablesRunner(4, "legacy", ["sh", "-c", script, "sh"])


async def _chunks(n: int, closed: list[bool], fail_at: int | None = None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError("producer failed")
            yield f"-A PODNET-X rule {i}\n"
            if i % 1000 == 0:
                await asyncio.sleep(0)
    finally:
        closed.append(True)


async def test_restore_stream_delivers_text_exactly(tmp_path: Path):
    out = tmp_path / "got"
    closed: list[bool] = []
    await _runner(f"cat > {out}").restore_stream(_chunks(50_000, closed))
    assert out.read_text() == "".join(f"-A PODNET-X rule {i}\n" for i in range(50_000))
    assert closed == [True]


async def test_restore_stream_child_failing_early_stops_producer_and_reports_line():
    closed: list[bool] = []
    runner = _runner("head -c 100 >/dev/null; echo 'iptables-restore: line 3 failed' >&2; exit 2")
    with pytest.raises(RestoreError) as e:
        await runner.restore_stream(_chunks(1_000_000, closed))
    assert e.value.line == 3 and "exit 2" in str(e.value)
    assert closed == [True]  # the generator was closed, not left running to the end
    assert e.value.context().startswith("     1 -A PODNET-X rule 0")


async def test_restore_stream_producer_failure_kills_child_before_eof(tmp_path: Path):
    """The stand-in 'commits' (renames) only after reading EOF; a killed child never does."""
    done = tmp_path / "committed"
    closed: list[bool] = []
    runner = _runner(f"cat > {tmp_path}/partial && mv {tmp_path}/partial {done}")
    with pytest.raises(ValueError, match="producer failed"):
        await runner.restore_stream(_chunks(20_000, closed, fail_at=10_000))
    await asyncio.sleep(0.2)
    assert not done.exists()


async def test_restore_stream_reader_exiting_with_success_before_eof_is_an_error():
    with pytest.raises(RestoreError, match="stopped reading"):
        await _runner("head -c 10 >/dev/null; exit 0").restore_stream(_chunks(1_000_000, []))


# ---------------------------------------------------------------- streamed text == render_full


def _scenario():
    services = [
        svc(name=f"s{i}", cluster_ip=f"172.30.0.{i + 1}", ports=((80, "TCP", "p80", 30000 + i),), type="NodePort",
            externalTrafficPolicy="Local" if i % 2 else "Cluster",
            **({"sessionAffinity": "ClientIP"} if i % 3 == 0 else {}))
        for i in range(9)
    ]
    slices = [slice_(service=f"s{i}", endpoints=[ep(f"10.0.{i}.{j + 1}", node="node-a" if j % 2 else "node-b")
                                                 for j in range(i % 4)]) for i in range(9)]
    return services, slices


class _Capture(FakeIptables):
    async def restore_stream(self, chunks):
        self.text = "".join([c async for c in chunks])
        await self.restore(self.text)


async def _streamed(services, slices):
    cap = _Capture()
    fam = FamilyProxier(cap, ctx(), "node-a")
    p = Proxier([fam])
    for s in services:
        p.on_service(None, s)
    for s in slices:
        p.on_slice(None, s)
    p.on_services_synced()
    p.on_slices_synced()
    assert await p.sync()
    return cap


@pytest.mark.parametrize("block", [1, 2, 128], ids=["block-1", "block-2", "block-128"])
async def test_streamed_full_sync_equals_render_full_and_is_deterministic(monkeypatch, block):
    monkeypatch.setattr(proxier_mod, "STREAM_BLOCK", block)
    services, slices = _scenario()
    first, second = await _streamed(services, slices), await _streamed(list(reversed(services)), slices)
    assert first.text == second.text  # byte-identical whatever the informer order
    reference = FakeIptables.parse(render_full(build(services, slices, ctx(), "node-a")), FakeIptables().tables)
    for table, chains in reference.items():
        for chain, rules in chains.items():
            if chain.startswith("PODNET-"):
                assert first.tables[table][chain] == rules, (table, chain)


# ---------------------------------------------------------------- GC pause

GC_CASES = [("enabled-before", True), ("disabled-before", False)]


@pytest.mark.parametrize("enabled", [c[1] for c in GC_CASES], ids=[c[0] for c in GC_CASES])
def test_gc_paused_restores_previous_state_even_on_error(enabled):
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with pytest.raises(RuntimeError):
            with gc_paused():
                assert not gc.isenabled()
                raise RuntimeError("boom")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


async def test_restore_stream_chatty_child_on_stderr_does_not_deadlock(tmp_path: Path):
    """A child that writes lots to stderr before reading stdin must not block the stream."""
    out = tmp_path / "got"
    script = f"yes xxxxxxxxxxxxxxx | head -c 1000000 >&2; cat > {out}"
    await asyncio.wait_for(_runner(script).restore_stream(_chunks(100_000, [])), 30)
    assert out.read_text().count("\n") == 100_000
