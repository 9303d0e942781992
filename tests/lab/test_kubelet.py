"""The lab kubelet's reconcile logic, with the runtime side (netns, CNI, processes, API writes) faked."""

from __future__ import annotations

import asyncio

import pytest

from podnet.netlab.node import podspec
from podnet.netlab.node.kubelet import ContainerRun, Kubelet, PodRun, pod_status
from podnet.netlab.node.sandbox import Sandbox


class FakeKubelet(Kubelet):
    """Records runtime operations instead of creating namespaces and processes."""

    def __init__(self, tmp_path, fail_start: int = 0) -> None:
        super().__init__(None, "n1", "192.168.77.11", lab="t", run_dir=tmp_path, cni_bin_dir="", cni_conf_dir=tmp_path)
        self.ops: list[tuple] = []
        self.fail_start = fail_start

    async def start_pod(self, pod):
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        self.ops.append(("start", key, meta["uid"]))
        self.pods[key] = Sandbox(key, meta["uid"], self._netns_name(), "c")
        await asyncio.sleep(0)
        if self.fail_start:
            self.fail_start -= 1
            raise RuntimeError("CNI ADD failed")

    async def stop_pod(self, key):
        rp = self.pods.pop(key, None)
        if rp is not None:
            self.ops.append(("stop", key, rp.uid))
            self.used_index.discard(int(rp.netns.rsplit("-p", 1)[1]))
        await asyncio.sleep(0)

    async def _confirm_delete(self, pod):
        self.ops.append(("confirm", pod["metadata"]["name"]))

    async def _patch_status(self, ns, name, status):
        self.ops.append(("status", name, status.get("phase")))


