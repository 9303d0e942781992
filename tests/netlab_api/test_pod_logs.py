"""pods/log: the lab API server reading the lab kubelet's log files, with real kubectl."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.podlogs import parse_options, pick_container, tail_offset
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.node import podlogs as kubelet_logs

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")


@pytest.mark.parametrize("content,lines,want", [
    pytest.param(b"", 3, b"", id="empty"),
    pytest.param(b"a\nb\nc\n", 0, b"", id="zero-lines"),
    pytest.param(b"a\nb\nc\n", 2, b"b\nc\n", id="two-of-three"),
    pytest.param(b"a\nb\nc\n", 3, b"a\nb\nc\n", id="all"),
    pytest.param(b"a\nb\nc\n", 10, b"a\nb\nc\n", id="more-than-there"),
    pytest.param(b"a\nb\nc", 1, b"c", id="partial-last-line-counts"),
    pytest.param(b"a\nb\nc", 2, b"b\nc", id="partial-last-two"),
    pytest.param(b"a\n\n\n", 2, b"\n\n", id="empty-lines"),
    pytest.param(b"x" * 70000 + b"\n" + b"y" * 70000 + b"\n", 1, b"y" * 70000 + b"\n", id="longer-than-a-chunk"),
])
def test_tail_offset(tmp_path, content, lines, want):
    f = tmp_path / "0.log"
    f.write_bytes(content)
    assert content[tail_offset(f, lines):] == want


@pytest.mark.parametrize("query,code,words", [
    pytest.param({"tailLines": "-1"}, 422, "must be greater than or equal to 0", id="negative-tail"),
    pytest.param({"tailLines": "x"}, 400, "invalid integer", id="bad-tail"),
    pytest.param({"limitBytes": "0"}, 422, "must be greater than 0", id="zero-limit"),
    pytest.param({"follow": "maybe"}, 400, "invalid boolean", id="bad-bool"),
    pytest.param({"timestamps": "true"}, 400, "per-line times", id="timestamps-refused"),
    pytest.param({"sinceSeconds": "10"}, 400, "per-line times", id="since-refused"),
])
def test_bad_options(query, code, words):
    with pytest.raises(StatusError) as e:
        parse_options(query)
    assert e.value.code == code and words in e.value.message


def test_good_options():
    o = parse_options({"container": "c", "previous": "true", "follow": "1", "tailLines": "5", "limitBytes": "9",
                       "timestamps": "false"})
    assert (o.container, o.previous, o.follow, o.tail_lines, o.limit_bytes) == ("c", True, True, 5, 9)


def _pod(*names: str, inits: tuple[str, ...] = ()) -> dict:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": n} for n in names],
                                                "initContainers": [{"name": n} for n in inits]}}


@pytest.mark.parametrize("pod,asked,want", [
    pytest.param(_pod("c"), "", "c", id="only-container"),
    pytest.param(_pod("a", "b"), "b", "b", id="named"),
    pytest.param(_pod("a", inits=("i",)), "i", "i", id="init"),
    pytest.param(_pod("a", "b"), "", "a container name must be specified for pod p, choose one of: [a b]", id="ambiguous"),
    pytest.param(_pod("a", "b", inits=("i",)), "",
                 "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]",
                 id="ambiguous-with-init"),
    pytest.param(_pod("a"), "z", "container z is not valid for pod p", id="unknown"),
])
def test_pick_container(pod, asked, want):
    try:
        assert pick_container(pod, asked) == want
    except StatusError as e:
        assert (e.code, e.message) == (400, want)


POD = {"metadata": {"name": "web-1"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}


@pytest.fixture
async def logged(tmp_path):
    """A server reading tmp_path/pods, a Pod, and a writer of its container logs in the kubelet's layout."""
    root = tmp_path / "pods"
    async with LabApiServer(pod_log_dir=root) as api, ApiClient.from_url(api.url) as client:
        pod = await client.create(r.PODS, POD, namespace="default")

        def write(restart: int, text: str) -> None:
            path = kubelet_logs.container_log(root, "default", "web-1", pod["metadata"]["uid"], "c", restart)
            with open(path, "a") as f:
                f.write(text)

        yield api, client, write


async def test_log_before_start_and_previous_missing(logged):
    api, client, write = logged
    with pytest.raises(ApiError) as e:
        await client.request("GET", r.PODS.path("default", "web-1") + "/log")
    assert e.value.code == 400 and 'container "c" in pod "web-1" is waiting to start' in str(e.value)
    write(0, "one\n")
    with pytest.raises(ApiError) as e:
        await client.request("GET", r.PODS.path("default", "web-1") + "/log?previous=true")
    assert e.value.code == 400 and 'previous terminated container "c" in pod "web-1" not found' in str(e.value)


async def test_without_a_log_dir_logs_answer_400(lab_api, client):
    await client.create(r.PODS, POD, namespace="default")
    with pytest.raises(ApiError) as e:
        await client.request("GET", r.PODS.path("default", "web-1") + "/log")
    assert e.value.code == 400 and "no --pod-log-dir" in str(e.value)


async def kubectl(server: str, home, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


needs_kubectl = pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")


@needs_kubectl
@pytest.mark.parametrize("args,want", [
    pytest.param([], "second 1\nsecond 2\nsecond 3\n", id="current"),
    pytest.param(["-c", "c"], "second 1\nsecond 2\nsecond 3\n", id="container"),
    pytest.param(["--tail", "2"], "second 2\nsecond 3\n", id="tail"),
    pytest.param(["--previous"], "first run\ncrashed\n", id="previous"),
    pytest.param(["--previous", "--tail", "1"], "crashed\n", id="previous-tail"),
    pytest.param(["--limit-bytes", "8"], "second 1", id="limit-bytes"),
])
async def test_kubectl_logs(logged, tmp_path, args, want):
    api, client, write = logged
    write(0, "first run\ncrashed\n")
    write(1, "second 1\nsecond 2\nsecond 3\n")
    rc, out, err = await kubectl(api.url, tmp_path, "logs", "web-1", *args)
    assert rc == 0, err
    assert out == want


@needs_kubectl
async def test_kubectl_logs_follow_streams_until_the_pod_is_gone(logged, tmp_path):
    api, client, write = logged
    write(0, "before\n")
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", api.url, "logs", "-f", "web-1", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"before\n"
        write(0, "during\n")
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"during\n"
        write(0, "last words\n")
        await client.delete(r.PODS, "web-1", namespace="default")
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert rest == b"last words\n"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@needs_kubectl
async def test_kubectl_logs_follow_ends_when_the_container_restarts(logged, tmp_path):
    api, client, write = logged
    write(0, "instance 0\n")
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", api.url, "logs", "-f", "web-1", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"instance 0\n"
        write(0, "exit\n")
        write(1, "instance 1\n")
        assert await asyncio.wait_for(proc.stdout.read(), 30) == b"exit\n"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@needs_kubectl
async def test_kubectl_logs_follow_of_an_exited_container_returns_at_once(logged, tmp_path):
    api, client, write = logged
    write(0, "ran\n")
    write(1, "crashed again\n")
    await client.patch(r.PODS, "web-1", {"status": {"phase": "Running", "containerStatuses": [
        {"name": "c", "image": "x", "imageID": "", "ready": False, "restartCount": 1,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}, "default", subresource="status")
    rc, out, err = await kubectl(api.url, tmp_path, "logs", "-f", "web-1")
    assert rc == 0, err
    assert out == "crashed again\n"
