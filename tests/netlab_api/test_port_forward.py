"""pods/portforward against the lab API server: SPDY/3.1 framing, the session protocol as kubelet
speaks it, and ``kubectl port-forward`` (1.32 as installed, SPDY tunnelled in a websocket) end to end.

The "pod" is a Python process in a network namespace of its own (``unshare --net``, unnamed, so it
goes with the process) serving HTTP on 127.0.0.1:8080 and an echo service on 127.0.0.1:9000, both
unreachable from the test's namespace: every byte that arrives went through the server's dial
inside the pod's namespace. It is published through a kubelet record the way the lab kubelet
writes one. Needs root (unshare, setns).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import urllib.request
import zlib
from pathlib import Path

import aiohttp
import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.kube.kubeconfig import ClientConfig
from podnet.netlab.apiserver import spdyframes as spdy
from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.portforward import PROTOCOL, ForwardRequest, request_of
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import make_pki

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                                reason="needs root, unshare and ip")

HTTP_PORT, ECHO_PORT, CLOSED_PORT = 8080, 9000, 8081
PORTFORWARD = "/api/v1/namespaces/default/pods/web-1/portforward"


# --------------------------------------------------------------------------- framing (pure)

def test_dictionary_is_spdy3s():
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def test_header_blocks_share_one_zlib_stream_per_direction():
    """Blocks a plain zlib inflater with the dictionary reads in order, and our decoder reads back."""
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    blocks = [{"streamType": "error", "port": "80", "requestID": "0"}, {"streamType": "data", "port": "80",
                                                                         "requestID": "0"}]
    inflater = zlib.decompressobj(zdict=spdy.DICTIONARY)
    for headers in blocks:
        wire = sender.encode(headers)
        plain = inflater.decompress(wire)
        assert struct.unpack_from("!I", plain)[0] == 3 and b"streamtype" in plain
        assert receiver.decode(wire) == {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("cut", [pytest.param(1, id="one-byte-pieces"), pytest.param(5, id="five-byte-pieces"),
                                 pytest.param(10_000, id="whole")])
def test_frame_reader_reassembles_pieces(cut):
    codec = spdy.HeaderCodec()
    wire = (spdy.syn_stream(codec, 1, {"port": "80"}) + spdy.data_frame(1, b"hello", fin=True)
            + spdy.control_frame(spdy.PING, struct.pack("!I", 7)))
    reader, frames = spdy.FrameReader(), []
    for i in range(0, len(wire), cut):
        frames += reader.feed(wire[i:i + cut])
    assert [type(f).__name__ for f in frames] == ["ControlFrame", "DataFrame", "ControlFrame"]
    assert spdy.parse_syn_stream(spdy.HeaderCodec(), frames[0]) == spdy.SynStream(1, False, {"port": "80"})
    assert frames[1] == spdy.DataFrame(1, spdy.FLAG_FIN, b"hello") and frames[1].fin
    assert frames[2].type == spdy.PING and frames[2].word(0) == 7


def test_frame_reader_refuses_other_versions():
    with pytest.raises(spdy.FrameError):
        spdy.FrameReader().feed(struct.pack("!HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1")


@pytest.mark.parametrize("headers,want", [
    pytest.param({"streamtype": "data", "port": "80", "requestid": "3"}, ForwardRequest("data", 80, "3"), id="data"),
    pytest.param({"streamtype": "error", "port": "65535", "requestid": "0"}, ForwardRequest("error", 65535, "0"),
                 id="error"),
    pytest.param({"streamtype": "stdin", "port": "80", "requestid": "0"}, 'invalid stream type "stdin"',
                 id="unknown-type"),
    pytest.param({"streamtype": "data", "requestid": "0"}, '"port" header is required', id="no-port"),
    pytest.param({"streamtype": "data", "port": "0", "requestid": "0"}, 'invalid port "0"', id="port-zero"),
    pytest.param({"streamtype": "data", "port": "http", "requestid": "0"}, 'invalid port "http"', id="port-name"),
    pytest.param({"streamtype": "data", "port": "80"}, '"requestID" header is required', id="no-request-id"),
])
def test_request_of(headers, want):
    if isinstance(want, ForwardRequest):
        assert request_of(headers) == want
    else:
        with pytest.raises(ValueError, match=want):
            request_of(headers)


# --------------------------------------------------------------------------- a pod in its own network namespace

POD_SERVER = """
import functools, http.server, socketserver, sys, threading

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

