"""Container probes as kubelet runs them: one attempt (:func:`attempt`) and the threshold logic
(:class:`ProbeState`), kept apart so the thresholds are a plain table test.

An attempt is made from the kubelet (the node's network namespace), as kubelet's prober does:

- ``httpGet``: a GET of ``path`` to ``host`` (default: the pod's IP) on the port, HTTP or HTTPS
  (the certificate is not verified, as kubelet does not); any status 200-399 passes;
- ``tcpSocket``: the connection opens;
- ``exec``: the command runs inside the container (its mount and network namespaces and its
  root, with util-linux ``nsenter``); exit status 0 passes.

Each attempt is bounded by ``timeoutSeconds``. :class:`ProbeState` turns attempts into a result:
``successThreshold`` consecutive passes make it succeed, ``failureThreshold`` consecutive failures
make it fail; before either, the result is the initial one (readiness: not ready; liveness:
alive), as kubelet's results manager starts them.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from podnet.netlab.node.podspec import Probe

__all__ = ["ProbeState", "attempt"]


@dataclass
class ProbeState:
    probe: Probe
    result: bool
    successes: int = 0
    failures: int = 0

    def record(self, passed: bool) -> bool:
        """Count one attempt; returns True when the result changed."""
        before = self.result
        if passed:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.probe.success_threshold:
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.probe.failure_threshold:
                self.result = False
        return self.result != before


async def _http(host: str, port: int, path: str, https: bool, timeout: float) -> bool:
    ctx = None
    if https:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    rd, wr = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    try:
        hosthdr = f"[{host}]" if ":" in host else host
        wr.write(f"GET {path} HTTP/1.1\r\nHost: {hosthdr}:{port}\r\nUser-Agent: kube-probe/1.32\r\n"
                 f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(rd.readline(), timeout)
        fields = line.split()
        return len(fields) >= 2 and fields[1].isdigit() and 200 <= int(fields[1]) < 400
    finally:
        wr.close()


async def _tcp(host: str, port: int, timeout: float) -> bool:
    _, wr = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    wr.close()
    return True


async def _exec(pid: int, command: tuple[str, ...], timeout: float) -> bool:
    p = await asyncio.create_subprocess_exec(
        "nsenter", "-t", str(pid), "-m", "-n", "-r", "-w", "--", *command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(p.wait(), timeout) == 0
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        return False


async def attempt(probe: Probe, port: int | None, pod_ip: str, pid: int | None) -> bool:
    """One probe attempt (see the module docstring); never raises for a failing target."""
    host = probe.host or pod_ip
    try:
        if probe.kind == "http" and port is not None:
            return await _http(host, port, probe.path, probe.scheme == "HTTPS", probe.timeout)
        if probe.kind == "tcp" and port is not None:
            return await _tcp(host, port, probe.timeout)
        if probe.kind == "exec" and pid is not None and probe.command:
            return await _exec(pid, probe.command, probe.timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError):
        return False
    return False
