"""Fixtures for real-namespace CNI tests: node namespaces running the daemon, and a runtime-like exec helper.

Every namespace is created through NetnsPool with the ``pnt-cni-`` prefix and
removed in ``finally``; daemons are stopped by their own pid; all files live
in pytest's tmp_path (never /opt/cni, /etc/cni or /var/lib/cni).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from podnet.cni import install
from podnet.host.netns import Netns, NetnsPool

VENV_BIN = Path(sys.executable).parent
PODNET_CNI = str(VENV_BIN / "podnet-cni")


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def pool():
    p = NetnsPool("pnt-cni-")
    try:
        yield p
    finally:
        p.close()


@dataclass
class Node:
    """One node namespace with a podnet-cni daemon and the installed plugin binary."""

    ns: Netns
    dir: Path
    pod_cidrs: list[str]
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    network: str = "podnet"

    @property
    def sock(self) -> str:
        return str(self.dir / "cni.sock")

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def start(self, wait: bool = True) -> None:
        args = [PODNET_CNI, "daemon", "--socket", self.sock, "--node-name", self.ns.name,
                "--data-dir", str(self.data_dir), *[f"--pod-cidr={c}" for c in self.pod_cidrs], *self.extra]
        log = open(self.dir / "daemon.log", "ab")
        self.proc = self.ns.popen(*args, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.05)
            finally:
                s.close()
        raise AssertionError("daemon did not start:\n" + self.log())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            # ip netns exec execs the daemon, so proc.pid is the daemon itself
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log(self) -> str:
        p = self.dir / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def conf(self, version: str = "1.0.0", **kw) -> dict:
        plugin = json.loads((self.dir / "net.d" / "10-podnet.conflist").read_text())["plugins"][0]
        return {**plugin, "cniVersion": version, "name": self.network, **kw}

    def plugin_conf(self, version: str, **kw) -> dict:
        return self.conf(version, **kw)

    @property
    def plugin_binary(self) -> str:
        return str(self.bin_dir / "podnet-cni")

    def cni(self, verb: str, cid: str = "c1", netns: str = "", ifname: str = "eth0", version: str = "1.0.0",
            stdin: bytes | None = None, env: dict | None = None, **conf_kw) -> tuple[int, dict | None]:
        """Exec the plugin exactly as a runtime does; returns (0 or the error's CNI code, parsed stdout)."""
        e = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
             "CNI_PATH": str(self.bin_dir) + ":/usr/lib/cni",
             "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}",
             "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        e.update(env or {})
        e = {k: v for k, v in e.items() if v is not None}
        data = stdin if stdin is not None else json.dumps(self.plugin_conf(version, **conf_kw)).encode()
        p = subprocess.run(["ip", "netns", "exec", self.ns.name, self.plugin_binary],
                           input=data, env=e, capture_output=True, timeout=60)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        if p.returncode == 0:
            return 0, out
        assert p.returncode == 1 and out and out["code"] > 0, (p.returncode, p.stdout, p.stderr)
        return out["code"], out

    def reservations(self) -> list[tuple]:
        import sqlite3

        db = sqlite3.connect(self.data_dir / "ipam.db")
        try:
            return db.execute("SELECT ip, container_id, ifname FROM reservation ORDER BY ip").fetchall()
        finally:
            db.close()

    def host_veths(self) -> list[str]:
        out = self.ns.ip("-o", "link", "show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ": pnc" in line]

    def pod_host_routes(self) -> list[str]:
        out = self.ns.ip("-o", "route", "show", "proto", "149") + self.ns.ip("-o", "-6", "route", "show", "proto", "149")
        return out.splitlines()


@dataclass
class RefNode(Node):
    """A node namespace driven with Debian's reference bridge + host-local plugins instead of podnet."""

    def plugin_conf(self, version: str, **kw) -> dict:
        ipam = {"type": "host-local", "dataDir": str(self.data_dir),
                "ranges": [[{"subnet": c}] for c in self.pod_cidrs], "routes": [{"dst": "0.0.0.0/0"}]}
        return {"cniVersion": version, "name": self.network, "type": "bridge", "bridge": "cni0", "isGateway": True,
                "ipMasq": False, "hairpinMode": True, "ipam": ipam, **kw}

    @property
    def plugin_binary(self) -> str:
        return "/usr/lib/cni/bridge"

    def reservations(self) -> list[tuple]:
        d = self.data_dir / self.network
        files = sorted(p for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []
        return [(p.name, *p.read_text().split("\r\n")) for p in files]

    def host_veths(self) -> list[str]:
        out = self.ns.ip("-o", "link", "show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ": veth" in line]


@pytest.fixture
def ref_node(pool, tmp_path):
    ns = pool.netns("ref")
    d = tmp_path / ns.name
    d.mkdir()
    return RefNode(ns, d, ["10.244.9.0/24"])


@pytest.fixture
def make_node(pool, tmp_path):
    nodes: list[Node] = []

    def make(pod_cidrs=("10.244.1.0/24",), extra=(), start=True, ns: Netns | None = None, form="bytecode") -> Node:
        ns = ns or pool.netns("n")
        d = tmp_path / ns.name
        d.mkdir()
        node = Node(ns, d, list(pod_cidrs), list(extra))
        install.install(str(node.bin_dir), str(d / "net.d"), node.sock, str(node.data_dir), form=form)
        nodes.append(node)
        if start:
            node.start()
        return node

    try:
        yield make
    finally:
        for n in nodes:
            n.stop(signal.SIGKILL)


TCP_PAIR = r"""
import socket, sys
mode, addr = sys.argv[1], sys.argv[2]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "serve":
    s = socket.socket(fam); s.bind((addr, 8080)); s.listen(1)
    print("ready", flush=True)
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
else:
    c = socket.create_connection((addr, 8080), timeout=5)
    print(c.recv(100).decode())
"""


def _tcp_peer_seen(server_ns, server_ip, client_ns) -> str:
    srv = server_ns.popen(sys.executable, "-P", "-c", TCP_PAIR, "serve", server_ip, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        return client_ns.run(sys.executable, "-P", "-c", TCP_PAIR, "connect", server_ip).strip()
    finally:
        srv.kill()
        srv.wait()


@pytest.fixture
def tcp_peer_seen():
    """(server netns, server ip, client netns) -> the peer address the server saw."""
    return _tcp_peer_seen


@pytest.fixture
def tcp_pair() -> str:
    """The TCP server/client script (``serve ADDR`` prints "ready", answers each client with the peer address it saw)."""
    return TCP_PAIR
