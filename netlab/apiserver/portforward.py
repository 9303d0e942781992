"""pods/portforward: ``kubectl port-forward`` to a lab pod, SPDY/3.1 tunnelled in a websocket.

``GET /api/v1/namespaces/NS/pods/NAME/portforward`` with a websocket upgrade offering
``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31+): every binary message carries a piece of a SPDY/3.1
byte stream (:mod:`.spdyframes`) in which the client opens two streams per forwarded connection, as
kubelet's port-forward server expects them: headers ``streamType`` (``error`` or ``data``),
``port`` and ``requestID`` (the same for both). Every stream is answered with SYN_REPLY. Once
both streams of a request are there, the server connects to ``127.0.0.1:PORT`` in the pod's
network namespace (the socket is made there, with the namespace of a running container's
process) and copies bytes both ways: the client's FIN half-closes the pod connection, the pod's
end of data FINs the data stream, and then the error stream is FINed too. A connection that cannot
be made writes kubelet's message on the error stream instead (kubectl prints it and drops the
session). PINGs are echoed. kubectl's SPDY implementation (moby/spdystream) neither sends nor
honours WINDOW_UPDATE (SETTINGS and WINDOW_UPDATE are ignored here too), so flow control is the
transport's, as between kubectl and kubelet: the server holds at most ``PENDING_CHUNKS`` client
frames per stream that the pod has not taken yet before it stops reading the websocket, and writes
the pod's bytes no faster than the websocket drains.

A request without a websocket upgrade (a SPDY ``POST``) answers 400 with a Status; kubectl falls
back to it when the websocket request fails, for example when RBAC denies it: a websocket
port-forward needs both get and create on pods/portforward.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from podnet.host.nsenter import made_inside
from podnet.netlab.apiserver import spdyframes as spdy
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.containertargets import KubeletRecords

__all__ = ["PROTOCOL", "PortForward", "ForwardRequest", "request_of", "dial_message"]

PROTOCOL = "SPDY/3.1+portforward.k8s.io"
CHUNK = 32 * 1024
PENDING_CHUNKS = 16
"""Client data held per stream before the session stops reading the websocket."""


@dataclass(frozen=True)
class ForwardRequest:
    """One stream's headers, validated as kubelet's port-forward server does."""
    kind: str
    port: int
    request_id: str


def request_of(headers: dict[str, str]) -> ForwardRequest:
    """Raises ValueError with kubelet's message for a stream it would refuse."""
    kind = headers.get("streamtype", "")
    if kind not in ("error", "data"):
        raise ValueError(f'invalid stream type "{kind}"')
    raw = headers.get("port", "")
    if not raw:
        raise ValueError('"port" header is required')
    try:
        port = int(raw, 10)
    except ValueError:
        raise ValueError(f'invalid port "{raw}"') from None
    if not 0 < port < 65536:
        raise ValueError(f'invalid port "{raw}"')
    request_id = headers.get("requestid", "")
    if not request_id:
        raise ValueError('"requestID" header is required')
    return ForwardRequest(kind, port, request_id)


def dial_message(port: int, pod: str, uid: str, netns: str, err: OSError) -> str:
    """What kubelet (with containerd) writes on the error stream when the pod refuses the connection."""
    reason = os.strerror(err.errno).lower() if err.errno else str(err)
    return (f"error forwarding port {port} to pod {pod}, uid {uid}: failed to execute portforward in network "
            f'namespace "{netns}": failed to connect to localhost:{port} inside namespace "{pod}", IPv4: '
            f"dial tcp4 127.0.0.1:{port}: connect: {reason}")


class PortForward:
    """Serves pods/portforward into the network namespaces of the lab kubelets' pods."""

    def __init__(self, targets: KubeletRecords) -> None:
        self.targets = targets

    def netns_path_of(self, pod: dict[str, Any]) -> str:
        """The pod's network namespace as a path: that of its first running container's process."""
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        error: StatusError | None = None
        for name in containers:
            try:
                return f"/proc/{self.targets.find(pod, name).pid}/ns/net"
            except StatusError as e:
                error = error or e
        raise error or StatusError(400, "BadRequest", f"pod {pod['metadata']['name']} has no containers")

    async def serve(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        netns = self.netns_path_of(pod)
        ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=32 * 1024 * 1024, autoping=True)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise StatusError(400, "BadRequest", f"the podnet lab serves pods/portforward over websocket only "
                              f"({PROTOCOL}, kubectl 1.31+), not over SPDY; kubectl falls back to SPDY when the "
                              "websocket request fails, for example when RBAC denies it: a websocket "
                              "port-forward needs both get and create on pods/portforward")
        if ready.protocol is None:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            raise StatusError(400, "BadRequest", f"requested protocol(s) are not supported: [{offered}]; "
                              f"supports [{PROTOCOL}]")
        meta = pod["metadata"]
        await ws.prepare(request)
        await Session(ws, netns, f"{meta.get('namespace', '')}/{meta['name']}", meta.get("uid", "")).run()
        return ws


@dataclass
class _Pair:
    error: int = 0
    data: int = 0
    port: int = 0
    task: asyncio.Task | None = None
    writer: asyncio.StreamWriter | None = None
    reset: bool = False
    """The client reset one of the streams: the pod connection is closed (or never used)."""

    def close(self) -> None:
        self.reset = True
        if self.writer is not None:
            self.writer.close()  # the copy from the pod then ends as at the pod's FIN


