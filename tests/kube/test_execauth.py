"""exec credential plugins: parsing, caching, expiry, refresh on 401, real processes, TLS, watcher backoff."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from podnet.kube import resources as r
from podnet.kube.auth import Authenticator
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.execauth import (
    ExecAuthenticator,
    ExecConfig,
    ExecPluginError,
    exec_info,
    parse_exec_config,
    parse_exec_credential,
    run_plugin,
)
from podnet.kube.informer import Informer
from podnet.kube.kubeconfig import ClientConfig, ConfigError, parse_kubeconfig

V1 = "client.authentication.k8s.io/v1"
V1B1 = "client.authentication.k8s.io/v1beta1"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
BASE_ENV = {"PATH": "/usr/bin:/bin", "BASE_ENV": "from-base"}


def cred(status=None, api=V1, kind="ExecCredential") -> str:
    d = {"kind": kind, "apiVersion": api}
    if status is not None:
        d["status"] = status
    return json.dumps(d)


# --------------------------------------------------------------------------- pure parsing


@pytest.mark.parametrize(
    "out, api, expect",
    [
        pytest.param(cred({"token": "t"}), V1, {"token": "t", "expiry": None}, id="token-v1"),
        pytest.param(cred({"token": "t"}, V1B1), V1B1, {"token": "t"}, id="token-v1beta1"),
        pytest.param(cred({"clientCertificateData": "C", "clientKeyData": "K"}), V1,
                     {"cert_pem": "C", "key_pem": "K", "token": None}, id="cert-and-key"),
        pytest.param(cred({"token": "t", "expirationTimestamp": "2026-01-01T12:05:00Z"}), V1,
                     {"expiry": T0 + timedelta(minutes=5)}, id="expiry-zulu"),
        pytest.param(cred({"token": "t", "expirationTimestamp": "2026-01-01T13:05:00.5+01:00"}), V1,
                     {"expiry": T0 + timedelta(minutes=5, seconds=0.5)}, id="expiry-offset-fraction"),
    ],
)
def test_parse_exec_credential(out, api, expect):
    c = parse_exec_credential(out, api)
    for k, v in expect.items():
        assert getattr(c, k) == v, k


@pytest.mark.parametrize(
    "out, api, message",
    [
        pytest.param("token please", V1, "not JSON", id="not-json"),
        pytest.param(cred({"token": "t"}, kind="Secret"), V1, "not an ExecCredential", id="wrong-kind"),
        pytest.param(cred({"token": "t"}, V1B1), V1, "configured to use API version", id="version-mismatch"),
        pytest.param(cred(None), V1, "didn't return a status", id="no-status"),
        pytest.param(cred({}), V1, "didn't return a token or cert/key pair", id="empty-status"),
        pytest.param(cred({"clientCertificateData": "C"}), V1, "only certificate or key", id="cert-without-key"),
        pytest.param(cred({"token": "t", "expirationTimestamp": "soon"}), V1, "bad expirationTimestamp",
                     id="bad-expiry"),
    ],
)
def test_parse_exec_credential_errors(out, api, message):
    with pytest.raises(ExecPluginError, match=message):
        parse_exec_credential(out, api)


@pytest.mark.parametrize(
    "exec_, expect",
    [
        pytest.param({"apiVersion": V1, "command": "p", "interactiveMode": "Never", "args": ["a", "b"],
                      "env": [{"name": "X", "value": "1"}]},
                     {"args": ("a", "b"), "env": (("X", "1"),), "interactive_mode": "Never"}, id="v1-full"),
        pytest.param({"apiVersion": V1B1, "command": "p"}, {"interactive_mode": "IfAvailable"},
                     id="v1beta1-defaults-interactive-mode"),
        pytest.param({"apiVersion": V1B1, "command": "p", "installHint": "apt install p"},
                     {"install_hint": "apt install p"}, id="install-hint"),
    ],
)
def test_parse_exec_config(exec_, expect):
    cfg = parse_exec_config(exec_, {"server": "https://x:1"})
    for k, v in expect.items():
        assert getattr(cfg, k) == v, k


@pytest.mark.parametrize(
    "exec_, message",
    [
        pytest.param({"apiVersion": V1, "command": "p"}, "interactiveMode must be specified", id="v1-needs-mode"),
        pytest.param({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "p"}, "apiVersion",
                     id="v1alpha1-removed"),
        pytest.param({"apiVersion": V1B1}, "command must be specified", id="no-command"),
        pytest.param({"apiVersion": V1B1, "command": "p", "interactiveMode": "Sometimes"}, "interactiveMode",
                     id="bad-mode"),
        pytest.param({"apiVersion": V1B1, "command": "p", "env": [{"value": "x"}]}, "env", id="env-without-name"),
    ],
)
def test_parse_exec_config_errors(exec_, message):
    with pytest.raises(ConfigError, match=message):
        parse_exec_config(exec_, {"server": "https://x:1"})


def test_auth_provider_is_refused_clearly():
    doc = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
           "clusters": [{"name": "c", "cluster": {"server": "https://x:1"}}],
           "users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}]}
    with pytest.raises(ConfigError, match="auth-provider 'gcp' is not supported"):
        parse_kubeconfig(doc)


@pytest.mark.parametrize(
    "provide, cluster, ca_file, expect_cluster",
    [
        pytest.param(False, {"server": "https://x:1"}, False, None, id="no-cluster-info"),
        pytest.param(True, {"server": "https://x:1", "tls-server-name": "api", "insecure-skip-tls-verify": True,
                            "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}]},
                     False, {"server": "https://x:1", "tls-server-name": "api", "insecure-skip-tls-verify": True,
                             "config": {"a": 1}}, id="cluster-info"),
        pytest.param(True, {"server": "https://x:1"}, True,
                     {"server": "https://x:1", "certificate-authority-data": base64.b64encode(b"PEM").decode()},
                     id="ca-file-read-into-data"),
    ],
)
def test_kubernetes_exec_info(tmp_path, provide, cluster, ca_file, expect_cluster):
    if ca_file:
        (tmp_path / "ca.crt").write_bytes(b"PEM")
        cluster = {**cluster, "certificate-authority": str(tmp_path / "ca.crt")}
    cfg = parse_exec_config({"apiVersion": V1, "command": "p", "interactiveMode": "Never",
                             "provideClusterInfo": provide}, cluster)
    info = json.loads(exec_info(cfg))
    assert info["kind"] == "ExecCredential" and info["apiVersion"] == V1
    assert info["spec"]["interactive"] is False
    assert info["spec"].get("cluster") == expect_cluster


# --------------------------------------------------------------------------- caching (fake runner, fake clock)


class FakeRunner:
    """Answers each run with the next scripted (code, stdout, stderr) or exception."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    async def __call__(self, argv, env, timeout):
        self.calls.append((argv, env))
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, BaseException):
            raise a
        return a


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def ok(token, expiry=None):
    status = {"token": token}
    if expiry is not None:
        status["expirationTimestamp"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return 0, cred(status).encode(), b""


EXEC = ExecConfig(command="plugin", args=("get-token",), env=(("PLUGIN_ENV", "x"), ("BASE_ENV", "overridden")),
                  api_version=V1, interactive_mode="IfAvailable")


@pytest.mark.parametrize(
    "answers, steps, expect_tokens, expect_runs",
    [
        pytest.param([ok("a")], [0, 3600, 86400], ["a", "a", "a"], 1, id="no-expiry-cached-forever"),
        pytest.param([ok("a", T0 + timedelta(minutes=5)), ok("b", T0 + timedelta(minutes=20))],
                     [0, 299, 301, 600], ["a", "a", "b", "b"], 2, id="re-run-after-expiry"),
        pytest.param([ok("a", T0 - timedelta(minutes=1)), ok("b")], [0, 1], ["a", "b"], 2,
                     id="already-expired-used-once-then-re-run"),
    ],
)
async def test_cache_until_expiry(answers, steps, expect_tokens, expect_runs):
    clock, runner = Clock(), FakeRunner(*answers)
    auth = ExecAuthenticator(EXEC, environ=BASE_ENV, now=clock, runner=runner)
    tokens = []
    for s in steps:
        clock.t = T0 + timedelta(seconds=s)
        tokens.append((await auth.credential()).token)
    assert tokens == expect_tokens and auth.runs == expect_runs


async def test_argv_and_environment():
    runner = FakeRunner(ok("a"))
    auth = ExecAuthenticator(EXEC, environ=BASE_ENV, now=Clock(), runner=runner)
    await auth.credential()
    argv, env = runner.calls[0]
    assert argv == ["plugin", "get-token"]
    assert env["PLUGIN_ENV"] == "x" and env["BASE_ENV"] == "overridden" and env["PATH"] == BASE_ENV["PATH"]
    assert json.loads(env["KUBERNETES_EXEC_INFO"])["spec"] == {"interactive": False}


async def test_refresh_runs_once_per_rejected_credential():
    runner = FakeRunner(ok("a"), ok("b"), ok("c"))
    auth = ExecAuthenticator(EXEC, environ=BASE_ENV, now=Clock(), runner=runner)
    first = await auth.credential()
    # Three requests rejected with the same credential refresh it once.
    fresh = await asyncio.gather(*(auth.refresh(first) for _ in range(3)))
    assert [c.token for c in fresh] == ["b", "b", "b"] and auth.runs == 2
    assert (await auth.refresh(fresh[0])).token == "c" and auth.runs == 3


async def test_concurrent_callers_share_one_run():
    runner = FakeRunner(ok("a"))
    auth = ExecAuthenticator(EXEC, environ=BASE_ENV, now=Clock(), runner=runner)
    got = await asyncio.gather(*(auth.credential() for _ in range(5)))
    assert {c.token for c in got} == {"a"} and auth.runs == 1


@pytest.mark.parametrize(
    "answer, config, message",
    [
        pytest.param(FileNotFoundError(), ExecConfig("gke-auth", install_hint="install gke-auth"),
                     "executable gke-auth not found (install gke-auth)", id="not-found-with-hint"),
        pytest.param(PermissionError(), ExecConfig("p"), "not executable", id="not-executable"),
        pytest.param((1, b"", b"error: token expired\n  please login\n"), ExecConfig("p"),
                     "failed with exit code 1: error: token expired please login", id="exit-code-with-stderr"),
        pytest.param(TimeoutError(), ExecConfig("p"), "did not finish within", id="timeout"),
        pytest.param((0, b"garbage", b""), ExecConfig("p"), "decoding stdout", id="bad-output"),
        pytest.param((0, cred({"token": "t"}).encode(), b""), ExecConfig("p", interactive_mode="Always"),
                     "interactive mode", id="always-interactive"),
    ],
)
async def test_failures_are_one_line_errors(answer, config, message):
    auth = ExecAuthenticator(config, environ=BASE_ENV, now=Clock(), runner=FakeRunner(answer))
    with pytest.raises(ExecPluginError) as e:
        await auth.credential()
    assert message in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- a real plugin process

PLUGIN = """#!/bin/sh
dir=$(dirname "$0")
n=$(cat "$dir/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$dir/count"
printf '%s\\n' "$@" > "$dir/args.$n"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$dir/info.$n"
printf '%s|%s' "$PLUGIN_ENV" "$BASE_ENV" > "$dir/env.$n"
f="$dir/out.$n"; [ -f "$f" ] || f="$dir/out"
cat "$f"
[ -f "$dir/fail" ] && { echo "plugin says no" >&2; exit 3; }
exit 0
"""


def make_plugin(d, outputs=(), default=None):
    d.mkdir(parents=True, exist_ok=True)
    p = d / "plugin"
    p.write_text(PLUGIN)
    p.chmod(0o755)
    for i, out in enumerate(outputs, 1):
        (d / f"out.{i}").write_text(out)
    if default is not None:
        (d / "out").write_text(default)
    return p


def kubeconfig_with_exec(server, command, *, cluster=None, user_extra=None, provide=False):
    return {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": V1, "command": str(command), "args": ["token", "--cluster", "lab"],
            "env": [{"name": "PLUGIN_ENV", "value": "from-kubeconfig"}], "interactiveMode": "Never",
            "provideClusterInfo": provide}, **(user_extra or {})}}],
    }


