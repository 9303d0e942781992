"""Client side of the lab checks, run inside a pod or the outside netns.

``python -P -m podnet.netlab.check.probe MODE HOST PORT [--count N] [--interval S] [--timeout S]``
prints one JSON object per attempt on stdout, with the wall-clock start time ``t``:
``{"i": 0, "ok": true, "pod": "web-1", "peer": "10.244.1.5", "t": 1700000000.1, "ms": 1.2}`` or
``{"i": 0, "ok": false, "error": "refused", "t": ..., "ms": 0.3}``.

Modes: ``tcp`` (a new connection per attempt, one echo line), ``udp`` (a new
socket per attempt), ``udp-flow`` (ONE socket, so one conntrack flow, for every
attempt: shows whether a flow gets black-holed when its endpoint goes away),
``http`` (GET / on a new connection). Stdlib only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

__all__ = ["attempt_tcp", "attempt_udp", "attempt_http", "parse_echo", "main"]


def parse_echo(data: bytes) -> dict:
    """``<pod> <peer-ip> <peer-port> <payload>`` -> {"pod", "peer", "peer_port"}."""
    parts = data.decode("utf-8", "replace").split()
    if len(parts) < 3:
        return {"ok": False, "error": f"bad reply {data[:60]!r}"}
    return {"ok": True, "pod": parts[0], "peer": parts[1], "peer_port": int(parts[2])}


def _error(e: BaseException) -> dict:
    if isinstance(e, ConnectionRefusedError):
        return {"ok": False, "error": "refused"}
    if isinstance(e, (socket.timeout, TimeoutError)):
        return {"ok": False, "error": "timeout"}
    if isinstance(e, OSError) and e.errno is not None:
        return {"ok": False, "error": f"{type(e).__name__}: {e.strerror}"}
    return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def attempt_tcp(host: str, port: int, timeout: float) -> dict:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"ping\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return parse_echo(buf)
    except OSError as e:
        return _error(e)


def attempt_udp(host: str, port: int, timeout: float, sock: socket.socket | None = None) -> dict:
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(b"ping", (host, port))
        while True:
            data, addr = s.recvfrom(4096)
            if addr[1] == port or not own:
                return parse_echo(data)
    except OSError as e:
        return _error(e)
    finally:
        if own:
            s.close()


def attempt_http(host: str, port: int, timeout: float) -> dict:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while chunk := s.recv(4096):
                buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 200 " not in status + " ":
            return {"ok": False, "error": status or "empty reply"}
        return {"ok": True, "pod": body.decode().strip()}
    except OSError as e:
        return _error(e)


def main(argv: list[str] | None = None, out=sys.stdout) -> int:
    ap = argparse.ArgumentParser(prog="probe")
    ap.add_argument("mode", choices=["tcp", "udp", "udp-flow", "http"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=1.0)
    a = ap.parse_args(argv)
    count = max(1, min(a.count, 10_000))
    flow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if a.mode == "udp-flow" else None
    for i in range(count):
        t0 = time.monotonic()
        wall = time.time()
        if a.mode == "tcp":
            r = attempt_tcp(a.host, a.port, a.timeout)
        elif a.mode == "http":
            r = attempt_http(a.host, a.port, a.timeout)
        else:
            r = attempt_udp(a.host, a.port, a.timeout, flow)
        r = {"i": i, **r, "t": round(wall, 4), "ms": round((time.monotonic() - t0) * 1000, 2)}
        out.write(json.dumps(r) + "\n")
        out.flush()
        if a.interval and i + 1 < count:
            time.sleep(a.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
