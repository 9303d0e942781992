"""kubeadm's default Corefile, verbatim, starts ``podnet-dns -conf`` inside a network namespace (its
own :53, :8080, :8181, :9153), finds the API through $KUBECONFIG, serves cluster names, forwards
other names to the nameserver of /etc/resolv.conf (bound there by ``ip netns exec``: a dnsmasq in a
second netns, as a node's resolver is for a pod), and stops on SIGTERM after its 5 s lameduck."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.host import nsenter
from podnet.host.netns import NetnsPool

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

PODNET_DNS = shutil.which("podnet-dns") or str(Path(sys.executable).parent / "podnet-dns")
KUBEADM = Path(__file__).parent / "corefiles" / "kubeadm.Corefile"


@pytest.fixture
def netns_pair():
    """(dns, upstream) namespaces on one veth: 10.99.0.1/24 and 10.99.0.2/24."""
    pool = NetnsPool("pnt-dcf-")
    try:
        dns_ns, up_ns = pool.netns("dns"), pool.netns("up")
        pool.veth(dns_ns, "eth0", up_ns, "eth0")
        dns_ns.ip("addr", "add", "10.99.0.1/24", "dev", "eth0")
        up_ns.ip("addr", "add", "10.99.0.2/24", "dev", "eth0")
        dns_ns.write_resolv_conf("nameserver 10.99.0.2\n")
        yield dns_ns, up_ns
    finally:
        pool.close()


async def run_in(ns, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("ip", "netns", "exec", ns.name, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode()


async def test_kubeadm_corefile_verbatim(netns_pair, tmp_path):
    dns_ns, up_ns = netns_pair
    exe = shutil.which("dnsmasq")
    if exe is None:
        pytest.skip("dnsmasq-base not installed")
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.77 real.example.org\n")
    upstream = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", up_ns.name, exe, "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
        "--port=53", "--listen-address=10.99.0.2", "--bind-interfaces", "--user=root", "--pid-file=",
        "--log-facility=/dev/null", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    api = await LabApiServer().start(["127.0.0.1:0"], sockets=[nsenter.listening_socket(dns_ns.name, "127.0.0.1", 6443)])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": "http://127.0.0.1:6443"}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
    }))
    corefile = tmp_path / "Corefile"
    shutil.copyfile(KUBEADM, corefile)
    proc = None
    try:
        async with ApiClient.from_url(api.urls[0]) as client:
            created = await client.create(resources.SERVICES, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
            }, namespace="default")
        ip = created["spec"]["clusterIP"]
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", dns_ns.name, PODNET_DNS, "-conf", str(corefile),
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        seen = []
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, f"podnet-dns exited early: {seen}"
            seen.append(line)
            if "synced:" in line:
                break
        code, out = await run_in(dns_ns, "dig", "@127.0.0.1", "+short", "web.default.svc.cluster.local")
        assert out.split() == [ip], out
        code, out = await run_in(dns_ns, "dig", "@127.0.0.1", "+short", "+tcp", "_http._tcp.web.default.svc.cluster.local", "SRV")
        assert out.split() == ["0", "100", "80", "web.default.svc.cluster.local."], out
        code, out = await run_in(dns_ns, "dig", "@127.0.0.1", "+short", "real.example.org")  # forward . /etc/resolv.conf
        assert out.split() == ["192.0.2.77"], out
        code, out = await run_in(dns_ns, sys.executable, "-P", "-c",
                                 "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health').status,"
                                 " u.urlopen('http://127.0.0.1:8181/ready').status,"
                                 " b'coredns_dns_requests_total' in u.urlopen('http://127.0.0.1:9153/metrics').read())")
        assert out.split() == ["200", "200", "True"], out
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0  # after `lameduck 5s`
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        upstream.kill()
        await upstream.wait()
        await api.stop()
