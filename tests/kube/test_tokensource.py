"""Token files (kubeconfig tokenFile, in-cluster service account): periodic re-read, 401 re-read, fallbacks."""

from __future__ import annotations

import json

import pytest

from podnet.kube import resources as r
from podnet.kube.auth import Authenticator
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.execauth import CredentialError
from podnet.kube.kubeconfig import SA_DIR, ClientConfig, in_cluster, parse_kubeconfig
from podnet.kube.tokensource import FileCertSource, FileTokenSource


class Tick:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


# Each step: (seconds since start, new file content or None to keep, "reset" to simulate a 401, expected token).
@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([(0, "a", None, "a"), (30, "b", None, "a"), (59.9, None, None, "a"), (60, None, None, "b")],
                     id="re-read-once-a-minute"),
        pytest.param([(0, "a", None, "a"), (1, "b", "reset", "b")], id="reset-after-401-re-reads-at-once"),
        pytest.param([(0, "a", None, "a"), (61, "", None, "a"), (62, "c", None, "c")],
                     id="empty-file-keeps-last-good-token"),
        pytest.param([(0, "a", None, "a"), (61, "DELETE", None, "a"), (62, "d", None, "d")],
                     id="missing-file-keeps-last-good-token"),
        pytest.param([(0, " tok \n", None, "tok")], id="whitespace-stripped"),
    ],
)
def test_file_token_source(tmp_path, steps):
    clock = Tick()
    path = tmp_path / "token"
    src = FileTokenSource(path, clock=clock)
    for at, content, action, expect in steps:
        clock.t = 1000.0 + at
        if content == "DELETE":
            path.unlink()
        elif content is not None:
            path.write_text(content)
        if action == "reset":
            src.reset()
        assert src.token() == expect, (at, content)


@pytest.mark.parametrize("content", [pytest.param(None, id="missing"), pytest.param("", id="empty")])
def test_file_token_source_without_a_good_read_raises(tmp_path, content):
    if content is not None:
        (tmp_path / "token").write_text(content)
    with pytest.raises(CredentialError, match="cannot read token file"):
        FileTokenSource(tmp_path / "token", clock=Tick()).token()


@pytest.mark.parametrize(
    "user, file_content, expect",
    [
        pytest.param({"token": "static"}, None, "static", id="static-token"),
        pytest.param({"tokenFile": "tok"}, "from-file", "from-file", id="token-file"),
        pytest.param({"tokenFile": "tok", "token": "static"}, "from-file", "from-file", id="readable-file-wins"),
        pytest.param({"tokenFile": "tok", "token": "static"}, None, "static", id="unreadable-file-falls-back"),
    ],
)
async def test_token_precedence(tmp_path, user, file_content, expect):
    if file_content is not None:
        (tmp_path / "tok").write_text(file_content)
    doc = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
           "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
           "users": [{"name": "u", "user": user}]}
    cfg = parse_kubeconfig(doc, tmp_path)
    assert (await Authenticator(cfg).credentials()).token == expect


async def test_kubeconfig_token_file_rotates_end_to_end(tmp_path, h):
    """Periodic re-read on the injected clock, and an immediate re-read + retry after a 401."""
    tok = tmp_path / "tok"
    tok.write_text("t1")
    clock = Tick()
    async with h.AuthServer(accept={"t1"}) as srv:
        cfg = ClientConfig(server=srv.url, token_file=str(tok))
        async with ApiClient(cfg, auth=Authenticator(cfg, clock=clock)) as client:
            await client.list(r.SERVICES)
            tok.write_text("t2")
            srv.accept = {"t1", "t2"}
            clock.t += 30
            await client.list(r.SERVICES)  # still cached
            clock.t += 31
            await client.list(r.SERVICES)  # re-read after a minute
            tok.write_text("t3")
            srv.accept = {"t3"}
            await client.list(r.SERVICES)  # t2 rejected -> re-read at once -> retried with t3
        assert srv.tokens() == ["t1", "t1", "t2", "t2", "t3"]


async def test_in_cluster_rotating_token_over_tls(tmp_path, pki, h):
    """In-cluster config against an HTTPS server with the service-account CA; the token rotates."""
    async with h.AuthServer(accept={"sa-1"}, pki=pki) as srv:
        sa = tmp_path / SA_DIR
        sa.mkdir(parents=True)
        (sa / "token").write_text("sa-1")
        (sa / "namespace").write_text("kube-system")
        (sa / "ca.crt").write_text((pki / "ca.crt").read_text())
        cfg = in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(srv.port)}, tmp_path)
        assert cfg is not None
        clock = Tick()
        async with ApiClient(cfg, auth=Authenticator(cfg, clock=clock)) as client:
            assert await client.list(r.SERVICES) == ([], "7")
            (sa / "token").write_text("sa-2")
            srv.accept = {"sa-2"}
            clock.t += 61
            assert await client.list(r.SERVICES) == ([], "7")
            srv.accept = {"nobody"}
            with pytest.raises(ApiError) as e:
                await client.list(r.SERVICES)
            assert e.value.code == 401  # same token after the re-read: no second try
        assert srv.tokens() == ["sa-1", "sa-2", "sa-2"]


def test_kubeconfig_json_roundtrip_has_no_secret_in_source(tmp_path):
    (tmp_path / "k").write_text(json.dumps({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}]}))
    from podnet.kube.kubeconfig import load_kubeconfig

    assert "s3cret" not in load_kubeconfig(tmp_path / "k").source


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([(0, "c1", "c1"), (299, "c2", "c1"), (300, "c2", "c2")], id="re-read-every-five-minutes"),
        pytest.param([(0, "c1", "c1"), (301, "DELETE", "c1"), (302, "c3", "c3")], id="missing-files-keep-last-pair"),
    ],
)
def test_file_cert_source(tmp_path, steps):
    clock = Tick()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    src = FileCertSource(cert, key, clock=clock)
    for at, content, expect in steps:
        clock.t = 1000.0 + at
        if content == "DELETE":
            cert.unlink()
        else:
            cert.write_text(content)
            key.write_text(content + "-key")
        assert src.pair() == (expect, expect + "-key"), at


def test_file_cert_source_without_files_raises(tmp_path):
    with pytest.raises(CredentialError, match="cannot read client certificate"):
        FileCertSource(tmp_path / "c", tmp_path / "k", clock=Tick()).pair()


async def test_rotated_client_certificate_files_are_picked_up(tmp_path, pki, h):
    """Kubelet-style kubeconfig: the certificate files are replaced in place; new connections present the new one."""
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    cert.write_text((pki / "client.crt").read_text())
    key.write_text((pki / "client.key").read_text())
    clock = Tick()
    async with h.AuthServer(pki=pki, require_client_cert=True) as srv:
        cfg = ClientConfig(server=srv.url, ca_file=str(pki / "ca.crt"), cert_file=str(cert), key_file=str(key))
        async with ApiClient(cfg, auth=Authenticator(cfg, clock=clock)) as client:
            await client.list(r.SERVICES)
            cert.write_text((pki / "client2.crt").read_text())
            key.write_text((pki / "client2.key").read_text())
            await client.list(r.SERVICES)  # within five minutes: the pooled connection and old pair
            clock.t += 301
            await client.list(r.SERVICES)
        assert srv.cns() == ["podnet-proxy", "podnet-proxy", "podnet-rotated"]
