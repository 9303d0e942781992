"""Kubeconfig, in-cluster config and flag precedence; TLS + token end to end."""

from __future__ import annotations

import base64
import json
import shutil
import ssl

import pytest
from aiohttp import web

from podnet.kube import resources as r
from podnet.kube.client import TRANSPORT_ERRORS, ApiClient, ApiError
from podnet.kube.kubeconfig import SA_DIR, ConfigError, in_cluster, load_kubeconfig, parse_kubeconfig, resolve

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server="https://10.0.0.1:6443", cluster=None, user=None, current="main", namespace=None):
    ctx = {"cluster": "c1", "user": "u1"}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c1", "cluster": {"server": server, **(cluster or {})}},
                     {"name": "c2", "cluster": {"server": "http://other:8080"}}],
        "users": [{"name": "u1", "user": user or {}}],
        "contexts": [{"name": "main", "context": ctx}, {"name": "alt", "context": {"cluster": "c2"}}],
    }


@pytest.mark.parametrize(
    "doc, context, expect",
    [
        pytest.param(kubeconfig(user={"token": "abc"}), None, {"server": "https://10.0.0.1:6443", "token": "abc"},
                     id="token"),
        pytest.param(kubeconfig(cluster={"insecure-skip-tls-verify": True}), None, {"insecure": True}, id="insecure"),
        pytest.param(kubeconfig(namespace="shop"), None, {"namespace": "shop"}, id="context-namespace"),
        pytest.param(kubeconfig(), "alt", {"server": "http://other:8080", "token": None}, id="explicit-context"),
        pytest.param(kubeconfig(current="alt"), None, {"server": "http://other:8080"}, id="current-context"),
        pytest.param(kubeconfig(cluster={"certificate-authority-data": base64.b64encode(b"PEM").decode()}), None,
                     {"ca_data": "PEM"}, id="ca-data-decoded"),
        pytest.param(kubeconfig(user={"tokenFile": "tok"}), None, {"token_file": "/base/tok"}, id="relative-token-file"),
        pytest.param(kubeconfig(cluster={"certificate-authority": "/abs/ca.crt"}), None, {"ca_file": "/abs/ca.crt"},
                     id="absolute-ca-file"),
        pytest.param(kubeconfig(user={"client-certificate": "c.crt", "client-key": "c.key"}), None,
                     {"cert_file": "/base/c.crt", "key_file": "/base/c.key"}, id="cert-files"),
    ],
)
def test_parse_kubeconfig(doc, context, expect):
    cfg = parse_kubeconfig(doc, "/base", context)
    for k, v in expect.items():
        assert getattr(cfg, k) == v, k


@pytest.mark.parametrize(
    "doc, context",
    [
        pytest.param(kubeconfig(), "missing", id="unknown-context"),
        pytest.param({**kubeconfig(), "current-context": ""}, None, id="no-current-context"),
        pytest.param(kubeconfig(cluster={"certificate-authority-data": "!!notbase64"}), None, id="bad-base64"),
        pytest.param(kubeconfig(server=""), None, id="no-server"),
        pytest.param(["not", "a", "map"], None, id="not-a-mapping"),
    ],
)
def test_bad_kubeconfig(doc, context):
    with pytest.raises(ConfigError):
        parse_kubeconfig(doc, "/base", context)


def test_yaml_kubeconfig_and_rotating_token_file(tmp_path):
    (tmp_path / "token").write_text("one\n")
    (tmp_path / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "clusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:6443/\n"
        "users:\n- name: me\n  user:\n    tokenFile: token\n"
        "contexts:\n- name: lab\n  context: {cluster: lab, user: me}\n"
    )
    cfg = load_kubeconfig(tmp_path / "config")
    assert cfg.server == "http://127.0.0.1:6443" and cfg.bearer() == "one" and cfg.ssl_context() is None
    (tmp_path / "token").write_text("two\n")
    assert cfg.bearer() == "two"


def _service_account(root, token="sa-token", ns="kube-system", ca=True):
    sa = root / SA_DIR
    sa.mkdir(parents=True)
    (sa / "token").write_text(token)
    (sa / "namespace").write_text(ns)
    if ca:
        (sa / "ca.crt").write_text("PEM")
    return sa


@pytest.mark.parametrize(
    "env, server",
    [
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                     "https://10.96.0.1:443", id="ipv4"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                     "https://[fd00::1]:443", id="ipv6-bracketed"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None, id="no-port"),
        pytest.param({}, None, id="not-in-cluster"),
    ],
)
def test_in_cluster(tmp_path, env, server):
    sa = _service_account(tmp_path)
    cfg = in_cluster(env, tmp_path)
    if server is None:
        assert cfg is None
        return
    assert cfg.server == server and cfg.bearer() == "sa-token" and cfg.namespace == "kube-system"
    assert cfg.ca_file == str(sa / "ca.crt")


def test_in_cluster_needs_the_token_file(tmp_path):
    assert in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path) is None


