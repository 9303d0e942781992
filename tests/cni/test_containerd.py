"""A real container runtime: containerd 1.6 ``ctr run --cni`` runs a container on podnet-cni.

Skipped unless containerd, ctr, runc and busybox are installed (Debian packages
containerd, runc, busybox-static). Recipe from shared/reference/real-clients.md §3.

ctr has no flag for the CNI config or plugin dir: it loads the first file in
/etc/cni/net.d and plugins from /opt/cni/bin:/usr/lib/cni, and go-cni caches
results in /var/lib/cni. So containerd, its shims and every ctr call run in a
**private mount namespace** (``unshare --mount --propagation private``) inside
the test's node network namespace, where temp dirs are bind-mounted over
/etc/cni/net.d, /opt/cni/bin, /usr/lib/cni and /var/lib/cni and a tmpfs over /run (the shims'
sockets and runc's state live under /run/containerd); the machine's own
directories are never written (a missing one, e.g. /var/lib/cni on a fresh CI
machine, is created inside an overlay whose writes land in the temp dir). containerd's config, root, state and socket live
in a temp dir, the CRI plugin is disabled, and the containerd namespace has a
unique ``pntcni`` name so the container's cgroups can be found and removed.

Guarantee: :meth:`PrivateContainerd.close` removes tasks, containers, the
container's processes and cgroups, the shims and containerd (all by pid), even
after a failure; the mount namespace disappears with its last process.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

def can_unshare_mounts() -> bool:
    """False where even root may not make a mount namespace (some CI containers)."""
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not can_unshare_mounts(), reason="cannot create a mount namespace here"),
    pytest.mark.skipif(not all(shutil.which(x) for x in ("containerd", "ctr", "runc", "busybox", "unshare", "nsenter")),
                       reason="needs Debian containerd + runc + busybox-static"),
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
MOUNTS = """
cover() {  # bind $2 over $1; if $1 is missing, overlay its nearest existing ancestor first (writes land in $D)
  t=$1
  if [ ! -d "$t" ]; then
    a=$(dirname "$t"); while [ ! -d "$a" ]; do a=$(dirname "$a"); done
    o="$D/overlay$(echo "$a" | tr / _)"
    mkdir -p "$o/up" "$o/work"
    mount -t overlay pnt-cni-ovl -o "lowerdir=$a,upperdir=$o/up,workdir=$o/work" "$a"
    mkdir -p "$t"
  fi
  mount --bind "$2" "$t"
}
mount -t tmpfs -o mode=0755 pnt-cni-run /run
cover /etc/cni/net.d "$D/net.d"
cover /opt/cni/bin "$PLUGINS"  # ctr's plugin path is /opt/cni/bin:/usr/lib/cni: both are ours here
cover /usr/lib/cni "$PLUGINS"
cover /var/lib/cni "$D/cni-cache"
exec containerd --config "$D/config.toml"
"""


@dataclass
class PrivateContainerd:
    """containerd in a private mount namespace inside ``netns``; ctr calls join both namespaces."""

    netns: str
    plugin_dir: Path
    conflist: Path
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pnt-cni-ctrd-")))  # short: socket paths
    namespace: str = field(default_factory=lambda: "pntcni" + secrets.token_hex(4))
    proc: subprocess.Popen | None = None

    @property
    def sock(self) -> str:
        return str(self.dir / "containerd.sock")

    def start(self, timeout: float = 20) -> None:
        d = self.dir
        for sub in ("net.d", "cni-cache", "root", "state"):
            (d / sub).mkdir()
        shutil.copy(self.conflist, d / "net.d" / self.conflist.name)
        (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
""")
        env = {"D": str(d), "PLUGINS": str(self.plugin_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        log = open(d / "containerd.log", "ab")
        # nsenter --net (not `ip netns exec`, which remounts /sys and would hide the cgroup mounts runc needs);
        # nsenter, unshare and sh all exec, so proc.pid is containerd itself.
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount",
                                      "--propagation", "private", "sh", "-ec", MOUNTS],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            if self.ctr("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("containerd did not start:\n" + self.log())

    def log(self) -> str:
        p = self.dir / "containerd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ctr in containerd's mount and network namespaces (where the CNI dirs are bound)."""
        assert self.proc is not None
        cmd = ["nsenter", f"--target={self.proc.pid}", "--mount", "--net",
               "ctr", "--address", self.sock, "--namespace", self.namespace, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}\n{self.log()}")
        return p

    def popen_ctr(self, *args: str) -> subprocess.Popen:
        assert self.proc is not None
        return subprocess.Popen(["nsenter", f"--target={self.proc.pid}", "--mount", "--net",
                                 "ctr", "--address", self.sock, "--namespace", self.namespace, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    # ------------------------------------------------------------- clean-up
    def _cgroup_dirs(self) -> list[Path]:
        """Every cgroup directory under our containerd namespace, deepest first."""
        out: list[Path] = []
        # cgroup v1/hybrid: /sys/fs/cgroup/<controller>/<ns>/<id>; v2: /sys/fs/cgroup/<ns>/<id>
        hierarchies = [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] if CGROUP_ROOT.is_dir() else []
        for hier in hierarchies:
            base = hier / self.namespace
            if base.is_dir():
                out += sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                out.append(base)
        return out

    def _our_pids(self) -> set[int]:
        """Container processes (from our cgroups) and shims (their command line names our temp dir)."""
        pids: set[int] = set()
        for cg in self._cgroup_dirs():
            try:
                pids |= {int(x) for x in (cg / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        needle = str(self.dir).encode()
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                try:
                    if needle in (p / "cmdline").read_bytes():
                        pids.add(int(p.name))
                except OSError:
                    pass
        return pids

    def close(self) -> None:
        try:
            if self.proc and self.proc.poll() is None:
                for cid in self.ctr("containers", "list", "--quiet", check=False, timeout=20).stdout.split():
                    self.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False, timeout=20)
                    self.ctr("tasks", "delete", "--force", cid, check=False, timeout=20)
                    self.ctr("containers", "delete", cid, check=False, timeout=20)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            for _ in range(3):  # container processes, then shims, then whatever they left
                for pid in self._our_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            deadline = time.monotonic() + 5
            for cg in self._cgroup_dirs():
                while True:
                    try:
                        cg.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:  # still busy for a moment after its last process died
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
            shutil.rmtree(self.dir, ignore_errors=True)


def busybox_rootfs(root: Path, applets: tuple[str, ...] = ("sh", "ip", "ping", "nc", "sleep")) -> Path:
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "run"):
        (root / d).mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    for applet in applets:
        (root / "bin" / applet).symlink_to("busybox")
    return root


@pytest.fixture
def containerd_on(tmp_path):
    made: list[PrivateContainerd] = []

    def start(node) -> PrivateContainerd:
        c = PrivateContainerd(node.ns.name, node.bin_dir, node.dir / "net.d" / "10-podnet.conflist")
        made.append(c)
        c.start()
        return c

    try:
        yield start
    finally:
        for c in made:
            c.close()


def test_ctr_run_cni_container_gets_its_pod_ip_and_reaches_a_pod(make_node, pool, containerd_on, tmp_path, tcp_pair):
    node = make_node(("10.244.44.0/24",))
    # a pod wired by our own harness, running a TCP server that echoes the peer address it sees
    server = pool.netns("srv")
    code, res = node.cni("ADD", "srv", server.path)
    assert code == 0, res
    server_ip = res["ips"][0]["address"].split("/")[0]
    srv = server.popen(sys.executable, "-P", "-c", tcp_pair, "serve", server_ip, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        ctrd = containerd_on(node)
        rootfs = busybox_rootfs(tmp_path / "rootfs")
        script = ("ip -4 addr show eth0; ip -4 route; ping -c1 -W2 10.244.44.1; "
                  f"echo peer=$(nc {server_ip} 8080 </dev/null); sleep 1")
        run = ctrd.popen_ctr("run", "--rm", "--cni", "--rootfs", str(rootfs), "pnt-c1", "/bin/sh", "-c", script)
        held: list[tuple] = []
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline:
            held = held or [r for r in node.reservations() if r[1] != "srv"]
            time.sleep(0.05)
        out, err = run.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert run.returncode == 0, out + err + ctrd.log() + node.log()
    finally:
        srv.kill()
        srv.wait()
    pod_ip = next(line.split()[1].split("/")[0] for line in out.splitlines() if line.strip().startswith("inet "))
    assert pod_ip.startswith("10.244.44.") and pod_ip != server_ip, out
    assert f"inet {pod_ip}/32" in out and "default via 10.244.44.1 dev eth0" in out, out
    assert "1 packets received" in out, out  # the gateway answered
    assert f"peer={pod_ip}" in out, out  # the other pod saw the container's own pod IP: no NAT
    # ctr's CNI_CONTAINERID is <namespace>-<id>; DEL (with CNI_NETNS="") released exactly that attachment
    assert held == [(pod_ip, f"{ctrd.namespace}-pnt-c1", "eth0")], held
    assert [r[1] for r in node.reservations()] == ["srv"]
    assert len(node.host_veths()) == 1  # only the server pod's veth is left
    assert ctrd.ctr("containers", "list", "--quiet").stdout.split() == []


def test_ctr_run_cni_with_the_daemon_down_fails_cleanly(make_node, containerd_on, tmp_path):
    """ADD answers 11 (try again later) through ctr; ctr leaves a CREATED task behind, which close() removes."""
    node = make_node(("10.244.45.0/24",), start=False)
    ctrd = containerd_on(node)
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    p = ctrd.ctr("run", "--rm", "--cni", "--rootfs", str(rootfs), "pnt-c2", "/bin/sh", "-c", "true", check=False)
    assert p.returncode != 0 and "try again later" in p.stderr, p.stdout + p.stderr
    assert ctrd.ctr("containers", "list", "--quiet").stdout.split() == ["pnt-c2"]  # ctr's own leftover
    assert ctrd._cgroup_dirs()
    ctrd.close()
    assert ctrd.proc.poll() is not None and not ctrd._cgroup_dirs() and not ctrd.dir.exists()
    assert not any(str(ctrd.dir).encode() in p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline")
                   if p.exists())
