"""``--runtime podman``: the ``podman run`` line of a lab container, as data (the real run is in
tests/deploy/test_image.py, where the image is built)."""

from __future__ import annotations

import pytest

from podnet.host.podman import Store
from podnet.kube.errors import ConfigError
from podnet.netlab.node import podman, podspec
from podnet.netlab.node.podspec import SecurityContext

STORE = Store("/var/tmp/s/root", "/tmp/s-run")
PLAN = {"mounts": [{"source": "/run/podnet/l/nodes/n1/root/opt/cni/bin", "target": "/host/opt/cni/bin",
                    "readOnly": False},
                   {"source": "/run/podnet/l/pods/ca.crt", "target": "/var/run/secrets/ca.crt", "readOnly": True}],
        "argv": ["podnet-cni", "daemon", "--node-name", "n1"],
        "env": {"PATH": "/host/venv/bin:/usr/bin", "NODE_NAME": "n1", "HOSTNAME": "p"},
        "workingDir": ""}


def _argv(plan=PLAN, security=SecurityContext(), netns="/var/run/netns/pnl-l-n1-p1"):
    return podman.run_argv(STORE, plan, name="pnl-l-abcd-cni-0", image="localhost/podnet:0.1.0", netns_path=netns,
                           hostname="p", security=security, lab="l", pod="kube-system/p")


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_store_flags_lead_and_image_then_command_end():
    argv = _argv()
    assert argv[:11] == ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                         "--root", "/var/tmp/s/root", "--runroot", "/tmp/s-run"]
    assert argv[11:14] == ["run", "--rm", "--name"]
    assert argv[-5:] == ["localhost/podnet:0.1.0", "podnet-cni", "daemon", "--node-name", "n1"]
    assert _pairs(argv, "--pull") == ["never"]
    assert _pairs(argv, "--ulimit") == ["nofile=20000:20000", "nproc=4096:4096"]
    assert _pairs(argv, "--label") == ["podnet.io/lab=l", "podnet.io/pod=kube-system/p"]


@pytest.mark.parametrize("netns, want", [
    pytest.param("/var/run/netns/pnl-l-n1-p1", "ns:/var/run/netns/pnl-l-n1-p1", id="pod-netns"),
    pytest.param(None, "host", id="host-network-is-the-kubelets-netns"),
])
def test_network(netns, want):
    assert _pairs(_argv(netns=netns), "--network") == [want]


def test_volumes_are_rslave_and_read_only_where_asked():
    assert _pairs(_argv(), "-v") == ["/run/podnet/l/nodes/n1/root/opt/cni/bin:/host/opt/cni/bin:rslave",
                                     "/run/podnet/l/pods/ca.crt:/var/run/secrets/ca.crt:ro,rslave"]


def test_env_without_the_hosts_path():
    env = _pairs(_argv(), "--env")
    assert env == ["NODE_NAME=n1", "HOSTNAME=p"]


@pytest.mark.parametrize("raw, flags", [
    pytest.param({}, [], id="none"),
    pytest.param({"privileged": True}, ["--privileged"], id="privileged"),
    pytest.param({"runAsUser": 0, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                 ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "0"], id="install-container"),
    pytest.param({"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
                 ["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW"], id="policy-container"),
    pytest.param({"readOnlyRootFilesystem": True, "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                 ["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "--read-only", "--read-only-tmpfs=false"],
                 id="dns-container"),
    pytest.param({"privileged": "yes", "runAsUser": True, "capabilities": "ALL"}, [], id="wrong-types-ignored"),
])
def test_security_context(raw, flags):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "securityContext": raw}]}}
    sc = podspec.parse(pod).containers[0].security
    argv = _argv(security=sc)
    start, end = argv.index("--hostname") + 2, argv.index("-v")
    assert argv[start + 4:end] == flags  # after the two --ulimit pairs


@pytest.mark.parametrize("mount", [
    pytest.param({"source": "/a:b", "target": "/c"}, id="colon-in-source"),
    pytest.param({"source": "/a", "target": "/c,d"}, id="comma-in-target"),
    pytest.param({"source": "a", "target": "/c"}, id="relative-source"),
])
def test_unbindable_paths_are_a_config_error(mount):
    with pytest.raises(ConfigError):
        _argv(plan={**PLAN, "mounts": [mount]})


def test_no_command_is_a_config_error():
    with pytest.raises(ConfigError):
        _argv(plan={**PLAN, "argv": []})


@pytest.mark.parametrize("lab, uid, container, restart, want", [
    pytest.param("l", "0123456789", "cni", 0, "pnl-l-01234567-cni-0", id="plain"),
    pytest.param("l", "u", "a_b", 3, "pnl-l-u-a_b-3", id="short-uid"),
    pytest.param("l", "x/y", "c", 1, "pnl-l-x-y-c-1", id="slash-replaced"),
])
def test_container_name(lab, uid, container, restart, want):
    assert podman.container_name(lab, uid, container, restart) == want


def test_kubelet_flags_select_the_store():
    assert STORE.kubelet_args() == ["--runtime", "podman", "--podman-root", "/var/tmp/s/root",
                                    "--podman-runroot", "/tmp/s-run"]
    assert Store().kubelet_args() == ["--runtime", "podman"]