async def test_real_plugin_process_args_env_and_exec_info(tmp_path):
    plugin = make_plugin(tmp_path / "p", default=cred({"token": "t"}))
    cfg = parse_kubeconfig(kubeconfig_with_exec("https://127.0.0.1:1", plugin, provide=True))
    auth = ExecAuthenticator(cfg.exec, environ=BASE_ENV)
    assert (await auth.credential()).token == "t"
    d = tmp_path / "p"
    assert (d / "args.1").read_text().split("\n")[:3] == ["token", "--cluster", "lab"]
    assert (d / "env.1").read_text() == "from-kubeconfig|from-base"
    info = json.loads((d / "info.1").read_text())
    assert info["apiVersion"] == V1 and info["spec"]["cluster"]["server"] == "https://127.0.0.1:1"


async def test_real_plugin_failure_and_missing_binary(tmp_path):
    plugin = make_plugin(tmp_path / "p", default="")
    (tmp_path / "p" / "fail").write_text("")
    auth = ExecAuthenticator(ExecConfig(str(plugin)), environ=BASE_ENV)
    with pytest.raises(ExecPluginError, match="exit code 3: plugin says no"):
        await auth.credential()
    auth = ExecAuthenticator(ExecConfig(str(tmp_path / "nope"), install_hint="see docs"), environ=BASE_ENV)
    with pytest.raises(ExecPluginError, match="not found .see docs."):
        await auth.credential()


