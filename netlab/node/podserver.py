"""The lab pod's workload: TCP echo, UDP echo and HTTP, each reporting what it saw.

Run inside a pod's network namespace (the lab kubelet starts it with
``ip netns exec``). Stdlib only, so it starts in well under a second.

Wire format, chosen so a check can tell exactly which pod answered and which
source address the pod saw (the point of every service-proxy check):

- TCP echo (``--tcp``, default 9000): for each line received, one line back:
  ``<pod> <peer-ip> <peer-port> <line>``.
- UDP echo (``--udp``, default 9000): each datagram answered with the same
  format (without a trailing newline requirement).
- HTTP (``--http``, default 8080): ``GET /`` answers the pod name and a newline;
  ``GET /client`` answers ``<peer-ip> <peer-port>``; ``GET /healthz`` answers ``ok``.

Each flag may be repeated; given any port flag, the server listens on exactly the ports given
(``--http 80`` alone: HTTP on 80 and nothing else), else on the defaults above.

Guarantees: one event loop, no threads; a slow or broken client never blocks
others; SIGTERM stops the server at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

__all__ = ["PodServer", "echo_reply", "http_reply", "listeners", "main"]


def echo_reply(pod: str, peer: tuple, payload: bytes) -> bytes:
    """The reply to one echo request from ``peer``."""
    return f"{pod} {peer[0]} {peer[1]} ".encode() + payload.rstrip(b"\r\n") + b"\n"


def http_reply(pod: str, peer: tuple, request_line: bytes) -> bytes:
    """A complete HTTP/1.0-style response to ``request_line``."""
    parts = request_line.decode("latin-1", "replace").split()
    path = parts[1] if len(parts) >= 2 else "/"
    status = "200 OK"
    if path in ("/", "/name"):
        body = f"{pod}\n"
    elif path == "/client":
        body = f"{peer[0]} {peer[1]}\n"
    elif path in ("/healthz", "/readyz"):
        body = "ok\n"
    else:
        status, body = "404 Not Found", "not found\n"
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
        f"X-Pod-Name: {pod}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        assert self.transport is not None
        self.transport.sendto(echo_reply(self.pod, addr, data), addr)


class PodServer:
    """TCP echo + UDP echo + HTTP for one pod, on sockets given or bound at start."""

    def __init__(self, pod: str, host: str = "0.0.0.0", tcp: int | None = 9000, udp: int | None = 9000,
                 http: int | None = 8080) -> None:
        self.pod, self.host, self.tcp_port, self.udp_port, self.http_port = pod, host, tcp, udp, http
        self._servers: list[asyncio.base_events.Server] = []
        self._udp: asyncio.DatagramTransport | None = None

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while line := await asyncio.wait_for(reader.readline(), 60):
                writer.write(echo_reply(self.pod, peer, line))
                await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            writer.write(http_reply(self.pod, peer, request_line))
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def start(self) -> "PodServer":
        loop = asyncio.get_running_loop()
        if self.tcp_port is not None:
            s = await asyncio.start_server(self._echo, self.host, self.tcp_port, reuse_address=True)
            self.tcp_port = s.sockets[0].getsockname()[1]
            self._servers.append(s)
        if self.http_port is not None:
            s = await asyncio.start_server(self._http, self.host, self.http_port, reuse_address=True)
            self.http_port = s.sockets[0].getsockname()[1]
            self._servers.append(s)
        if self.udp_port is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, self.udp_port))
            self.udp_port = sock.getsockname()[1]
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.pod), sock=sock)
        return self

    def close(self) -> None:
        for s in self._servers:
            s.close()
        if self._udp is not None:
            self._udp.close()


def listeners(tcp: list[int] | None, udp: list[int] | None, http: list[int] | None) -> list[tuple[int | None, ...]]:
    """(tcp, udp, http) port triples, one per :class:`PodServer`: with no port flag at all the usual
    ports (TCP and UDP echo 9000, HTTP 8080); otherwise exactly the ports given."""
    if tcp is None and udp is None and http is None:
        return [(9000, 9000, 8080)]
    t, u, h = list(tcp or ()), list(udp or ()), list(http or ())
    n = max(len(t), len(u), len(h))
    pad = lambda xs: xs + [None] * (n - len(xs))  # noqa: E731
    return list(zip(pad(t), pad(u), pad(h)))


async def _serve(args: argparse.Namespace) -> None:
    servers = [await PodServer(args.name, args.host, t, u, h).start()
               for t, u, h in listeners(args.tcp, args.udp, args.http)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for s in servers:
        print(f"podserver {args.name}: tcp {s.tcp_port} udp {s.udp_port} http {s.http_port}", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podserver", description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="pod name reported in every reply")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--tcp", type=int, action="append", help="TCP echo port (repeatable)")
    ap.add_argument("--udp", type=int, action="append", help="UDP echo port (repeatable)")
    ap.add_argument("--http", type=int, action="append", help="HTTP port (repeatable)")
    asyncio.run(_serve(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
