"""pods/exec over websocket against the lab API server: the options, the channel protocol, and real
clients (kubectl 1.32 as installed, the official Python client's ``stream()``) end to end.

The "container" here is a ``sleep`` process of the test, in the test's own namespaces, found
through a kubelet record and launch plan written the way the lab kubelet writes them; entering its
namespaces changes nothing, so these tests need root (nsenter) but create no namespace.
``tests/lab/test_kubelet_exec.py`` runs the same commands in a real lab pod.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from multidict import MultiDict

from podnet.host.procs import alive
from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.kube.kubeconfig import ClientConfig
from podnet.netlab.apiserver import execchannels as ch
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.containertargets import latest_plan, own_mount_namespace, running_in_status
from podnet.netlab.apiserver.podexec import ExecOptions, parse_exec_options
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import make_pki

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nsenter"), reason="needs root and nsenter")

EXEC = "/api/v1/namespaces/default/pods/web-1/exec"
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": "hello-from-spec", "HOSTNAME": "web-1"}


# --------------------------------------------------------------------------- options and wire (pure)

@pytest.mark.parametrize("query,want", [
    pytest.param([("command", "ls"), ("command", "-l"), ("stdout", "true")],
                 ExecOptions(("ls", "-l"), stdout=True), id="argv-in-order"),
    pytest.param([("command", "sh"), ("stdin", "1"), ("stdout", "T"), ("stderr", "True"), ("container", "c")],
                 ExecOptions(("sh",), "c", stdin=True, stdout=True, stderr=True), id="go-booleans"),
    pytest.param([("command", "sh"), ("stdout", "true"), ("stderr", "true"), ("tty", "true")],
                 ExecOptions(("sh",), stdout=True, tty=True), id="tty-turns-stderr-off"),
])
def test_exec_options(query, want):
    assert parse_exec_options(MultiDict(query)) == want


@pytest.mark.parametrize("query,message", [
    pytest.param([("command", "ls")], "you must specify at least 1 of stdin, stdout, stderr", id="no-stream"),
    pytest.param([("stdout", "true")], "you must specify at least 1 command", id="no-command"),
    pytest.param([("command", "ls"), ("stdout", "yes")], 'stdout: invalid boolean value "yes"', id="bad-bool"),
])
def test_exec_options_refused(query, message):
    with pytest.raises(StatusError) as e:
        parse_exec_options(MultiDict(query))
    assert e.value.code == 400 and e.value.message == message


@pytest.mark.parametrize("protocol,payload,want", [
    pytest.param("v5.channel.k8s.io", b"\x00hi", ch.Message(0, b"hi"), id="stdin"),
    pytest.param("v5.channel.k8s.io", b"\xff\x00", ch.Message(0, closed=True), id="v5-close-stdin"),
    pytest.param("v4.channel.k8s.io", b"\xff\x00", ch.Message(255, b"\x00"), id="v4-has-no-close"),
    pytest.param("v5.channel.k8s.io", b'\x04{"Width":100,"Height":30}', ch.Message(4, size=(100, 30)),
                 id="resize"),
    pytest.param("v5.channel.k8s.io", b"\x04{bad", None, id="resize-garbled"),
    pytest.param("v5.channel.k8s.io", b"", None, id="empty"),
])
def test_parse_message(protocol, payload, want):
    assert ch.parse_message(protocol, payload) == want


def test_exit_status_is_kubelets():
    assert ch.exit_status(["sh", "-c", "exit 3"], 3) == {
        "metadata": {}, "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
        "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
    assert ch.exit_code_of(-9) == 137 and ch.exit_code_of(4) == 4


def test_latest_plan_and_running_status(tmp_path):
    for n in (0, 2, 10):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / f"plan-{n}.json").write_text("{}")
    assert latest_plan(tmp_path, "c") == tmp_path / "c" / "plan-10.json"
    assert latest_plan(tmp_path, "other") is None
    pod = {"status": {"containerStatuses": [{"name": "a", "state": {"running": {}}},
                                            {"name": "b", "state": {"terminated": {"exitCode": 0}}}]}}
    assert running_in_status(pod, "a") and not running_in_status(pod, "b") and not running_in_status(pod, "z")


# --------------------------------------------------------------------------- a server and a "container"

RUNNING = {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
    {"name": "c", "state": {"running": {}}, "ready": True, "restartCount": 0, "image": "x", "imageID": "",
     "started": True}]}


class Target:
    """A ``sleep`` process standing for a running container, in a mount namespace of its own (a copy
    of the test's), published as the lab kubelet does."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.proc = subprocess.Popen(["unshare", "--mount", "sleep", "300"])
        for _ in range(500):  # until unshare has made the namespace (bounded)
            if own_mount_namespace(self.proc.pid):
                break
            time.sleep(0.01)
        self.workdir = run / "workdir"
        self.workdir.mkdir(parents=True)

    async def publish(self, client: ApiClient, status: dict = RUNNING) -> dict:
        pod = await client.create(r.PODS, {"metadata": {"name": "web-1"}, "spec": {
            "nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}, namespace="default")
        await client.patch(r.PODS, "web-1", {"status": status}, "default", subresource="status")
        uid = pod["metadata"]["uid"]
        (self.run / "pods" / "n1").mkdir(parents=True, exist_ok=True)
        (self.run / "pods" / "n1" / "pnl-n1-p0.json").write_text(json.dumps(
            {"pod": "default/web-1", "uid": uid, "netns": "pnl-n1-p0", "pids": {"c": self.proc.pid}}))
        plans = self.run / "nodes" / "n1" / "pods" / uid / "containers" / "c"
        plans.mkdir(parents=True)
        (plans / "plan-0.json").write_text(json.dumps({"env": ENV, "workingDir": str(self.workdir)}))
        return pod

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path / "run")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
async def exec_api(target):
    async with LabApiServer(bookmark_interval=0.2, pod_log_dir=target.run / "logs" / "pods") as api:
        async with ApiClient.from_url(api.url) as client:
            await target.publish(client)
        yield api


async def eventually(check) -> bool:
    """Whether ``check()`` holds within a bounded number of polls."""
    for _ in range(600):
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def kubectl(server: str, home: Path, *args: str, stdin: bytes | None = None,
                  token: str | None = None) -> tuple[int, str, str]:
    auth = ["--token", token] if token else []
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *auth, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


# --------------------------------------------------------------------------- kubectl

KUBECTL_CASES = [
    pytest.param(["exec", "web-1", "--", "sh", "-c", "echo out; echo err >&2"], None, 0, "out\n", "err\n",
                 id="stdout-and-stderr-apart"),
    pytest.param(["exec", "web-1", "--", "sh", "-c", "exit 3"], None, 3, "",
                 "command terminated with exit code 3\n", id="exit-code"),
    pytest.param(["exec", "-i", "web-1", "--", "cat"], b"hi\nthere\n", 0, "hi\nthere\n", "", id="stdin-piped"),
    pytest.param(["exec", "web-1", "--", "sh", "-c", "echo $GREETING:$HOSTNAME"], None, 0,
                 "hello-from-spec:web-1\n", "", id="container-env"),
    pytest.param(["exec", "web-1", "--", "sh", "-c", 'test "$(pwd)" = "$WD" && echo workdir'], None, 0,
                 "workdir\n", "", id="working-dir"),
    pytest.param(["exec", "web-1", "--", "no-such-command"], None, 1, "",
                 'error: error executing command in container: exec: "no-such-command": '
                 "executable file not found in $PATH\n", id="unknown-command"),
    pytest.param(["exec", "web-1", "-c", "other", "--", "true"], None, 1, "",
                 "Error from server (BadRequest): container other is not valid for pod web-1\n",
                 id="unknown-container"),
]


@needs_kubectl
@needs_root
@pytest.mark.parametrize("args,stdin,rc,out,err", KUBECTL_CASES)
async def test_kubectl_exec(exec_api, target, tmp_path, args, stdin, rc, out, err):
    args = [a.replace("$WD", str(target.workdir)) for a in args]
    got = await kubectl(exec_api.url, tmp_path, *args, stdin=stdin)
    assert got == (rc, out, err)


@needs_kubectl
@needs_root
async def test_kubectl_cp_in_and_out(exec_api, target, tmp_path):
    src = tmp_path / "local.txt"
    src.write_text("payload\n")
    inside = target.workdir / "copied.txt"
    rc, _, err = await kubectl(exec_api.url, tmp_path, "cp", str(src), f"web-1:{inside}")
    assert rc == 0, err
    assert inside.read_text() == "payload\n"
    back = tmp_path / "back.txt"
    rc, _, err = await kubectl(exec_api.url, tmp_path, "cp", f"web-1:{inside}", str(back))
    assert rc == 0, err
    assert back.read_text() == "payload\n"


@needs_kubectl
@needs_root
async def test_kubectl_cp_round_trips_a_large_file(exec_api, target, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    back = tmp_path / "big-back.bin"
    for args in (["cp", str(src), f"web-1:{target.workdir / 'big.bin'}"],
                 ["cp", f"web-1:{target.workdir / 'big.bin'}", str(back)]):
        rc, _, err = await kubectl(exec_api.url, tmp_path, *args)
        assert rc == 0, err
    assert back.read_bytes() == src.read_bytes()


@needs_kubectl
@needs_root
async def test_client_gone_ends_the_command(exec_api, target, tmp_path):
    """kubectl killed mid-command: the server kills the command's process group."""
    pid_file = target.workdir / "cmd.pid"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", exec_api.url, "exec", "web-1", "--", "sh", "-c", f"echo $$ > {pid_file}; exec sleep 300",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert await eventually(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    assert alive(pid)
    proc.kill()
    await proc.wait()
    assert await eventually(lambda: not alive(pid))


@needs_kubectl
@needs_root
async def test_kubectl_exec_tty(exec_api, tmp_path):
    """``-it`` under a terminal (``script``): the command's stdin is a terminal of the client's size."""
    if not shutil.which("script"):
        pytest.skip("script (util-linux) not installed")
    cmd = (f"stty cols 100 rows 30; {KUBECTL} --server {exec_api.url} exec -it web-1 -- "
           "sh -c 'test -t 0 && echo is-a-tty; stty size; exit 5'")
    proc = await asyncio.create_subprocess_exec(
        "script", "-qec", cmd, "/dev/null", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert proc.returncode == 5, text
    assert "is-a-tty" in text and "30 100" in text and "command terminated with exit code 5" in text


@needs_root
@pytest.mark.parametrize("status,message", [
    pytest.param({"phase": "Pending", "containerStatuses": [{"name": "c", "state": {"waiting": {}}, "ready": False,
                                                             "restartCount": 0, "image": "x", "imageID": ""}]},
                 'container not found ("c")', id="not-running"),
])
async def test_exec_into_a_container_not_running(target, tmp_path, status, message):
    async with LabApiServer(pod_log_dir=target.run / "logs" / "pods") as api:
        async with ApiClient.from_url(api.url) as client:
            await target.publish(client, status)
        assert await _upgrade(api.url) == (400, message)


@needs_root
async def test_exec_refuses_a_process_in_the_servers_mount_namespace(target):
    """A recorded pid in the server's mount namespace (a runtime client before its container reported): never
    the host instead."""
    async with LabApiServer(pod_log_dir=target.run / "logs" / "pods") as api:
        async with ApiClient.from_url(api.url) as client:
            await target.publish(client)
        record = target.run / "pods" / "n1" / "pnl-n1-p0.json"
        host_process = subprocess.Popen(["sleep", "300"])
        try:
            record.write_text(json.dumps(json.loads(record.read_text()) | {"pids": {"c": host_process.pid}}))
            code, message = await _upgrade(api.url)
        finally:
            host_process.kill()
            host_process.wait()
    assert code == 400 and "does not run in a mount namespace of its own" in message


@needs_root
async def test_exec_refuses_protocols_before_v4(exec_api):
    code, message = await _upgrade(exec_api.url, {"Sec-WebSocket-Protocol": "v3.channel.k8s.io, channel.k8s.io"})
    assert code == 400 and message.startswith("requested protocol(s) are not supported: [v3.channel.k8s.io")


async def _upgrade(url: str, headers: dict | None = None) -> tuple[int, str]:
    """A websocket exec request refused before the upgrade: (HTTP status, the Status message)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + EXEC + "?command=true&stdout=true", headers=UPGRADE | (headers or {})) as resp:
            return resp.status, (await resp.json())["message"]


@needs_root
async def test_spdy_post_answers_websocket_only(exec_api):
    async with aiohttp.ClientSession() as s:
        async with s.post(exec_api.url + EXEC + "?command=true&stdout=true",
                          headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}) as resp:
            body = await resp.json()
    assert resp.status == 400 and "over websocket only" in body["message"]


# --------------------------------------------------------------------------- the official Python client

@needs_root
async def test_python_client_stream(exec_api):
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import stream

    def use() -> tuple:
        cfg = kubernetes.client.Configuration()
        cfg.host = exec_api.url
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))
        simple = stream(api.connect_get_namespaced_pod_exec, "web-1", "default", command=["echo", "hi"],
                        stdout=True, stderr=True, stdin=False, tty=False)
        ws = stream(api.connect_get_namespaced_pod_exec, "web-1", "default",
                    command=["sh", "-c", "echo out; echo err >&2; exit 3"], stdout=True, stderr=True, stdin=False,
                    tty=False, _preload_content=False)
        ws.run_forever(timeout=30)
        fed = stream(api.connect_get_namespaced_pod_exec, "web-1", "default", command=["head", "-n1"],
                     stdout=True, stderr=True, stdin=True, tty=False, _preload_content=False)
        fed.write_stdin("line1\nline2\n")
        fed.run_forever(timeout=30)
        tty = stream(api.connect_get_namespaced_pod_exec, "web-1", "default", command=["sh", "-c", "read x; stty size"],
                     stdout=True, stderr=False, stdin=True, tty=True, _preload_content=False)
        tty.write_channel(ch.RESIZE, json.dumps({"Width": 90, "Height": 20}))
        tty.write_stdin("go\n")  # sent after the size, so the command reads the size after it is set
        tty.run_forever(timeout=30)
        return (simple, ws.read_stdout(), ws.read_stderr(), ws.returncode, fed.read_stdout(), fed.returncode,
                tty.read_stdout(), tty.returncode)

    assert await asyncio.to_thread(use) == ("hi\n", "out\n", "err\n", 3, "line1\n", 0, "go\r\n20 90\r\n", 0)


@needs_root
async def test_client_gone_ends_a_tty_command(exec_api, target):
    """The command ignores SIGHUP on its terminal: the server's SIGKILL to its session still ends it."""
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import stream

    pid_file = target.workdir / "tty.pid"

    def use():
        cfg = kubernetes.client.Configuration()
        cfg.host = exec_api.url
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))
        return stream(api.connect_get_namespaced_pod_exec, "web-1", "default",
                      command=["sh", "-c", f"echo $$ > {pid_file}; trap '' HUP; sleep 300"],
                      stdout=True, stderr=False, stdin=True, tty=True, _preload_content=False)

    ws = await asyncio.to_thread(use)
    assert await eventually(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    assert alive(pid)
    await asyncio.to_thread(ws.close)
    assert await eventually(lambda: not alive(pid))


@needs_root
async def test_python_asyncio_client_exec(exec_api):
    ac = pytest.importorskip("kubernetes_asyncio.client")
    from kubernetes_asyncio.stream import WsApiClient

    cfg = ac.Configuration()
    cfg.host = exec_api.url
    async with WsApiClient(configuration=cfg) as ws:
        out = await ac.CoreV1Api(api_client=ws).connect_get_namespaced_pod_exec(
            "web-1", "default", command=["sh", "-c", "echo $GREETING"], stderr=True, stdin=False, stdout=True,
            tty=False)
    assert out == "hello-from-spec\n"


# --------------------------------------------------------------------------- RBAC

EXEC_VERBS = {"exec": ["get", "create"], "exec-create-only": ["create"], "exec-get-only": ["get"], "reader": []}
"""Each ServiceAccount's verbs on pods/exec in its own Role (all may get pods, as kubectl does first)."""
RBAC = "".join(f"""---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {role}, namespace: default}}
rules:
- {{apiGroups: [""], resources: [pods], verbs: [get]}}
{f'- {{apiGroups: [""], resources: [pods/exec], verbs: {json.dumps(verbs)}}}' if verbs else ""}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {role}, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}
subjects:
- {{kind: ServiceAccount, name: {role}, namespace: default}}
""" for role, verbs in EXEC_VERBS.items())

SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated")
TOKENS = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",))} | {
    f"{role}-tok": User(f"system:serviceaccount:default:{role}", role, SA_GROUPS)
    for role in EXEC_VERBS}


@pytest.fixture
def pki(tmp_path):
    """A lab CA and serving certificate: kubectl sends a bearer token only over TLS."""
    make_pki(tmp_path / "pki", ["127.0.0.1"])
    return tmp_path / "pki"


@pytest.fixture
async def rbac_api(target, pki):
    """HTTPS with RBAC over :data:`RBAC`; the pod created by the admin."""
    async with LabApiServer(pod_log_dir=target.run / "logs" / "pods", authenticator=TokenAuthenticator(TOKENS),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key"), policy=policy_from_yaml(RBAC)) as api:
        async with ApiClient(ClientConfig(server=api.url, token="admin-tok", ca_file=str(pki / "ca.crt"))) as client:
            await target.publish(client)
        yield api


def _forbidden(user: str, verb: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'pods "web-1" is forbidden: User "system:serviceaccount:default:{user}" cannot {verb} '
                       'resource "pods/exec" in API group "" in the namespace "default"',
            "reason": "Forbidden", "details": {"name": "web-1", "kind": "pods"}, "code": 403}


@needs_root
@pytest.mark.parametrize("role,code,body", [
    pytest.param("exec", 101, None, id="get-and-create"),
    pytest.param("exec-get-only", 403, _forbidden("exec-get-only", "create"), id="get-without-create"),
    pytest.param("exec-create-only", 403, _forbidden("exec-create-only", "get"), id="create-without-get"),
    pytest.param("reader", 403, _forbidden("reader", "get"), id="no-exec-at-all"),
])
async def test_websocket_upgrade_needs_get_and_create(rbac_api, pki, role, code, body):
    headers = {"Authorization": f"Bearer {role}-tok"} | UPGRADE
    async with aiohttp.ClientSession() as s:
        async with s.get(rbac_api.url + EXEC + "?command=true&stdout=true", headers=headers,
                         ssl=ssl.create_default_context(cafile=str(pki / "ca.crt"))) as resp:
            assert resp.status == code
            if body is not None:
                assert await resp.json() == body


@needs_kubectl
@needs_root
@pytest.mark.parametrize("role,rc,out,err_has", [
    pytest.param("exec", 0, "ok\n", "", id="allowed"),
    pytest.param("reader", 1, "", 'cannot create resource "pods/exec"', id="forbidden"),
    pytest.param("exec-create-only", 1, "", "a websocket exec needs both get and create on pods/exec",
                 id="spdy-fallback-explains"),
])
async def test_kubectl_exec_with_rbac(rbac_api, pki, tmp_path, role, rc, out, err_has):
    got_rc, got_out, got_err = await kubectl(rbac_api.url, tmp_path, f"--certificate-authority={pki / 'ca.crt'}",
                                             "exec", "web-1", "--", "echo", "ok", token=f"{role}-tok")
    assert (got_rc, got_out) == (rc, out), got_err
    assert err_has in got_err
