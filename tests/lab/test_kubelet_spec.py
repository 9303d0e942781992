"""The lab kubelet's pure parts: $(VAR) expansion, env resolution, images, volume paths, probe
thresholds, the CNI runtimeConfig, the launcher's mount choices."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from podnet.netlab.node import cniexec, images, launch, podspec, volumes
from podnet.netlab.node.podserver import listeners
from podnet.netlab.node.probes import ProbeState

ENV = {"A": "1", "B": "two", "EMPTY": ""}


@pytest.mark.parametrize("text,want", [
    pytest.param("$(A)", "1", id="whole"),
    pytest.param("x-$(A)-$(B)-y", "x-1-two-y", id="embedded"),
    pytest.param("$(UNDEFINED)", "$(UNDEFINED)", id="undefined-kept"),
    pytest.param("$$(A)", "$(A)", id="escaped"),
    pytest.param("$$$(A)", "$1", id="escape-then-var"),
    pytest.param("$(A", "$(A", id="unterminated"),
    pytest.param("$A", "$A", id="no-paren"),
    pytest.param("a$", "a$", id="trailing-dollar"),
    pytest.param("$(EMPTY)x", "x", id="empty-value"),
    pytest.param("$()", "$()", id="empty-name-undefined"),
])
def test_expand(text, want):
    assert podspec.expand(text, ENV.get) == want


def _pod(container: dict, **spec) -> dict:
    return {"metadata": {"name": "p1", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa1", "containers": [{"name": "c", **container}],
                     **spec}}


def test_resolve_env_downward_configmap_secret_and_expansion():
    pod = _pod({"image": "localhost/podnet:0.1.0", "command": ["run", "--node=$(NODE)", "$$(NODE)"],
                "args": ["--cidr=$(CIDR)", "--api=$(KUBERNETES_SERVICE_HOST)"],
                "envFrom": [{"configMapRef": {"name": "endpoint", "optional": True}},
                            {"prefix": "S_", "secretRef": {"name": "creds"}}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "CIDR", "valueFrom": {"configMapKeyRef": {"name": "cni", "key": "cidr"}}},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
                        {"name": "GONE", "valueFrom": {"configMapKeyRef": {"name": "cni", "key": "x",
                                                                             "optional": True}}},
                        {"name": "LATER", "value": "$(NODE)/$(NOT_YET)"},
                        {"name": "NOT_YET", "value": "v"}]})
    spec = podspec.parse(pod)
    c = spec.containers[0]
    facts = podspec.pod_facts(spec, "192.168.77.11", ["10.244.1.5"])
    env = podspec.resolve_env(c, facts, {"cni": {"cidr": "10.244.0.0/16"}, "endpoint": None},
                              {"creds": {"pw": "s3cret"}}, {"KUBERNETES_SERVICE_HOST": "192.168.77.1"})
    assert {k: env[k] for k in ("NODE", "NS", "POD_IP", "HOST_IP", "SA", "APP", "CIDR", "PW", "S_pw", "LATER")} == {
        "NODE": "n1", "NS": "ns1", "POD_IP": "10.244.1.5", "HOST_IP": "192.168.77.11", "SA": "sa1", "APP": "web",
        "CIDR": "10.244.0.0/16", "PW": "s3cret", "S_pw": "s3cret", "LATER": "n1/$(NOT_YET)"}
    assert "GONE" not in env and env["KUBERNETES_SERVICE_HOST"] == "192.168.77.1"
    assert podspec.command_line(c, env) == ["run", "--node=n1", "$(NODE)", "--cidr=10.244.0.0/16",
                                            "--api=192.168.77.1"]


@pytest.mark.parametrize("env,cms,match", [
    pytest.param([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}], {},
                 "not found", id="missing-configmap"),
    pytest.param([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}], {"cm": {}},
                 "couldn't find key k", id="missing-key"),
    pytest.param([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}], {},
                 "unsupported fieldPath", id="bad-fieldpath"),
])
def test_resolve_env_errors(env, cms, match):
    spec = podspec.parse(_pod({"image": "x", "env": env}))
    with pytest.raises(podspec.ConfigError, match=match):
        podspec.resolve_env(spec.containers[0], podspec.pod_facts(spec, "h", []), cms, {}, {})


@pytest.mark.parametrize("container,want", [
    pytest.param({"image": "nginx", "ports": [{"containerPort": 80}]}, ["--http=80"], id="nginx-port-80"),
    pytest.param({"image": "nginx", "ports": [{"containerPort": 53, "protocol": "UDP"},
                                              {"containerPort": 8443}]}, ["--http=8443", "--udp=53"], id="tcp-udp"),
    pytest.param({"image": "nginx"}, [], id="no-ports-defaults"),
    pytest.param({"image": "podnet/podserver:lab", "ports": [{"containerPort": 9000}]}, [], id="lab-echo-image"),
])
def test_echo_server_listens_on_declared_ports(container, want):
    c = podspec.parse(_pod(container)).containers[0]
    assert images.argv(c, [], "p1", python="/py") == ["/py", "-P", "-m", "podnet.netlab.node.podserver", "--name",
                                                      "p1", *want]


def test_podnet_image_needs_a_command_and_gets_the_scripts_on_path():
    c = podspec.parse(_pod({"image": "localhost/podnet:0.1.0"})).containers[0]
    with pytest.raises(ValueError, match="no command"):
        images.argv(c, [], "p1")
    assert images.path_env("localhost/podnet:0.1.0", "/venv/bin/python").startswith("/venv/bin:")
    assert images.path_env("nginx", "/venv/bin/python") == images.DEFAULT_PATH


@pytest.mark.parametrize("path,want", [
    pytest.param("/opt/cni/bin", "ROOT/opt/cni/bin", id="node-root"),
    pytest.param("/etc/cni/net.d/", "ROOT/etc/cni/net.d", id="trailing-slash"),
    pytest.param("/../../etc", "ROOT/etc", id="no-escape"),
    pytest.param("/lib/modules", "/lib/modules", id="kernel-modules"),
    pytest.param("/run/xtables.lock", "/run/xtables.lock", id="xtables-lock"),
    pytest.param("/var/run/netns", "/var/run/netns", id="netns"),
])
def test_host_path(path, want):
    assert str(volumes.host_path(Path("ROOT"), path, exists=lambda p: True)) == want


def test_kernel_path_missing_on_this_machine_is_the_nodes_own():
    assert str(volumes.host_path(Path("ROOT"), "/lib/modules", exists=lambda p: False)) == "ROOT/lib/modules"


def test_container_mounts_sub_path_sa_volume_and_resolv(tmp_path):
    spec = podspec.parse(_pod({"image": "x", "volumeMounts": [
        {"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
        {"name": "cfg", "mountPath": "/etc/one.conf", "subPath": "one.conf"}]},
        volumes=[{"name": "cfg", "configMap": {"name": "app"}}]))
    dirs = {"cfg": tmp_path / "cfg", volumes.SA_VOLUME: tmp_path / "sa"}
    got = volumes.container_mounts(spec, spec.containers[0], dirs, tmp_path / "resolv.conf")
    assert got == [
        {"source": str(tmp_path / "cfg"), "target": "/etc/app", "readOnly": True},
        {"source": str(tmp_path / "cfg" / "one.conf"), "target": "/etc/one.conf", "readOnly": False},
        {"source": str(tmp_path / "sa"), "target": volumes.SA_MOUNT, "readOnly": True},
        {"source": str(tmp_path / "resolv.conf"), "target": "/etc/resolv.conf", "readOnly": True}]
    no_sa = podspec.parse(_pod({"image": "x"}, automountServiceAccountToken=False))
    assert not volumes.wants_sa_volume(no_sa)
    bad = podspec.parse(_pod({"image": "x", "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": "../x"}]},
                             volumes=[{"name": "v", "emptyDir": {}}]))
    with pytest.raises(podspec.ConfigError, match="leaves the volume"):
        volumes.container_mounts(bad, bad.containers[0], {"v": tmp_path}, None)


async def test_materialise_writes_configmap_secret_projected_and_hostpath(tmp_path):
    pod = _pod({"image": "x"}, volumes=[
        {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "a", "path": "sub/a.txt"}]}},
        {"name": "sec", "secret": {"secretName": "creds"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
        {"name": "lock", "hostPath": {"path": "/var/lib/x.lock", "type": "FileOrCreate"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "aud"}},
                                                  {"configMap": {"name": "app"}}]}}])
    spec = podspec.parse(pod)
    ca = tmp_path / "ca.crt"
    ca.write_text("CA")
    asked = []

    async def cm(ns, name):
        return {"a": "A", "b": "B"} if (ns, name) == ("ns1", "app") else None

    async def secret(ns, name):
        return {"pw": "s3cret"} if name == "creds" else None

    async def token(s, audience, expiration):
        asked.append((s.service_account, audience, expiration))
        return f"tok-{audience or 'default'}"

    dirs = await volumes.materialise(spec, tmp_path / "pod", tmp_path / "root", volumes.Sources(cm, secret, token, ca),
                                     podspec.pod_facts(spec, "h", []))
    assert (dirs["cfg"] / "sub/a.txt").read_text() == "A" and not (dirs["cfg"] / "b").exists()
    assert (dirs["sec"] / "pw").read_text() == "s3cret" and (dirs["sec"] / "pw").stat().st_mode & 0o777 == 0o600
    assert dirs["bin"] == tmp_path / "root/opt/cni/bin" and dirs["bin"].is_dir()
    assert (tmp_path / "root/var/lib/x.lock").is_file()
    assert (dirs["info"] / "name").read_text() == "p1"
    assert (dirs["tok"] / "t").read_text() == "tok-aud" and (dirs["tok"] / "a").read_text() == "A"
    sa = dirs[volumes.SA_VOLUME]
    assert ((sa / "token").read_text(), (sa / "ca.crt").read_text(), (sa / "namespace").read_text()) == (
        "tok-default", "CA", "ns1")
    assert asked == [("sa1", "aud", 3607), ("sa1", "", 3607)]


async def test_materialise_missing_configmap_is_a_config_error(tmp_path):
    spec = podspec.parse(_pod({"image": "x"}, volumes=[{"name": "cfg", "configMap": {"name": "nope"}}],
                              automountServiceAccountToken=False))

    async def none(ns, name):
        return None

    with pytest.raises(podspec.ConfigError, match='configmap "nope" not found'):
        await volumes.materialise(spec, tmp_path, tmp_path, volumes.Sources(none, none, None, None), {})


@pytest.mark.parametrize("initial,success,failure,attempts,want", [
    pytest.param(False, 1, 3, [True], [True], id="ready-on-first-pass"),
    pytest.param(False, 2, 3, [True, False, True, True], [False, False, False, True], id="success-threshold"),
    pytest.param(True, 1, 3, [False, False, True, False, False, False], [True, True, True, True, True, False],
                 id="failure-threshold-consecutive"),
])
def test_probe_thresholds(initial, success, failure, attempts, want):
    st = ProbeState(podspec.Probe("tcp", 1, success_threshold=success, failure_threshold=failure), initial)
    got = []
    for a in attempts:
        st.record(a)
        got.append(st.result)
    assert got == want


def test_probe_defaults_from_spec():
    c = podspec.parse(_pod({"image": "x", "livenessProbe": {"httpGet": {"path": "/livez", "port": "h",
                                                                        "host": "127.0.0.1"}},
                            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2,
                                             "failureThreshold": 30}})).containers[0]
    assert c.liveness == podspec.Probe("http", "h", "/livez", "127.0.0.1")
    assert (c.liveness.period, c.liveness.timeout, c.liveness.failure_threshold) == (10.0, 1.0, 3)
    assert c.startup == podspec.Probe("exec", command=("true",), period=2.0, failure_threshold=30)


def test_port_mappings_reach_only_plugins_with_the_capability():
    net = cniexec.Network("n", "1.0.0", ({"type": "podnet-cni"}, {"type": "portmap",
                                                                  "capabilities": {"portMappings": True}}), Path("/x"))
    rc = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert "runtimeConfig" not in json.loads(cniexec.plugin_config(net, net.plugins[0], None, rc))
    conf = json.loads(cniexec.plugin_config(net, net.plugins[1], {"ips": []}, rc))
    assert conf["runtimeConfig"] == rc
    assert "runtimeConfig" not in json.loads(cniexec.plugin_config(net, net.plugins[1], None, None))


MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:5 / /proc rw - proc proc rw
24 22 0:6 / /sys rw - sysfs sysfs rw
25 24 0:7 / /sys/fs/cgroup rw - cgroup2 cgroup rw
26 22 0:8 / /run rw - tmpfs tmpfs rw
27 26 0:9 / /run/netns rw - tmpfs tmpfs rw
28 27 0:4 net:[4026532] /run/netns/pnl-a nsfs nsfs rw
29 22 0:10 / /mnt/with\\040space rw - tmpfs tmpfs rw
30 22 0:11 / /srv/scratch rw - tmpfs tmpfs rw
31 22 0:12 / /dev rw - devtmpfs udev rw
"""


