"""Bearer-token authentication and HTTPS of the lab API server: the token file, 401 bodies, kubectl,
the official client, a client in a pod-like network namespace, and ``podnet lab apiserver``'s flags."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.kubeconfig import ClientConfig
from podnet.netlab.apiserver.authn import UNAUTHORIZED, TokenAuthenticator, User, is_public, parse_token_file
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import kubeconfig_text, make_pki

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
ADMIN = "admin-token-0123456789"
NODE = "node-token-abcdefghij"
TOKENS = {ADMIN: User("kubernetes-admin", "admin", ("system:masters",)),
          NODE: User("system:node:n1", "kubelet-n1", ("system:nodes",))}


@pytest.mark.parametrize("text,want", [
    pytest.param('t1,alice,u1\n', {"t1": User("alice", "u1")}, id="three-columns"),
    pytest.param('t1,alice,u1,"g1,g2"\n', {"t1": User("alice", "u1", ("g1", "g2"))}, id="groups"),
    pytest.param('t1,alice,u1,g1\n\nt2,bob,u2\n', {"t1": User("alice", "u1", ("g1",)), "t2": User("bob", "u2")},
                 id="blank-line"),
])
def test_token_file(text, want):
    assert parse_token_file(text) == want


@pytest.mark.parametrize("text,words", [
    pytest.param("t1,alice\n", "line 1: must have at least 3 columns", id="two-columns"),
    pytest.param("t1,alice,u1\n,bob,u2\n", "line 2: empty token", id="empty-token"),
    pytest.param("t1,,u1\n", "line 1: empty user name", id="empty-user"),
    pytest.param("t1,alice,u1\nt1,bob,u2\n", "line 2: duplicate token", id="duplicate"),
])
def test_bad_token_file(text, words):
    with pytest.raises(ValueError, match=words):
        parse_token_file(text)


@pytest.mark.parametrize("header,user", [
    pytest.param(f"Bearer {ADMIN}", "kubernetes-admin", id="bearer"),
    pytest.param(f"bearer {NODE}", "system:node:n1", id="scheme-case-insensitive"),
    pytest.param(f"  Bearer {ADMIN}  ", "kubernetes-admin", id="surrounding-space"),
    pytest.param(None, None, id="none"),
    pytest.param("", None, id="empty"),
    pytest.param("Bearer", None, id="no-token"),
    pytest.param("Bearer ", None, id="empty-token"),
    pytest.param(f"Basic {ADMIN}", None, id="basic"),
    pytest.param(f"Bearer {ADMIN}x", None, id="wrong-token"),
    pytest.param(f"Bearer {ADMIN[:-1]}", None, id="prefix-of-token"),
])
def test_authenticate(header, user):
    got = TokenAuthenticator(TOKENS).authenticate(header)
    assert (got.name if got else None) == user


@pytest.mark.parametrize("path,public", [
    ("/healthz", True), ("/healthz/ping", True), ("/livez", True), ("/readyz", True), ("/version", True),
    ("/version/", True), ("/healthzz", False), ("/api", False), ("/apis", False), ("/openapi/v2", False),
    ("/api/v1/pods", False), ("/", False),
])
def test_public_paths(path, public):
    assert is_public(path) is public


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The lab's CA and serving certificate (for 127.0.0.1 and the namespace test's 10.250.0.1)."""
    d = tmp_path_factory.mktemp("pki")
    make_pki(d, ["127.0.0.1", "10.250.0.1"])
    return d


@pytest.fixture
async def secured(pki):
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key")) as api:
        yield api