@dataclass
class _Inbound:
    """Client data of one data stream, in order; None is its FIN. Once ``closed`` (the pod connection
    is gone) data is dropped, so the session never waits on a stream nobody reads."""
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(PENDING_CHUNKS))
    closed: bool = False

    def discard(self) -> None:
        self.closed = True
        while not self.queue.empty():  # frees a reader blocked on a full queue
            self.queue.get_nowait()


class Session:
    """One SPDY session: the client's streams, paired by request id, each pair one pod connection."""

    def __init__(self, ws: web.WebSocketResponse, netns: str, pod: str, uid: str) -> None:
        self.ws, self.netns, self.pod, self.uid = ws, netns, pod, uid
        self.codec = spdy.HeaderCodec()
        self.send_lock = asyncio.Lock()
        self.pairs: dict[str, _Pair] = {}
        self.inbound: dict[int, _Inbound] = {}
        self.last_stream = 0

    async def send(self, frame: bytes) -> None:
        async with self.send_lock:
            await self.ws.send_bytes(frame)

    async def send_reply(self, stream_id: int) -> None:
        async with self.send_lock:  # header blocks are compressed in the order they are sent
            await self.ws.send_bytes(spdy.syn_reply(self.codec, stream_id))

    async def run(self) -> None:
        reader = spdy.FrameReader()
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                for frame in reader.feed(msg.data):
                    if not await self.handle(frame):
                        return
        except spdy.FrameError:
            with contextlib.suppress(ConnectionError):
                await self.send(spdy.goaway(self.last_stream, 1))
        except ConnectionError:
            pass
        finally:
            tasks = [p.task for p in self.pairs.values() if p.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.ws.close()

    async def handle(self, frame: spdy.DataFrame | spdy.ControlFrame) -> bool:
        """Acts on one client frame; False when the client ended the session (GOAWAY)."""
        if isinstance(frame, spdy.DataFrame):
            inbound = self.inbound.get(frame.stream_id)
            if inbound is not None and not inbound.closed:
                if frame.data:
                    await inbound.queue.put(frame.data)
                if frame.fin:
                    await inbound.queue.put(None)
                    del self.inbound[frame.stream_id]
            return True
        if frame.type == spdy.SYN_STREAM:
            await self.open_stream(spdy.parse_syn_stream(self.codec, frame))
        elif frame.type == spdy.PING:
            await self.send(spdy.control_frame(spdy.PING, frame.payload))
        elif frame.type == spdy.RST_STREAM:
            inbound = self.inbound.pop(frame.word(0) & 0x7FFFFFFF, None)
            if inbound is not None:
                inbound.discard()
            for pair in self.pairs.values():
                if frame.word(0) & 0x7FFFFFFF in (pair.data, pair.error):
                    pair.close()
        elif frame.type == spdy.GOAWAY:
            return False
        elif frame.type == spdy.HEADERS:
            self.codec.decode(frame.payload[4:])  # keeps the header stream in step
        return True

    async def open_stream(self, syn: spdy.SynStream) -> None:
        self.last_stream = max(self.last_stream, syn.stream_id)
        try:
            req = request_of(syn.headers)
        except ValueError:
            await self.send(spdy.rst_stream(syn.stream_id, spdy.PROTOCOL_ERROR))
            return
        await self.send_reply(syn.stream_id)
        pair = self.pairs.setdefault(req.request_id, _Pair(port=req.port))
        if req.kind == "error":
            pair.error = syn.stream_id
        else:
            pair.data = syn.stream_id
            self.inbound[syn.stream_id] = _Inbound()
            if syn.fin:
                await self.inbound.pop(syn.stream_id).queue.put(None)
        if pair.error and pair.data and pair.task is None:
            pair.task = asyncio.ensure_future(self.forward(req.request_id, pair, self.inbound.get(pair.data)))

    async def forward(self, request_id: str, pair: _Pair, inbound: _Inbound | None) -> None:
        """One pod connection; both streams end with FIN however it ends (kubectl waits for them)."""
        try:
            try:
                reader, writer = await self.dial(pair.port)
            except OSError as e:
                message = dial_message(pair.port, self.pod, self.uid, self.netns, e)
                await self.send(spdy.data_frame(pair.error, message.encode()))
                return
            pair.writer = writer
            if pair.reset:
                writer.close()
            to_pod = asyncio.ensure_future(self.client_to_pod(inbound, writer))
            try:
                while data := await reader.read(CHUNK):
                    await self.send(spdy.data_frame(pair.data, data))
            except OSError:  # a reset from the pod ends the stream as its FIN does
                pass
            finally:
                to_pod.cancel()
                await asyncio.gather(to_pod, return_exceptions=True)
                writer.close()
        except (ConnectionError, asyncio.CancelledError):  # the websocket is gone
            return
        finally:
            self.pairs.pop(request_id, None)
            self.inbound.pop(pair.data, None)
            if inbound is not None:
                inbound.discard()
            with contextlib.suppress(ConnectionError):
                if not self.ws.closed:
                    await self.send(spdy.data_frame(pair.data, fin=True) + spdy.data_frame(pair.error, fin=True))

    async def client_to_pod(self, inbound: _Inbound | None, writer: asyncio.StreamWriter) -> None:
        if inbound is None:  # the data stream came with FIN
            writer.write_eof()
            return
        try:
            while (data := await inbound.queue.get()) is not None:
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:  # the pod reset the connection: what the client still sends goes nowhere
            inbound.discard()

    async def dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        def make() -> socket.socket:
            fd = os.open(self.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return made_inside(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                os.close(fd)

        sock = await asyncio.to_thread(make)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

