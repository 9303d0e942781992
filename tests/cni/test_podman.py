"""A real container runtime: podman 4.3 with its CNI backend runs a container on podnet-cni.

Skipped unless podman, runc and busybox are installed (Debian packages podman,
runc, busybox-static). Recipe from shared/reference/real-clients.md §2: runc
(crun cannot run on this VM's hybrid cgroups), explicit ulimits, vfs storage
and every directory in tmp_path; podman runs inside the node netns
(``nsenter --net``), creates the container's netns itself, calls VERSION to
validate the conflist, then ADD, and DEL when the container exits (``--rm``).
podman itself keeps libcni's result cache in /var/lib/cni/results (not configurable).
``-p HOSTPORT:PORT`` goes through portmap chained by ``podnet-cni install --portmap on``;
portmap runs in the node netns (podman does), so its CNI-HOSTPORT-* chains land there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not all(shutil.which(x) for x in ("podman", "runc", "busybox")),
                       reason="needs Debian podman + runc + busybox-static"),
]


def podman_cmd(node, tmp_path, short: str, *command: str, flags: tuple[str, ...] = ()) -> tuple[list[str], dict]:
    """``podman run --rm --network podnet <flags> --rootfs <busybox> <command>`` inside the node netns, and its env."""
    rootfs = tmp_path / "rootfs"
    if not rootfs.exists():
        for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "run"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
        for applet in ("sh", "ip", "ping", "nc"):
            (rootfs / "bin" / applet).symlink_to("busybox")
    conf = tmp_path / "containers.conf"
    conf.write_text(f"""
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{node.bin_dir}", "/usr/lib/cni"]
network_config_dir = "{node.dir / 'net.d'}"
""")
    env = {"CONTAINERS_CONF": str(conf), "HOME": str(tmp_path), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    cmd = ["nsenter", f"--net=/run/netns/{node.ns.name}", "podman", "--root", f"{short}/storage",
           "--runroot", f"{short}/run", "--storage-driver", "vfs", "--tmpdir", f"{short}/tmp",
           "run", "--rm", "--network", "podnet", *flags, "--rootfs", str(rootfs), *command]
    return cmd, env


def podman_run(node, tmp_path, *command: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    short = tempfile.mkdtemp(prefix="pnt-cni-podman-")  # podman wants a runroot under 50 characters
    try:
        cmd, env = podman_cmd(node, tmp_path, short, *command, flags=flags)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_podman_container_gets_its_pod_ip_from_podnet(make_node, tmp_path):
    node = make_node(("10.244.33.0/24",))
    p = podman_run(node, tmp_path, "/bin/sh", "-c", "ip -4 addr show eth0; ip route; ping -c1 -W2 10.244.33.1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "inet 10.244.33.2/32" in p.stdout
    assert "default via 10.244.33.1 dev eth0" in p.stdout
    assert "1 packets received" in p.stdout
    # --rm: podman ran DEL, nothing is left on the node
    assert node.reservations() == [] and node.host_veths() == []


def test_podman_ip_and_mac_address_flags(make_node, tmp_path):
    """podman passes --ip and --mac-address as CNI_ARGS IP= and MAC=; podnet honours both."""
    node = make_node(("10.244.34.0/24",))
    p = podman_run(node, tmp_path, "/bin/sh", "-c", "ip addr show eth0; ping -c1 -W2 10.244.34.1",
                   flags=("--ip", "10.244.34.50", "--mac-address", "02:00:00:00:77:50"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "inet 10.244.34.50/32" in p.stdout and "link/ether 02:00:00:00:77:50" in p.stdout, p.stdout
    assert "1 packets received" in p.stdout
    # an address outside the node's pod CIDR: podman reports podnet's error (code 4, naming CNI_ARGS IP)
    p = podman_run(node, tmp_path, "/bin/sh", "-c", "true", flags=("--ip", "10.9.9.9"))
    assert p.returncode != 0 and "outside this node's pod CIDRs" in p.stderr, p.stdout + p.stderr
    assert node.reservations() == [] and node.host_veths() == []


PORTMAP = Path("/usr/lib/cni/portmap")
CONNECT_UNTIL_ANSWERED = r"""
import socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
deadline = time.monotonic() + 60  # readiness wait: the container's nc listens only once podman has started it
while True:
    c = socket.socket(fam); c.settimeout(5)
    try:
        c.connect((addr, port))
        data = c.recv(100)
        if data:
            print(data.decode().strip()); break
    except OSError:
        pass
    finally:
        c.close()
    if time.monotonic() > deadline:
        print("no answer"); break
    time.sleep(0.1)
"""


@pytest.mark.skipif(not PORTMAP.exists(), reason="needs Debian containernetworking-plugins (portmap)")
def test_podman_publish_reaches_the_pod_through_chained_portmap(make_node, pool, tmp_path):
    """``podman run -p 30081:8080`` on a conflist from ``podnet-cni install --portmap on``: podman passes
    runtimeConfig.portMappings, portmap DNATs node-IP:30081 to the pod, a client namespace gets the
    container's answer, and the DEL podman runs when the container exits removes the DNAT."""
    node = make_node(("10.244.35.0/24",))
    p = subprocess.run(["ip", "netns", "exec", node.ns.name, str(Path(sys.executable).parent / "podnet-cni"),
                        "install", "--bin-dir", str(node.bin_dir), "--conf-dir", str(node.dir / "net.d"),
                        "--socket", node.sock, "--data-dir", str(node.data_dir), "--portmap", "on",
                        "--plugin-dirs", f"{node.bin_dir}:{PORTMAP.parent}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "portmap" in p.stdout, p.stderr
    client = pool.netns("cl")
    pool.veth(node.ns, "underlay0", client, "eth0")
    node.ns.ip("addr", "add", "192.168.79.1/24", "dev", "underlay0")
    client.ip("addr", "add", "192.168.79.2/24", "dev", "eth0")

    short = tempfile.mkdtemp(prefix="pnt-cni-podman-")
    try:
        cmd, env = podman_cmd(node, tmp_path, short, "/bin/sh", "-c", "echo hello-from-pod | nc -l -p 8080",
                              flags=("-p", "30081:8080"))
        ctr = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            got = client.run(sys.executable, "-P", "-c", CONNECT_UNTIL_ANSWERED, "192.168.79.1", "30081", timeout=90)
            out, err = ctr.communicate(timeout=120)
        finally:
            if ctr.poll() is None:
                ctr.kill()
                ctr.wait()
        assert got.strip() == "hello-from-pod", (got, ctr.returncode)
        assert ctr.returncode == 0, out + err
    finally:
        shutil.rmtree(short, ignore_errors=True)
    rules = node.ns.run("iptables", "-w", "-t", "nat", "-S")
    assert "CNI-HOSTPORT-DNAT" in rules  # portmap did run here, in the node netns
    assert "30081" not in rules and "CNI-DN-" not in rules and "10.244.35." not in rules, rules
    assert node.reservations() == [] and node.host_veths() == []
