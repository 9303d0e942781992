"""The pod server (TCP/UDP echo with the peer it saw, HTTP with the pod name) and the probe client."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import pytest

from podnet.netlab.check import probe
from podnet.netlab.node.podserver import PodServer, echo_reply, http_reply


@pytest.fixture
async def server():
    s = await PodServer("web-1", host="127.0.0.1", tcp=0, udp=0, http=0).start()
    yield s
    s.close()


async def test_tcp_echo_reports_peer(server):
    r = await asyncio.to_thread(probe.attempt_tcp, "127.0.0.1", server.tcp_port, 2.0)
    assert r["ok"] and r["pod"] == "web-1" and r["peer"] == "127.0.0.1" and r["peer_port"] > 0


async def test_udp_echo_reports_peer_port(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        r = await asyncio.to_thread(probe.attempt_udp, "127.0.0.1", server.udp_port, 2.0, s)
        assert r == {"ok": True, "pod": "web-1", "peer": "127.0.0.1", "peer_port": s.getsockname()[1]}
    finally:
        s.close()


async def test_http_returns_pod_name(server):
    r = await asyncio.to_thread(probe.attempt_http, "127.0.0.1", server.http_port, 2.0)
    assert r == {"ok": True, "pod": "web-1"}


async def test_probe_cli_counts_and_reports_refused(server):
    # a port nobody listens on: bind then close to get a free one
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    out = io.StringIO()
    await asyncio.to_thread(probe.main, ["tcp", "127.0.0.1", str(free), "--count", "2"], out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["i"] for r in rows] == [0, 1] and all(r["error"] == "refused" for r in rows)
    out = io.StringIO()
    await asyncio.to_thread(probe.main, ["udp-flow", "127.0.0.1", str(server.udp_port), "--count", "3"], out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len({r["peer_port"] for r in rows}) == 1 and all(r["pod"] == "web-1" for r in rows)


CASES = [
    ("root", b"GET / HTTP/1.1\r\n", b"200 OK", b"\r\n\r\nweb-1\n"),
    ("client", b"GET /client HTTP/1.1\r\n", b"200 OK", b"\r\n\r\n10.0.0.9 4242\n"),
    ("health", b"GET /healthz HTTP/1.1\r\n", b"200 OK", b"ok\n"),
    ("unknown", b"GET /nope HTTP/1.1\r\n", b"404 Not Found", b"not found\n"),
]


@pytest.mark.parametrize("line,status,body", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_http_reply(line, status, body):
    out = http_reply("web-1", ("10.0.0.9", 4242), line)
    assert out.split(b"\r\n")[0].endswith(status) and out.endswith(body)


def test_echo_reply_and_parse_roundtrip():
    out = echo_reply("db-0", ("10.244.1.7", 555), b"hello\n")
    assert out == b"db-0 10.244.1.7 555 hello\n"
    assert probe.parse_echo(out) == {"ok": True, "pod": "db-0", "peer": "10.244.1.7", "peer_port": 555}
    assert probe.parse_echo(b"junk")["ok"] is False
