"""Incremental verdicts: recompute only the local pods a change can affect. Pure.

:class:`Incremental` keeps the previous snapshot and verdicts of one node. Given the next
snapshot it returns exactly what :func:`podnet.policy.model.compute` returns for it (the
property tests compare the two on random change sequences), recomputing only:

- every local pod, when a Namespace, an AdminNetworkPolicy or the BaselineAdminNetworkPolicy
  changed, or on the first call (namespace labels and admin subjects reach every pod);
- the local pods a changed NetworkPolicy selects (its old or new version: added, removed, updated);
- a local pod that changed itself (labels, addresses, ports, node, phase);
- for a pod that changed anywhere in the cluster (both its old and new version): the local
  pods selected by every NetworkPolicy with a peer selector that matches it, and every local pod
  when an admin policy has such a peer. An egress rule with named ports and no peers resolves
  its ports on every pod: the pods its policy selects are affected by any pod change.

Verdicts of the other local pods are kept as they were: a pod's verdict is a function of the pod,
the policies that select it, and the members of the address sets those policies' peers name; no
policy selecting it changed, and every changed pod was tested against every peer selector in force
(a set shared by several policies is named by its selector, so each of them was tested).
"""

from __future__ import annotations

from typing import Any, Iterable

from podnet.kube.adminnetpol import AdminPolicy
from podnet.kube.netpol import NAMESPACE_NAME_LABEL, NetworkPolicy, Peer, PolicyPod
from podnet.policy.model import PodVerdict, Snapshot, compute

__all__ = ["Incremental"]


def _by_key(objs: Iterable[Any]) -> dict[str, Any]:
    return {o.key: o for o in objs}


def _np_peers(pol: NetworkPolicy) -> tuple[tuple[Peer, ...], bool]:
    """(selector peers of a NetworkPolicy, whether it depends on every pod)."""
    peers = tuple(p for r in (*pol.ingress, *pol.egress) for p in r.peers if p.ip_block is None)
    every = any(not r.peers and any(p.name for p in r.ports) for r in pol.egress)
    return peers, every


def _admin_peers(pol: AdminPolicy) -> tuple[Peer, ...]:
    return tuple(Peer(p.pod_selector, p.namespace_selector) for r in (*pol.ingress, *pol.egress) for p in r.peers
                 if p.namespace_selector is not None)


class Incremental:
    """The verdicts of node ``node_name``, recomputed incrementally from snapshot to snapshot."""

    def __init__(self, node_name: str | None) -> None:
        self.node_name = node_name
        self._pods: dict[str, PolicyPod] = {}
        self._policies: dict[str, NetworkPolicy] = {}
        self._namespaces: dict[str, Any] = {}
        self._admin: dict[str, AdminPolicy] = {}
        self._verdicts: dict[str, PodVerdict] = {}
        self._peers: dict[str, tuple[NetworkPolicy, tuple[Peer, ...], bool]] = {}
        self.last_recomputed: int | None = None
        """Pods recomputed by the last call (None: all of them)."""

    def _local(self, pod: PolicyPod | None) -> bool:
        return pod is not None and (self.node_name is None or pod.node_name == self.node_name)

    def _peers_of(self, pol: NetworkPolicy) -> tuple[tuple[Peer, ...], bool]:
        hit = self._peers.get(pol.key)
        if hit is None or hit[0] is not pol:
            peers, every = _np_peers(pol)
            hit = self._peers[pol.key] = (pol, peers, every)
        return hit[1], hit[2]

    def compute(self, snap: Snapshot) -> dict[str, PodVerdict]:
        pods, policies = _by_key(snap.pods), _by_key(snap.policies)
        namespaces, admin = {n.name: n for n in snap.namespaces}, _by_key(snap.admin)
        full = (not self._namespaces and not self._pods) or namespaces != self._namespaces or admin != self._admin
        if full:
            out = compute(snap, self.node_name)
            self.last_recomputed = None
        else:
            affected = self._affected(pods, policies, namespaces, admin)
            fresh = compute(snap, self.node_name, affected) if affected else {}
            out = {k: v for k, v in self._verdicts.items() if k not in affected}
            out.update(fresh)
            self.last_recomputed = len(affected)
        self._pods, self._policies, self._namespaces, self._admin = pods, policies, namespaces, admin
        self._peers = {k: v for k, v in self._peers.items() if k in policies}
        self._verdicts = out
        return dict(out)

    def _affected(self, pods: dict[str, PolicyPod], policies: dict[str, NetworkPolicy],
                  namespaces: dict[str, Any], admin: dict[str, AdminPolicy]) -> set[str]:
        # (namespace, pod selector) pairs whose selected local pods must be recomputed
        touched: list[tuple[str, Any]] = []
        for key in policies.keys() | self._policies.keys():
            old, new = self._policies.get(key), policies.get(key)
            if old is not new and old != new:
                touched += [(p.namespace, p.pod_selector) for p in (old, new) if p is not None]
        changed = [(self._pods.get(k), pods.get(k)) for k in pods.keys() | self._pods.keys()
                   if self._pods.get(k) is not pods.get(k) and self._pods.get(k) != pods.get(k)]
        out: set[str] = set()
        if changed:
            for old, new in changed:
                for p in (old, new):
                    if self._local(p):
                        out.add(p.key)
            ns_labels = {}
            for name, ns in namespaces.items():
                labels = dict(ns.labels)
                labels.setdefault(NAMESPACE_NAME_LABEL, name)
                ns_labels[name] = labels
            versions = [(p, dict(p.labels)) for pair in changed for p in pair if p is not None]
            for pol in policies.values():
                peers, every = self._peers_of(pol)
                if every or any(_matches(pol.namespace, peer, p, labels, ns_labels)
                                for peer in peers for p, labels in versions):
                    touched.append((pol.namespace, pol.pod_selector))
            if any(_matches("", peer, p, labels, ns_labels) for a in admin.values() for peer in _admin_peers(a)
                   for p, labels in versions):
                return {k for k, p in pods.items() if self._local(p)} | out
        if touched:
            by_ns: dict[str, list[Any]] = {}
            for ns, sel in touched:
                by_ns.setdefault(ns, []).append(sel)
            for k, p in pods.items():
                sels = by_ns.get(p.namespace)
                if sels and self._local(p):
                    labels = dict(p.labels)
                    if any(sel.matches(labels) for sel in sels):
                        out.add(k)
        return out


def _matches(policy_ns: str, peer: Peer, pod: PolicyPod, labels: dict[str, str],
             ns_labels: dict[str, dict[str, str]]) -> bool:
    """Whether ``peer`` (of a policy in ``policy_ns``) selects ``pod`` (its ``labels``), whatever the
    pod's phase or addresses."""
    if peer.namespace_selector is None:
        if pod.namespace != policy_ns:
            return False
    else:
        nl = ns_labels.get(pod.namespace)
        if nl is None or not peer.namespace_selector.matches(nl):
            return False
    return peer.pod_selector is None or peer.pod_selector.matches(labels)