socketserver.ThreadingTCPServer.daemon_threads = True
echo = socketserver.ThreadingTCPServer(("127.0.0.1", %d), Echo)
threading.Thread(target=echo.serve_forever, daemon=True).start()
web = http.server.ThreadingHTTPServer(("127.0.0.1", %d), functools.partial(Quiet, directory=sys.argv[1]))
print("ready", flush=True)
web.serve_forever()
""" % (ECHO_PORT, HTTP_PORT)

RUNNING = {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
    {"name": "c", "state": {"running": {}}, "ready": True, "restartCount": 0, "image": "x", "imageID": "",
     "started": True}]}


class NetnsPod:
    """The pod's one container: the servers above, alone in a new network and mount namespace."""

    def __init__(self, run: Path) -> None:
        self.run, self.www = run, run / "www"
        self.www.mkdir(parents=True)
        (self.www / "hello.txt").write_text("hello from the pod\n")
        script = run / "pod_server.py"
        script.write_text(POD_SERVER)
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
             str(script), str(self.www)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    async def publish(self, client: ApiClient) -> None:
        pod = await client.create(r.PODS, {"metadata": {"name": "web-1"}, "spec": {
            "nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}, namespace="default")
        await client.patch(r.PODS, "web-1", {"status": RUNNING}, "default", subresource="status")
        (self.run / "pods" / "n1").mkdir(parents=True, exist_ok=True)
        (self.run / "pods" / "n1" / "pnl-n1-p0.json").write_text(json.dumps(
            {"pod": "default/web-1", "uid": pod["metadata"]["uid"], "netns": "pnl-n1-p0",
             "pids": {"c": self.proc.pid}}))

    def __enter__(self) -> NetnsPod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def pod(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with NetnsPod(tmp_path / "run") as p:
        yield p


@pytest.fixture
async def pf_api(pod):
    """A lab API server that knows the pod's kubelet record."""
    async with LabApiServer(pod_log_dir=pod.run / "logs" / "pods") as api, ApiClient.from_url(api.url) as client:
        await pod.publish(client)
        yield api


# --------------------------------------------------------------------------- the session, as kubectl speaks it

class SpdyClient:
    """Just enough of a SPDY client over the tunnelling websocket to drive one session by hand."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.codec, self.reader, self.pending = ws, spdy.HeaderCodec(), spdy.FrameReader(), []

    async def send(self, frame: bytes) -> None:
        await self.ws.send_bytes(frame)

    async def open(self, stream_id: int, kind: str, port: int, request_id: str) -> None:
        await self.send(spdy.syn_stream(self.codec, stream_id, {"streamType": kind, "port": str(port),
                                                                 "requestID": request_id}))

    async def frame(self) -> spdy.DataFrame | spdy.ControlFrame:
        while not self.pending:
            msg = await asyncio.wait_for(self.ws.receive(), 60)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            self.pending += self.reader.feed(msg.data)
        return self.pending.pop(0)

    async def stream_until_fin(self, stream_id: int, others: list) -> bytes:
        """The data of ``stream_id`` up to its FIN; frames of other streams go to ``others``."""
        data = b""
        for _ in range(100_000):
            f = await self.frame()
            if isinstance(f, spdy.DataFrame) and f.stream_id == stream_id:
                data += f.data
                if f.fin:
                    return data
            else:
                others.append(f)
        raise AssertionError("no FIN")


@needs_root
async def test_session_replies_forwards_and_echoes_pings(pf_api):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(pf_api.url + PORTFORWARD, protocols=[PROTOCOL]) as ws:
            assert ws.protocol == PROTOCOL
            c = SpdyClient(ws)
            await c.open(1, "error", ECHO_PORT, "0")
            await c.send(spdy.data_frame(1, fin=True))
            await c.open(3, "data", ECHO_PORT, "0")
            await c.send(spdy.control_frame(spdy.PING, struct.pack("!I", 1)))
            await c.send(spdy.control_frame(spdy.SETTINGS, struct.pack("!III", 1, 7, 1 << 20)))
            await c.send(spdy.control_frame(spdy.WINDOW_UPDATE, struct.pack("!II", 3, 1 << 16)))
            await c.send(spdy.data_frame(3, b"ping-pong"))
            await c.send(spdy.data_frame(3, fin=True))
            others: list = []
            assert await c.stream_until_fin(3, others) == b"ping-pong"
            assert await c.stream_until_fin(1, others) == b""
            replies = [f for f in others if f.type == spdy.SYN_REPLY]
            assert sorted(f.word(0) for f in replies) == [1, 3]
            assert [c.codec.decode(f.payload[4:]) for f in replies] == [{}, {}]  # one header stream, in order
            assert [f.word(0) for f in others if f.type == spdy.PING] == [1]


@needs_root
async def test_session_reports_a_refused_connection_on_the_error_stream(pf_api):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(pf_api.url + PORTFORWARD, protocols=[PROTOCOL]) as ws:
            c = SpdyClient(ws)
            await c.open(1, "error", CLOSED_PORT, "0")
            await c.open(3, "data", CLOSED_PORT, "0")
            message = (await c.stream_until_fin(1, [])).decode()
    assert message.startswith(f"error forwarding port {CLOSED_PORT} to pod default/web-1, uid ")
    assert message.endswith(f"dial tcp4 127.0.0.1:{CLOSED_PORT}: connect: connection refused")


@needs_root
async def test_session_goes_on_after_a_reset_and_after_the_pod_closed(pf_api):
    """A client RST_STREAM ends that connection (its error stream FINs); data the client sends after the pod
    closed is dropped; neither holds up the next connection in the session."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(pf_api.url + PORTFORWARD, protocols=[PROTOCOL]) as ws:
            c = SpdyClient(ws)
            await c.open(1, "error", ECHO_PORT, "0")
            await c.open(3, "data", ECHO_PORT, "0")
            await c.send(spdy.rst_stream(3, spdy.CANCEL))
            assert await c.stream_until_fin(1, []) == b""
            await c.open(5, "error", HTTP_PORT, "1")
            await c.open(7, "data", HTTP_PORT, "1")
            await c.send(spdy.data_frame(7, b"GET /hello.txt HTTP/1.0\r\n\r\n"))
            assert (await c.stream_until_fin(7, [])).endswith(b"\r\n\r\nhello from the pod\n")
            for _ in range(64):  # more than the server holds for one stream
                await c.send(spdy.data_frame(7, b"x" * 32768))
            await c.open(9, "error", ECHO_PORT, "2")
            await c.open(11, "data", ECHO_PORT, "2")
            await c.send(spdy.data_frame(11, b"still-here", fin=True))
            assert await c.stream_until_fin(11, []) == b"still-here"


@needs_root
@pytest.mark.parametrize("headers,message", [
    pytest.param({}, "over websocket only", id="spdy-post"),
    pytest.param({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "portforward.k8s.io"},
                 "requested protocol(s) are not supported: [portforward.k8s.io]", id="untunnelled-protocol"),
])
async def test_requests_refused_before_the_upgrade(pf_api, headers, message):
    async with aiohttp.ClientSession() as s:
        async with s.request("GET" if headers else "POST", pf_api.url + PORTFORWARD, headers=headers) as resp:
            body = await resp.json()
    assert resp.status == 400 and message in body["message"]


# --------------------------------------------------------------------------- kubectl port-forward

@contextlib.asynccontextmanager
async def port_forward(server: str, home: Path, remote: int, *args: str, token: str | None = None):
    """``kubectl port-forward pod/web-1 :REMOTE`` running: yields (process, local port)."""
    auth = ["--token", token] if token else []
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *auth, *args, "port-forward", "pod/web-1", f":{remote}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("Forwarding from 127.0.0.1:"), line + (await proc.stderr.read()).decode()
        yield proc, int(line.split(":")[1].split()[0])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=60) as resp:
        return resp.read()


def echo(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` (from a second thread, so neither side waits on the other), then FIN; all that
    comes back up to the peer's FIN."""
    sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
    sender.start()
    back = bytearray()
    while chunk := sock.recv(65536):
        back += chunk
    sender.join()
    return bytes(back)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=60)


@needs_kubectl
@needs_root
async def test_kubectl_port_forward_http(pf_api, tmp_path):
    async with port_forward(pf_api.url, tmp_path, HTTP_PORT) as (_, port):
        assert await asyncio.to_thread(http_get, port, "hello.txt") == b"hello from the pod\n"
        assert await asyncio.to_thread(http_get, port, "hello.txt") == b"hello from the pod\n"


@needs_kubectl
@needs_root
async def test_kubectl_port_forward_two_connections_at_once(pf_api, tmp_path):
    async with port_forward(pf_api.url, tmp_path, ECHO_PORT) as (_, port):
        def use() -> tuple[bytes, bytes]:
            with connect(port) as first, connect(port) as second:
                first.sendall(b"first-")  # the first connection stays open while the second runs to its end
                assert first.recv(6) == b"first-"
                got_second = echo(second, b"second")
                return echo(first, b"again"), got_second
        assert await asyncio.to_thread(use) == (b"again", b"second")


@needs_kubectl
@needs_root
async def test_kubectl_port_forward_large_transfers(pf_api, pod, tmp_path):
    big = os.urandom(4 * 1024 * 1024)
    (pod.www / "big.bin").write_bytes(big)
    async with port_forward(pf_api.url, tmp_path, ECHO_PORT) as (_, echo_port), \
            port_forward(pf_api.url, tmp_path, HTTP_PORT) as (_, http_port):
        def use() -> tuple[bytes, bytes]:
            with connect(echo_port) as sock:
                return echo(sock, big), http_get(http_port, "big.bin")
        echoed, downloaded = await asyncio.to_thread(use)
    assert echoed == big and downloaded == big


@needs_kubectl
@needs_root
async def test_kubectl_port_forward_to_a_closed_port(pf_api, tmp_path):
    """As against kube-apiserver: kubectl prints the error stream's message and ends the session."""
    async with port_forward(pf_api.url, tmp_path, CLOSED_PORT) as (proc, port):
        def use() -> bytes:
            with connect(port) as sock:
                return sock.recv(100)
        assert await asyncio.to_thread(use) == b""
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1, text
    assert f"an error occurred forwarding {port} -> {CLOSED_PORT}: error forwarding port {CLOSED_PORT} to pod " \
           f"default/web-1" in text
    assert f"dial tcp4 127.0.0.1:{CLOSED_PORT}: connect: connection refused" in text
    assert "error: lost connection to pod" in text


# --------------------------------------------------------------------------- RBAC

ROLES = {"forwarder": ["get", "create"], "create-only": ["create"], "reader": []}


def _role_and_binding(role: str, verbs: list[str]) -> list[dict]:
    """A Role that may get pods and use ``verbs`` on pods/portforward, bound to the ServiceAccount ``role``."""
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    if verbs:
        rules.append({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs})
    meta = {"name": role, "namespace": "default"}
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": role, "namespace": "default"}]}]


RBAC = "\n---\n".join(json.dumps(doc) for role, verbs in ROLES.items() for doc in _role_and_binding(role, verbs))
"""JSON documents, which are YAML."""
TOKENS = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",))} | {
    f"{role}-tok": User(f"system:serviceaccount:default:{role}", role, ("system:serviceaccounts",
                                                                        "system:authenticated"))
    for role in ROLES}


@pytest.fixture
async def rbac_pf_api(pod, tmp_path):
    make_pki(tmp_path / "pki", ["127.0.0.1"])
    pki = tmp_path / "pki"
    async with LabApiServer(pod_log_dir=pod.run / "logs" / "pods", authenticator=TokenAuthenticator(TOKENS),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key"), policy=policy_from_yaml(RBAC)) as api:
        async with ApiClient(ClientConfig(server=api.url, token="admin-tok", ca_file=str(pki / "ca.crt"))) as client:
            await pod.publish(client)
        yield api, pki


@needs_root
@pytest.mark.parametrize("role,code,verb", [
    pytest.param("forwarder", 101, None, id="get-and-create"),
    pytest.param("create-only", 403, "get", id="create-without-get"),
    pytest.param("reader", 403, "get", id="none"),
])
async def test_websocket_port_forward_needs_get_and_create(rbac_pf_api, role, code, verb):
    api, pki = rbac_pf_api
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {role}-tok", "Connection": "Upgrade", "Upgrade": "websocket",
                   "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                   "Sec-WebSocket-Protocol": PROTOCOL}
        async with s.get(api.url + PORTFORWARD, headers=headers,
                         ssl=ssl.create_default_context(cafile=str(pki / "ca.crt"))) as resp:
            assert resp.status == code
            if verb:
                assert (await resp.json())["message"] == (
                    f'pods "web-1" is forbidden: User "system:serviceaccount:default:{role}" cannot {verb} '
                    'resource "pods/portforward" in API group "" in the namespace "default"')


@needs_kubectl
@needs_root
async def test_kubectl_port_forward_forbidden(rbac_pf_api, tmp_path):
    api, pki = rbac_pf_api
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", api.url, "--token", "reader-tok", f"--certificate-authority={pki / 'ca.crt'}",
        "port-forward", "pod/web-1", f":{HTTP_PORT}", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert 'cannot create resource "pods/portforward" in API group "" in the namespace "default"' in err.decode()