async def test_run_plugin_kills_a_hung_process(tmp_path):
    with pytest.raises(TimeoutError):
        await run_plugin(["/bin/sleep", "30"], dict(BASE_ENV), 0.05)


async def test_token_rerun_once_on_401_end_to_end(tmp_path, h):
    """The server stops accepting the first token: one 401, one re-run, the request succeeds."""
    plugin = make_plugin(tmp_path / "p", outputs=[cred({"token": "old"}), cred({"token": "new"})],
                         default=cred({"token": "newer"}))
    async with h.AuthServer(accept={"new"}) as srv:
        cfg = parse_kubeconfig(kubeconfig_with_exec(srv.url, plugin))
        async with ApiClient(cfg, environ=BASE_ENV) as client:
            assert await client.list(r.SERVICES) == ([], "7")
            assert await client.list(r.SERVICES) == ([], "7")
            assert client.auth.exec.runs == 2
        assert srv.tokens() == ["old", "new", "new"]
        # A token the server never accepts: one refresh, then the 401 reaches the caller.
        srv.accept = {"nobody"}
        async with ApiClient(cfg, environ=BASE_ENV) as client:
            with pytest.raises(ApiError) as e:
                await client.list(r.SERVICES)
            assert e.value.code == 401


async def test_watch_stream_refreshes_on_401(tmp_path, h):
    plugin = make_plugin(tmp_path / "p", outputs=[cred({"token": "old"})], default=cred({"token": "new"}))
    async with h.AuthServer(accept={"new"}) as srv:
        cfg = parse_kubeconfig(kubeconfig_with_exec(srv.url, plugin))
        async with ApiClient(cfg, environ=BASE_ENV) as client:
            lines = [x async for x in client.stream_lines("/api/v1/services", {"watch": "1"}, inactivity_timeout=10)]
        assert len(lines) == 1 and srv.tokens() == ["old", "new"]