@pytest.mark.parametrize(
    "master, flag, env_kubeconfig, in_cluster_env, home_config, expect",
    [
        pytest.param("http://m:1", None, None, False, False, "http://m:1", id="master-only"),
        pytest.param("http://m:1", "flag", "env", True, True, "http://m:1", id="master-overrides-server"),
        pytest.param(None, "flag", "env", True, True, "https://flag:6443", id="kubeconfig-flag"),
        pytest.param(None, None, "env", True, True, "https://env:6443", id="env-kubeconfig"),
        pytest.param(None, None, "missing:env", True, True, "https://env:6443", id="env-missing-files-skipped"),
        pytest.param(None, None, "missing", True, True, "https://10.96.0.1:443", id="env-nothing-then-in-cluster"),
        pytest.param(None, None, "missing", False, True, None, id="env-set-home-not-consulted"),
        pytest.param(None, None, None, True, True, "https://home:6443", id="home-config-before-in-cluster"),
        pytest.param(None, None, None, True, False, "https://10.96.0.1:443", id="in-cluster"),
        pytest.param(None, None, None, False, True, "https://home:6443", id="home-config"),
        pytest.param("http://m:1", None, "env", True, True, "http://m:1", id="master-alone-reads-no-kubeconfig"),
        pytest.param(None, None, None, False, False, None, id="nothing"),
    ],
)
def test_resolve_precedence(tmp_path, master, flag, env_kubeconfig, in_cluster_env, home_config, expect):
    for name in ("flag", "env"):
        (tmp_path / name).write_text(json.dumps(kubeconfig(server=f"https://{name}:6443", user={"token": name})))
    home = tmp_path / "home"
    if home_config:
        (home / ".kube").mkdir(parents=True)
        (home / ".kube" / "config").write_text(json.dumps(kubeconfig(server="https://home:6443")))
    root = tmp_path / "root"
    _service_account(root)
    env = {}
    if env_kubeconfig:
        env["KUBECONFIG"] = ":".join(str(tmp_path / p) for p in env_kubeconfig.split(":"))
    if in_cluster_env:
        env.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    kwargs = dict(environ=env, root=root, home=home)
    if expect is None:
        with pytest.raises(ConfigError):
            resolve(master, str(tmp_path / flag) if flag else None, **kwargs)
        return
    cfg = resolve(master, str(tmp_path / flag) if flag else None, **kwargs)
    assert cfg.server == expect
    if master and flag:
        assert cfg.token == "flag"  # credentials kept, server overridden
    if master and not flag:
        assert cfg.token is None  # kube-proxy: --master alone loads no kubeconfig


@needs_openssl
@pytest.mark.parametrize("inline", [pytest.param(True, id="inline-data"), pytest.param(False, id="files")])
async def test_tls_client_certificate_and_token_end_to_end(pki, tmp_path, inline):
    """An HTTPS server that requires our client certificate and checks the bearer token."""
    seen = {}

    async def handler(request):
        seen["auth"] = request.headers.get("Authorization")
        peer = request.transport.get_extra_info("peercert")
        seen["client_cn"] = dict(x[0] for x in peer["subject"])["commonName"]
        return web.json_response({"kind": "ServiceList", "metadata": {"resourceVersion": "7"}, "items": []})

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    server_ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/api/v1/services", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        if inline:
            cluster = {"certificate-authority-data": b64(pki / "ca.crt")}
            user = {"client-certificate-data": b64(pki / "client.crt"),
                    "client-key-data": b64(pki / "client.key"), "token": "s3cret"}
        else:
            cluster = {"certificate-authority": str(pki / "ca.crt")}
            user = {"client-certificate": str(pki / "client.crt"), "client-key": str(pki / "client.key"),
                    "token": "s3cret"}
        path = tmp_path / "kc.json"
        path.write_text(json.dumps(kubeconfig(server=f"https://127.0.0.1:{port}", cluster=cluster, user=user)))
        async with ApiClient.from_flags(kubeconfig=str(path), environ={}) as client:
            items, rv = await client.list(r.SERVICES)
        assert (items, rv) == ([], "7")
        assert seen == {"auth": "Bearer s3cret", "client_cn": "podnet-proxy"}
        # Without the CA the server certificate is not trusted.
        path.write_text(json.dumps(kubeconfig(server=f"https://127.0.0.1:{port}", user=user)))
        async with ApiClient.from_flags(kubeconfig=str(path), environ={}) as client:
            with pytest.raises(Exception) as e:
                await client.list(r.SERVICES)
            assert not isinstance(e.value, ApiError)
        # insecure-skip-tls-verify: no CA needed.
        insecure = {"insecure-skip-tls-verify": True}
        path.write_text(json.dumps(kubeconfig(server=f"https://127.0.0.1:{port}", cluster=insecure, user=user)))
        async with ApiClient.from_flags(kubeconfig=str(path), environ={}) as client:
            assert (await client.list(r.SERVICES)) == ([], "7")
    finally:
        await runner.cleanup()


@needs_openssl
@pytest.mark.parametrize(
    "tls_server_name, ok",
    [
        pytest.param(None, True, id="ip-san"),
        pytest.param("kubernetes.default.svc", True, id="name-in-certificate"),
        pytest.param("wrong.example", False, id="name-not-in-certificate"),
    ],
)
async def test_tls_server_name(pki, tmp_path, h, tls_server_name, ok):
    """``tls-server-name`` is the name the server certificate must carry (client-go's ServerName)."""
    async with h.AuthServer(pki=pki) as srv:
        cluster = {"certificate-authority": str(pki / "ca.crt")}
        if tls_server_name:
            cluster["tls-server-name"] = tls_server_name
        path = tmp_path / "kc.json"
        path.write_text(json.dumps(kubeconfig(server=srv.url, cluster=cluster, user={"token": "t"})))
        async with ApiClient.from_flags(kubeconfig=str(path), environ={}) as client:
            if ok:
                assert await client.list(r.SERVICES) == ([], "7")
            else:
                with pytest.raises(TRANSPORT_ERRORS):
                    await client.list(r.SERVICES)
