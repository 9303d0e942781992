"""Both shims, installed and exec'd as a runtime would, against daemon sockets they cannot use.

A permission error is permanent (code 5, I/O failure), so a runtime does not
retry it forever; a daemon that is down or starting stays 11 (try again later).
The plugin runs as ``nobody`` (uid 65534) so that a 0600 root socket really
answers EACCES; everything lives in a private 0755 directory removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from podnet.cni import install

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the plugin as nobody")]

NOBODY = 65534
HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))
FORMS = ["bytecode", "source", pytest.param("c", marks=pytest.mark.skipif(not HAVE_CC, reason="no C compiler"))]


@pytest.fixture
def world():
    """A directory ``nobody`` may traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="pnt-cni-"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d)


def listening(path: Path, mode: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(1)
    path.chmod(mode)
    return s


def not_listening(path: Path, mode: int) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays: connecting to it is ECONNREFUSED
    path.chmod(mode)


CASES = [
    # id, verb, how the socket is made, expected code, words in the message
    ("eacces-socket-0600", "ADD", lambda p: listening(p, 0o600), 5, "Permission denied"),
    ("eacces-del", "DEL", lambda p: listening(p, 0o600), 5, "Permission denied"),
    ("eacces-status", "STATUS", lambda p: listening(p, 0o600), 50, "not available"),
    ("enoent-daemon-down", "ADD", lambda p: None, 11, "try again later"),
    ("econnrefused-daemon-gone", "ADD", lambda p: not_listening(p, 0o666), 11, "try again later"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("verb,make,code,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_socket_errors_as_nobody(world, form, verb, make, code, needle):
    sock = world / "cni.sock"
    b, _ = install.install(str(world / "bin"), str(world / "net.d"), str(sock), form=form)
    for p in (world / "bin", b):
        assert p.stat().st_mode & 0o005 == 0o005, p  # nobody can reach and run it
    keep = make(sock)
    try:
        p = subprocess.run([str(b)], input=b'{"cniVersion":"1.1.0","name":"podnet"}', capture_output=True,
                           env={"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
                                "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"},
                           user=NOBODY, group=NOBODY, extra_groups=[], timeout=30)
    finally:
        if keep is not None:
            keep.close()
    err = json.loads(p.stdout)
    assert p.returncode == 1 and err["code"] == code, (err, p.stderr)
    assert needle in err["msg"] and str(sock) in err["msg"]