def test_pki_files_and_modes(pki):
    assert sorted(f.name for f in pki.iterdir()) == ["apiserver.crt", "apiserver.key", "ca.crt"]
    assert (pki / "apiserver.key").stat().st_mode & 0o077 == 0
    text = subprocess.run(["openssl", "x509", "-in", str(pki / "apiserver.crt"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:kubernetes.default.svc" in text and "TLS Web Server" in text
    assert subprocess.run(["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(pki / "apiserver.crt")],
                          capture_output=True).returncode == 0


def _ctx(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca.crt"))


async def _get(url: str, pki, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}, ssl=_ctx(pki)) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize("path,headers,code", [
    pytest.param("/api/v1/pods", {}, 401, id="no-token"),
    pytest.param("/api/v1/pods", {"Authorization": "Bearer nope"}, 401, id="bad-token"),
    pytest.param("/api/v1/namespaces/default/pods/x/log", {}, 401, id="logs-need-a-token"),
    pytest.param("/api", {}, 401, id="discovery-needs-a-token"),
    pytest.param("/api/v1/pods?watch=true", {}, 401, id="watch-needs-a-token"),
    pytest.param("/api/v1/pods", {"Authorization": f"Bearer {ADMIN}"}, 200, id="admin"),
    pytest.param("/api/v1/nodes", {"Authorization": f"Bearer {NODE}"}, 200, id="node"),
    pytest.param("/healthz", {}, 200, id="healthz-public"),
    pytest.param("/readyz", {}, 200, id="readyz-public"),
    pytest.param("/version", {}, 200, id="version-public"),
])
async def test_requests(secured, pki, path, headers, code):
    assert secured.url.startswith("https://")
    status, body = await _get(secured.url + path, pki, headers)
    assert status == code
    if code == 401:
        assert json.loads(body) == UNAUTHORIZED


async def test_writes_without_a_token_change_nothing(secured, pki):
    pod = {"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "x", "command": ["id"]}]}}
    async with aiohttp.ClientSession() as s:
        async with s.post(secured.url + "/api/v1/namespaces/default/pods", json=pod, ssl=_ctx(pki)) as resp:
            assert resp.status == 401
    assert secured.store.get("pods", "default", "evil") is None


async def test_plain_http_to_the_tls_listener_is_not_served(secured):
    async with aiohttp.ClientSession() as s:
        try:
            async with s.get(secured.url.replace("https://", "http://") + "/api/v1/pods",
                             headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                status = resp.status
        except aiohttp.ClientError:
            status = None
    assert status != 200


async def test_podnet_client_with_and_without_token(secured, pki):
    ca = (pki / "ca.crt").read_text()
    async with ApiClient(ClientConfig(server=secured.url, token=ADMIN, ca_data=ca)) as c:
        await c.create(r.PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
                       namespace="default")
        items, _ = await c.list(r.PODS)
        assert [p["metadata"]["name"] for p in items] == ["p"]
    async with ApiClient(ClientConfig(server=secured.url, ca_data=ca)) as anon:
        with pytest.raises(ApiError) as e:
            await anon.list(r.PODS)
    assert e.value.code == 401


async def test_official_client_with_and_without_token(secured, pki):
    kc = pytest.importorskip("kubernetes.client")
    from kubernetes.client.rest import ApiException

    def call(token):
        cfg = kc.Configuration()
        cfg.host = secured.url
        cfg.ssl_ca_cert = str(pki / "ca.crt")
        if token:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        return kc.CoreV1Api(kc.ApiClient(cfg)).list_namespace()

    nss = await asyncio.to_thread(call, ADMIN)
    assert "default" in {n.metadata.name for n in nss.items}
    with pytest.raises(ApiException) as e:
        await asyncio.to_thread(call, None)
    assert e.value.status == 401


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
async def test_kubectl_with_the_labs_kubeconfig(secured, pki, tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text("t", secured.url, ADMIN, (pki / "ca.crt").read_text()))

    async def kubectl(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await kubectl("--kubeconfig", str(kc), "get", "ns")
    assert rc == 0, err
    assert "kube-system" in out
    rc, out, err = await kubectl("--server", secured.url, "--certificate-authority", str(pki / "ca.crt"),
                                 "--token", "not-a-token", "get", "ns")
    assert rc != 0 and "kube-system" not in out
    assert "You must be logged in to the server (Unauthorized)" in err


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

FROM_POD = """\
import ssl, sys, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile=sys.argv[1])
req = urllib.request.Request("https://10.250.0.1:6443/api/v1/namespaces/default/pods",
                             headers=dict(h.split(": ", 1) for h in sys.argv[2:]))
try:
    r = urllib.request.urlopen(req, timeout=10, context=ctx)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


@needs_root
async def test_from_a_pod_namespace_only_a_token_gets_in(pki):
    """The lab's layout in small: the server listens on an underlay address inside a namespace, a
    pod-like namespace reaches it over a veth; without the token it gets 401, with it 200."""
    from podnet.host.netns import NetnsPool
    from podnet.host.nsenter import listening_socket

    with NetnsPool("pnt-authn-") as pool:
        ul, pod = pool.netns("ul"), pool.netns("pod")
        pool.veth(ul, "eth0", pod, "eth0")
        ul.ip("addr", "add", "10.250.0.1/24", "dev", "eth0")
        pod.ip("addr", "add", "10.250.0.2/24", "dev", "eth0")
        sock = listening_socket(ul.name, "10.250.0.1", 6443)
        api = LabApiServer(authenticator=TokenAuthenticator(TOKENS), tls=(pki / "apiserver.crt", pki / "apiserver.key"))
        await api.start(["127.0.0.1:0"], sockets=[sock])
        try:
            async def from_pod(*headers: str) -> tuple[int, str]:
                out = await asyncio.to_thread(
                    subprocess.run, ["ip", "netns", "exec", pod.name, sys.executable, "-I", "-c", FROM_POD,
                                     str(pki / "ca.crt"), *headers], capture_output=True, text=True, timeout=30)
                status, _, body = out.stdout.partition("\n")
                assert status, out.stderr
                return int(status), body

            status, body = await from_pod()
            assert status == 401 and json.loads(body) == UNAUTHORIZED
            status, body = await from_pod(f"Authorization: Bearer {NODE}")
            assert status == 200 and json.loads(body)["kind"] == "PodList"
        finally:
            await api.stop()


PODNET = Path(sys.executable).with_name("podnet")


@pytest.mark.parametrize("extra,fails", [
    pytest.param(["--tls-cert-file", "{crt}"], "go together", id="cert-without-key"),
    pytest.param(["--token-auth-file", "{bad}"], "must have at least 3 columns", id="bad-token-file"),
])
async def test_standalone_refuses_bad_flags(pki, tmp_path, extra, fails):
    bad = tmp_path / "tokens.csv"
    bad.write_text("onlytwo,columns\n")
    args = [a.format(crt=pki / "apiserver.crt", bad=bad) for a in extra]
    proc = await asyncio.create_subprocess_exec(str(PODNET), "lab", "apiserver", "--listen", "127.0.0.1:0", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and fails in err.decode()


async def test_standalone_with_tokens_and_tls(pki, tmp_path):
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f'{ADMIN},kubernetes-admin,admin,"system:masters"\n')
    proc = await asyncio.create_subprocess_exec(
        str(PODNET), "lab", "apiserver", "--listen", "127.0.0.1:0", "--token-auth-file", str(tokens),
        "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "serving on https://127.0.0.1:" in line, line
        url = line.split()[-1]
        assert (await _get(url + "/api/v1/pods", pki))[0] == 401
        assert (await _get(url + "/api/v1/pods", pki, {"Authorization": f"Bearer {ADMIN}"}))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