def test_launcher_overlays_real_file_systems_only():
    mounts = launch.parse_mountinfo(MOUNTINFO.replace(" nsfs nsfs", " - nsfs nsfs"))
    assert ("/mnt/with space", "tmpfs") in mounts
    assert launch.overlay_targets(mounts, "/srv/scratch") == ["/run", "/run/netns", "/mnt/with space"]


@pytest.mark.parametrize("tcp,udp,http,want", [
    pytest.param(None, None, None, [(9000, 9000, 8080)], id="defaults"),
    pytest.param(None, None, [80], [(None, None, 80)], id="http-only"),
    pytest.param(None, [53], [80, 81], [(None, 53, 80), (None, None, 81)], id="several"),
])
def test_podserver_listeners(tcp, udp, http, want):
    assert listeners(tcp, udp, http) == want


async def test_tokens_are_renewed_at_80_percent_of_their_life(tmp_path):
    spec = podspec.parse(_pod({"image": "x"}, volumes=[
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 600}}]}}]))
    assert [n for n, _ in volumes.token_sources(spec)] == ["tok", volumes.SA_VOLUME]
    assert volumes.refresh_period(spec) == 480.0
    assert volumes.refresh_period(podspec.parse(_pod({"image": "x"}, automountServiceAccountToken=False))) is None
    issued = iter(range(100))

    async def token(s, audience, expiration):
        return f"token-{next(issued)}"

    src = volumes.Sources(None, None, token, None)
    dirs = {"tok": tmp_path / "tok", volumes.SA_VOLUME: tmp_path / "sa"}
    facts = podspec.pod_facts(spec, "h", [])
    assert await volumes.refresh(spec, dirs, src, facts, renew_tokens=True) == ["tok", volumes.SA_VOLUME]
    assert await volumes.refresh(spec, dirs, src, facts, renew_tokens=False) == []  # tokens kept
    assert await volumes.refresh(spec, dirs, src, facts, renew_tokens=True) == ["tok", volumes.SA_VOLUME]
    assert ((tmp_path / "tok/t").read_text(), (tmp_path / "sa/token").read_text()) == ("token-2", "token-3")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir() if not p.name.startswith("..")) == ["t"]
    assert len([p for p in (tmp_path / "tok").iterdir() if p.name.startswith("..") and p.is_dir()
                and not p.is_symlink()]) == 1  # the old generation is gone


