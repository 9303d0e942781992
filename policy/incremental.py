"""Incremental verdicts: recompute only the local pods a change can affect. Pure.

:class:`Incremental` keeps the previous snapshot and verdicts of one node. Given the next
snapshot it returns exactly what :func:`podnet.policy.model.compute` returns for it (the
property tests compare the two on random change sequences), recomputing only:

- every local pod, when a Namespace, an AdminNetworkPolicy or the BaselineAdminNetworkPolicy
  changed, or on the first call (namespace labels and admin subjects reach every pod), and when a
  Node changed while an admin policy has a ``nodes`` peer (its address sets);
- the local pods a changed NetworkPolicy selects (its old or new version: added, removed, updated);
- a local pod that changed itself (labels, addresses, ports, node, phase);
- for a pod that changed anywhere in the cluster (both its old and new version): the local
  pods selected by every NetworkPolicy with a peer selector of an egress rule with named ports
  that matches it (its ports decide which per-port sets exist), and every local pod when an admin
  policy has such a peer. An egress rule with named ports and no peers resolves its ports on every
  pod: the pods its policy selects are affected by any pod change.

Any other peer selector that matches a changed pod only changes the members of the address set
it names, never the verdicts' shape: those sets are refilled (their previous members, less the
addresses of the changed pods' old versions that no selected pod still holds, plus those of their
new versions) and put into the verdicts that name them, without recomputing a pod. So a peer pod's new address,
new labels or end is a set-member change and no chain changes.

Verdicts of the other local pods are kept (with refilled sets): a pod's verdict is a function of the pod,
the policies that select it, and the members of the address sets those policies' peers name; no
policy selecting it changed, and every changed pod was tested against every peer selector in force
(a set shared by several policies is named by its selector, so each of them was tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from podnet.kube.adminnetpol import AdminPolicy
from podnet.kube.netpol import NAMESPACE_NAME_LABEL, NetworkPolicy, Peer, PolicyPod
from podnet.policy.model import AddressSet, AdminEntry, Allow, PodVerdict, Snapshot, compute, peer_identity

__all__ = ["Incremental"]


def _by_key(objs: Iterable[Any]) -> dict[str, Any]:
    return {o.key: o for o in objs}


_PolicyPeers = tuple[tuple[Peer, ...], tuple[Peer, ...], bool]


def _np_peers(pol: NetworkPolicy) -> _PolicyPeers:
    """(selector peers that only fill an address set, selector peers of egress rules with named ports,
    whether the policy depends on every pod)."""
    members = [p for r in pol.ingress for p in r.peers if p.ip_block is None]
    shape: list[Peer] = []
    for r in pol.egress:
        (shape if any(p.name for p in r.ports) else members).extend(p for p in r.peers if p.ip_block is None)
    every = any(not r.peers and any(p.name for p in r.ports) for r in pol.egress)
    return tuple(members), tuple(shape), every


def _admin_peers(pol: AdminPolicy) -> tuple[tuple[Peer, ...], tuple[Peer, ...]]:
    """(selector peers that only fill an address set, selector peers of egress rules with named ports)."""
    def peers(rules: Iterable[Any]) -> tuple[Peer, ...]:
        return tuple(Peer(p.pod_selector, p.namespace_selector) for r in rules for p in r.peers
                     if p.namespace_selector is not None)

    named = [r for r in pol.egress if any(ap.name for ap in r.ports or ())]
    return peers((*pol.ingress, *(r for r in pol.egress if r not in named))), peers(named)


def _allow(a: Allow, sets: dict[str, AddressSet]) -> Allow:
    s = None if a.peer is None else sets.get(a.peer.identity)
    return a if s is None or s == a.peer else Allow(s, a.ports)


def _entries(entries: tuple[AdminEntry, ...], sets: dict[str, AddressSet]) -> tuple[AdminEntry, ...]:
    return tuple(e if (m := _allow(e.match, sets)) is e.match else AdminEntry(e.action, m) for e in entries)


def _address_sets(v: PodVerdict) -> Iterable[AddressSet]:
    for allows in (v.ingress or (), v.egress or ()):
        for a in allows:
            if a.peer is not None:
                yield a.peer
    for entries in (v.admin_ingress, v.admin_egress, v.baseline_ingress, v.baseline_egress):
        for e in entries:
            if e.match.peer is not None:
                yield e.match.peer


def _with_sets(v: PodVerdict, sets: dict[str, AddressSet]) -> PodVerdict:
    """``v`` naming the refilled ``sets`` (by identity) instead of their previous members."""
    if not sets or not any(a.identity in sets for a in _address_sets(v)):
        return v
    return dataclasses.replace(
        v, ingress=None if v.ingress is None else tuple(_allow(a, sets) for a in v.ingress),
        egress=None if v.egress is None else tuple(_allow(a, sets) for a in v.egress),
        admin_ingress=_entries(v.admin_ingress, sets), admin_egress=_entries(v.admin_egress, sets),
        baseline_ingress=_entries(v.baseline_ingress, sets), baseline_egress=_entries(v.baseline_egress, sets))


def _is_peer(p: PolicyPod) -> bool:
    """Whether ``p``'s addresses can be members of a pod address set (as compute's peers)."""
    return bool(p.ips) and not p.host_network and not p.finished


def _ns_labels(namespaces: dict[str, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for name, ns in namespaces.items():
        labels = dict(ns.labels)
        labels.setdefault(NAMESPACE_NAME_LABEL, name)
        out[name] = labels
    return out


def _has_node_peer(pol: AdminPolicy) -> bool:
    return any(p.node_selector is not None for r in pol.egress for p in r.peers)


class Incremental:
    """The verdicts of node ``node_name``, recomputed incrementally from snapshot to snapshot."""

    def __init__(self, node_name: str | None) -> None:
        self.node_name = node_name
        self._pods: dict[str, PolicyPod] = {}
        self._policies: dict[str, NetworkPolicy] = {}
        self._namespaces: dict[str, Any] = {}
        self._admin: dict[str, AdminPolicy] = {}
        self._nodes: dict[str, Any] = {}
        self._verdicts: dict[str, PodVerdict] = {}
        self._peers: dict[str, tuple[NetworkPolicy, _PolicyPeers]] = {}
        self.last_recomputed: int | None = None
        """Pods recomputed by the last call (None: all of them)."""
        self.last_sets: dict[str, AddressSet] = {}
        """The address sets the last call refilled (members only), by identity."""
        self._by_ip: dict[str, set[str]] = {}
        """Address -> keys of the pods that hold it and can be set members."""

    @property
    def last_refilled(self) -> int:
        """Address sets refilled (members only) by the last call."""
        return len(self.last_sets)

    def _local(self, pod: PolicyPod | None) -> bool:
        return pod is not None and (self.node_name is None or pod.node_name == self.node_name)

    def _peers_of(self, pol: NetworkPolicy) -> _PolicyPeers:
        hit = self._peers.get(pol.key)
        if hit is None or hit[0] is not pol:
            hit = self._peers[pol.key] = (pol, _np_peers(pol))
        return hit[1]

    def compute(self, snap: Snapshot) -> dict[str, PodVerdict]:
        pods, policies = _by_key(snap.pods), _by_key(snap.policies)
        namespaces, admin = {n.name: n for n in snap.namespaces}, _by_key(snap.admin)
        full = (not self._namespaces and not self._pods) or namespaces != self._namespaces or admin != self._admin
        nodes = _by_key(snap.nodes)
        full = full or (nodes != self._nodes and any(_has_node_peer(a) for a in admin.values()))
        if full:
            out = compute(snap, self.node_name)
            self.last_recomputed, self.last_sets = None, {}
            self._by_ip = {}
            for p in snap.pods:
                if _is_peer(p):
                    for ip in p.ips:
                        self._by_ip.setdefault(ip, set()).add(p.key)
        else:
            changed = [(self._pods.get(k), pods.get(k)) for k in pods.keys() | self._pods.keys()
                       if self._pods.get(k) is not pods.get(k) and self._pods.get(k) != pods.get(k)]
            ns_labels = _ns_labels(namespaces) if changed else {}
            for old, new in changed:
                for ip in old.ips if old is not None and _is_peer(old) else ():
                    self._by_ip.get(ip, set()).discard(old.key)
                for ip in new.ips if new is not None and _is_peer(new) else ():
                    self._by_ip.setdefault(ip, set()).add(new.key)
            affected, refill = self._affected(pods, policies, admin, changed, ns_labels)
            fresh = compute(snap, self.node_name, affected) if affected else {}
            sets = self._refilled(refill, pods, changed, ns_labels) if refill else {}
            out = {k: _with_sets(v, sets) for k, v in self._verdicts.items() if k not in affected}
            out.update(fresh)
            self.last_recomputed, self.last_sets = len(affected), sets
        self._pods, self._policies, self._namespaces, self._admin = pods, policies, namespaces, admin
        self._nodes = nodes
        self._peers = {k: v for k, v in self._peers.items() if k in policies}
        self._verdicts = out
        return dict(out)

    def _refilled(self, refill: dict[str, tuple[str, Peer]], pods: dict[str, PolicyPod],
                  changed: list[tuple[PolicyPod | None, PolicyPod | None]],
                  ns_labels: dict[str, dict[str, str]]) -> dict[str, AddressSet]:
        """The sets of ``refill`` that the previous verdicts name, with their members brought up to
        ``pods`` from the ``changed`` (old, new) pod versions."""
        previous: dict[str, AddressSet] = {}
        for v in self._verdicts.values():
            for a in _address_sets(v):
                if a.identity in refill:
                    previous.setdefault(a.identity, a)
        versions = [(old, new, None if old is None else dict(old.labels), None if new is None else dict(new.labels))
                    for old, new in changed]
        out: dict[str, AddressSet] = {}
        for ident, aset in previous.items():
            ns, peer = refill[ident]

            def selects(p: PolicyPod | None, labels: dict[str, str] | None) -> bool:
                return p is not None and _is_peer(p) and _matches(ns, peer, p, labels or {}, ns_labels)

            ips = set(aset.ips)
            for old, _new, old_labels, _ in versions:
                if selects(old, old_labels):
                    for ip in old.ips:  # type: ignore[union-attr]
                        if not any(selects(pods[k], dict(pods[k].labels)) for k in self._by_ip.get(ip, ())):
                            ips.discard(ip)
            for _old, new, _, new_labels in versions:
                if selects(new, new_labels):
                    ips.update(new.ips)  # type: ignore[union-attr]
            out[ident] = AddressSet(ident, tuple(sorted(ips)))
        return out

    def _affected(self, pods: dict[str, PolicyPod], policies: dict[str, NetworkPolicy], admin: dict[str, AdminPolicy],
                  changed: list[tuple[PolicyPod | None, PolicyPod | None]],
                  ns_labels: dict[str, dict[str, str]]) -> tuple[set[str], dict[str, tuple[str, Peer]]]:
        """(local pods to recompute, set identity -> (policy namespace, peer) of the sets to refill)."""
        # (namespace, pod selector) pairs whose selected local pods must be recomputed
        touched: list[tuple[str, Any]] = []
        refill: dict[str, tuple[str, Peer]] = {}
        for key in policies.keys() | self._policies.keys():
            old, new = self._policies.get(key), policies.get(key)
            if old is not new and old != new:
                touched += [(p.namespace, p.pod_selector) for p in (old, new) if p is not None]
        out: set[str] = set()
        if changed:
            for old, new in changed:
                for p in (old, new):
                    if self._local(p):
                        out.add(p.key)
            versions = [(p, dict(p.labels)) for pair in changed for p in pair if p is not None]
            memo: dict[tuple[str, Peer], bool] = {}  # many policies share a peer selector

            def hit(policy_ns: str, peer: Peer) -> bool:
                scope = (policy_ns if peer.namespace_selector is None else "*", peer)
                m = memo.get(scope)
                if m is None:
                    m = memo[scope] = any(_matches(policy_ns, peer, p, labels, ns_labels) for p, labels in versions)
                    if m:
                        refill[peer_identity(policy_ns, peer)] = (policy_ns, peer)
                return m

            for pol in policies.values():
                members, shape, every = self._peers_of(pol)
                if every or any(hit(pol.namespace, peer) for peer in shape):
                    touched.append((pol.namespace, pol.pod_selector))
                for peer in members:
                    hit(pol.namespace, peer)  # refills the set it names when it selects a changed pod
            for a in admin.values():
                members, shape = _admin_peers(a)
                if any(hit("", peer) for peer in shape):
                    return {k for k, p in pods.items() if self._local(p)} | out, {}
                for peer in members:
                    hit("", peer)
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
        return out, refill


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
