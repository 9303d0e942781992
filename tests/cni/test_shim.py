"""The stdlib-only shim: socket discovery, wire format, no-daemon answers, installed binary forms."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import threading

import pytest

from podnet.cni import daemon, install, shim, skel, version

SOCKET_CASES = [
    ("plain", b'{"name":"x","socket":"/run/a.sock"}', "/run/a.sock"),
    ("spaces", b'{"socket" :\n "/run/b.sock" , "name": "x"}', "/run/b.sock"),
    ("escaped", b'{"socket":"/run/c\\u002esock"}', "/run/c.sock"),
    ("absent", b'{"name":"x"}', ""),
    ("not-a-string", b'{"socket": 5}', ""),
    ("other-key", b'{"socketPath":"/x"}', ""),
    ("garbage", b"{", ""),
]


@pytest.mark.parametrize("stdin,want", [c[1:] for c in SOCKET_CASES], ids=[c[0] for c in SOCKET_CASES])
def test_socket_from_config(stdin, want):
    assert shim.socket_from_config(stdin) == want


def test_shim_versions_match_the_daemon():
    assert shim.SUPPORTED_VERSIONS == version.SUPPORTED


def test_request_wire_format_round_trips_only_cni_vars():
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=b=c;D=e", "HOME": "/root", "CNI_NETNS": ""}
    got_env, got_stdin = daemon.parse_request(shim.encode_request(env, b'{"a":"\\u0000"}'))
    assert got_env == {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=b=c;D=e", "CNI_NETNS": ""}
    assert got_stdin == b'{"a":"\\u0000"}'


@pytest.mark.parametrize("verb,code", [("ADD", 11), ("DEL", 11), ("CHECK", 11), ("GC", 11), ("STATUS", 50)])
def test_no_daemon(tmp_path, verb, code):
    out = io.BytesIO()
    rc = shim.plugin_main({"CNI_COMMAND": verb}, io.BytesIO(b'{"socket":"%s"}' % str(tmp_path / "x").encode()), out)
    err = json.loads(out.getvalue())
    assert rc == 1 and err["code"] == code and str(tmp_path / "x") in err["msg"]


def test_version_without_daemon():
    out = io.BytesIO()
    assert shim.plugin_main({"CNI_COMMAND": "VERSION"}, io.BytesIO(b""), out) == 0
    assert json.loads(out.getvalue()) == version.version_info()


class Echo:
    async def add(self, req):
        return {"cniVersion": "1.1.0", "interfaces": [], "ips": [], "routes": [], "dns": {}}

    async def delete(self, req):
        raise skel.CniError(7, "nope")

    check = status = gc = delete


@pytest.fixture
def echo_daemon(tmp_path):
    """A daemon socket served by the real Daemon.handle with a stub handler, in a thread."""
    path = str(tmp_path / "d.sock")
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main():
        d = daemon.Daemon.__new__(daemon.Daemon)
        d.plugin = Echo()
        await asyncio.start_unix_server(d.handle, path=path)
        started.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True)
    t.start()
    started.wait(10)
    yield path
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))
FORMS = ["bytecode", "source", pytest.param("c", marks=pytest.mark.skipif(not HAVE_CC, reason="no C compiler"))]


@pytest.mark.parametrize("form", FORMS)
def test_installed_binary_forwards_and_maps_exit_codes(tmp_path, echo_daemon, form):
    b, c = install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), echo_daemon, python=sys.executable, form=form)
    if form != "c":
        assert b.read_text().startswith(f"#!{sys.executable} -IS\n")
        assert ("exec(marshal.loads(" in b.read_text()) == (form == "bytecode")
    conf = json.loads(c.read_text())
    assert conf["plugins"][0] == {"type": "podnet-cni", "socket": echo_daemon, "capabilities": {"ips": True, "mac": True}}
    stdin = json.dumps({**conf["plugins"][0], "cniVersion": "1.0.0", "name": "podnet"}).encode()
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    p = subprocess.run([str(b)], input=stdin, env=env, capture_output=True)
    assert p.returncode == 0 and json.loads(p.stdout)["cniVersion"] == "1.0.0"
    p = subprocess.run([str(b)], input=stdin, env={**env, "CNI_COMMAND": "DEL"}, capture_output=True)
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 7
    # the socket baked in at install time is used when the config has none
    p = subprocess.run([str(b)], input=b'{"cniVersion":"1.0.0","name":"podnet"}', env=env, capture_output=True)
    assert p.returncode == 0, p.stdout
    p = subprocess.run([str(b)], env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert (p.returncode, json.loads(p.stdout)) == (0, version.version_info())


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("verb,code", [("ADD", 11), ("STATUS", 50)])
def test_installed_binary_without_daemon(tmp_path, form, verb, code):
    sock = str(tmp_path / 'no "such" dir' / "s")
    b, _ = install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), sock, form=form)
    p = subprocess.run([str(b)], input=b'{"cniVersion":"1.1.0","name":"podnet"}', env={"CNI_COMMAND": verb},
                       capture_output=True)
    err = json.loads(p.stdout)
    assert p.returncode == 1 and err["code"] == code and sock in err["msg"]


def test_auto_python_prefers_the_system_interpreter(tmp_path):
    b, _ = install.install(str(tmp_path / "bin"), str(tmp_path / "net.d"), "/run/x.sock")
    want = "/usr/bin/python3" if install.os.access("/usr/bin/python3", install.os.X_OK) else sys.executable
    assert b.read_text().splitlines()[0] == f"#!{want} -IS"
    p = subprocess.run([str(b)], env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert p.returncode == 0 and json.loads(p.stdout) == version.version_info()


def test_console_script_management_mode(tmp_path):
    p = subprocess.run([str(install.Path(sys.executable).parent / "podnet-cni"), "install", "--bin-dir",
                        str(tmp_path / "b"), "--conf-dir", str(tmp_path / "c"), "--socket", "/run/x.sock"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b" / "podnet-cni").stat().st_mode & 0o111
    assert json.loads((tmp_path / "c" / "10-podnet.conflist").read_text())["name"] == "podnet"


@pytest.mark.parametrize("data", [b"", b"CNI_COMMAND=ADD", b"CNI_COMMAND=ADD\0"], ids=["empty", "no-nul", "no-end"])
def test_truncated_requests_are_rejected(data):
    with pytest.raises(ValueError):
        daemon.parse_request(data)


def test_daemon_flags_accept_the_lab_invocation():
    import argparse

    p = argparse.ArgumentParser()
    daemon.add_arguments(p)
    o = daemon.options_from(p.parse_args([
        "--socket", "/run/podnet/lab/n1/cni.sock", "--node-name", "n1", "--master", "http://10.0.0.1:6443",
        "--cluster-cidr", "10.244.0.0/16,fd00::/48", "--data-dir", "/var/lib/podnet/lab/n1",
        "--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:0:0:1::/64", "--masquerade", "--mtu", "1450"]))
    assert o.cluster_cidr == ("10.244.0.0/16", "fd00::/48") and o.pod_cidr == ("10.244.1.0/24", "fd00:0:0:1::/64")
    assert (o.masquerade, o.mtu, o.master) == (True, 1450, "http://10.0.0.1:6443")
