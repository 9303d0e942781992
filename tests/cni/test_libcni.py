"""A real runtime-side client: our small driver on Debian's libcni (golang-github-appc-cni-dev), built offline.

Skipped unless ``go`` and the libcni sources are installed (Debian packages
golang-go and golang-github-appc-cni-dev). libcni 1.1.2 (Debian bookworm)
predates spec 1.1, so it drives VERSION (config validation), ADD, CHECK and
DEL; GC and STATUS are covered by our own runtime-like harness.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

LIBCNI = Path("/usr/share/gocode/src/github.com/containernetworking/cni/libcni")
DRIVER_SRC = Path(__file__).parent / "libcni_driver"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("go") is None or not LIBCNI.is_dir(),
                       reason="needs Debian golang-go + golang-github-appc-cni-dev"),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = tmp_path_factory.mktemp("gobuild")
    src = d / "src"
    shutil.copytree(DRIVER_SRC, src)
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(d / "cache"),
           "GOMODCACHE": str(d / "mod"), "HOME": str(d)}
    p = subprocess.run(["go", "build", "-o", str(d / "cnidriver"), "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return d / "cnidriver"


def test_libcni_add_check_del(driver, make_node, pool, tmp_path):
    node = make_node(("10.244.5.0/24",))
    pod = pool.netns("p")
    env = {"CNI_PATH": f"{node.bin_dir}:/usr/lib/cni", "CNI_CACHE_DIR": str(tmp_path / "cache"),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(verb):
        return subprocess.run(["ip", "netns", "exec", node.ns.name, str(driver), verb, str(node.dir / "net.d"), "podnet",
                               pod.path, "libcni-c1"], env=env, capture_output=True, text=True, timeout=60)

    assert run("validate").returncode == 0
    p = run("add")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    eth0 = [i for i, itf in enumerate(res["interfaces"]) if itf["name"] == "eth0"]
    assert eth0 and res["ips"][0]["interface"] == eth0[0]
    assert res["ips"][0]["address"] == "10.244.5.2/32"
    assert "10.244.5.2/32" in pod.ip("addr", "show", "eth0")
    cached = list((tmp_path / "cache" / "results").iterdir())
    assert [c.name for c in cached] == ["podnet-libcni-c1-eth0"]
    assert run("check").returncode == 0
    pod.ip("route", "del", "default")
    p = run("check")
    assert p.returncode == 1 and "default route" in p.stderr
    assert run("del").returncode == 0, "DEL"
    assert node.reservations() == [] and node.host_veths() == []
    assert run("del").returncode == 0, "second DEL"
