"""The podnet parts a lab runs (CNI, proxy, policy, DNS), their command lines, and whether they exist.

A part is *usable* when its console script answers ``--help`` for the
subcommand the lab needs. When the podnet CNI is not usable the lab falls back
to the reference ``bridge`` + ``host-local`` plugins from
containernetworking-plugins, still exec'd exactly as a runtime does, and says
so; there is no fallback for the proxy, the policy engine or DNS: the lab says
they are missing and the checks that need them fail.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from podnet.netlab.lab import credentials
from podnet.netlab.lab.topology import LabPlan, NodePlan

__all__ = ["script", "usable", "NodePaths", "node_paths", "cni_daemon_cmd", "cni_install_cmd", "proxy_cmd",
           "policy_cmd", "POLICY_HEALTH_PORT", "dns_cmd", "reference_conflist", "REFERENCE_CNI_DIR"]

REFERENCE_CNI_DIR = "/usr/lib/cni"


def script(name: str) -> str:
    """A console script of this installation (next to the running Python)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


HELP_ARGV = {
    "cni": ["podnet-cni", "install", "--help"],
    "cni-daemon": ["podnet-cni", "daemon", "--help"],
    "proxy": ["podnet-proxy", "--help"],
    "policy": ["podnet-policy", "--help"],
    "dns": ["podnet-dns", "--help"],
}


@functools.cache
def _usable_all() -> dict[str, bool]:
    """Ask every part's ``--help`` at once (in parallel; once per process)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    running = {}
    for part, argv in HELP_ARGV.items():
        try:
            running[part] = subprocess.Popen([script(argv[0]), *argv[1:]], stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, env=env)
        except OSError:
            pass
    out = {}
    for part, p in running.items():
        try:
            text, _ = p.communicate(timeout=20)
            out[part] = p.returncode == 0 and b"usage" in text.lower()
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            out[part] = False
    return out


def usable(part: str) -> bool:
    """True when the part's entry point answers ``--help``."""
    return _usable_all().get(part, False)


class NodePaths:
    """Per-node files: the CNI daemon socket, its data dir, and the runtime's bin/conf dirs."""

    def __init__(self, plan: LabPlan, node: NodePlan) -> None:
        self.socket = plan.run_dir / node.name / "cni.sock"
        self.data_dir = plan.data_dir / node.name
        self.bin_dir = plan.data_dir / node.name / "cni" / "bin"
        self.conf_dir = plan.data_dir / node.name / "cni" / "net.d"


def node_paths(plan: LabPlan, node: NodePlan) -> NodePaths:
    return NodePaths(plan, node)


def cni_install_cmd(p: NodePaths) -> list[str]:
    return [script("podnet-cni"), "install", "--bin-dir", str(p.bin_dir), "--conf-dir", str(p.conf_dir),
            "--socket", str(p.socket), "--data-dir", str(p.data_dir)]


def cni_daemon_cmd(plan: LabPlan, node: NodePlan, p: NodePaths) -> list[str]:
    return [script("podnet-cni"), "daemon", "--socket", str(p.socket), "--node-name", node.name,
            "--master", plan.master, "--cluster-cidr", plan.spec.cluster_cidr, "--data-dir", str(p.data_dir),
            "--kubeconfig", str(credentials.kubeconfig_path(plan, f"cni-{node.name}")),
            "--policy-socket", str(policy_socket(p))]


def policy_socket(p: NodePaths) -> Path:
    """Where the node's policy engine answers the CNI daemon: while the engine listens there, every ADD
    waits until the new pod's NetworkPolicy state is in the kernel, so an isolated pod is never
    reachable before its rules (the lab does not pass --policy-required: a node without a running
    engine still gets pods)."""
    return p.socket.parent / "policy.sock"


# kube-proxy's default --iptables-min-sync-period is 1 s; the lab uses 100 ms so that what the
# check and the benchmarks see is the data plane's programming latency, not the rate limit.
PROXY_MIN_SYNC_PERIOD = "100ms"


def proxy_cmd(plan: LabPlan, node: NodePlan, min_sync_period: str = PROXY_MIN_SYNC_PERIOD) -> list[str]:
    return [script("podnet-proxy"), "--master", plan.master, "--hostname-override", node.name,
            "--iptables-min-sync-period", min_sync_period,
            "--cluster-cidr", plan.spec.cluster_cidr, "--healthz-bind-address", "0.0.0.0:10256",
            "--metrics-bind-address", "127.0.0.1:10249",
            "--kubeconfig", str(credentials.kubeconfig_path(plan, f"proxy-{node.name}"))]


# podnet-policy's /healthz, /livez and /metrics: on the node's loopback, as in deploy/podnet.yaml.
POLICY_HEALTH_PORT = 9968


def policy_cmd(plan: LabPlan, node: NodePlan, min_sync_period: str = PROXY_MIN_SYNC_PERIOD) -> list[str]:
    """The NetworkPolicy engine of one node (same pacing as the proxy)."""
    return [script("podnet-policy"), "--master", plan.master, "--hostname-override", node.name,
            "--min-sync-period", min_sync_period, "--metrics-bind-address", f"127.0.0.1:{POLICY_HEALTH_PORT}",
            "--kubeconfig", str(credentials.kubeconfig_path(plan, f"policy-{node.name}")),
            "--cni-socket", str(policy_socket(node_paths(plan, node)))]


def dns_cmd(plan: LabPlan) -> list[str]:
    return [script("podnet-dns"), "--master", plan.master, "--listen", "0.0.0.0:53",
            "--upstream", f"{plan.upstream_ip}:53", "--health-listen", "0.0.0.0:8080",
            "--ready-listen", "0.0.0.0:8181", "--metrics-listen", "0.0.0.0:9153",
            "--kubeconfig", str(credentials.kubeconfig_path(plan, "dns"))]


def reference_conflist(pod_cidr: str, plan: LabPlan, node: NodePlan) -> str:
    """FALLBACK network config: the reference bridge + host-local plugins for one node."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": f"pnl-{plan.spec.name}-fallback",
        "plugins": [{
            "type": "bridge", "bridge": "pnl-cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]],
                     "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(plan.data_dir / node.name / "fallback-ipam")},
        }],
    }, indent=2)
