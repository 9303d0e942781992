"""API discovery: every step recorded and logged once; the CNI daemon finds an in-cluster API by itself.

The end-to-end test runs ``podnet-cni daemon`` with no API flags in a ``pnt-disc-``
network namespace and a private mount namespace holding a service-account
directory at the in-cluster path, against an HTTPS API server (a certificate
made with openssl for this test) in the same network namespace; the token
rotates on disk while the daemon runs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podnet.kube.client import ApiClient
from podnet.kube.kubeconfig import SA_DIR, ConfigError, resolve

VENV_BIN = Path(sys.executable).parent


def _kubeconfig(server: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    })


def _sa(root: Path) -> None:
    sa = root / SA_DIR
    sa.mkdir(parents=True)
    (sa / "token").write_text("tok")
    (sa / "ca.crt").write_text("")


@pytest.mark.parametrize(
    "flags, env_kind, home_config, in_cluster_env, expect_steps",
    [
        pytest.param({"master": "http://m:1"}, None, False, False, ["--master http://m:1: no kubeconfig is read"],
                     id="master"),
        pytest.param({"kubeconfig": "flag"}, None, False, False, ["--kubeconfig ", "https://flag:6443"],
                     id="kubeconfig-flag"),
        pytest.param({"kubeconfig": "flag", "master": "http://m:1"}, None, False, False,
                     ["--kubeconfig ", "--master http://m:1 replaces the server https://flag:6443"],
                     id="kubeconfig-and-master"),
        pytest.param({}, "env", False, False, ["--kubeconfig and --master not given", "$KUBECONFIG ", "https://env:6443"],
                     id="env"),
        pytest.param({}, None, True, False,
                     ["--kubeconfig and --master not given", "$KUBECONFIG unset or empty", "~/.kube/config ",
                      "https://home:6443"], id="home"),
        pytest.param({}, "missing", False, True,
                     ["--kubeconfig and --master not given", "$KUBECONFIG ", "configures nothing", "no such file",
                      "in-cluster: https://10.96.0.1:443, token file "], id="env-missing-then-in-cluster"),
        pytest.param({}, None, False, True,
                     ["--kubeconfig and --master not given", "$KUBECONFIG unset or empty", "~/.kube/config ",
                      "configures nothing", "in-cluster: https://10.96.0.1:443"], id="in-cluster"),
    ],
)
def test_resolve_records_every_step(tmp_path, flags, env_kind, home_config, in_cluster_env, expect_steps):
    for name in ("flag", "env"):
        (tmp_path / name).write_text(_kubeconfig(f"https://{name}:6443"))
    home = tmp_path / "home"
    if home_config:
        (home / ".kube").mkdir(parents=True)
        (home / ".kube" / "config").write_text(_kubeconfig("https://home:6443"))
    root = tmp_path / "root"
    _sa(root)
    env = {}
    if env_kind:
        env["KUBECONFIG"] = str(tmp_path / env_kind)
    if in_cluster_env:
        env.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    kubeconfig = str(tmp_path / flags["kubeconfig"]) if "kubeconfig" in flags else None
    cfg = resolve(flags.get("master"), kubeconfig, environ=env, root=root, home=home)
    text = "\n".join(cfg.steps)
    pos = 0
    for want in expect_steps:  # in this order
        found = text.find(want, pos)
        assert found >= 0, f"{want!r} not after position {pos} in:\n{text}"
        pos = found


@pytest.mark.parametrize(
    "env, sa, expect",
    [
        pytest.param({}, False, "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT not set", id="not-in-a-pod"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, False,
                     "serviceaccount/token: no such file", id="no-token-mounted"),
    ],
)
def test_nothing_found_names_every_step(tmp_path, env, sa, expect):
    with pytest.raises(ConfigError) as e:
        resolve(environ=env, root=tmp_path / "root", home=tmp_path / "home")
    msg = str(e.value)
    for part in ("--kubeconfig and --master not given", "$KUBECONFIG unset or empty", "~/.kube/config",
                 "configures nothing", expect):
        assert part in msg, msg
    assert "\n" not in msg  # one line


def test_from_flags_logs_each_step_once(tmp_path, caplog):
    root = tmp_path / "root"
    _sa(root)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with caplog.at_level(logging.INFO, logger="podnet.kube.discovery"):
        client = ApiClient.from_flags(environ=env, root=str(root), home=str(tmp_path / "home"))
    lines = [r.getMessage() for r in caplog.records if r.name == "podnet.kube.discovery"]
    assert lines == [f"API discovery: {s}" for s in client.config.steps] + \
        ["API server https://10.96.0.1:443 (from in-cluster service account)"]
    assert len(lines) == len(set(lines))


# ---------------------------------------------------------------------------------------------- end to end

API_SERVER = r'''
import asyncio, json, ssl, sys
from pathlib import Path
from aiohttp import web

pki, state, node = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
NODES = {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"}, "items": [
    {"metadata": {"name": node, "uid": "u1", "resourceVersion": "5"},
     "spec": {"podCIDR": "10.250.1.0/24", "podCIDRs": ["10.250.1.0/24"]},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                "conditions": [{"type": "Ready", "status": "True"}]}}]}

async def nodes(request):
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    ok = token == (state / "accept").read_text().strip()
    with open(state / "requests", "a") as f:
        f.write(json.dumps([token, "watch" if request.query.get("watch") else "list", 200 if ok else 401]) + "\n")
    if not ok:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "Unauthorized", "message": "Unauthorized", "code": 401}, status=401)
    if not request.query.get("watch"):
        return web.json_response(NODES)
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b'{"type":"BOOKMARK","object":{"kind":"Node","metadata":{"resourceVersion":"5"}}}\n')
    await asyncio.sleep(0.5)  # short watches, so a rotated token is used soon
    return resp

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
app = web.Application()
app.router.add_get("/api/v1/nodes", nodes)
web.run_app(app, host="127.0.0.1", port=6443, ssl_context=ctx, access_log=None, print=None)
'''

IN_CLUSTER = r'''
set -e
mount -t tmpfs pnt-disc /run
mkdir -p /run/secrets/kubernetes.io
ln -s "$SA_SOURCE" /run/secrets/kubernetes.io/serviceaccount
exec "$@"
'''


def _read_requests(path: Path) -> list[list]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(pred, what: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"daemon exited:\n{log.read_text()}"
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen; daemon log:\n{log.read_text()}")


def _get(ns, url: str) -> tuple[int, str]:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
    out = ns.run(sys.executable, "-c", code, url)
    status, _, body = out.partition("\n")
    return int(status), body


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)")
def test_cni_daemon_in_cluster_rotating_token_over_https(tmp_path, pki):
    from podnet.host.netns import NetnsPool

    state = tmp_path / "api"
    state.mkdir()
    (state / "accept").write_text("token-1")
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("token-1")
    (sa / "namespace").write_text("kube-system")
    (sa / "ca.crt").write_text((pki / "ca.crt").read_text())
    (tmp_path / "apiserver.py").write_text(API_SERVER)
    (tmp_path / "in_cluster.sh").write_text(IN_CLUSTER)
    home = tmp_path / "home"
    home.mkdir()
    pool = NetnsPool("pnt-disc-")
    api = daemon = None
    try:
        ns = pool.netns()
        ns.ip("link", "set", "lo", "up")
        node = ns.name
        api_log = open(tmp_path / "apiserver.log", "wb")
        api = ns.popen(sys.executable, str(tmp_path / "apiserver.py"), str(pki), str(state), node,
                       stdout=api_log, stderr=subprocess.STDOUT)
        log_path = tmp_path / "daemon.log"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443", "SA_SOURCE": str(sa)}
        sock = tmp_path / "cni.sock"
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", node, "unshare", "-m", "--propagation", "private", "sh",
             str(tmp_path / "in_cluster.sh"), str(VENV_BIN / "podnet-cni"), "daemon", "--socket", str(sock),
             "--node-name", node, "--data-dir", str(tmp_path / "data"), "--route-interval", "1",
             "--health-listen", "127.0.0.1:19967"],
            env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)

        def healthy():
            try:
                status, body = _get(ns, "http://127.0.0.1:19967/healthz")
            except (subprocess.CalledProcessError, RuntimeError, ValueError):
                return None
            return body if status == 200 else None

        body = json.loads(_wait(healthy, "/healthz 200", daemon, log_path))
        assert body["podCIDRs"] == ["10.250.1.0/24"]
        text = log_path.read_text()
        assert "API discovery: $KUBECONFIG unset or empty" in text
        assert f"in-cluster: https://127.0.0.1:6443, token file /{SA_DIR}/token" in text
        assert text.count("API discovery: in-cluster") == 1  # logged once
        assert "pod CIDRs 10.250.1.0/24" in text

        # the kubelet rotates the token (atomic rename); the API server stops accepting the old one
        tmp = sa / ".token.new"
        tmp.write_text("token-2")
        os.replace(tmp, sa / "token")
        (state / "accept").write_text("token-2")
        _wait(lambda: ["token-2", "watch", 200] in _read_requests(state / "requests")
              or ["token-2", "list", 200] in _read_requests(state / "requests"),
              "a request with the rotated token", daemon, log_path)
        reqs = _read_requests(state / "requests")
        first_new = next(i for i, r in enumerate(reqs) if r[0] == "token-2")
        assert reqs[first_new - 1] == ["token-1", reqs[first_new - 1][1], 401]  # rejected once, then re-read
        assert all(r[2] == 200 for r in reqs[first_new:])
        assert _get(ns, "http://127.0.0.1:19967/healthz")[0] == 200
        status, metrics = _get(ns, "http://127.0.0.1:19967/metrics")
        assert status == 200 and "podnet_cni_ready 1.0" in metrics
    finally:
        for p in (daemon, api):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        pool.close()


DAEMONS = [
    pytest.param(["podnet-cni", "daemon", "--socket", "{tmp}/s.sock", "--node-name", "n1", "--data-dir", "{tmp}/data"],
                 id="podnet-cni"),
    pytest.param(["podnet-proxy", "--hostname-override", "n1"], id="podnet-proxy"),
    pytest.param(["podnet-dns", "--listen", "127.0.0.1:10053"], id="podnet-dns"),
]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
@pytest.mark.parametrize("argv", DAEMONS)
def test_daemon_without_any_api_says_so_and_exits_2(tmp_path, argv):
    """No flags, no kubeconfig, not in a pod (and no --pod-cidr): one line naming every step tried, status 2."""
    from podnet.host.netns import NetnsPool

    pool = NetnsPool("pnt-disc-")
    try:
        ns = pool.netns()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(tmp_path / "home")}
        cmd = [str(VENV_BIN / argv[0]), *(a.replace("{tmp}", str(tmp_path)) for a in argv[1:])]
        p = subprocess.run(["ip", "netns", "exec", ns.name, *cmd], env=env, capture_output=True, text=True,
                           timeout=60)
    finally:
        pool.close()
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "no API server" in line]
    assert len(errors) == 1, p.stderr
    for step in ("--kubeconfig and --master not given", "$KUBECONFIG unset or empty", "~/.kube/config",
                 "in-cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT not set"):
        assert step in errors[0]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "s.sock").exists()  # the CNI daemon never served: nothing waits silently


def test_every_daemon_finds_the_api_through_the_one_shared_function():
    """cni/, proxy/ and dns/ build their API clients only with ApiClient.from_flags."""
    root = Path(__file__).resolve().parents[2]
    used = {}
    for package in ("cni", "proxy", "dns"):
        for path in sorted((root / package).glob("*.py")):
            text = path.read_text()
            for other in ("ApiClient(", "ApiClient.from_url(", "kubeconfig.resolve(", "in_cluster("):
                assert other not in text, f"{package}/{path.name} builds a client with {other}"
            if "ApiClient.from_flags(" in text:
                used.setdefault(package, []).append(path.name)
    assert sorted(used) == ["cni", "dns", "proxy"], used
