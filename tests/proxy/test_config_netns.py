"""podnet-proxy started as a process with kubeadm's kube-proxy ConfigMap, verbatim (root).

Topology (namespaces pnt-cfg-*): a node namespace routing for one endpoint pod
(10.244.1.1) and one client pod (10.244.3.3), inside kubeadm's clusterCIDR over point-to-point veths; the lab API
server runs inside the node namespace on 127.0.0.1 with one Service
(10.96.0.41:80 -> 10.244.1.1:8080). The config file is the fixture as kubeadm wrote
it; only flags point the proxy at this API server and name the node, as kubeadm's
DaemonSet passes --hostname-override.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.host.netns import NetnsPool

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

HERE = Path(__file__).parent
PROBE, APISERVE = str(HERE / "netprobe.py"), str(HERE / "apiserve.py")
KUBEADM = HERE / "kubeadm_kube_proxy_config.conf"
PY = sys.executable
PROXY = str(Path(PY).with_name("podnet-proxy"))
NODE = "node-a"
KLOG = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d\d\.\d{6} [ \d]{7,} [\w.]+:\d+\] .*")


@pytest.fixture
def lab():
    pool = NetnsPool("pnt-cfg-")
    procs: list[subprocess.Popen] = []
    try:
        node = pool.netns("node")
        node.sysctl("net.ipv4.ip_forward", "1")
        nss = {"node": node}
        for i, (name, ip) in enumerate((("ep1", "10.244.1.1"), ("client", "10.244.3.3"))):
            pod = pool.netns(name)
            pool.veth(node, f"p{i}", pod, "eth0")
            node.ip("addr", "add", "10.244.0.1/32", "dev", f"p{i}")
            node.ip("route", "add", f"{ip}/32", "dev", f"p{i}")
            pod.ip("addr", "add", f"{ip}/32", "dev", "eth0")
            pod.ip("route", "add", "10.244.0.1", "dev", "eth0")
            pod.ip("route", "add", "default", "via", "10.244.0.1")
            nss[name] = pod
        srv = nss["ep1"].popen(PY, "-P", PROBE, "server", "ep1", "8080", "120", stdout=subprocess.PIPE, text=True)
        procs.append(srv)
        assert srv.stdout.readline().strip() == "ready"
        api = node.popen(PY, "-P", APISERVE, "10.244.1.1", "120", f"{NODE}=10.244.0.1",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(api)
        url = api.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        nss["url"] = url
        yield nss
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pool.close()


def kubeconfig(tmp_path: Path, url: str) -> Path:
    f = tmp_path / "kubeconfig.conf"
    f.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": url}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "users": [{"name": "lab", "user": {}}],
    }))
    return f


FETCH = ("import sys, time, urllib.request as u\n"
         "for url in sys.argv[1:]:\n"
         "    for _ in range(300):\n"
         "        try: body = u.urlopen(url, timeout=2).read().decode()\n"
         "        except Exception: body = ''\n"
         "        if body and '\"healthy\": false' not in body and '1970-01-01' not in body: print(body); break\n"
         "        time.sleep(0.1)\n")


def proxy_pid(launcher: int) -> int:
    """The podnet-proxy process: ``launcher`` itself or its child (``ip netns exec`` may fork)."""
    for pid in [launcher] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))
        if (pid == launcher or ppid == launcher) and b"podnet-proxy" in cmd and not cmd.startswith(b"ip\0"):
            return pid
    raise AssertionError("podnet-proxy process not found")


def probe(ns, *args: str) -> dict:
    return json.loads(ns.run(PY, "-P", PROBE, *args, timeout=60))


def test_kubeadm_config_serves_and_sigterm_exits_0(lab, tmp_path):
    node = lab["node"]
    flags = ["--config", str(KUBEADM), "--kubeconfig", str(kubeconfig(tmp_path, lab["url"])),
             "--hostname-override", NODE]
    proxy = node.popen(PROXY, *flags, stderr=subprocess.PIPE, text=True)
    try:
        # healthz and metrics on kube-proxy's default addresses, from the empty fields
        out = node.run(PY, "-P", "-c", FETCH, "http://127.0.0.1:10256/healthz", "http://127.0.0.1:10249/metrics",
                       timeout=60)
        assert '"healthy": true' in out and "kubeproxy_sync_proxy_rules_duration_seconds" in out
        assert probe(lab["client"], "tcp", "10.96.0.41", "80", "3") == {"ep1 10.244.3.3": 3}
        # kube-proxy's conntrack defaults, written in the node namespace (per-namespace sysctls)
        assert node.run("sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_established").strip() == "86400"
        assert node.run("sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_close_wait").strip() == "3600"
        oom = Path(f"/proc/{proxy_pid(proxy.pid)}/oom_score_adj").read_text().strip()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            _, err = proxy.communicate(timeout=30)  # generous bound: "within seconds"
        except subprocess.TimeoutExpired:
            proxy.kill()
            _, err = proxy.communicate()
            pytest.fail("podnet-proxy did not exit within 30 s of SIGTERM:\n" + err[-3000:])
    assert proxy.returncode == 0, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(KLOG.fullmatch(ln) for ln in lines), err[-3000:]
    assert "rules left in place" in err and "Traceback" not in err
    # kube-proxy's default oomScoreAdj (-999): applied, or (without CAP_SYS_RESOURCE) said so
    assert oom == "-999" or "cannot set oom_score_adj to -999 (Permission denied)" in err, (oom, err[-3000:])
    # rules stay after SIGTERM
    assert probe(lab["client"], "tcp", "10.96.0.41", "80", "1") == {"ep1 10.244.3.3": 1}


def test_zero_sync_period_flag_and_json_logs_still_stop_on_sigterm(lab, tmp_path):
    node = lab["node"]
    proxy = node.popen(PROXY, "--config", str(KUBEADM), "--kubeconfig", str(kubeconfig(tmp_path, lab["url"])),
                       "--hostname-override", NODE, "--iptables-sync-period", "0s", "--iptables-min-sync-period", "0s",
                       "--logging-format", "json", stderr=subprocess.PIPE, text=True)
    try:
        out = node.run(PY, "-P", "-c", FETCH, "http://127.0.0.1:10256/healthz", timeout=60)
        assert '"healthy": true' in out
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            _, err = proxy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            _, err = proxy.communicate()
            pytest.fail("podnet-proxy did not exit within 30 s of SIGTERM:\n" + err[-3000:])
    assert proxy.returncode == 0, err[-3000:]
    records = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    assert records and all({"ts", "caller", "msg"} <= set(r) for r in records)
    assert any(r["msg"] == "stopped; rules left in place" and r["v"] == 0 for r in records)


def test_config_error_exits_2_before_touching_the_node(lab, tmp_path):
    node = lab["node"]
    bad = tmp_path / "config.conf"
    bad.write_text(KUBEADM.read_text().replace('mode: ""', "mode: ipvs"))
    before = node.run("iptables-save")
    res = subprocess.run(["ip", "netns", "exec", node.name, PROXY, "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert KLOG.fullmatch(line) and 'mode: Invalid value: "ipvs"' in line
    assert node.run("iptables-save") == before


def test_missing_capabilities_is_one_line_and_status_2(lab):
    node = lab["node"]
    res = subprocess.run(["ip", "netns", "exec", node.name, "capsh", "--drop=cap_net_admin,cap_net_raw", "--", "-c",
                          f"exec {PROXY} --master {lab['url']} --hostname-override {NODE}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    assert KLOG.fullmatch(line) and "Permission denied" in line and "CAP_NET_ADMIN" in line
