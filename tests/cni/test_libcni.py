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
import sys
from pathlib import Path

import pytest

from podnet.cni import version

LIBCNI = Path("/usr/share/gocode/src/github.com/containernetworking/cni/libcni")
DRIVER_SRC = Path(__file__).parent / "libcni_driver"
PODNET_CNI = str(Path(sys.executable).parent / "podnet-cni")

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


PORTMAP = Path("/usr/lib/cni/portmap")
HOSTPORT_PAIR = r"""
import socket, sys
mode = sys.argv[1]
if mode == "serve":  # both families on port 8080; answers each client with the address it came from
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 8080)); s.listen(8)
    print("ready", flush=True)
    while True:
        c, peer = s.accept(); c.sendall(peer[0].removeprefix("::ffff:").encode()); c.close()
else:
    fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
    c = socket.socket(fam); c.settimeout(5)
    try:
        c.connect((sys.argv[2], int(sys.argv[3])))
    except ConnectionRefusedError:
        print("refused")
    else:
        print(c.recv(100).decode())
"""


def install_with_portmap(node, v: str) -> subprocess.CompletedProcess:
    """`podnet-cni install --portmap on [--cni-version v]` run inside the node netns (portmap's VERSION probe too)."""
    return subprocess.run(
        ["ip", "netns", "exec", node.ns.name, PODNET_CNI, "install", "--bin-dir", str(node.bin_dir),
         "--conf-dir", str(node.dir / "net.d"), "--socket", node.sock, "--data-dir", str(node.data_dir),
         "--portmap", "on", "--plugin-dirs", f"{node.bin_dir}:{PORTMAP.parent}", *(["--cni-version", v] if v else [])],
        capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not PORTMAP.exists(), reason="needs Debian containernetworking-plugins (portmap)")
@pytest.mark.parametrize("v", [*version.SUPPORTED, ""], ids=[*version.SUPPORTED, "installer-default"])
def test_libcni_hostport_through_chained_portmap(driver, make_node, pool, tmp_path, v):
    """kubelet's hostPort path: the conflist chains portmap after podnet, the runtime passes
    runtimeConfig.portMappings, portmap DNATs node-IP:hostPort to the pod from podnet's prevResult,
    a client in another namespace reaches the pod (its source address kept), podnet's CHECK passes in the
    chain, DEL removes the DNAT.

    The pod is dual-stack, so hostPort DNAT is shown for both families. Debian's portmap 1.1.1 fails
    its own CHECK whenever it has port mappings (it looks for the IPv4 rules in ip6tables too:
    containernetworking/plugins#819, fixed upstream later), whatever the main plugin; libcni runs
    the plugins in order and stops at the first failure, so that error still proves podnet's CHECK passed."""
    node = make_node(("10.244.6.0/24", "fd00:6::/64"))
    client = pool.netns("cl")
    pool.veth(node.ns, "underlay0", client, "eth0")
    node.ns.ip("addr", "add", "192.168.78.1/24", "dev", "underlay0")
    client.ip("addr", "add", "192.168.78.2/24", "dev", "eth0")
    node.ns.ip("addr", "add", "fd00:78::1/64", "dev", "underlay0", "nodad")
    client.ip("addr", "add", "fd00:78::2/64", "dev", "eth0", "nodad")
    pod = pool.netns("p")
    supported = json.loads(node.ns.run("env", "CNI_COMMAND=VERSION", str(PORTMAP), input=""))["supportedVersions"]
    p = install_with_portmap(node, v)
    if not v:  # the installer's own choice: 1.0.0, with cniVersions capped to what portmap speaks
        v = "1.0.0"
        assert json.loads((node.dir / "net.d" / "10-podnet.conflist").read_text())["cniVersions"] == \
            [x for x in ("0.4.0", "1.0.0", "1.1.0") if x in supported]
    elif v not in supported:  # e.g. 1.1.0 with Debian's portmap 1.1.1: the installer refuses a list portmap can't run
        assert p.returncode == 1 and "not spoken by every plugin" in p.stderr, p.stdout + p.stderr
        return
    assert p.returncode == 0, p.stderr
    if v == "1.1.0":  # a newer portmap speaks it, but this libcni does not
        pytest.skip("libcni 1.1.2 predates spec 1.1")
    conf = json.loads((node.dir / "net.d" / "10-podnet.conflist").read_text())
    assert [x["type"] for x in conf["plugins"]] == ["podnet-cni", "portmap"] and conf["cniVersion"] == v

    env = {"CNI_PATH": f"{node.bin_dir}:{PORTMAP.parent}", "CNI_CACHE_DIR": str(tmp_path / "cache"),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CNIDRIVER_CAPABILITY_ARGS": json.dumps(
               {"portMappings": [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}]})}

    def run(verb):
        return subprocess.run(["ip", "netns", "exec", node.ns.name, str(driver), verb, str(node.dir / "net.d"),
                               "podnet", pod.path, "hostport-c1"], env=env, capture_output=True, text=True, timeout=60)

    def connect(node_ip: str) -> str:
        return client.run(sys.executable, "-P", "-c", HOSTPORT_PAIR, "connect", node_ip, "30080").strip()

    p = run("validate")
    assert p.returncode == 0 and "portMappings" in p.stdout.strip().split(","), p.stdout + p.stderr
    p = run("add")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    # what portmap reads from prevResult: each pod IP's interface index names CNI_IFNAME with a sandbox
    assert res["cniVersion"] == v and [ip["address"] for ip in res["ips"]] == ["10.244.6.2/32", "fd00:6::2/128"]
    for ip in res["ips"]:
        itf = res["interfaces"][ip["interface"]]
        assert itf["name"] == "eth0" and itf["sandbox"] == pod.path, res
    for cmd, dnat in (("iptables", "10.244.6.2:8080"), ("ip6tables", "[fd00:6::2]:8080")):
        rules = node.ns.run(cmd, "-w", "-t", "nat", "-S")
        assert "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" in rules, rules
        assert f"--dport 30080 -j DNAT --to-destination {dnat}" in rules, rules

    srv = pod.popen(sys.executable, "-P", "-c", HOSTPORT_PAIR, "serve", stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        # through node-IP:hostPort in both families, the client's address kept
        assert connect("192.168.78.1") == "192.168.78.2"
        assert connect("fd00:78::1") == "fd00:78::2"
    finally:
        srv.kill()
        srv.wait()
    if v >= "0.4.0":  # CHECK exists from 0.4.0; libcni passes the cached result to both plugins
        p = run("check")
        assert p.returncode == 0 or "could not check ipv6 dnat" in p.stderr, p.stderr  # portmap#819, see above
        p = subprocess.run(["ip", "netns", "exec", node.ns.name, str(driver), "check", str(node.dir / "net.d"),
                            "podnet", pod.path, "hostport-c1"], env={**env, "CNIDRIVER_CAPABILITY_ARGS": ""},
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr  # without mappings portmap just passes the chain's result through

    p = run("del")
    assert p.returncode == 0, p.stderr
    for cmd in ("iptables", "ip6tables"):
        rules = node.ns.run(cmd, "-w", "-t", "nat", "-S")
        assert "30080" not in rules and "CNI-DN-" not in rules and "10.244.6.2" not in rules, rules
    assert node.reservations() == [] and node.host_veths() == []
    # nothing listens on the node's port 30080 once the DNAT is gone
    assert connect("192.168.78.1") == connect("fd00:78::1") == "refused"
    assert run("del").returncode == 0, "second DEL"
