"""Probe attempts and the Events they make, worded as kubelet's prober words them
(pkg/probe/{http,tcp,exec}, pkg/kubelet/prober/prober.go)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from podnet.netlab.node import podspec, probes
from podnet.netlab.node.kubelet import ContainerRun, Kubelet, PodRun
from podnet.netlab.node.probes import Outcome, event_for
from podnet.netlab.node.sandbox import Sandbox


@pytest.mark.parametrize("kind, outcome, want", [
    pytest.param("Readiness", Outcome("success"), None, id="pass-says-nothing"),
    pytest.param("Readiness", Outcome("failure", 'Get "http://10.0.1.5:8080/ready": dial tcp 10.0.1.5:8080: connect: '
                                                 'connection refused'),
                 ("Unhealthy", 'Readiness probe failed: Get "http://10.0.1.5:8080/ready": dial tcp 10.0.1.5:8080: '
                               'connect: connection refused'), id="readiness-refused"),
    pytest.param("Liveness", Outcome("failure", "HTTP probe failed with statuscode: 500"),
                 ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500"), id="liveness-500"),
    pytest.param("Startup", Outcome("failure", ""), ("Unhealthy", "Startup probe failed: "), id="exec-no-output"),
    pytest.param("Liveness", Outcome("unknown", error='strconv.Atoi: parsing "http": invalid syntax'),
                 ("Unhealthy", 'Liveness probe errored and resulted in unknown state: strconv.Atoi: parsing "http": '
                               'invalid syntax'), id="errored"),
])
def test_event_for(kind, outcome, want):
    assert event_for(kind, outcome) == want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _http_server(status: int):
    async def handle(rd, wr):
        await rd.readuntil(b"\r\n\r\n")
        wr.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await wr.drain()
        wr.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _silent_server():
    async def handle(rd, wr):
        await rd.read()  # never answers; the client gives up
        wr.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("status, want", [
    pytest.param(200, Outcome("success"), id="200"),
    pytest.param(302, Outcome("success"), id="redirect-passes"),
    pytest.param(500, Outcome("failure", "HTTP probe failed with statuscode: 500"), id="500"),
    pytest.param(404, Outcome("failure", "HTTP probe failed with statuscode: 404"), id="404"),
])
async def test_http_status(status, want):
    server = await _http_server(status)
    port = server.sockets[0].getsockname()[1]
    async with server:
        got = await probes.attempt(podspec.Probe("http", port, "/ready"), port, "127.0.0.1", None)
    assert got == want


async def test_http_refused_is_gos_client_error():
    port = _free_port()
    got = await probes.attempt(podspec.Probe("http", port, "/ready"), port, "127.0.0.1", None)
    assert got == Outcome("failure", f'Get "http://127.0.0.1:{port}/ready": dial tcp 127.0.0.1:{port}: connect: '
                                     f'connection refused')


async def test_http_timeout_is_gos_client_timeout():
    server = await _silent_server()
    port = server.sockets[0].getsockname()[1]
    async with server:
        got = await probes.attempt(podspec.Probe("http", port, "/healthz", timeout=0.2), port, "127.0.0.1", None)
    assert got == Outcome("failure", f'Get "http://127.0.0.1:{port}/healthz": context deadline exceeded '
                                     f'(Client.Timeout exceeded while awaiting headers)')


async def test_tcp_refused_and_open():
    port = _free_port()
    got = await probes.attempt(podspec.Probe("tcp", port), port, "127.0.0.1", None)
    assert got == Outcome("failure", f"dial tcp 127.0.0.1:{port}: connect: connection refused")
    server = await _http_server(200)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert (await probes.attempt(podspec.Probe("tcp", port), port, "127.0.0.1", None)).passed


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_a_port_name_the_container_lacks_errors(kind):
    got = await probes.attempt(podspec.Probe(kind, "http"), None, "127.0.0.1", None)
    assert got == Outcome("unknown", error='strconv.Atoi: parsing "http": invalid syntax')
    assert event_for("Readiness", got) == (
        "Unhealthy", 'Readiness probe errored and resulted in unknown state: strconv.Atoi: parsing "http": invalid '
                     'syntax')


@pytest.mark.parametrize("command, want", [
    pytest.param(("true",), Outcome("success"), id="exit-0"),
    pytest.param(("sh", "-c", "echo out; echo err >&2; exit 3"), Outcome("failure", "out\nerr\n"),
                 id="combined-output"),
    pytest.param(("sh", "-c", "head -c 20000 /dev/zero | tr '\\0' a; exit 1"), Outcome("failure", "a" * 10240),
                 id="output-capped-at-10KiB"),
    pytest.param(("sh", "-c", "sleep 5"), Outcome("failure", 'command "sh -c sleep 5" timed out'), id="timeout"),
])
async def test_exec(command, want):
    # the test's own process stands for the container: nsenter into our own namespaces
    got = await probes.attempt(podspec.Probe("exec", command=command, timeout=0.5), None, "127.0.0.1", os.getpid())
    assert got == want


async def test_failed_liveness_records_each_failure_then_kills_the_container(tmp_path):
    """The kubelet's liveness loop: one Unhealthy Event per failed attempt in the prober's words, then
    Killing once the failure threshold is reached, and the container's process group is stopped."""
    port = _free_port()
    spec = podspec.parse({"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {
        "nodeName": "n1", "automountServiceAccountToken": False, "containers": [{
            "name": "main", "image": "x", "command": ["run"],
            "livenessProbe": {"tcpSocket": {"port": port, "host": "127.0.0.1"}, "periodSeconds": 1,
                              "failureThreshold": 2}}]}})
    k = Kubelet(None, "n1", "192.168.77.11", lab="t", run_dir=tmp_path, cni_bin_dir="", cni_conf_dir=tmp_path)
    posted: list[dict] = []

    async def post(body):
        posted.append(body)

    k.events.post = post
    proc = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)  # the container
    try:
        cr = ContainerRun(spec.containers[0])
        cr.proc = proc
        pr = PodRun(spec, Sandbox(spec.key, spec.uid, None, "c", ips=["127.0.0.1"]), {"main": cr})
        k.runs[spec.key] = pr
        await asyncio.wait_for(k._liveness(pr, cr, "127.0.0.1"), 30)
        assert proc.returncode is not None  # stopped
        await k.events.drain()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    refused = f"Liveness probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused"
    assert [(e["reason"], e["type"], e["message"]) for e in posted] == [
        ("Unhealthy", "Warning", refused), ("Unhealthy", "Warning", refused),
        ("Killing", "Normal", "Container main failed liveness probe, will be restarted")]
    assert {e["involvedObject"]["fieldPath"] for e in posted} == {"spec.containers{main}"}
