"""Resolution as a pod does it: a netns with a kubelet-style resolv.conf, glibc's resolver (getent) and dig,
asking podnet-dns listening on 127.0.0.1:53 inside that netns, fed by real informers from the lab API server."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from podnet.dns import snapshot
from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer
from podnet.dns.watch import ZoneSync, initial_table
from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.kube.informer import Informer
from podnet.netlab.apiserver.server import LabApiServer
from podnet.host import nsenter
from podnet.host.netns import NetnsPool

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

RESOLV = "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"


@pytest.fixture
def pod_ns():
    pool = NetnsPool("pnt-dns-")
    try:
        ns = pool.netns("pod")
        ns.write_resolv_conf(RESOLV)
        # A pod has an eth0 with an address; without one, getaddrinfo's AI_ADDRCONFIG skips IPv4 lookups.
        node = pool.netns("node")
        pool.veth(ns, "eth0", node, "veth0")
        ns.ip("addr", "add", "10.244.0.5/24", "dev", "eth0")
        yield ns
    finally:
        pool.close()


def sockets_in(ns_name: str) -> tuple[socket.socket, socket.socket]:
    with nsenter.inside(ns_name):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 53))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", 53))
    return udp, tcp


async def run_in(ns, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("ip", "netns", "exec", ns.name, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode()


async def test_glibc_resolves_short_service_name(pod_ns):
    cfg = snapshot.Config()
    handler = Handler(initial_table(cfg))
    server = DnsServer(handler, sockets=sockets_in(pod_ns.name))
    async with LabApiServer() as api, ApiClient.from_url(api.url) as client:
        informers = [Informer(client, r) for r in (resources.SERVICES, resources.ENDPOINT_SLICES, resources.NAMESPACES)]
        sync = ZoneSync(handler, *informers, cfg)
        sync.attach()
        tasks = [asyncio.create_task(i.run()) for i in informers]
        await server.start()
        try:
            await asyncio.wait_for(sync.synced_event.wait(), 10)
            created = await client.create(resources.SERVICES, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}},
            }, namespace="default")
            ip = created["spec"]["clusterIP"]
            for _ in range(250):  # bounded wait for the watch event
                if handler.table.hot.get(b"\x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01"):
                    break
                await asyncio.sleep(0.02)
            code, out = await run_in(pod_ns, "getent", "hosts", "web")
            assert code == 0, out
            assert out.split() == [ip, "web.default.svc.cluster.local"]
            code, out = await run_in(pod_ns, "getent", "hosts", "web.default")
            assert code == 0 and out.split()[0] == ip
            code, out = await run_in(pod_ns, "getent", "ahostsv4", "web.default.svc")
            assert code == 0 and out.split()[0] == ip
            code, out = await run_in(pod_ns, "getent", "hosts", "nope")
            assert code == 2, out  # not found, after walking the whole search list
            code, out = await run_in(pod_ns, "dig", "+short", "+search", "web")
            assert out.split() == [ip]
            code, out = await run_in(pod_ns, "dig", "+short", "+tcp", "kubernetes.default.svc.cluster.local")
            assert code == 0
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.stop()


async def test_console_script_in_dns_pod_netns(pod_ns):
    """The command netlab runs, inside a netns: fixed ports, 0.0.0.0:53, API server reached in the netns,
    glibc in the same netns resolving through it, /ready, then SIGTERM -> lameduck -> exit 0."""
    import shutil
    import signal
    import sys
    from pathlib import Path

    exe = shutil.which("podnet-dns") or str(Path(sys.executable).parent / "podnet-dns")
    api_sock = nsenter.listening_socket(pod_ns.name, "127.0.0.1", 6443)
    api = await LabApiServer().start(["127.0.0.1:0"], sockets=[api_sock])
    try:
        async with ApiClient.from_url(api.url) as client:
            created = await client.create(resources.SERVICES, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}},
            }, namespace="default")
        ip = created["spec"]["clusterIP"]
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", pod_ns.name, exe, "--master", "http://127.0.0.1:6443", "--listen", "0.0.0.0:53",
            "--upstream", "10.244.0.1:53", "--health-listen", "0.0.0.0:8080", "--ready-listen", "0.0.0.0:8181",
            "--metrics-listen", "0.0.0.0:9153", "--lameduck", "0.5",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            while True:
                line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
                assert line, "podnet-dns exited early"
                if "synced:" in line:
                    break
            code, out = await run_in(pod_ns, "getent", "hosts", "web")
            assert out.split() == [ip, "web.default.svc.cluster.local"], out
            code, out = await run_in(pod_ns, sys.executable, "-P", "-c",
                                     "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8181/ready').status,"
                                     " b'coredns_dns_requests_total' in u.urlopen('http://127.0.0.1:9153/metrics').read())")
            assert out.split() == ["200", "True"], out
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await api.stop()