def pod(name: str, uid: str, node: str = "n1", deleting: bool = False) -> dict:
    meta = {"namespace": "default", "name": name, "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}}


async def settle(k: Kubelet) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        if not k.tasks:
            return
    raise AssertionError("workers did not settle")


A = "default/a"
CASES = [
    ("add", [pod("a", "u1")], [("start", A, "u1")]),
    ("update-same-uid", [pod("a", "u1"), "settle", pod("a", "u1")], [("start", A, "u1")]),
    ("delete", [pod("a", "u1"), "settle", None], [("start", A, "u1"), ("stop", A, "u1")]),
    ("recreated-new-uid", [pod("a", "u1"), "settle", pod("a", "u2")],
     [("start", A, "u1"), ("stop", A, "u1"), ("start", A, "u2")]),
    ("graceful-delete", [pod("a", "u1"), "settle", pod("a", "u1", deleting=True), "settle", None],
     [("start", A, "u1"), ("stop", A, "u1"), ("confirm", "a")]),
    ("add-then-delete-before-start", [pod("a", "u1"), None], []),
    ("delete-during-start", [pod("a", "u1"), "tick", None], [("start", A, "u1"), ("stop", A, "u1")]),
]


@pytest.mark.parametrize("events,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_reconcile(tmp_path, events, want):
    k = FakeKubelet(tmp_path)
    for ev in events:
        if ev == "settle":
            await settle(k)
        elif ev == "tick":
            await asyncio.sleep(0)
        else:
            k.observe(ev, A)
    await settle(k)
    assert k.ops == want


async def test_failed_sandbox_is_torn_down_and_retried_with_backoff(tmp_path):
    k = FakeKubelet(tmp_path, fail_start=2)
    slept: list[float] = []

    async def sleep(s):
        slept.append(s)
        await asyncio.sleep(0)

    k.sleep = sleep
    k.observe(pod("a", "u1"), A)
    await settle(k)
    failed = [("start", A, "u1"), ("stop", A, "u1"), ("status", "a", "Pending")]
    assert k.ops == failed + failed + [("start", A, "u1")]
    assert slept == [1.0, 2.0] and len(k.used_index) == 1  # only the running sandbox holds an index


@pytest.mark.parametrize(("failures", "delay"), [
    pytest.param(1, 1.0, id="first"), pytest.param(3, 4.0, id="doubling"), pytest.param(9, 30.0, id="capped"),
])
def test_sandbox_retry_delay(tmp_path, failures, delay):
    assert FakeKubelet(tmp_path).sandbox_retry_delay(failures) == delay


async def test_pod_deleted_while_its_sandbox_retries_is_not_started_again(tmp_path):
    k = FakeKubelet(tmp_path, fail_start=5)
    gate = asyncio.Event()

    async def sleep(s):
        await gate.wait()

    k.sleep = sleep
    k.observe(pod("a", "u1"), A)
    for _ in range(20):
        await asyncio.sleep(0)
    k.observe(None, A)
    gate.set()
    await settle(k)
    assert k.ops == [("start", A, "u1"), ("stop", A, "u1"), ("status", "a", "Pending")]


async def test_netns_index_is_lowest_free(tmp_path):
    k = FakeKubelet(tmp_path)
    for name in ("a", "b", "c"):
        k.observe(pod(name, name), f"default/{name}")
    await settle(k)
    assert sorted(rp.netns for rp in k.pods.values()) == ["pnl-n1-p1", "pnl-n1-p2", "pnl-n1-p3"]
    k.observe(None, "default/b")
    await settle(k)
    k.observe(pod("d", "d"), "default/d")
    await settle(k)
    assert k.pods["default/d"].netns == "pnl-n1-p2"


def test_only_pods_bound_to_this_node_are_mine(tmp_path):
    k = FakeKubelet(tmp_path)
    assert k._mine(pod("a", "u", node="n1")) and not k._mine(pod("a", "u", node="n2"))
    assert not k._mine({"metadata": {"name": "x"}, "spec": {}})


# ---------------------------------------------------------------- container restarts (restartPolicy)

class FakeProc:
    """A container process: ``exit(rc)`` ends it."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None
        self._done = asyncio.Event()

    def exit(self, rc: int) -> None:
        self.returncode = rc
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        return self.returncode


class RestartKubelet(Kubelet):
    """Real supervision, init ordering and back-off; processes, sandbox and API faked; sleeps
    recorded and released by the test."""

    def __init__(self, tmp_path) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.wake = asyncio.Event()
        super().__init__(None, "n1", "192.168.77.11", lab="t", run_dir=tmp_path, cni_bin_dir="",
                         cni_conf_dir=tmp_path, backoff_base=1.0, backoff_max=8.0, backoff_reset=100.0,
                         clock=lambda: self.now, sleep=self._sleep)
        self.statuses: list[dict] = []
        self.started: list[str] = []      # container names, in start order
        self.procs: dict[str, list[FakeProc]] = {}

    async def _sleep(self, d):
        self.sleeps.append(d)
        self.wake.clear()
        await self.wake.wait()

    async def _report(self, pr):
        if self.runs.get(pr.spec.key) is pr:
            self.statuses.append(pod_status(pr, self.node_ip))

    async def start_container(self, pr, cr):
        self.started.append(cr.c.name)
        proc = FakeProc(-1)  # never a real pid
        self.procs.setdefault(cr.c.name, []).append(proc)
        pr.sb.procs[cr.c.name] = proc
        return proc

    async def start_pod(self, pod):
        spec = podspec.parse(pod)
        sb = Sandbox(spec.key, spec.uid, self._netns_name(), "c", ips=["10.244.1.5"])
        sb.destroy = self._destroy(sb)
        pr = PodRun(spec, sb, {c.name: ContainerRun(c, init=True) for c in spec.init_containers}
                    | {c.name: ContainerRun(c) for c in spec.containers})
        self.pods[spec.key] = sb
        self.runs[spec.key] = pr
        pr.task = asyncio.create_task(self._run_pod(pr))

    @staticmethod
    def _destroy(sb):
        async def destroy(grace=2.0):  # no signals, no netns: the processes are fake
            for p in sb.procs.values():
                if p.returncode is None:
                    p.exit(-15)
            return []
        return destroy

    def proc(self, name: str = "main") -> FakeProc:
        return self.procs[name][-1]


def rpod(policy: str | None = None, containers=None, init=None) -> dict:
    p = pod("a", "u1")
    p["spec"]["containers"] = containers or [{"name": "main", "image": "x", "command": ["run"]}]
    if init:
        p["spec"]["initContainers"] = init
    if policy:
        p["spec"]["restartPolicy"] = policy
    return p


async def spin(cond, n: int = 400) -> None:
    for _ in range(n):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def ready_of(status: dict) -> str | None:
    return next((c["status"] for c in status.get("conditions") or () if c["type"] == "Ready"), None)


def cstatus(status: dict, name: str = "main", init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(c for c in status[key] if c["name"] == name)


async def test_always_restarts_in_same_sandbox_with_backoff(tmp_path):
    k = RestartKubelet(tmp_path)
    k.observe(rpod(), A)
    await settle(k)
    sb = k.pods[A]
    await spin(lambda: k.statuses and ready_of(k.statuses[-1]) == "True")
    assert cstatus(k.statuses[-1])["restartCount"] == 0
    for n, want_delay in enumerate([1.0, 2.0, 4.0, 8.0, 8.0], start=1):
        k.proc().exit(1)
        await spin(lambda: len(k.sleeps) == n)
        down = k.statuses[-1]
        assert ready_of(down) == "False"  # reported before the back-off
        cs = cstatus(down)
        assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["lastState"]["terminated"]["reason"] == "Error"
        assert k.sleeps[-1] == want_delay
        k.wake.set()
        await spin(lambda: ready_of(k.statuses[-1]) == "True")
        cs = cstatus(k.statuses[-1])
        assert cs["restartCount"] == n and "running" in cs["state"] and cs["lastState"]["terminated"]["exitCode"] == 1
    assert k.pods[A] is sb and len(k.procs["main"]) == 6  # same sandbox, one process per run
    k.now += 100.0  # ran long enough: the back-off starts over
    k.proc().exit(0)
    await spin(lambda: len(k.sleeps) == 6)
    assert k.sleeps[-1] == 1.0
    assert cstatus(k.statuses[-1])["lastState"]["terminated"]["reason"] == "Completed"
    task = k.runs[A].task
    k.observe(None, A)
    await settle(k)
    assert A not in k.pods and task.done()


@pytest.mark.parametrize("policy,rc,phase", [
    pytest.param("Never", 0, "Succeeded", id="never-ok"),
    pytest.param("Never", 3, "Failed", id="never-failed"),
    pytest.param("OnFailure", 0, "Succeeded", id="onfailure-ok"),
])
async def test_no_restart_policies(tmp_path, policy, rc, phase):
    k = RestartKubelet(tmp_path)
    k.observe(rpod(policy), A)
    await settle(k)
    await spin(lambda: "main" in k.procs)
    k.proc().exit(rc)
    await spin(lambda: k.runs[A].task.done())
    last = k.statuses[-1]
    assert last["phase"] == phase and ready_of(last) == "False"
    assert cstatus(last)["state"]["terminated"]["exitCode"] == rc
    assert k.sleeps == [] and len(k.procs["main"]) == 1


async def test_on_failure_restarts_nonzero(tmp_path):
    k = RestartKubelet(tmp_path)
    k.observe(rpod("OnFailure"), A)
    await settle(k)
    await spin(lambda: "main" in k.procs)
    k.proc().exit(2)
    await spin(lambda: len(k.sleeps) == 1)
    k.wake.set()
    await spin(lambda: len(k.procs["main"]) == 2)
    assert k.runs[A].runs["main"].restart_count == 1
    k.observe(None, A)
    await settle(k)


async def test_delete_during_backoff_cancels_restart(tmp_path):
    k = RestartKubelet(tmp_path)
    k.observe(rpod(), A)
    await settle(k)
    await spin(lambda: "main" in k.procs)
    task = k.runs[A].task
    k.proc().exit(1)
    await spin(lambda: len(k.sleeps) == 1)
    k.observe(None, A)
    await settle(k)
    await spin(lambda: task.done())
    assert task.cancelled() and A not in k.pods
    k.wake.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(k.procs["main"]) == 1  # never restarted


async def test_init_containers_run_in_order_to_completion_first(tmp_path):
    k = RestartKubelet(tmp_path)
    init = [{"name": "i1", "image": "x", "command": ["a"]}, {"name": "i2", "image": "x", "command": ["b"]}]
    containers = [{"name": "c1", "image": "x", "command": ["c"]}, {"name": "c2", "image": "x", "command": ["d"]}]
    k.observe(rpod(init=init, containers=containers), A)
    await settle(k)
    await spin(lambda: "i1" in k.procs)
    assert k.started == ["i1"] and k.statuses[-1]["phase"] == "Pending"
    k.proc("i1").exit(1)  # a failed init container is retried (restartPolicy Always) before i2 runs
    await spin(lambda: len(k.sleeps) == 1)
    k.wake.set()
    await spin(lambda: len(k.procs["i1"]) == 2)
    assert k.started == ["i1", "i1"]
    k.proc("i1").exit(0)
    await spin(lambda: "i2" in k.procs)
    assert k.started == ["i1", "i1", "i2"]
    k.proc("i2").exit(0)
    await spin(lambda: "c1" in k.procs and "c2" in k.procs)
    assert k.started[:3] == ["i1", "i1", "i2"] and sorted(k.started[3:]) == ["c1", "c2"]
    last = k.statuses[-1]
    assert last["phase"] == "Running" and ready_of(last) == "True"
    assert cstatus(last, "i1", init=True)["state"]["terminated"]["reason"] == "Completed"
    assert cstatus(last, "i1", init=True)["restartCount"] == 1
    k.observe(None, A)
    await settle(k)


async def test_failed_init_container_with_never_fails_the_pod(tmp_path):
    k = RestartKubelet(tmp_path)
    k.observe(rpod("Never", init=[{"name": "i1", "image": "x", "command": ["a"]}]), A)
    await settle(k)
    await spin(lambda: "i1" in k.procs)
    k.proc("i1").exit(4)
    await spin(lambda: k.runs[A].task.done())
    assert k.statuses[-1]["phase"] == "Failed" and "main" not in k.procs


async def test_sync_once_lists_this_nodes_pods_through_the_informer(tmp_path):
    class Client:
        server = "https://192.168.77.1:6443"

        def __init__(self):
            self.calls = []

        async def list(self, res, namespace=None, label_selector=None, field_selector=None, **kw):
            self.calls.append((res.plural, field_selector))
            return [pod("a", "u1"), pod("b", "u2")], "7"

    client = Client()
    k = FakeKubelet.__new__(FakeKubelet)
    Kubelet.__init__(k, client, "n1", "192.168.77.11", lab="t", run_dir=tmp_path, cni_bin_dir="",
                     cni_conf_dir=tmp_path)
    k.ops, k.fail_start = [], False
    await k.sync_once()
    assert client.calls == [("pods", "spec.nodeName=n1")]
    assert sorted(k.ops) == [("start", "default/a", "u1"), ("start", "default/b", "u2")]
    assert k.informer.resource_version == "7"
    assert k.service_env()["KUBERNETES_SERVICE_HOST"] == "192.168.77.1"
    assert k.service_env()["KUBERNETES_SERVICE_PORT"] == "6443"


# ---------------------------------------------------------------- status fields the official clients require

from pathlib import Path  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from podnet.netlab.node import hostinfo, podlogs  # noqa: E402
from podnet.netlab.node.kubelet import container_status, image_id  # noqa: E402


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


UNAME = os.uname_result(("Linux", "h", "6.1.0-18-amd64", "#1 SMP", "x86_64"))


@pytest.mark.parametrize("files,want", [
    pytest.param({"etc/machine-id": "abc123\n", "proc/sys/kernel/random/boot_id": "b-1\n",
                  "sys/class/dmi/id/product_uuid": "EC2A-1\n", "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12"\n'},
                 {"machineID": "abc123", "bootID": "b-1", "systemUUID": "ec2a-1", "osImage": "Debian GNU/Linux 12"},
                 id="all-present"),
    pytest.param({"var/lib/dbus/machine-id": "dbus-id\n", "proc/sys/kernel/random/boot_id": "b-2\n"},
                 {"machineID": "dbus-id", "bootID": "b-2", "systemUUID": "", "osImage": "Linux"},
                 id="dbus-machine-id-no-dmi"),
    pytest.param({}, {"machineID": "", "bootID": "", "systemUUID": "", "osImage": "Linux"}, id="nothing-readable"),
])
def test_system_info(tmp_path, files, want):
    info = hostinfo.system_info(_root(tmp_path, files), UNAME)
    assert {k: info[k] for k in want} == want
    assert info["kernelVersion"] == "6.1.0-18-amd64" and info["architecture"] == "amd64"
    assert info["operatingSystem"] == "linux"
    required = ("architecture", "bootID", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion",
                "kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID")
    assert all(isinstance(info[k], str) for k in required)


def test_system_info_of_this_machine():
    info = hostinfo.system_info()
    assert info["kernelVersion"] == os.uname().release
    assert info["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _cpod(**c) -> dict:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [dict(name="c", **c)]}}


def test_image_id_digests_what_runs(tmp_path):
    import hashlib

    server = Path(sys.modules["podnet.netlab.node.kubelet"].__file__).with_name("podserver.py")
    want = hashlib.sha256(server.read_bytes()).hexdigest()
    assert image_id(_cpod(image="nginx")) == f"podnet-lab://{server}@sha256:{want}"
    exe = tmp_path / "tool"
    exe.write_bytes(b"#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    assert image_id(_cpod(image="x", command=[str(exe)])) == \
        f"podnet-lab://{exe}@sha256:{hashlib.sha256(exe.read_bytes()).hexdigest()}"
    assert image_id(_cpod(image="x", command=["no-such-binary-anywhere"])) == "podnet-lab://no-such-binary-anywhere"


def test_container_status_has_the_required_fields():
    st = container_status(_cpod(image="nginx"), "pnlabc", ready=True, started=True, restart_count=2,
                          state={"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    assert {"name", "image", "imageID", "ready", "restartCount"} <= set(st)
    assert (st["name"], st["image"], st["restartCount"], st["containerID"]) == ("c", "nginx", 2, "podnet-lab://pnlabc")


async def test_log_layout_is_what_the_api_server_reads(tmp_path):
    """The kubelet's writer and the API server's pods/log reader agree on kubelet's /var/log/pods layout."""
    from podnet.netlab.apiserver.apistore import Store
    from podnet.netlab.apiserver.podlogs import PodLogs

    pod = _cpod(image="x")
    for restart, text in ((0, "old\n"), (1, "new\n")):
        podlogs.container_log(tmp_path, "default", "p", "u", "c", restart).write_text(text)
    reader = PodLogs(Store(), tmp_path)
    assert reader._file(pod, "c", previous=False)[0].read_text() == "new\n"
    assert reader._file(pod, "c", previous=True)[0].read_text() == "old\n"
    podlogs.remove_pod(tmp_path, "default", "p", "u")
    assert not podlogs.pod_dir(tmp_path, "default", "p", "u").exists()


def test_netns_annotation_is_what_the_api_server_shows():
    from podnet.netlab.apiserver.tables import NETNS_ANNOTATION as shown
    from podnet.netlab.node.kubelet import NETNS_ANNOTATION as written

    assert written == shown == "podnet.io/netns"


@pytest.mark.parametrize("policy,host_network,want", [
    pytest.param(None, False, "netns", id="cluster-first"),
    pytest.param("Default", False, None, id="default-node-resolver"),
    pytest.param(None, True, None, id="host-network-cluster-first-is-default"),
    pytest.param("ClusterFirstWithHostNet", True, "pod", id="cluster-first-with-host-net"),
])
def test_resolv_conf_follows_dns_policy(tmp_path, policy, host_network, want):
    k = FakeKubelet(tmp_path)
    p = pod("a", "u1")
    p["spec"]["containers"] = [{"name": "main", "image": "x"}]
    p["spec"]["hostNetwork"] = host_network
    if policy:
        p["spec"]["dnsPolicy"] = policy
    spec = podspec.parse(p)
    sb = Sandbox(spec.key, spec.uid, None if host_network else "pnl-n1-p9", "c", pod_dir=tmp_path / "pod")
    got = k._resolv_file(PodRun(spec, sb, {}))
    expected = {"netns": sb.resolv_conf, "pod": tmp_path / "pod/resolv.conf", None: None}[want]
    assert got == expected
    if want == "pod":
        assert "nameserver 10.96.0.10" in got.read_text()


async def test_config_error_waits_and_retries_then_starts(tmp_path):
    k = RestartKubelet(tmp_path)
    real_start = k.start_container
    failures = [podspec.ConfigError('configmap "app" not found')]

    async def start_container(pr, cr):
        if failures:
            raise failures.pop()
        return await real_start(pr, cr)

    k.start_container = start_container
    k.observe(rpod(), A)
    await settle(k)
    await spin(lambda: len(k.sleeps) == 1)
    waiting = cstatus(k.statuses[-1])["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'configmap "app" not found'}
    assert ready_of(k.statuses[-1]) == "False"
    k.wake.set()
    await spin(lambda: ready_of(k.statuses[-1]) == "True")
    cs = cstatus(k.statuses[-1])
    assert "running" in cs["state"] and cs["restartCount"] == 0 and cs["containerID"].endswith("-main-0")
    k.observe(None, A)
    await settle(k)


async def test_crash_loop_records_kubelets_events(tmp_path):
    k = RestartKubelet(tmp_path)
    posted: list[dict] = []

    async def post(body):
        posted.append(body)

    k.events.post = post
    k.observe(rpod(), A)
    await settle(k)
    await spin(lambda: k.statuses and ready_of(k.statuses[-1]) == "True")
    k.proc().exit(1)
    await spin(lambda: len(k.sleeps) == 1)
    k.wake.set()
    await spin(lambda: ready_of(k.statuses[-1]) == "True")
    await k.events.drain()
    got = [(e["reason"], e["type"], e["message"]) for e in posted]
    start = [("Pulled", "Normal", 'Container image "x" already present on machine'),
             ("Created", "Normal", "Created container: main"), ("Started", "Normal", "Started container main")]
    assert got == [*start, ("BackOff", "Warning", "Back-off restarting failed container main in pod a_default(u1)"),
                   *start]
    assert {e["involvedObject"]["fieldPath"] for e in posted} == {"spec.containers{main}"}
    k.observe(None, A)
    await settle(k)
