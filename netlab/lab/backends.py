"""Which CNI backend (host-gw or VXLAN) joins each pair of lab nodes: expected and reported.

Pure. :func:`expected` applies the CNI daemon's rule to the plan (``auto``: host-gw when
the peer's address is on one of this node's subnets, which in the lab means the same
segment; VXLAN otherwise; ``host-gw`` and ``vxlan`` force one). :func:`reported` reads
what a daemon says it uses (its container log, :func:`.install.node_pod_log`): its last ``backend <mode>: <node> <CIDR> <backend>, ...``
log line (podnet.cni.overlay logs one whenever the set changes).
"""

from __future__ import annotations

import re

from podnet.netlab.lab import install
from podnet.netlab.lab.topology import LabPlan, NodePlan

__all__ = ["expected", "reported", "reported_by", "pairs"]

_LINE = re.compile(r"\bbackend (?:auto|host-gw|vxlan): (.*)$")
_PEER = re.compile(r"(\S+) (\S+/\d+) (host-gw|vxlan)")


def expected(plan: LabPlan, a: NodePlan, b: NodePlan) -> str:
    """The backend ``a``'s daemon uses to reach ``b``'s pod CIDR."""
    if plan.spec.backend != "auto":
        return plan.spec.backend
    return "host-gw" if a.segment == b.segment else "vxlan"


def pairs(plan: LabPlan) -> list[tuple[NodePlan, NodePlan]]:
    """Every unordered node pair (a before b)."""
    return [(a, b) for i, a in enumerate(plan.nodes) for b in plan.nodes[i + 1:]]


def reported(log_text: str) -> dict[str, str]:
    """node -> "host-gw" | "vxlan" from a CNI daemon's last backend summary line ({} if none).

    A node whose pod CIDRs are reached differently is reported as "host-gw+vxlan".
    """
    last = None
    for line in log_text.splitlines():
        m = _LINE.search(line)
        if m:
            last = m.group(1)
    out: dict[str, set[str]] = {}
    for item in (last or "").split(", "):
        m = _PEER.fullmatch(item.strip())
        if m:
            out.setdefault(m.group(1), set()).add(m.group(3))
    return {node: "+".join(sorted(b)) for node, b in out.items()}


def reported_by(plan: LabPlan, node: NodePlan) -> dict[str, str]:
    """What ``node``'s CNI daemon reports (the cni-daemon container log of the node DaemonSet's pod
    there); {} when it has no log."""
    return reported(install.node_pod_log(plan.run_dir, node.name, install.NODE_CONTAINERS["cni"]))
