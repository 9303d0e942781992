"""``podnet-cni install``'s conflist writer: podnet alone, or podnet chained with portmap for hostPorts.

Pure and file-system tests; the portmap here is a stand-in script that only answers VERSION.
The real portmap runs (in a node namespace) in test_libcni.py and test_podman.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.cni import install, version

DEBIAN_PORTMAP = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")  # containernetworking-plugins 1.1.1
NEW_PORTMAP = DEBIAN_PORTMAP + ("1.1.0",)
PODNET = {"type": "podnet-cni", "socket": "/run/s.sock", "capabilities": {"ips": True, "mac": True}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
CLI = str(Path(sys.executable).parent / "podnet-cni")


def fake_portmap(d: Path, versions=DEBIAN_PORTMAP, body: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    out = json.dumps({"cniVersion": versions[-1], "supportedVersions": list(versions)})
    p = d / "portmap"
    p.write_text(body or f"#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] || exit 9\necho '{out}'\n")
    p.chmod(0o755)
    return p


def test_podnet_alone_is_unchanged():
    assert install.conflist("podnet", "/run/s.sock", "") == {
        "cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0", "1.1.0"], "name": "podnet", "plugins": [PODNET]}
    assert install.conflist("n", "/run/s.sock", "/d")["plugins"] == [{**PODNET, "dataDir": "/d"}]


def test_portmap_is_chained_after_podnet_with_the_capability():
    c = install.conflist("podnet", "/run/s.sock", "", NEW_PORTMAP)
    assert c["plugins"] == [PODNET, PORTMAP]
    assert (c["cniVersion"], c["cniVersions"]) == ("1.0.0", ["0.4.0", "1.0.0", "1.1.0"])


def test_versions_are_capped_to_what_portmap_speaks():
    # libcni >= 1.2 picks the newest of cniVersions; Debian's portmap would refuse 1.1.0
    c = install.conflist("podnet", "/run/s.sock", "", DEBIAN_PORTMAP)
    assert (c["cniVersion"], c["cniVersions"]) == ("1.0.0", ["0.4.0", "1.0.0"])
    c = install.conflist("podnet", "/run/s.sock", "", ("0.2.0", "0.3.0", "0.3.1"))  # an old portmap
    assert c["cniVersion"] == "0.3.1" and "cniVersions" not in c
    with pytest.raises(ValueError, match="no version in common"):
        install.conflist("podnet", "/run/s.sock", "", ("0.1.0", "0.2.0"))


@pytest.mark.parametrize("v", version.SUPPORTED)
def test_pinned_version(v):
    c = install.conflist("podnet", "/run/s.sock", "", None, v)
    assert c["cniVersion"] == v and "cniVersions" not in c
    if v in DEBIAN_PORTMAP:
        assert install.conflist("podnet", "/run/s.sock", "", DEBIAN_PORTMAP, v)["cniVersion"] == v
    else:
        with pytest.raises(ValueError, match="not spoken by every plugin"):
            install.conflist("podnet", "/run/s.sock", "", DEBIAN_PORTMAP, v)
    with pytest.raises(ValueError):
        install.conflist("podnet", "/run/s.sock", "", None, "0.9.9")


def plugins(conf: Path) -> list[str]:
    return [p["type"] for p in json.loads(conf.read_text())["plugins"]]


def test_auto_chains_portmap_only_when_the_runtime_can_find_it(tmp_path):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    _, c = install.install(str(bin_dir), str(conf_dir), "/run/s.sock")
    assert plugins(c) == ["podnet-cni"]  # no portmap in --bin-dir: chaining it would fail every ADD
    fake_portmap(tmp_path / "other")
    _, c = install.install(str(bin_dir), str(conf_dir), "/run/s.sock", plugin_dirs=[str(bin_dir), str(tmp_path / "other")])
    assert plugins(c) == ["podnet-cni", "portmap"]
    assert json.loads(c.read_text())["cniVersions"] == ["0.4.0", "1.0.0"]
    fake_portmap(bin_dir, NEW_PORTMAP)
    _, c = install.install(str(bin_dir), str(conf_dir), "/run/s.sock")  # default plugin dirs: --bin-dir
    assert plugins(c) == ["podnet-cni", "portmap"]
    assert json.loads(c.read_text())["cniVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    _, c = install.install(str(bin_dir), str(conf_dir), "/run/s.sock", portmap="off")
    assert plugins(c) == ["podnet-cni"]


def test_on_refuses_without_portmap_and_writes_nothing(tmp_path):
    fake_portmap(tmp_path / "dir-not-searched")
    with pytest.raises(RuntimeError, match="no portmap executable"):
        install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), "/run/s.sock", portmap="on")
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "portmap").write_text("not executable")
    with pytest.raises(RuntimeError, match="no portmap executable"):
        install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), "/run/s.sock", portmap="on")


def test_a_portmap_that_cannot_answer_version_is_an_error(tmp_path):
    fake_portmap(tmp_path / "bin", body="#!/bin/sh\necho garbage\n")
    with pytest.raises(RuntimeError, match="VERSION failed"):
        install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), "/run/s.sock")
    assert not (tmp_path / "net.d").exists()


def test_cli_flags(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "install", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "c"),
                               "--socket", "/run/s.sock", *args], capture_output=True, text=True, timeout=60)

    conf = tmp_path / "c" / "10-podnet.conflist"
    p = cli("--portmap", "on")
    assert p.returncode == 1 and "no portmap executable" in p.stderr and not conf.exists()
    fake_portmap(tmp_path / "pm")
    p = cli("--plugin-dirs", f"{tmp_path / 'bin'}:{tmp_path / 'pm'}")
    assert p.returncode == 0 and "plugins: podnet-cni, portmap" in p.stdout, p.stderr
    assert plugins(conf) == ["podnet-cni", "portmap"]
    p = cli("--plugin-dirs", str(tmp_path / "pm"), "--cni-version", "1.1.0")
    assert p.returncode == 1 and "not spoken by every plugin" in p.stderr
    p = cli("--plugin-dirs", str(tmp_path / "pm"), "--cni-version", "0.3.1")
    assert p.returncode == 0 and json.loads(conf.read_text())["cniVersion"] == "0.3.1"
    p = cli("--plugin-dirs", str(tmp_path / "pm"), "--portmap", "off")
    assert p.returncode == 0 and plugins(conf) == ["podnet-cni"]
