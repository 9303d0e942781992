"""Feed a child process's stdin so the producer rarely waits and the child never starves.

Why: a full sync renders the restore text in this (event-loop) thread while
``iptables-restore`` parses it in another process. If the producer awaits
every write (``drain``), it stalls each time the 64 KiB pipe is full, and
then the child stalls while the producer computes the next piece. A
:class:`PipeFeeder` hands each piece to the event loop's pipe transport,
which writes at once what fits and keeps the rest in its buffer; the loop
flushes that buffer whenever the producer yields (``await asyncio.sleep(0)``)
or finishes. The pipe is enlarged (1 MiB where the kernel allows it), so
the child has work queued while the producer computes between yields. Only
when the producer is ``RUN_AHEAD`` bytes ahead does :meth:`PipeFeeder.room`
make it wait, until a quarter of that is left.

Guarantees:

* bytes reach the pipe in exactly the order they were put, each exactly once;
* :meth:`finish` returns after the last byte was written and the write end
  closed, so the child sees end-of-file exactly once, after all the input;
* when the reader goes away (the child exited, e.g. on a parse error)
  :attr:`broken` becomes true, the rest is dropped and nothing raises in
  :meth:`put` (the caller learns the outcome from the child's exit status);
* memory is bounded: at most ``RUN_AHEAD`` plus one piece is buffered when
  the producer honours :meth:`PipeFeeder.room` (restore_stream does).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from typing import AsyncIterator

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
RUN_AHEAD = 4 << 20
"""Bytes the producer may get ahead of the pipe before :meth:`PipeFeeder.room` makes it wait
(until a quarter is left): about 0.3 s of iptables-restore parsing, far more than any pause
of the producer between yields, so the reader never starves and memory stays bounded."""


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Best effort: grow the pipe behind ``fd`` to ``size`` bytes; returns the size set (0: unchanged)."""
    try:
        return fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        return 0


class _Protocol(asyncio.BaseProtocol):
    def __init__(self) -> None:
        self.lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def paused(self) -> bool:
        return self._paused and not self.lost

    async def flushed(self) -> None:
        """Until the transport resumes writing (its buffer is down to the low limit) or the pipe is gone."""
        while self._paused and not self.lost:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class PipeFeeder:
    """Owns the write end of a pipe; create with :meth:`open`."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._finished = False
        self._broken = False

    @classmethod
    async def open(cls, fd: int) -> "PipeFeeder":
        """Take ownership of ``fd`` (closed by :meth:`finish` or :meth:`abort`)."""
        enlarge_pipe(fd)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(_Protocol, os.fdopen(fd, "wb", buffering=0))
        transport.set_write_buffer_limits(high=RUN_AHEAD)  # low: a quarter of it
        return cls(transport, protocol)  # type: ignore[arg-type]

    @property
    def broken(self) -> bool:
        """The reader went away before :meth:`finish` had written everything."""
        return self._broken or (self._protocol.lost and not self._finished)

    def put(self, data: bytes) -> None:
        """Write what fits now, buffer the rest (never blocks, never raises)."""
        if data and not self._protocol.lost and not self._transport.is_closing():
            self._transport.write(data)

    @property
    def full(self) -> bool:
        """More than ``RUN_AHEAD`` bytes are waiting for the pipe."""
        return self._protocol.paused

    async def room(self) -> None:
        """Until the backlog is down to a quarter of ``RUN_AHEAD`` (or the reader is gone)."""
        await self._protocol.flushed()

    async def finish(self) -> None:
        """Flush everything put so far, then close the write end."""
        if not self._protocol.lost:
            self._transport.set_write_buffer_limits(high=0)  # pauses while anything is buffered
            await self._protocol.flushed()
        self._broken = self._protocol.lost
        self._finished = True
        self._transport.close()

    def abort(self) -> None:
        """Drop anything buffered and close at once."""
        self._transport.abort()


async def stream_to_child(argv: list[str], chunks: AsyncIterator[str], what: str) -> tuple[int, str, bytes]:
    """Run ``argv`` with ``chunks`` as its stdin, written while still produced: (exit status,
    stderr, the bytes sent).

    The child's stderr is drained all along (a chatty child never blocks). When the producer
    raises (or is cancelled), the child is killed before it reads end-of-file, so a tool that
    commits at end-of-file (iptables-restore, nft -f) never commits a half-written input, and
    the error propagates. A child that stops reading early makes the producer stop
    (``aclose``); a zero exit status then is reported as 1 with "``what`` stopped reading".
    """
    sent: list[bytes] = []
    rfd, wfd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=rfd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except BaseException:
        os.close(wfd)
        raise
    finally:
        os.close(rfd)
    assert proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        feeder = await PipeFeeder.open(wfd)
    except BaseException:
        os.close(wfd)
        proc.kill()
        await proc.wait()
        errors.cancel()
        raise
    buf: list[str] = []
    size = 0
    try:
        async for chunk in chunks:
            buf.append(chunk)
            size += len(chunk)
            if size >= 1 << 15:
                data = "".join(buf).encode()
                sent.append(data)
                feeder.put(data)
                buf, size = [], 0
                if feeder.full:
                    await feeder.room()
                if feeder.broken:  # the child exited early (an error): stop producing
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                    break
        data = "".join(buf).encode()
        sent.append(data)
        feeder.put(data)
        await feeder.finish()
    except BaseException:
        proc.kill()  # never commit a half-written input
        feeder.abort()
        await proc.wait()
        errors.cancel()
        raise
    err = (await errors).decode(errors="replace")
    rc = await proc.wait()
    if rc == 0 and feeder.broken:
        rc, err = 1, f"{what} stopped reading before the end of its input"
    return rc, err, b"".join(sent)
