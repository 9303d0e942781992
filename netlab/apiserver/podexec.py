"""pods/exec over websocket: ``kubectl exec`` and ``kubectl cp`` into a lab container.

``GET /api/v1/namespaces/NS/pods/NAME/exec?command=...&stdin=&stdout=&stderr=&tty=&container=``
with a websocket upgrade offering ``v5.channel.k8s.io`` or ``v4.channel.k8s.io``
(:mod:`.execchannels`), as kubectl 1.30+ and the official Python client send it. The options are
kube-apiserver's PodExecOptions (Go booleans; ``tty`` turns ``stderr`` off, as kubelet; at least
one of stdin, stdout, stderr and one command, else 400); the container is picked with the
messages of kube-apiserver's ExecLocation, and must be running (:mod:`.containertargets`).

The command runs as the container's own processes do: ``nsenter`` into the container process's
mount and network namespaces and its root, in the container's working directory, with the
container's environment (PATH included). With ``tty`` it gets a pseudo-terminal as its
controlling terminal, sized by the client's resize messages. When the command ends, its output
is flushed, the error channel carries the Status (success, or ``NonZeroExitCode`` with the exit
code, a signal N as 128+N), and the server closes the websocket. If the client goes away first,
the command's process group gets SIGHUP, then SIGKILL after a grace period.

A request without a websocket upgrade (kubectl's SPDY fallback, a plain POST) answers 400 with a
Status saying exec is served over websocket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import struct
import termios
from dataclasses import dataclass
from typing import Any, Mapping

from aiohttp import WSMsgType, web

from podnet.netlab.apiserver import execchannels as ch
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.containertargets import ContainerTarget, KubeletRecords, executable_in
from podnet.netlab.apiserver.podlogs import pick_container

__all__ = ["ExecOptions", "parse_exec_options", "exec_argv", "PodExec"]

CHUNK = 32 * 1024
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class ExecOptions:
    command: tuple[str, ...]
    container: str = ""
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False


def _go_bool(query: Mapping[str, str], key: str) -> bool:
    v = query.get(key)
    if v is None or v == "":
        return False
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise StatusError(400, "BadRequest", f'{key}: invalid boolean value "{v}"')


def parse_exec_options(query: Any) -> ExecOptions:
    """PodExecOptions from the query, validated as kube-apiserver and kubelet do."""
    tty = _go_bool(query, "tty")
    opts = ExecOptions(tuple(query.getall("command", [])), query.get("container", ""), _go_bool(query, "stdin"),
                       _go_bool(query, "stdout"), _go_bool(query, "stderr") and not tty, tty)
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise StatusError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
    if not opts.command:
        raise StatusError(400, "BadRequest", "you must specify at least 1 command")
    return opts


def exec_argv(target: ContainerTarget, command: tuple[str, ...], tty: bool) -> list[str]:
    """The host command line that runs ``command`` in the container ``target``."""
    # --all: every namespace of the target that differs from this process's (mount and network for the
    # lab launcher's containers; also pid, uts, ipc for a podman container), as a runtime's exec joins them
    enter = ["nsenter", f"--target={target.pid}", "--all", "--root", f"--wdns={target.working_dir}", "--"]
    return (["setsid", "--ctty", "--wait"] if tty else []) + enter + list(command)


def websocket_only(sub: str) -> StatusError:
    return StatusError(400, "BadRequest", f"the podnet lab serves pods/{sub} over websocket only "
                       f"({', '.join(ch.PROTOCOLS)}; kubectl 1.30+ and the official clients' stream() speak it), "
                       "not over SPDY; kubectl falls back to SPDY when the websocket request fails, for "
                       "example when RBAC denies it: a websocket exec needs both get and create on pods/exec")


class PodExec:
    """Serves pods/exec from the lab kubelets' records (:class:`.containertargets.KubeletRecords`)."""

    def __init__(self, targets: KubeletRecords, grace: float = 2.0) -> None:
        self.targets = targets
        self.grace = grace

    async def serve(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        opts = parse_exec_options(request.query)
        container = pick_container(pod, opts.container)
        target = self.targets.find(pod, container)
        ws = web.WebSocketResponse(protocols=ch.PROTOCOLS, max_msg_size=4 * 1024 * 1024, autoping=True)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise websocket_only("exec")
        if ready.protocol is None:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            raise StatusError(400, "BadRequest", f"requested protocol(s) are not supported: [{offered}]; "
                              f"supports [{' '.join(ch.PROTOCOLS)}]")
        await ws.prepare(request)
        await Session(ws, ready.protocol, opts, target, self.grace).run()
        return ws


class Session:
    """One exec: the command's process and the websocket, until both are done."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str, opts: ExecOptions, target: ContainerTarget,
                 grace: float) -> None:
        self.ws, self.protocol, self.opts, self.target, self.grace = ws, protocol, opts, target, grace
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self.send_lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes = b"") -> None:
        async with self.send_lock:
            await self.ws.send_bytes(ch.frame(channel, data))

    async def run(self) -> None:
        if not executable_in(self.target.root, self.opts.command[0], self.target.env.get("PATH", "")):
            await self._finish(ch.failure_status(
                f'error executing command in container: exec: "{self.opts.command[0]}": '
                "executable file not found in $PATH"))
            return
        try:
            outputs = await self._start()
        except OSError as e:
            await self._finish(ch.failure_status(f"error executing command in container: {e}"))
            return
        reader = asyncio.ensure_future(self._read_client())
        assert self.proc is not None
        ended = asyncio.ensure_future(asyncio.gather(self.proc.wait(), *outputs))
        try:
            done, _ = await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
            if ended not in done:  # the client went away: the command goes too
                await self._kill()
                with contextlib.suppress(asyncio.TimeoutError):  # output a stray descendant holds is dropped
                    await asyncio.wait_for(ended, self.grace)
                return
            await self._finish(ch.success_status() if self.proc.returncode == 0 else
                               ch.exit_status(self.opts.command, ch.exit_code_of(self.proc.returncode or 0)))
        finally:
            reader.cancel()
            ended.cancel()
            await self._kill()
            if self.master is not None:
                os.close(self.master)

    async def _finish(self, status: dict[str, Any]) -> None:
        try:
            await self.send(ch.ERROR, json.dumps(status, separators=(",", ":")).encode())
            await self.ws.close()
        except ConnectionError:
            pass

    async def _start(self) -> list[Any]:
        """Spawn the command; returns the coroutines that copy its output to the client."""
        argv = exec_argv(self.target, self.opts.command, self.opts.tty)
        if self.opts.tty:
            self.master, slave = os.openpty()
            os.set_blocking(self.master, False)
            try:
                # not a new session here: setsid makes one without forking, so the pid is the command's
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, env=self.target.env)
            finally:
                os.close(slave)
            return [self._copy_tty()]
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe if self.opts.stdin else null, stdout=pipe if self.opts.stdout else null,
            stderr=pipe if self.opts.stderr else null, env=self.target.env, start_new_session=True)
        return [self._copy(self.proc.stdout, ch.STDOUT), self._copy(self.proc.stderr, ch.STDERR)]

    async def _copy(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while data := await stream.read(CHUNK):
            await self._send_quietly(channel, data)

    async def _copy_tty(self) -> None:
        assert self.master is not None
        loop = asyncio.get_running_loop()
        while True:
            readable = loop.create_future()
            loop.add_reader(self.master, readable.set_result, None)
            try:
                await readable
            finally:
                loop.remove_reader(self.master)
            try:
                data = os.read(self.master, CHUNK)
            except BlockingIOError:
                continue
            except OSError:  # EIO: every holder of the terminal's other side has gone
                return
            if not data:
                return
            await self._send_quietly(ch.STDOUT, data)

    async def _send_quietly(self, channel: int, data: bytes) -> None:
        try:
            await self.send(channel, data)
        except ConnectionError:  # the client is gone; keep draining so the command is not blocked
            pass

    async def _read_client(self) -> None:
        """Client messages until the websocket closes: stdin, its v5 close, terminal sizes."""
        async for msg in self.ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            # a text message carries the same channel byte (the Python client sends str stdin as text)
            m = ch.parse_message(self.protocol, msg.data if msg.type == WSMsgType.BINARY else msg.data.encode())
            if m is None:
                continue
            if m.channel == ch.STDIN and m.closed:
                await self._close_stdin()
            elif m.channel == ch.STDIN and self.opts.stdin:
                await self._write_stdin(m.data)
            elif m.size is not None and self.master is not None:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", m.size[1], m.size[0], 0, 0))

    async def _write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            await _write_fd(self.master, data)
            return
        assert self.proc is not None
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            pass

    async def _close_stdin(self) -> None:
        if self.master is not None:
            await _write_fd(self.master, b"\x04")  # end of input on a terminal
        elif self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        # SIGKILL follows whether or not the leader went on SIGHUP: nsenter forks when it enters a pid
        # namespace, and the command it forked may ignore SIGHUP; the group is ended as a whole
        for sig in (signal.SIGHUP, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(proc.wait(), self.grace)
            except asyncio.TimeoutError:
                continue
        await proc.wait()


async def _write_fd(fd: int, data: bytes, attempts: int = 1000) -> None:
    """Write all of ``data`` to a non-blocking terminal; bounded retries while it is full."""
    for _ in range(attempts):
        if not data:
            return
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            await asyncio.sleep(0.01)
        except OSError:
            return
