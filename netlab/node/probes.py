"""Container probes as kubelet runs them: one attempt (:func:`attempt`), the threshold logic
(:class:`ProbeState`) and the Event an attempt makes (:func:`event_for`), kept apart so each is a
plain table test.

An attempt is made from the kubelet (the node's network namespace), as kubelet's prober does, and
yields an :class:`Outcome` with the output kubelet's probers give (pkg/probe/{http,tcp,exec}):

- ``httpGet``: a GET of ``path`` to ``host`` (default: the pod's IP) on the port, HTTP or HTTPS
  (the certificate is not verified, as kubelet does not); a status 200-399 passes (redirects are not
  followed); another fails with ``HTTP probe failed with statuscode: <code>``; a transport error fails
  with Go's client error (``Get "http://10.0.1.5:8080/ready": dial tcp 10.0.1.5:8080: connect:
  connection refused``; ``... context deadline exceeded (Client.Timeout exceeded while awaiting
  headers)`` after ``timeoutSeconds``);
- ``tcpSocket``: the connection opens, else Go's dial error (``dial tcp 10.0.1.5:8080: connect:
  connection refused``, ``dial tcp ...: i/o timeout``);
- ``exec``: the command runs inside the container (its mount and network namespaces and its root,
  with util-linux ``nsenter``); exit status 0 passes, another fails with the command's combined
  stdout and stderr (at most 10 KiB) as output, and a command still running after ``timeoutSeconds``
  is killed (with everything it started) and fails with ``command "<cmd>" timed out``.

A probe that cannot be made at all (a named port the container does not declare, an exec into a
container that is gone) *errors*: the result is unknown and counts as a failure.

Each attempt is bounded by ``timeoutSeconds``. :class:`ProbeState` turns attempts into a result:
``successThreshold`` consecutive passes make it succeed, ``failureThreshold`` consecutive failures
make it fail; before either, the result is the initial one (readiness: not ready; liveness:
alive), as kubelet's results manager starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
from dataclasses import dataclass

from podnet.netlab.node.podspec import Probe

__all__ = ["ProbeState", "Outcome", "attempt", "event_for", "KINDS"]

KINDS = ("Readiness", "Liveness", "Startup")
"""kubelet's probeType names, as its Events start."""

MAX_OUTPUT = 10 * 1024  # pkg/probe/exec maxReadLength


@dataclass(frozen=True)
class Outcome:
    """One attempt: ``result`` is ``success``, ``failure`` or ``unknown`` (the probe errored: ``error``
    says why); ``output`` is the prober's output (why it failed)."""

    result: str
    output: str = ""
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "success"


PASSED = Outcome("success")


def event_for(kind: str, o: Outcome) -> tuple[str, str] | None:
    """The (reason, message) kubelet's prober records for an attempt of a ``kind`` probe (one of
    :data:`KINDS`), or None for a pass (pkg/kubelet/prober/prober.go)."""
    if o.error:
        return "Unhealthy", f"{kind} probe errored and resulted in {o.result} state: {o.error}"
    if o.result == "failure":
        return "Unhealthy", f"{kind} probe failed: {o.output}"
    return None


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


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_error(host: str, port: int, e: BaseException) -> str:
    """Go's net.Dial error text for a failed connect."""
    if isinstance(e, asyncio.TimeoutError):
        return f"dial tcp {_hostport(host, port)}: i/o timeout"
    if isinstance(e, OSError) and e.errno is not None:
        return f"dial tcp {_hostport(host, port)}: connect: {os.strerror(e.errno).lower()}"
    return f"dial tcp {_hostport(host, port)}: {e}"


class _DialFailed(Exception):
    """The connection could not be opened; the message is Go's dial error."""


async def _status_line(host: str, port: int, path: str, ctx: ssl.SSLContext | None) -> bytes:
    try:
        rd, wr = await asyncio.open_connection(host, port, ssl=ctx)
    except OSError as e:
        raise _DialFailed(_dial_error(host, port, e)) from e
    try:
        wr.write(f"GET {path} HTTP/1.1\r\nHost: {_hostport(host, port)}\r\nUser-Agent: kube-probe/1.32\r\n"
                 f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
        return await rd.readline()
    finally:
        wr.close()


async def _http(host: str, port: int, path: str, https: bool, timeout: float) -> Outcome:
    url = f"{'https' if https else 'http'}://{_hostport(host, port)}{path}"
    ctx = None
    if https:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        line = await asyncio.wait_for(_status_line(host, port, path, ctx), timeout)
    except asyncio.TimeoutError:
        return Outcome("failure", f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
                                  f'headers)')
    except _DialFailed as e:
        return Outcome("failure", f'Get "{url}": {e}')
    except OSError as e:  # after connecting: reset, TLS
        return Outcome("failure", f'Get "{url}": {os.strerror(e.errno).lower() if e.errno else e}')
    if not line:
        return Outcome("failure", f'Get "{url}": EOF')
    fields = line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return Outcome("failure", f'Get "{url}": net/http: HTTP/1.x transport connection broken: malformed HTTP '
                                  f'response {line.decode("latin-1").rstrip()!r}')
    code = int(fields[1])
    if 200 <= code < 400:
        return PASSED
    return Outcome("failure", f"HTTP probe failed with statuscode: {code}")


async def _tcp(host: str, port: int, timeout: float) -> Outcome:
    try:
        _, wr = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return Outcome("failure", _dial_error(host, port, e))
    wr.close()
    return PASSED


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to EOF, keeping the first ``limit`` bytes."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[:max(0, limit - len(kept))]
    return bytes(kept)


async def _exec(pid: int, command: tuple[str, ...], timeout: float) -> Outcome:
    try:
        p = await asyncio.create_subprocess_exec(
            "nsenter", "-t", str(pid), "-m", "-n", "-r", "-w", "--", *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    except OSError as e:
        return Outcome("unknown", error=str(e))
    stdout = p.stdout
    assert stdout is not None

    async def finish() -> tuple[bytes, int]:
        return await _read_at_most(stdout, MAX_OUTPUT), await p.wait()

    try:
        out, rc = await asyncio.wait_for(finish(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the command and whatever it started
        await p.wait()
        return Outcome("failure", f"command {json.dumps(' '.join(command))} timed out")
    if rc == 0:
        return PASSED
    return Outcome("failure", out.decode(errors="replace"))


async def attempt(probe: Probe, port: int | None, pod_ip: str, pid: int | None) -> Outcome:
    """One probe attempt (see the module docstring); never raises for a failing target. ``port``: the
    probe's port resolved against the container's ports (None: a name the container does not declare)."""
    host = probe.host or pod_ip
    if probe.kind in ("http", "tcp") and port is None:
        return Outcome("unknown", error=f"strconv.Atoi: parsing {json.dumps(str(probe.port))}: invalid syntax")
    try:
        if probe.kind == "http":
            return await _http(host, port, probe.path, probe.scheme == "HTTPS", probe.timeout)
        if probe.kind == "tcp":
            return await _tcp(host, port, probe.timeout)
        if probe.kind == "exec" and probe.command:
            if pid is None:
                return Outcome("unknown", error="container is not running")
            return await _exec(pid, probe.command, probe.timeout)
    except (OSError, ssl.SSLError, ValueError) as e:
        return Outcome("unknown", error=str(e))
    return Outcome("unknown", error=f"missing probe handler for {probe.kind!r}")
