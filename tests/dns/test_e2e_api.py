"""End to end against the lab API server: real informers, a Service created through the API resolves;
and the podnet-dns console script with the flags netlab uses, stopped by SIGTERM after lameduck."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from podnet.dns.daemon import Daemon, Options
from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer

PODNET_DNS = shutil.which("podnet-dns") or str(Path(sys.executable).parent / "podnet-dns")


async def resolve(port: int, name: str, qtype: str = "A"):
    q = dns.message.make_query(name, qtype)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)


async def wait_rcode(port: int, name: str, rcode: int, tries: int = 250):
    """Poll (bounded) until ``name`` answers ``rcode``; returns the last reply."""
    r = None
    for _ in range(tries):
        r = await resolve(port, name)
        if r.rcode() == rcode:
            return r
        await asyncio.sleep(0.02)
    return r


async def test_service_created_in_api_resolves():
    async with LabApiServer() as api:
        opts = Options(master=api.url, listen="127.0.0.1:0", upstreams=[], health_listen=None, ready_listen=None,
                       metrics_listen=None)
        daemon = Daemon(opts)
        tasks = await daemon.start()
        try:
            await asyncio.wait_for(daemon.sync.synced_event.wait(), 10)
            port = daemon.server.port
            name = "hello.default.svc.cluster.local."
            assert (await resolve(port, name)).rcode() == dns.rcode.NXDOMAIN
            async with ApiClient.from_url(api.url) as client:
                created = await client.create(resources.SERVICES, {
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello", "namespace": "default"},
                    "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "hello"}},
                }, namespace="default")
                ip = created["spec"]["clusterIP"]
                r = await wait_rcode(port, name, dns.rcode.NOERROR)
                assert [rd.to_text() for rd in r.answer[0]] == [ip]
                r = await resolve(port, f"_http._tcp.{name}", "SRV")
                assert r.answer[0][0].to_text() == f"0 100 80 {name}"
                await client.delete(resources.SERVICES, "hello", namespace="default")
                r = await wait_rcode(port, name, dns.rcode.NXDOMAIN)
                assert r.rcode() == dns.rcode.NXDOMAIN
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await daemon.server.stop()
            if daemon._client is not None:
                await daemon._client.close()


async def test_console_script_with_netlab_flags_and_sigterm():
    async with LabApiServer() as api:
        proc = await asyncio.create_subprocess_exec(
            PODNET_DNS, "--master", api.url, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.9:53",
            "--health-listen", "127.0.0.1:0", "--ready-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            "--lameduck", "0.5", stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        )
        log_lines: list[str] = []
        try:
            port = ready_port = None
            while True:
                line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
                assert line, "podnet-dns exited early:\n" + "".join(log_lines)
                log_lines.append(line)
                if m := re.search(r"listening on 127\.0\.0\.1:(\d+) \(udp\+tcp\)", line):
                    port = int(m.group(1))
                if m := re.search(r"http \S*/ready\S* on 127\.0\.0\.1:(\d+)", line):
                    ready_port = int(m.group(1))
                if "synced:" in line:
                    break
            assert port and ready_port
            r = await resolve(port, "kubernetes.default.svc.cluster.local.")
            assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
            r = await resolve(port, "dns-version.cluster.local.", "TXT")
            assert r.answer[0][0].to_text() == '"1.1.0"'
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{ready_port}/ready") as resp:
                    assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.mark.parametrize(
    "args,env,rc,message",
    [
        (["--listen", "127.0.0.1:0"], {"HOME": "/nonexistent"}, 2, "no API server"),
        (["--listen", "192.0.2.1:53", "--master", "http://127.0.0.1:1"], {}, 1, "cannot start"),
        (["--ttl", "-1"], {}, 2, "--ttl must be within"),
    ],
    ids=["no-api-server", "listen-address-not-ours", "bad-flag"],
)
async def test_console_script_startup_errors(args, env, rc, message, tmp_path):
    import os

    environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | env
    proc = await asyncio.create_subprocess_exec(PODNET_DNS, *args, "--health-listen", "", "--ready-listen", "",
                                                "--metrics-listen", "", env=environ, cwd=tmp_path,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == rc
    assert message in err.decode()
