"""The image builds offline with `bash dev.sh image`, and each entrypoint runs in it with podman.

Slow: building costs about 1-2 minutes on this 2-core machine with the Debian base
tarballs already in build/image (the first time, one mmdebstrap run makes the build base
and the runtime base is derived from it in 10-30 s; both are reused afterwards), and the
lab that runs podnet from the image about a minute more. The image goes into a private podman store
under pytest's tmp_path, removed afterwards, so the machine's own podman images are
never touched. Containers run with --network none (podman's default network would
write rules into the root namespace), runc and the ulimits this machine allows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("podman", "runc", "mmdebstrap", "gcc")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="podman build needs root here"),
    pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"),
]
TAG = "localhost/podnet-test:build"


def _load_manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


m = _load_manifest()


class Podman:
    def __init__(self, store: Path) -> None:
        self.store = store / "root"  # where dev.sh puts a private store's images
        self.runroot = Path("/tmp") / f"pnt-podman-{os.getpid()}"  # short: podman limits socket path lengths

    def base(self) -> list[str]:
        return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--root", str(self.store), "--runroot", str(self.runroot)]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base(), *args], capture_output=True, text=True, timeout=timeout)

    def run(self, *args: str, volumes: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        vols = [x for v in volumes for x in ("-v", v)]
        return self("run", "--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit",
                    "nproc=4096:4096", *vols, *flags, TAG, *args)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    store = tmp_path_factory.mktemp("podman-store")
    pm = Podman(store)
    env = {**os.environ, "PODNET_IMAGE": TAG, "PODNET_IMAGE_STORE": str(store),
           "PODNET_IMAGE_RUNROOT": str(pm.runroot)}
    try:
        p = subprocess.run(["bash", str(ROOT / "dev.sh"), "image"], capture_output=True, text=True, env=env,
                           timeout=1800)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"built {TAG}" in p.stdout
        yield pm
    finally:
        pm("rmi", "-a", "-f")
        shutil.rmtree(pm.runroot, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)


@pytest.mark.parametrize("binary", ["podnet-cni", "podnet-proxy", "podnet-dns", "podnet-policy", "podnet"])
def test_entrypoint_runs(image, binary):
    p = image.run(binary, "--version")
    if p.returncode == 0:
        assert p.stdout.strip().startswith(f"{binary} v") or p.stdout.strip().startswith("podnet-"), p.stdout
        return
    assert "--version" in p.stderr, p.stderr  # not there yet: --help must work
    p = image.run(binary, "--help")
    assert p.returncode == 0 and "usage:" in p.stdout, p.stderr


def test_tools_are_in_the_image(image):
    # ipset's --version asks the kernel (needs NET_ADMIN): only its presence is checked
    p = image.run("sh", "-c", "iptables-legacy --version && iptables-nft --version && command -v ipset && "
                              "conntrack --version && ip -V && modprobe --version")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "(legacy)" in out and "(nf_tables)" in out and "/ipset" in out and "conntrack" in out


def test_init_container_installs_into_a_host_directory(image, tmp_path):
    (init,) = m.find("DaemonSet", "podnet-node")["spec"]["template"]["spec"]["initContainers"]
    host_bin, host_conf = tmp_path / "opt-cni-bin", tmp_path / "etc-cni-net.d"
    host_bin.mkdir()
    host_conf.mkdir()
    command = [a.replace("$(NETWORK_NAME)", "podnet") for a in init["command"]]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    p = image.run(*command, volumes=(f"{host_bin}:/host/opt/cni/bin", f"{host_conf}:/host/etc/cni/net.d"),
                  flags=("--cap-drop", "ALL"))  # as the manifest runs it: no capabilities
    assert p.returncode == 0, p.stderr
    binary = host_bin / "podnet-cni"
    assert sorted(x.name for x in host_bin.iterdir()) == ["podnet-cni"]
    conf = json.loads((host_conf / "10-podnet.conflist").read_text())
    assert conf["plugins"][0]["socket"] == "/run/podnet/cni.sock"
    # the binary the runtime will exec on the host is the static shim: it runs here, outside the image
    v = subprocess.run([str(binary)], env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert v.returncode == 0 and "1.1.0" in json.loads(v.stdout)["supportedVersions"]
    assert b"/lib64/ld-linux" not in binary.read_bytes()[:4096]  # no program interpreter


def test_image_size_is_reported(image):
    p = image("image", "inspect", "--format", "{{.Size}}", TAG)
    assert p.returncode == 0
    size = int(p.stdout.strip())
    print(f"\nimage {TAG}: {size / 1e6:.1f} MB")
    assert size > 0


def test_dns_starts_as_the_manifest_runs_it(image, tmp_path):
    """Read-only root, only NET_BIND_SERVICE, the Corefile ConfigMap mounted: it gets as far as
    looking for the API (none here) and says so in one line, with status 2."""
    dep = m.find("Deployment", "podnet-dns")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    conf = tmp_path / "coredns"
    conf.mkdir()
    (conf / "Corefile").write_text(m.find("ConfigMap", "podnet-dns")["data"]["Corefile"])
    p = image.run(*c["command"], volumes=(f"{conf}:/etc/coredns:ro",),
                  flags=("--read-only", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert [line for line in p.stderr.splitlines() if "no API server" in line], p.stderr


def test_lab_runs_podnet_from_the_image(image, tmp_path):
    """``podnet lab up --runtime podman``: the node DaemonSet's and podnet-dns's containers run in podman
    from the image just built (tagged as deploy/podnet.yaml names it), the check table passes, and
    ``lab down`` leaves no container, namespace or process behind."""
    import secrets

    from podnet.netlab.lab import install
    from podnet.netlab.lab.teardown import leftovers

    manifest_images = install.images(install.load())
    assert len(manifest_images) == 1, manifest_images
    (wanted,) = manifest_images
    assert image("tag", TAG, wanted).returncode == 0
    podnet = str(Path(sys.executable).parent / "podnet")
    name = "pm" + secrets.token_hex(3)

    def lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([podnet, "lab", *args], capture_output=True, text=True, timeout=timeout)

    try:
        up = lab("up", "--name", name, "--nodes", "2", "--pods-per-node", "1", "--runtime", "podman",
                 "--podman-root", str(image.store), "--podman-runroot", str(image.runroot))
        assert up.returncode == 0, up.stdout + up.stderr
        ps = image("ps", "--filter", f"label=podnet.io/lab={name}", "--format", "{{.Image}} {{.Labels}}")
        assert ps.returncode == 0, ps.stderr
        running = [line for line in ps.stdout.splitlines() if line.strip()]
        # per node: podnet-cni, podnet-proxy, podnet-policy; plus two podnet-dns replicas
        assert len(running) == 2 * 3 + 2, ps.stdout
        assert all(line.startswith(wanted + " ") for line in running), ps.stdout
        check = lab("check", "--name", name)
        print(check.stdout)
        assert check.returncode == 0, check.stdout + check.stderr
        if shutil.which("kubectl"):
            # kubectl exec joins the podman container: the image's files, the image's PATH
            env = dict(os.environ, KUBECONFIG=f"/run/podnet/{name}/kubeconfig", HOME=str(tmp_path))
            pods = subprocess.run(["kubectl", "-n", "kube-system", "get", "pods", "-o", "name"], capture_output=True,
                                  text=True, env=env, timeout=60)
            dns = next(p for p in pods.stdout.split() if "podnet-dns" in p)
            ex = subprocess.run(["kubectl", "-n", "kube-system", "exec", dns, "--", "sh", "-c",
                                 "echo $PATH; test -x /opt/podnet/bin/podnet-dns && echo image-file"],
                                capture_output=True, text=True, env=env, timeout=60)
            assert ex.returncode == 0, ex.stdout + ex.stderr
            assert ex.stdout.split() == ["/opt/podnet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                         "image-file"], ex.stdout
    finally:
        down = lab("down", "--name", name, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(name) == []
    left = image("ps", "--all", "--filter", f"label=podnet.io/lab={name}", "--format", "{{.Names}}")
    assert left.stdout.strip() == "", left.stdout
