"""The runtime side: CNI invocation as libcni does it, kubelet helpers, process records."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.host import procs
from podnet.netlab.lab.manifests import dns_pod, pod
from podnet.netlab.node import cniexec
from podnet.netlab.node import images, podspec
from podnet.netlab.node.kubelet import node_object
from podnet.netlab.node.podspec import Probe


def write_conf(d: Path, name: str, body: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(body))


def test_load_network_picks_first_file_lexically(tmp_path):
    write_conf(tmp_path, "20-b.conflist", {"name": "b", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]})
    write_conf(tmp_path, "10-a.conflist", {"name": "a", "cniVersion": "0.4.0", "plugins": [{"type": "p1"}, {"type": "p2"}]})
    (tmp_path / "00-readme.txt").write_text("ignored")
    net = cniexec.load_network(tmp_path)
    assert (net.name, net.cni_version, [p["type"] for p in net.plugins]) == ("a", "0.4.0", ["p1", "p2"])


def test_single_plugin_conf(tmp_path):
    write_conf(tmp_path, "10-x.conf", {"name": "x", "cniVersion": "0.3.1", "type": "bridge"})
    net = cniexec.load_network(tmp_path)
    assert [p["type"] for p in net.plugins] == ["bridge"]


def test_plugin_config_injects_name_version_prev_result():
    net = cniexec.Network("podnet", "1.0.0", ({"type": "podnet-cni", "socket": "/s"},), Path("/x"))
    conf = json.loads(cniexec.plugin_config(net, net.plugins[0], {"ips": []}))
    assert conf == {"type": "podnet-cni", "socket": "/s", "name": "podnet", "cniVersion": "1.0.0", "prevResult": {"ips": []}}
    assert "prevResult" not in json.loads(cniexec.plugin_config(net, net.plugins[0], None))


def test_cni_env_is_what_kubelet_sends():
    env = cniexec.cni_env("ADD", "abc", "/var/run/netns/p", "eth0", "/opt/cni/bin", "default", "web-1")
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc"
    assert (env["CNI_COMMAND"], env["CNI_CONTAINERID"], env["CNI_NETNS"], env["CNI_IFNAME"], env["CNI_PATH"]) == (
        "ADD", "abc", "/var/run/netns/p", "eth0", "/opt/cni/bin")


RESULTS = [
    ("1.0", {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1"}]}, ["10.244.1.5"]),
    ("dual", {"ips": [{"address": "10.0.0.2/24"}, {"address": "fd00::2/64"}]}, ["10.0.0.2", "fd00::2"]),
    ("0.2", {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.1.1/16"}}, ["10.1.1.1"]),
    ("empty", {}, []),
]


@pytest.mark.parametrize("result,want", [r[1:] for r in RESULTS], ids=[r[0] for r in RESULTS])
def test_result_ips(result, want):
    assert cniexec.result_ips(result) == want


FAKE_PLUGIN = r'''#!{python}
import json, os, sys
conf = json.load(sys.stdin)
log = os.path.join(os.path.dirname(sys.argv[0]), "calls.log")
with open(log, "a") as f:
    f.write(json.dumps({{"cmd": os.environ["CNI_COMMAND"], "type": conf["type"], "name": conf["name"],
                        "prev": "prevResult" in conf, "args": os.environ["CNI_ARGS"]}}) + "\n")
if conf.get("fail"):
    print(json.dumps({{"cniVersion": "1.0.0", "code": 11, "msg": "boom", "details": "d"}})); sys.exit(1)
prev = conf.get("prevResult") or {{"cniVersion": "1.0.0", "ips": []}}
if os.environ["CNI_COMMAND"] == "ADD" and conf["type"] == "first":
    prev = {{"cniVersion": "1.0.0", "ips": [{{"address": "10.9.0.7/24"}}]}}
print(json.dumps(prev))
'''


@pytest.fixture
def fake_plugins(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for t in ("first", "second"):
        f = bindir / t
        f.write_text(FAKE_PLUGIN.format(python=sys.executable))
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bindir


def calls(bindir: Path) -> list[dict]:
    return [json.loads(x) for x in (bindir / "calls.log").read_text().splitlines()]


async def test_chain_add_in_order_del_in_reverse(fake_plugins):
    net = cniexec.Network("n", "1.0.0", ({"type": "first"}, {"type": "second"}), Path("/x"))
    kw = dict(node_netns=None, cni_path=str(fake_plugins), container_id="c1", netns_path="/var/run/netns/p",
              pod_namespace="default", pod_name="web-1")
    res = await cniexec.add(net, **kw)
    assert cniexec.result_ips(res) == ["10.9.0.7"]
    await cniexec.delete(net, prev_result=res, **kw)
    c = calls(fake_plugins)
    assert [(x["cmd"], x["type"], x["prev"]) for x in c] == [
        ("ADD", "first", False), ("ADD", "second", True), ("DEL", "second", True), ("DEL", "first", True)]
    assert all(x["name"] == "n" and "K8S_POD_NAME=web-1" in x["args"] for x in c)


async def test_plugin_error_json_is_reported(fake_plugins):
    net = cniexec.Network("n", "1.0.0", ({"type": "first", "fail": True},), Path("/x"))
    with pytest.raises(cniexec.CniError) as e:
        await cniexec.add(net, node_netns=None, cni_path=str(fake_plugins), container_id="c", netns_path="/p",
                          pod_namespace="d", pod_name="p")
    assert (e.value.code, e.value.msg, e.value.details) == (11, "boom", "d")


async def test_missing_plugin(tmp_path):
    net = cniexec.Network("n", "1.0.0", ({"type": "nope"},), Path("/x"))
    with pytest.raises(cniexec.CniError, match="not found in CNI_PATH"):
        await cniexec.add(net, node_netns=None, cni_path=str(tmp_path), container_id="c", netns_path="/p",
                          pod_namespace="d", pod_name="p")


def _first(manifest: dict) -> podspec.Container:
    return podspec.parse(manifest).containers[0]


PROBES = [
    pytest.param(pod("a", "n", {}), Probe("tcp", 8080, period=1.0), id="echo-image-implicit"),
    pytest.param(dns_pod("n", ["podnet-dns"]), Probe("http", 8181, "/ready", period=1.0), id="http-from-spec"),
    pytest.param(pod("a", "n", {}, command=["sleep", "1"]), None, id="command-no-probe"),
    pytest.param(pod("a", "n", {}, readiness={"tcpSocket": {"port": "echo"}}), Probe("tcp", "echo"), id="tcp-named"),
]


@pytest.mark.parametrize("manifest,want", PROBES)
def test_readiness_probe(manifest, want):
    c = _first(manifest)
    assert (c.readiness or images.implicit_readiness(c)) == want


def test_named_probe_port_resolves_to_the_container_port():
    c = _first(pod("a", "n", {}, readiness={"tcpSocket": {"port": "echo"}}))
    assert c.port_number("echo") == 9000 and c.port_number(81) == 81 and c.port_number("nope") is None


def test_container_argv():
    c = _first(pod("web-1", "n", {}))
    assert images.argv(c, [], "web-1", python="/py") == ["/py", "-P", "-m", "podnet.netlab.node.podserver",
                                                          "--name", "web-1"]
    m = pod("x", "n", {}, command=["podnet-dns", "--listen", "0.0.0.0:53"])
    m["spec"]["containers"][0]["args"] = ["-v"]
    c = _first(m)
    assert images.argv(c, podspec.command_line(c, {}), "x") == ["podnet-dns", "--listen", "0.0.0.0:53", "-v"]


def test_node_object_has_internal_ip_and_ready():
    n = node_object("lab-n1", "192.168.77.11")
    assert {"type": "InternalIP", "address": "192.168.77.11"} in n["status"]["addresses"]
    assert n["status"]["conditions"][0]["type"] == "Ready"


def test_spawn_marks_and_stop_kills_only_lab_processes(tmp_path):
    pid = procs.spawn(tmp_path, "tlab", "sleeper", ["sleep", "30"])
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.read_pid(tmp_path, "sleeper") == pid
        assert procs.is_lab_process(pid, "tlab") and not procs.is_lab_process(pid, "other")
        assert pid in procs.find_lab_processes("tlab")
        assert procs.stop([pid, stranger.pid], "tlab", grace=2) == [pid]
        assert not procs.alive(pid) or os.waitpid(pid, os.WNOHANG)
        assert stranger.poll() is None  # not ours: untouched
    finally:
        stranger.kill()
        stranger.wait()
