"""Tiny TCP/UDP servers and clients run inside test namespaces (``python -P netprobe.py ...``).

server NAME PORT LIFETIME   TCP and UDP on PORT: each TCP connection gets "NAME PEERIP\n" and then
                            an echo of every line; each UDP datagram gets "NAME PEERIP".
tcp HOST PORT N             N connections; prints JSON {"NAME PEER": count, "error:...": count}
udp HOST PORT N SPORT       N datagrams from source port SPORT (0 = new each time), one reply each
hold HOST PORT SECONDS      one TCP connection, one line every 0.1 s; prints JSON {"sent", "echoed", "error"}
Everything is bounded in time; servers exit after LIFETIME seconds.
"""

import json
import socket
import sys
import threading
import time
from collections import Counter


def server(name: str, port: int, lifetime: float) -> None:
    deadline = time.time() + lifetime
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)  # dual stack: IPv4 arrives v4-mapped
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.bind(("::", port))
    tcp.listen(128)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))

    def serve_conn(c: socket.socket, peer: str) -> None:
        c.settimeout(max(1.0, deadline - time.time()))
        try:
            c.sendall(f"{name} {peer}\n".encode())
            f = c.makefile("rb")
            for line in f:
                c.sendall(line)
        except OSError:
            pass
        finally:
            c.close()

    def tcp_loop() -> None:
        while True:
            c, addr = tcp.accept()
            threading.Thread(target=serve_conn, args=(c, addr[0].removeprefix("::ffff:")), daemon=True).start()

    def udp_loop() -> None:
        while True:
            data, addr = udp.recvfrom(2048)
            udp.sendto(f"{name} {addr[0]}".encode(), addr)

    threading.Thread(target=tcp_loop, daemon=True).start()
    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    time.sleep(max(0.0, deadline - time.time()))


def tcp_client(host: str, port: int, n: int) -> None:
    out: Counter = Counter()
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                out[s.makefile("r").readline().strip()] += 1
        except OSError as e:
            out[f"error:{type(e).__name__}"] += 1
    print(json.dumps(out))


def udp_client(host: str, port: int, n: int, sport: int) -> None:
    out: Counter = Counter()
    s = None
    for _ in range(n):
        if s is None or not sport:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport))
            s.settimeout(0.5)
        try:
            s.sendto(b"ping", (host, port))
            out[s.recvfrom(2048)[0].decode()] += 1
        except OSError as e:
            out[f"error:{type(e).__name__}"] += 1
        if not sport:
            s.close()
    print(json.dumps(out))


def hold(host: str, port: int, seconds: float) -> None:
    res = {"sent": 0, "echoed": 0, "error": ""}
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            f = s.makefile("r")
            res["hello"] = f.readline().strip()
            print("connected", flush=True)
            end = time.time() + seconds
            while time.time() < end:
                s.sendall(b"x\n")
                res["sent"] += 1
                if f.readline().strip() == "x":
                    res["echoed"] += 1
                time.sleep(0.1)
    except OSError as e:
        res["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    cmd, *a = sys.argv[1:]
    if cmd == "server":
        server(a[0], int(a[1]), float(a[2]))
    elif cmd == "tcp":
        tcp_client(a[0], int(a[1]), int(a[2]))
    elif cmd == "udp":
        udp_client(a[0], int(a[1]), int(a[2]), int(a[3]))
    elif cmd == "hold":
        hold(a[0], int(a[1]), float(a[2]))
