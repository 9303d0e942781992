"""The init container's install step, run as the manifest writes it, into a temporary host directory.

While the install runs again and again, alternating between two different plugin
binaries and two conflists, a reader loop (what a runtime does: read the conflist,
exec the binary) checks that every file it sees is complete: one of the two
binaries byte for byte, one of the two conflists as valid JSON. A control shows
the reader does catch a half-written file. At the end no temporary file is left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from podnet.cni import install


def _load_manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


m = _load_manifest()
VENV_BIN = Path(sys.executable).parent
HAVE_STATIC_CC = bool(shutil.which("gcc")) and Path("/usr/lib/x86_64-linux-gnu/libc.a").exists()
ROUNDS = 6


def init_command(host: Path, shim: Path, network: str) -> list[str]:
    """The manifest's init container command, its host mounts mapped under ``host``."""
    (init,) = m.find("DaemonSet", "podnet-node")["spec"]["template"]["spec"]["initContainers"]
    out = [str(VENV_BIN / init["command"][0])]
    for a in init["command"][1:]:
        a = a.replace("/host/opt/cni/bin", str(host / "opt/cni/bin"))
        a = a.replace("/host/etc/cni/net.d", str(host / "etc/cni/net.d"))
        a = a.replace("$(NETWORK_NAME)", network)
        if a.startswith("--static-shim="):
            a = f"--static-shim={shim}"
        out.append(a)
    return out


class Reader:
    """Reads the binary and the conflist in a loop; records anything that is not one complete version."""

    def __init__(self, binary: Path, conf: Path, binaries: set[bytes], confs: list[dict]) -> None:
        self.binary, self.conf, self.binaries, self.confs = binary, conf, binaries, confs
        self.bad: list[str] = []
        self.reads = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def check_once(self) -> None:
        try:
            data = self.binary.read_bytes()
            if data not in self.binaries:
                self.bad.append(f"binary of {len(data)} bytes is neither version")
        except FileNotFoundError:
            pass
        try:
            text = self.conf.read_text()
            try:
                doc = json.loads(text)
            except ValueError:
                self.bad.append(f"conflist of {len(text)} bytes is not JSON")
            else:
                if doc not in self.confs:
                    self.bad.append("conflist is neither version")
        except FileNotFoundError:
            pass
        self.reads += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.check_once()

    def __enter__(self) -> "Reader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> tuple[Path, Path]:
    if not HAVE_STATIC_CC:
        pytest.skip("needs gcc and libc6-dev (libc.a) for the static shim")
    d = tmp_path_factory.mktemp("shims")
    a, b = d / "a", d / "b"
    install.build_shim(a, static=True)
    install.build_shim(b, "/run/podnet/other.sock", static=True)  # different bytes, same protocol
    assert a.read_bytes() != b.read_bytes()
    return a, b


def _expected_conf(network: str) -> dict:
    return install.conflist(network, "/run/podnet/cni.sock", "/var/lib/podnet/cni")


def test_init_container_install_is_atomic_under_a_concurrent_reader(tmp_path, shims):
    host = tmp_path / "host"
    binary, conf = host / "opt/cni/bin/podnet-cni", host / "etc/cni/net.d/10-podnet.conflist"
    versions = [(shims[0], "podnet"), (shims[1], "podnet-b")]
    reader = Reader(binary, conf, {s.read_bytes() for s, _ in versions}, [_expected_conf(n) for _, n in versions])
    with reader:
        for i in range(ROUNDS):
            shim, network = versions[i % 2]
            p = subprocess.run(init_command(host, shim, network), capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
    assert reader.reads > ROUNDS  # it really read while installs ran
    assert reader.bad == []
    assert binary.read_bytes() == shims[1].read_bytes() and json.loads(conf.read_text()) == _expected_conf("podnet-b")
    assert sorted(p.name for p in binary.parent.iterdir()) == ["podnet-cni"]  # no temporary file left
    assert sorted(p.name for p in conf.parent.iterdir()) == ["10-podnet.conflist"]
    p = subprocess.run([str(binary)], env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert p.returncode == 0 and "supportedVersions" in json.loads(p.stdout)


def test_the_reader_catches_a_half_written_file(tmp_path, shims):
    binary, conf = tmp_path / "podnet-cni", tmp_path / "10-podnet.conflist"
    reader = Reader(binary, conf, {shims[0].read_bytes()}, [_expected_conf("podnet")])
    data = shims[0].read_bytes()
    with open(binary, "wb") as f:  # what a plain copy does: the file is visible while it grows
        f.write(data[: len(data) // 2])
        f.flush()
        reader.check_once()
        f.write(data[len(data) // 2:])
    conf.write_text(json.dumps(_expected_conf("podnet"))[:40])
    reader.check_once()
    assert reader.bad == [f"binary of {len(data) // 2} bytes is neither version", "conflist of 40 bytes is not JSON"]


def test_install_leaves_an_existing_plugin_in_place_when_it_fails(tmp_path, shims):
    host = tmp_path / "host"
    p = subprocess.run(init_command(host, shims[0], "podnet"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    before = (host / "opt/cni/bin/podnet-cni").read_bytes()
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x7fELF" + os.urandom(64))  # an ELF header and garbage: VERSION cannot run
    broken.chmod(0o755)
    p = subprocess.run(init_command(host, broken, "podnet"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert (host / "opt/cni/bin/podnet-cni").read_bytes() == before
    assert sorted(x.name for x in (host / "opt/cni/bin").iterdir()) == ["podnet-cni"]
