"""The statically linked plugin shim: built from cni/shim.c with -static, installed by ``--form static``.

It must need nothing on the host: no interpreter, no loader, no libc. The root test
runs it with chroot in a directory that holds only the binary and the daemon's
socket, and checks it answers VERSION and forwards an ADD byte for byte as the
Python shim does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from podnet.cni import install, shim, version

HAVE_STATIC_CC = bool(shutil.which("gcc")) and any(
    Path(d, "libc.a").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"))
needs_static_cc = pytest.mark.skipif(not HAVE_STATIC_CC, reason="needs gcc and libc6-dev (libc.a)")
CLI = str(Path(sys.executable).parent / "podnet-cni")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

PT_DYNAMIC, PT_INTERP = 2, 3


def program_header_types(path: Path) -> list[int]:
    """The p_type of every ELF64 program header of ``path``."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    return [struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] for i in range(phnum)]


@pytest.fixture(scope="module")
def static_shim(tmp_path_factory) -> Path:
    if not HAVE_STATIC_CC:
        pytest.skip("needs gcc and libc6-dev (libc.a)")
    out = tmp_path_factory.mktemp("static") / "podnet-cni-static"
    install.build_shim(out, static=True)
    return out


class Recorder:
    """A stand-in daemon on a unix socket: records each request, answers ``<code>\\n<stdout>``."""

    def __init__(self, path: Path, code: int = 0, stdout: bytes = b'{"cniVersion":"1.0.0","ips":[]}\n') -> None:
        self.requests: list[bytes] = []
        self.code, self.stdout = code, stdout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.requests.append(data)
                conn.sendall(b"%d\n" % self.code + self.stdout)

    def close(self) -> None:
        self.sock.close()


@needs_static_cc
def test_static_shim_needs_no_loader_or_libc(static_shim):
    types = program_header_types(static_shim)
    assert PT_INTERP not in types and PT_DYNAMIC not in types


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p1", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p"}


@needs_static_cc
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_static_shim_answers_version_and_forwards_add_in_an_empty_root(tmp_path, static_shim):
    root = tmp_path / "root"
    (root / "run" / "podnet").mkdir(parents=True)
    shutil.copy2(static_shim, root / "podnet-cni")
    daemon = Recorder(root / "run" / "podnet" / "cni.sock", code=0)
    try:
        inventory = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
        assert inventory == ["podnet-cni", "run/podnet/cni.sock"]  # nothing else: no libc, no loader, no /bin/sh

        p = subprocess.run([CHROOT, str(root), "/podnet-cni"], env={"CNI_COMMAND": "VERSION"},
                           input=b'{"cniVersion":"1.0.0"}', capture_output=True)
        assert (p.returncode, json.loads(p.stdout)) == (0, version.version_info())
        assert daemon.requests == []  # VERSION never reaches the daemon

        conf = {"cniVersion": "1.0.0", "name": "podnet", "type": "podnet-cni", "socket": "/run/podnet/cni.sock"}
        stdin = json.dumps(conf).encode()
        p = subprocess.run([CHROOT, str(root), "/podnet-cni"], env={**ENV, "OTHER": "x"}, input=stdin,
                           capture_output=True)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout == daemon.stdout
        # byte for byte what the Python shim sends for the same call (only CNI_* variables)
        assert sorted(daemon.requests[0].split(b"\0\0", 1)[0].split(b"\0")) == \
            sorted(shim.encode_request(ENV, stdin).split(b"\0\0", 1)[0].split(b"\0"))
        assert daemon.requests[0].split(b"\0\0", 1)[1] == stdin

        daemon.code, daemon.stdout = 7, b'{"cniVersion":"1.0.0","code":7,"msg":"nope"}\n'
        p = subprocess.run([CHROOT, str(root), "/podnet-cni"], env={**ENV, "CNI_COMMAND": "DEL"}, input=stdin,
                           capture_output=True)
        assert (p.returncode, json.loads(p.stdout)["code"]) == (1, 7)
    finally:
        daemon.close()
    # the daemon is gone: try again later (ADD), not available (STATUS)
    (root / "run" / "podnet" / "cni.sock").unlink()
    for verb, code in (("ADD", 11), ("STATUS", 50)):
        p = subprocess.run([CHROOT, str(root), "/podnet-cni"], env={**ENV, "CNI_COMMAND": verb},
                           input=json.dumps({**conf, "cniVersion": "1.1.0"}).encode(), capture_output=True)
        assert (p.returncode, json.loads(p.stdout)["code"]) == (1, code)


@needs_static_cc
def test_form_static_copies_the_prebuilt_shim(tmp_path, static_shim):
    b, c = install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), "/run/podnet/cni.sock", form="static",
                           static_shim=str(static_shim), portmap="off")
    assert b.read_bytes() == static_shim.read_bytes() and os.access(b, os.X_OK)
    assert json.loads(c.read_text())["plugins"][0]["socket"] == "/run/podnet/cni.sock"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["podnet-cni"]  # no temporary file left


@pytest.mark.parametrize(
    "make, error",
    [
        pytest.param(lambda d: None, "No such file", id="missing"),
        pytest.param(lambda d: (d / "shim").write_text("#!/bin/sh\necho hi\n"), "not an ELF", id="not-elf"),
        pytest.param(lambda d: shutil.copy(shutil.which("true"), d / "shim"), "VERSION failed", id="no-version"),
    ],
)
def test_form_static_refuses_a_bad_shim_and_writes_nothing(tmp_path, make, error):
    make(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podnet-cni").write_text("old")
    with pytest.raises(RuntimeError, match=error):
        install.install(str(bin_dir), str(tmp_path / "net.d"), "/run/s.sock", form="static",
                        static_shim=str(tmp_path / "shim"), portmap="off")
    assert [p.name for p in bin_dir.iterdir()] == ["podnet-cni"] and (bin_dir / "podnet-cni").read_text() == "old"
    assert not (tmp_path / "net.d").exists()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_read_only_bin_dir_is_one_line_and_a_distinct_status(tmp_path):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    script = (f'mount --bind "{bin_dir}" "{bin_dir}" && mount -o remount,bind,ro "{bin_dir}" && '
              f'exec "{CLI}" install --bin-dir "{bin_dir}" --conf-dir "{conf_dir}" --portmap off --form source')
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True)
    assert p.returncode == 3, p.stderr
    assert p.stderr.count("\n") == 1 and "Read-only file system" in p.stderr and str(bin_dir) in p.stderr
    assert "Traceback" not in p.stderr
    assert list(bin_dir.iterdir()) == [] and not conf_dir.exists()