async def test_exec_client_certificate_and_rotation_over_tls(tmp_path, pki, h):
    """Mutual TLS with the plugin's certificate; after expiry the new certificate is presented."""
    c1 = cred({"clientCertificateData": (pki / "client.crt").read_text(),
               "clientKeyData": (pki / "client.key").read_text(), "expirationTimestamp": "2026-01-01T12:05:00Z"})
    c2 = cred({"clientCertificateData": (pki / "client2.crt").read_text(),
               "clientKeyData": (pki / "client2.key").read_text()})
    plugin = make_plugin(tmp_path / "p", outputs=[c1], default=c2)
    clock = Clock()
    async with h.AuthServer(pki=pki, require_client_cert=True) as srv:
        cfg = parse_kubeconfig(kubeconfig_with_exec(srv.url, plugin, cluster={"certificate-authority": str(pki / "ca.crt")}))
        auth = Authenticator(cfg, environ=BASE_ENV, now=clock)
        async with ApiClient(cfg, auth=auth) as client:
            await client.list(r.SERVICES)
            clock.t = T0 + timedelta(minutes=6)
            await client.list(r.SERVICES)
            await client.list(r.SERVICES)
        assert srv.cns() == ["podnet-proxy", "podnet-rotated", "podnet-rotated"]
        assert auth.exec.runs == 2


async def test_failing_plugin_watcher_backs_off_then_recovers(tmp_path, lab_api, h, caplog):
    """A broken plugin: clear warnings (no traceback), growing non-zero delays, and a sync once it works."""
    plugin = make_plugin(tmp_path / "p", default=cred({"token": "t"}))
    (tmp_path / "p" / "fail").write_text("")
    cfg = parse_kubeconfig(kubeconfig_with_exec(lab_api.url, plugin))
    delays: list[float] = []

    async def sleep(d):
        delays.append(d)
        if len(delays) == 4:
            (tmp_path / "p" / "fail").unlink()
        await asyncio.sleep(0)

    caplog.set_level(logging.WARNING, logger="podnet.kube")
    async with ApiClient(cfg, environ=BASE_ENV) as client:
        inf = Informer(client, r.SERVICES, sleep=sleep, rand=lambda: 0.0, clock=lambda: 0.0)
        task = asyncio.create_task(inf.run())
        try:
            await h.wait_for(lambda: inf.has_synced, what="sync after the plugin recovers")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    failures = [rec for rec in caplog.records if "exit code 3" in rec.getMessage()]
    assert len(failures) == 4 and all(rec.exc_info is None for rec in failures)
    assert "ExecPluginError" in failures[0].getMessage() and "plugin says no" in failures[0].getMessage()


def test_static_client_config_has_no_exec():
    assert ClientConfig(server="http://x").exec is None
