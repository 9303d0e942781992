"""Plugin exec cost: the static C shim vs the dynamic C shim vs the Python shim vs the reference Go plugins.

    .venv/bin/python -P bench/shim_exec.py [--n 300]

What a runtime pays per CNI call before any network work: fork+exec of the plugin
binary, its start-up, reading stdin and (for podnet's shims) one unix-socket round
trip to the node daemon. Two measurements, interleaved call by call so machine
noise hits every candidate alike:

- VERSION: exec and answer, no daemon (every binary, the reference plugins included:
  their VERSION is their bare start-up cost, Go runtime initialisation included);
- forward: an ADD forwarded to a stub daemon that answers at once (podnet's shims
  only; the daemon's own work is measured by bench/cni_bench.py).

Nothing touches the network: the stub daemon is a unix socket in a temporary
directory. Prints medians and p90 in milliseconds, and each binary's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from podnet.cni import install

REFERENCE = [p for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap")
             if os.access(p, os.X_OK)]


def stub_daemon(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(b'0\n{"cniVersion":"1.0.0","interfaces":[],"ips":[]}\n')

    threading.Thread(target=serve, daemon=True).start()
    return s


def timed(binary: str, env: dict, stdin: bytes) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([binary], input=stdin, env=env, capture_output=True)
    ms = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"{binary}: {p.stdout!r} {p.stderr!r}")
    return ms


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs):6.2f} {xs[int(len(xs) * 0.9)]:6.2f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pnt-shim-bench-") as d:
        tmp = Path(d)
        sock = str(tmp / "d.sock")
        server = stub_daemon(sock)
        shims: dict[str, str] = {}
        install.build_shim(tmp / "c-static", static=True)
        shims["C shim, -static"] = str(tmp / "c-static")
        install.build_shim(tmp / "c-dynamic")
        shims["C shim, dynamic"] = str(tmp / "c-dynamic")
        py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        (tmp / "py").mkdir()
        b, _ = install.install(str(tmp / "py"), str(tmp / "net.d"), sock, python=py, form="bytecode", portmap="off")
        shims[f"Python shim (bytecode, {py})"] = str(b)
        candidates = {**shims, **{f"reference {Path(r).name} (Go)": r for r in REFERENCE}}

        conf = json.dumps({"cniVersion": "1.0.0", "name": "podnet", "type": "podnet-cni", "socket": sock}).encode()
        add_env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bench", "CNI_NETNS": "/var/run/netns/x",
                   "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
        version: dict[str, list[float]] = {k: [] for k in candidates}
        forward: dict[str, list[float]] = {k: [] for k in shims}
        for _ in range(5):  # warm the page cache
            for k, path in candidates.items():
                timed(path, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}')
        for _ in range(a.n):
            for k, path in candidates.items():
                version[k].append(timed(path, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}'))
            for k, path in shims.items():
                forward[k].append(timed(path, add_env, conf))
        server.close()

        load = os.getloadavg()
        print(f"# plugin exec cost, n={a.n} each, interleaved; load average {load[0]:.2f} {load[1]:.2f}; "
              f"{os.cpu_count()} CPUs")
        print(f"{'binary':44} {'size':>10}  {'VERSION ms':>13}  {'ADD forward ms':>14}")
        print(f"{'':44} {'bytes':>10}  {'p50    p90':>13}  {'p50    p90':>14}")
        for k, path in candidates.items():
            size = Path(path).stat().st_size
            fwd = summary(forward[k]) if k in forward else "     -      -"
            print(f"{k:44} {size:10d}  {summary(version[k]):>13}  {fwd:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
