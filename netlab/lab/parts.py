"""Where a lab node's podnet files live, and the reference-plugin anchor's network config.

podnet's daemons are started only by the manifest (deploy/podnet.yaml, see :mod:`.install`); this
module names the places the lab gives them: each node's own root (``<data-dir>/nodes/<node>/root``,
the host file system of its hostPath volumes: /opt/cni/bin, /etc/cni/net.d, /run/podnet, ...) and
the image directory of files podnet's image carries beyond the console scripts (the statically
linked CNI shim). ``--cni reference`` puts the reference ``bridge`` + ``host-local`` plugins from
containernetworking-plugins in per-node directories of their own, exec'd exactly as a runtime does.
"""

from __future__ import annotations

import json
from pathlib import Path

from podnet.netlab.lab.topology import LabPlan, NodePlan

__all__ = ["NodePaths", "node_paths", "node_root", "image_dir", "STATIC_SHIM", "PROXY_MIN_SYNC_PERIOD", "CNI_HEALTH_PORT", "POLICY_HEALTH_PORT",
           "reference_conflist", "REFERENCE_CNI_DIR"]

REFERENCE_CNI_DIR = "/usr/lib/cni"


class NodePaths:
    """``--cni reference``: the node's plugin and network config directories."""

    def __init__(self, plan: LabPlan, node: NodePlan) -> None:
        self.bin_dir = plan.data_dir / node.name / "cni" / "bin"
        self.conf_dir = plan.data_dir / node.name / "cni" / "net.d"


def node_paths(plan: LabPlan, node: NodePlan) -> NodePaths:
    return NodePaths(plan, node)


def node_root(plan: LabPlan, node: NodePlan) -> Path:
    """The node's own root: hostPath volumes of its pods live under it (the kubelet's --root-dir).

    Under the lab's data dir (``/var/lib/podnet/<lab>``), not its run dir: the manifest mounts the
    node's /run/podnet into its containers and, with ``--cni-node-view``, into the plugin's view,
    which would hide ``/run/podnet/<lab>/...`` (the plugin's own path) there. /var/lib/podnet/cni,
    the one hostPath under /var/lib/podnet, hides only a lab named ``cni``."""
    return plan.data_dir / "nodes" / node.name / "root"


def image_dir(plan: LabPlan) -> Path:
    """Files of podnet's image the host lacks, laid over / for its containers (the kubelets' --image-dir)."""
    return plan.run_dir / "image"


STATIC_SHIM = Path("usr/lib/podnet/podnet-cni-static")
"""The statically linked CNI plugin in podnet's image (the install container's --static-shim)."""

# kube-proxy's default minSyncPeriod is 1 s; the lab writes 100 ms into the installed podnet-proxy
# ConfigMap so that what the check and the benchmarks see is the data plane's programming latency,
# not the rate limit (the manifest's policy container already runs with --min-sync-period=100ms).
PROXY_MIN_SYNC_PERIOD = "100ms"

# podnet-cni daemon's /healthz (JSON: podCIDRs, routesSynced, ...) on the node: the manifest's
# --health-listen of the cni-daemon container.
CNI_HEALTH_PORT = 9967

# podnet-policy's /healthz, /livez and /metrics on the node's loopback (the manifest's
# --metrics-bind-address of the policy container).
POLICY_HEALTH_PORT = 9968


def reference_conflist(pod_cidr: str, plan: LabPlan, node: NodePlan) -> str:
    """``--cni reference`` network config: the reference bridge + host-local plugins for one node."""
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