def _generations(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("..") and p.is_dir() and not p.is_symlink())


def test_write_atomic_swaps_the_data_link_and_keeps_only_what_is_wanted(tmp_path):
    d = tmp_path / "v"
    assert volumes.write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)}) is True
    first = _generations(d)
    assert os.readlink(d / "..data") == first[0]
    assert os.readlink(d / "a") == "..data/a" and os.readlink(d / "sub") == "..data/sub"
    assert (d / "sub/b").read_text() == "2" and (d / "sub/b").stat().st_mode & 0o777 == 0o600
    assert volumes.write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)}) is False  # unchanged: untouched
    assert _generations(d) == first
    assert volumes.write_atomic(d, {"a": (b"new", 0o644), "c": (b"3", 0o644)}) is True
    assert (d / "a").read_text() == "new" and (d / "c").read_text() == "3"
    assert not (d / "sub").exists() and not (d / "sub").is_symlink()  # a name no longer wanted goes
    assert len(_generations(d)) == 1 and _generations(d) != first
    assert not (d / "..data_tmp").exists()


async def test_refresh_follows_configmap_and_secret_changes(tmp_path):
    spec = podspec.parse(_pod({"image": "x"}, automountServiceAccountToken=False, volumes=[
        {"name": "cfg", "configMap": {"name": "app"}},
        {"name": "sec", "secret": {"secretName": "creds"}},
        {"name": "mix", "projected": {"sources": [{"configMap": {"name": "app", "items": [{"key": "a", "path": "a"}]}},
                                                  {"secret": {"name": "creds"}}]}}]))
    objects = {"app": {"a": "1", "b": "2"}, "creds": {"pw": "old"}}

    async def fetch(ns, name):
        return objects.get(name)

    src = volumes.Sources(fetch, fetch, None, None)
    facts = podspec.pod_facts(spec, "h", [])
    dirs = await volumes.materialise(spec, tmp_path / "pod", tmp_path / "root", src, facts)
    # what a container holds open through the symlinks sees the swap
    assert (dirs["cfg"] / "a").read_text() == "1" and (dirs["mix"] / "pw").read_text() == "old"
    assert await volumes.refresh(spec, dirs, src, facts, renew_tokens=False) == []
    objects["app"] = {"a": "changed"}
    objects["creds"] = {"pw": "new"}
    assert await volumes.refresh(spec, dirs, src, facts, renew_tokens=False) == ["cfg", "sec", "mix"]
    assert (dirs["cfg"] / "a").read_text() == "changed" and not (dirs["cfg"] / "b").exists()
    assert (dirs["sec"] / "pw").read_text() == "new"
    assert ((dirs["mix"] / "a").read_text(), (dirs["mix"] / "pw").read_text()) == ("changed", "new")
    del objects["app"]
    with pytest.raises(podspec.ConfigError, match='configmap "app" not found'):
        await volumes.refresh(spec, dirs, src, facts, renew_tokens=False)
    assert (dirs["cfg"] / "a").read_text() == "changed"  # a failed sync leaves the volume as it was
