"""Nodes as the policy engine sees them: the peers of AdminNetworkPolicy ``nodes`` egress rules.

An egress peer ``nodes: <label selector>`` (policy.networking.k8s.io/v1alpha1) selects Node
objects by their labels; the traffic it matches is traffic to those nodes' addresses. The engine
takes each node's ``InternalIP`` addresses (both families: a dual-stack node has one of each), as
the network-policy-api reference implementations do, and :func:`podnet.policy.model.compute`
turns each selector into one address set named by the selector, so a node joining, leaving,
being relabelled or changing its addresses changes the set's members, never the rules.

:class:`PolicyNode` keeps only what a verdict depends on (name, labels, InternalIPs): Node status
heartbeats and condition changes parse to an equal value, so they never trigger a recompute.
Nodes are watched only when the API serves the admin kinds (:func:`node_informer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from podnet.kube import objects as o
from podnet.kube.resources import Resource

__all__ = ["PolicyNode", "parse_policy_node", "POLICY_NODES", "node_informer"]


@dataclass(frozen=True, slots=True)
class PolicyNode:
    name: str
    labels: o.Labels = ()
    ips: tuple[str, ...] = ()
    """InternalIP addresses, as the Node lists them."""

    @property
    def key(self) -> str:
        return self.name


def parse_policy_node(raw: Mapping[str, Any]) -> PolicyNode:
    """A Node validated as :func:`podnet.kube.objects.parse_node` does, reduced to name, labels, InternalIPs."""
    node = o.parse_node(raw)
    return PolicyNode(node.name, node.labels, node.ips("InternalIP"))


POLICY_NODES = Resource("/api/v1", "nodes", "Node", False, parse_policy_node)


def node_informer(client: Any) -> Any:
    """The Nodes informer (RBAC: list+watch nodes)."""
    from podnet.kube.informer import Informer

    return Informer(client, POLICY_NODES)
