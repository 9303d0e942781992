"""Desired policy state: per local pod, its ingress and egress verdicts. Pure.

:func:`compute` takes frozen snapshots (NetworkPolicies, Pods, Namespaces) and
a node name and returns, for every pod the node enforces (scheduled there, not
hostNetwork, not finished, with an address), one :class:`PodVerdict`:

- a direction is isolated (``ingress``/``egress`` not None) when at least one
  policy of the pod's namespace selects the pod and lists that policy type;
  an isolated direction allows exactly the union of its :class:`Allow` entries
  (an empty tuple: nothing passes);
- an :class:`Allow` is a peer match (None: every address; otherwise one
  :class:`AddressSet`) and the port ranges it opens (None: every port and
  protocol). A rule whose named ports resolve to nothing opens nothing: it
  never widens to all ports;
- named ports resolve on the destination pod's own container ports, per
  protocol: for ingress on the target pod itself, for egress on each peer
  pod (peer pods are grouped into one set per resolved port). A named port
  never matches an ipBlock destination, which has no container ports;
- address sets are named by what selects their members (the policy's
  namespace and the peer's selectors, or the ipBlock), not by the members, so
  pod churn changes a set's contents but never the rules that reference it;
  a rule's ipBlocks without excepts share one set (their union), each ipBlock
  with excepts has its own;
- peer pods are pods of every node, except hostNetwork pods (their address is
  the node's) and finished pods (their address may be reused). A namespace
  the snapshot lacks has no labels, so no namespaceSelector matches its pods.
  Every namespace carries ``kubernetes.io/metadata.name`` as kube-apiserver sets it.

AdminNetworkPolicy and BaselineAdminNetworkPolicy (``Snapshot.admin``) add, per
direction, ordered :class:`AdminEntry` lists evaluated around the NetworkPolicy
verdict (sigs.k8s.io/network-policy-api ``apis/v1alpha1``):

- ``admin_*``: the rules of every AdminNetworkPolicy whose subject selects the
  pod, lowest ``priority`` first (ties by name: upstream leaves them undefined),
  each policy's rules in order. The first entry that matches decides: Allow and
  Deny are final, Pass skips the remaining admin entries;
- then the NetworkPolicy verdict when NetworkPolicies isolate that direction;
- otherwise ``baseline_*`` (the BaselineAdminNetworkPolicy's rules in order,
  left empty when NetworkPolicy isolates the direction: they could never
  apply): the first match decides; no match allows.

An admin peer matches pods as a NetworkPolicy peer with a namespaceSelector does
(hostNetwork and finished pods excluded); ``networks`` are CIDR sets; an egress
``nodes`` peer is the InternalIP addresses of the Nodes (``Snapshot.nodes``) its
selector matches, one set per selector (``nodes|<selector>``: node churn changes
its members, not the rules; no node matched: a set that matches nothing). A named
port has no protocol in these APIs: it matches the container port of that name
whatever its protocol. A peer kind of a newer API version fails closed, as the
API asks of a peer an implementation does not understand: a rule with one
matches nothing when it is an Allow, and everything (as a Deny) when it is a
Deny or Pass.

:func:`allowed` evaluates the result for one packet, the reference for the
renderer and for truth-table tests.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Container, Iterable, Mapping

from podnet.kube import goip
from podnet.kube.adminnetpol import ADMIN, BASELINE, AdminPolicy, AdminRule
from podnet.kube.netpol import NAMESPACE_NAME_LABEL, IPBlock, NetworkPolicy, Peer, PolicyPod, PolicyPort, Rule, Selector
from podnet.kube.objects import Namespace
from podnet.policy.nodes import PolicyNode

__all__ = ["PortRange", "AddressSet", "Allow", "AdminEntry", "PodVerdict", "Snapshot", "compute", "allowed",
           "peer_identity"]


@dataclass(frozen=True, slots=True)
class PortRange:
    """``protocol`` ports ``lo``..``hi``; ``lo == 0``: every port of ``protocol``."""

    protocol: str
    lo: int = 0
    hi: int = 0

    def contains(self, protocol: str, port: int) -> bool:
        return protocol == self.protocol and (self.lo == 0 or self.lo <= port <= self.hi)


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Addresses named by ``identity``: pod addresses (``ips``), one ipBlock with excepts
    (``block``), or the union of a rule's ipBlocks without excepts (``cidrs``)."""

    identity: str
    ips: tuple[str, ...] = ()
    block: IPBlock | None = None
    cidrs: tuple[str, ...] = ()

    def family_members(self, family: int) -> tuple[str, ...]:
        if self.block is not None:
            return (self.block.cidr,) if self.block.family == family else ()
        return tuple(a for a in (self.cidrs or self.ips) if (":" in a) == (family == 6))

    def contains(self, ip: str) -> bool:
        if self.block is not None:
            return _in_cidr(ip, self.block.cidr) and not any(_in_cidr(ip, e) for e in self.block.excepts)
        if self.cidrs:
            return any(_in_cidr(ip, c) for c in self.cidrs)
        return ip in self.ips


def _block_sets(blocks: Iterable[IPBlock]) -> list[AddressSet]:
    """One set per ipBlock with excepts; every ipBlock without excepts merged into one set
    (a union needs no per-block set: 10,000 plain blocks are one ipset, not 10,000)."""
    out, plain = [], []
    for b in blocks:
        if b.excepts:
            out.append(AddressSet(f"block|{b!r}", block=b))
        else:
            plain.append(b.cidr)
    if plain:
        cidrs = tuple(sorted(set(plain)))
        digest = hashlib.sha256("\n".join(cidrs).encode()).hexdigest()
        out.append(AddressSet(f"cidrs|{digest}", cidrs=cidrs))
    return out


@dataclass(frozen=True, slots=True)
class Allow:
    peer: AddressSet | None
    ports: tuple[PortRange, ...] | None

    def matches(self, peer_ip: str, protocol: str, port: int) -> bool:
        if self.peer is not None and not self.peer.contains(peer_ip):
            return False
        return self.ports is None or any(r.contains(protocol, port) for r in self.ports)


@dataclass(frozen=True, slots=True)
class AdminEntry:
    """One ordered admin or baseline entry: ``action`` (Allow, Deny, Pass) for what ``match`` matches."""

    action: str
    match: Allow


@dataclass(frozen=True, slots=True)
class PodVerdict:
    key: str
    ips: tuple[str, ...]
    ingress: tuple[Allow, ...] | None
    egress: tuple[Allow, ...] | None
    admin_ingress: tuple[AdminEntry, ...] = ()
    admin_egress: tuple[AdminEntry, ...] = ()
    baseline_ingress: tuple[AdminEntry, ...] = ()
    baseline_egress: tuple[AdminEntry, ...] = ()

    @property
    def judges_ingress(self) -> bool:
        return self.ingress is not None or bool(self.admin_ingress or self.baseline_ingress)

    @property
    def judges_egress(self) -> bool:
        return self.egress is not None or bool(self.admin_egress or self.baseline_egress)


@dataclass(frozen=True, slots=True)
class Snapshot:
    policies: tuple[NetworkPolicy, ...]
    pods: tuple[PolicyPod, ...]
    namespaces: tuple[Namespace, ...]
    admin: tuple[AdminPolicy, ...] = ()
    """AdminNetworkPolicies and the BaselineAdminNetworkPolicy."""
    nodes: tuple[PolicyNode, ...] = ()
    """The cluster's Nodes (the peers of admin ``nodes`` rules)."""


def _in_cidr(ip: str, cidr: str) -> bool:
    if (":" in ip) != (":" in cidr):
        return False
    net, n = goip.parse_cidr(cidr)
    addr = goip.parse_ip(ip)
    bits = 32 if net.is4 else 128
    shift = bits - n
    a = addr.v4 if net.is4 else addr.value
    b = net.v4 if net.is4 else net.value
    return a >> shift == b >> shift


def _labels(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


class _Index:
    """Selector evaluation over one snapshot, memoised per selector."""

    def __init__(self, snap: Snapshot) -> None:
        self.ns_labels: dict[str, dict[str, str]] = {}
        for ns in snap.namespaces:
            labels = _labels(ns.labels)
            labels.setdefault(NAMESPACE_NAME_LABEL, ns.name)
            self.ns_labels[ns.name] = labels
        self.peers = sorted((p for p in snap.pods if p.ips and not p.host_network and not p.finished),
                            key=lambda p: p.key)
        self.pod_labels = {p.key: _labels(p.labels) for p in self.peers}
        self.by_ns: dict[str, list[PolicyPod]] = defaultdict(list)
        for p in self.peers:
            self.by_ns[p.namespace].append(p)
        self.nodes = [(dict(n.labels), n.ips) for n in snap.nodes]
        self._cache: dict[str, tuple[PolicyPod, ...]] = {}
        self._sets: dict[str, AddressSet] = {}
        self._idents: dict[tuple[str, Peer], str] = {}
        # Keyed by id() of rules and policies of the snapshot, which outlives the index.
        self._rule_sets: dict[tuple[str, int], list[AddressSet | None]] = {}
        self._ports: dict[int, tuple[list[PortRange], list[PolicyPort]]] = {}
        self.egress: dict[int, list[Allow]] = {}

    def ports(self, rule: Rule) -> tuple[list[PortRange], list[PolicyPort]]:
        """(numeric port ranges, named ports) of a rule; callers copy before extending."""
        hit = self._ports.get(id(rule))
        if hit is None:
            hit = self._ports[id(rule)] = _numeric(rule.ports)
        return hit

    def rule_sets(self, policy_ns: str, rule: Rule) -> list[AddressSet | None]:
        """The address sets of an ingress rule's peers (None: every address)."""
        hit = self._rule_sets.get((policy_ns, id(rule)))
        if hit is None:
            if not rule.peers:
                hit = [None]
            else:
                hit = [self.address_set(*self.select(policy_ns, p)) for p in rule.peers if p.ip_block is None]
                hit += _block_sets(p.ip_block for p in rule.peers if p.ip_block is not None)
            self._rule_sets[(policy_ns, id(rule))] = hit
        return hit

    def address_set(self, ident: str, pods: Iterable[PolicyPod]) -> AddressSet:
        """The set of ``pods``' addresses under ``ident`` (built once per snapshot and identity)."""
        hit = self._sets.get(ident)
        if hit is None:
            hit = self._sets[ident] = AddressSet(ident, _ips(pods))
        return hit

    def node_set(self, selector: Selector) -> AddressSet:
        """The InternalIP addresses of the nodes ``selector`` matches, named by the selector."""
        ident = f"nodes|{selector!r}"
        hit = self._sets.get(ident)
        if hit is None:
            ips = sorted({ip for labels, node_ips in self.nodes if selector.matches(labels) for ip in node_ips})
            hit = self._sets[ident] = AddressSet(ident, tuple(ips))
        return hit

    def select(self, policy_ns: str, peer: Peer) -> tuple[str, tuple[PolicyPod, ...]]:
        """(identity, pods) for a selector peer."""
        scope = policy_ns if peer.namespace_selector is None else "*"
        ident = self._idents.get((scope, peer))
        if ident is None:
            ident = self._idents[(scope, peer)] = peer_identity(policy_ns, peer)
        hit = self._cache.get(ident)
        if hit is None:
            if peer.namespace_selector is None:
                namespaces = [policy_ns]
            else:
                namespaces = sorted(n for n, labels in self.ns_labels.items() if peer.namespace_selector.matches(labels))
            out = []
            for n in namespaces:
                for p in self.by_ns.get(n, ()):
                    if peer.pod_selector is None or peer.pod_selector.matches(self.pod_labels[p.key]):
                        out.append(p)
            hit = self._cache[ident] = tuple(out)
        return ident, hit


def _ips(pods: Iterable[PolicyPod]) -> tuple[str, ...]:
    return tuple(sorted({ip for p in pods for ip in p.ips}))


def _numeric(ports: tuple[PolicyPort, ...]) -> tuple[list[PortRange], list[PolicyPort]]:
    ranges, named = [], []
    for p in ports:
        if p.name:
            named.append(p)
        elif p.port is None:
            ranges.append(PortRange(p.protocol))
        else:
            ranges.append(PortRange(p.protocol, p.port, p.end_port or p.port))
    return ranges, named


def _unique(allows: list[Allow]) -> tuple[Allow, ...]:
    """``allows`` without repeats, first occurrence kept (sets compared by identity: one snapshot)."""
    seen: dict[tuple[str | None, tuple[PortRange, ...] | None], Allow] = {}
    for a in allows:
        seen.setdefault((None if a.peer is None else a.peer.identity, a.ports), a)
    return tuple(seen.values())


def _ingress_rule(pod: PolicyPod, policy_ns: str, rule: Rule, idx: _Index) -> list[Allow]:
    """The allows of one ingress rule for ``pod`` (named ports resolve on the pod itself)."""
    if rule.ports:
        ranges, named = idx.ports(rule)
        if named:
            ranges = list(ranges)
            for p in named:
                n = pod.named_port(p.name, p.protocol)
                if n is not None:
                    ranges.append(PortRange(p.protocol, n, n))
        if not ranges:
            return []
        ports: tuple[PortRange, ...] | None = tuple(dict.fromkeys(ranges))
    else:
        ports = None
    return [Allow(aset, ports) for aset in idx.rule_sets(policy_ns, rule)]


def _ingress(pod: PolicyPod, policies: list[NetworkPolicy], idx: _Index) -> tuple[Allow, ...]:
    out: list[Allow] = []
    for pol in policies:
        for rule in pol.ingress:
            out += _ingress_rule(pod, pol.namespace, rule, idx)
    return _unique(out)


def _egress_of(pol: NetworkPolicy, idx: _Index) -> list[Allow]:
    """The egress allows of one policy: they do not depend on the pod it selects."""
    out: list[Allow] = []
    for rule in pol.egress:
        out += _egress_rule(pol.namespace, rule, idx)
    return out


def _egress_rule(policy_ns: str, rule: Rule, idx: _Index) -> list[Allow]:
    """The allows of one egress rule (named ports resolve on each peer pod)."""
    out: list[Allow] = []
    ranges, named = idx.ports(rule)
    numeric: tuple[PortRange, ...] | None = tuple(dict.fromkeys(ranges)) if rule.ports else None
    # (identity, pods) the rule's peers select; None stands for "every address".
    targets: list[tuple[str, tuple[PolicyPod, ...]] | AddressSet | None] = []
    if not rule.peers:
        targets.append(None)
    targets += [idx.select(policy_ns, p) for p in rule.peers if p.ip_block is None]
    targets += _block_sets(p.ip_block for p in rule.peers if p.ip_block is not None)
    for t in targets:
        if numeric is None or numeric:
            if t is None:
                out.append(Allow(None, numeric))
            elif isinstance(t, AddressSet):
                out.append(Allow(t, numeric))
            else:
                out.append(Allow(idx.address_set(*t), numeric))
        if not named or isinstance(t, AddressSet):
            continue
        ident, pods = ("pods|all", tuple(idx.peers)) if t is None else t
        for p in named:
            groups: dict[int, list[PolicyPod]] = defaultdict(list)
            for q in pods:
                n = q.named_port(p.name, p.protocol)
                if n is not None:
                    groups[n].append(q)
            for n in sorted(groups):
                sub = idx.address_set(f"{ident}|{p.protocol}/{p.name}={n}", groups[n])
                out.append(Allow(sub, (PortRange(p.protocol, n, n),)))
    return out


def _egress(policies: list[NetworkPolicy], idx: _Index) -> tuple[Allow, ...]:
    out: list[Allow] = []
    for pol in policies:
        hit = idx.egress.get(id(pol))
        if hit is None:
            hit = idx.egress[id(pol)] = _egress_of(pol, idx)
        out += hit
    return _unique(out)


_PROTOCOLS = ("TCP", "UDP", "SCTP")
_DENY_ALL = Allow(None, None)


@dataclass(frozen=True, slots=True)
class _Converted:
    """An admin rule as a NetworkPolicy rule (``rule`` None: fail closed, matches everything) plus
    the selectors of its ``nodes`` peers (``rule.peers`` holds the other peers; none: only nodes)."""

    action: str
    rule: Rule | None
    nodes: tuple[Selector, ...] = ()


def _convert(rule: AdminRule) -> _Converted | None:
    """The admin rule in NetworkPolicy terms, or None when it can match nothing."""
    if any(p.unknown for p in rule.peers):
        # Fail closed, as the API asks for a peer an implementation does not understand.
        return None if rule.action == "Allow" else _Converted("Deny", None)
    peers: list[Peer] = []
    nodes: list[Selector] = []
    for p in rule.peers:
        if p.networks:
            peers += [Peer(ip_block=IPBlock(c)) for c in p.networks]
        elif p.node_selector is not None:
            nodes.append(p.node_selector)
        else:
            peers.append(Peer(p.pod_selector, p.namespace_selector))
    ports: list[PolicyPort] = []
    for ap in rule.ports or ():
        if ap.name:
            ports += [PolicyPort(proto, name=ap.name) for proto in _PROTOCOLS]
        else:
            ports.append(PolicyPort(ap.protocol, ap.lo, ap.hi if ap.hi != ap.lo else None))
    return _Converted(rule.action, Rule(tuple(ports), tuple(peers)), tuple(dict.fromkeys(nodes)))


def _node_allows(c: _Converted, idx: _Index) -> list[Allow]:
    """The allows of a converted rule's ``nodes`` peers: numeric ports only (the API refuses named
    ports beside a ``nodes`` peer; a rule whose ports are all named opens nothing on nodes)."""
    if not c.nodes or c.rule is None:
        return []
    ranges, _named = idx.ports(c.rule)
    if c.rule.ports and not ranges:
        return []
    ports = tuple(dict.fromkeys(ranges)) if c.rule.ports else None
    return [Allow(idx.node_set(sel), ports) for sel in c.nodes]


def _converted(pol: AdminPolicy) -> tuple[list[_Converted], list[_Converted]]:
    ing = [c for c in map(_convert, pol.ingress) if c is not None]
    eg = [c for c in map(_convert, pol.egress) if c is not None]
    return ing, eg


def _entries(pod: PolicyPod, rules: Iterable[_Converted], ingress: bool, idx: _Index) -> tuple[AdminEntry, ...]:
    """Ordered entries of ``rules`` for ``pod``; stops after an entry that matches everything."""
    out: list[AdminEntry] = []
    for c in rules:
        if c.rule is None:
            allows: tuple[Allow, ...] = (_DENY_ALL,)
        elif ingress:
            own = _ingress_rule(pod, "", c.rule, idx) if c.rule.peers or not c.nodes else []
            allows = _unique(own + _node_allows(c, idx))
        else:
            hit = idx.egress.get(id(c.rule))
            if hit is None:
                own = _egress_rule("", c.rule, idx) if c.rule.peers or not c.nodes else []
                hit = idx.egress[id(c.rule)] = list(_unique(own + _node_allows(c, idx)))
            allows = tuple(hit)
        for a in allows:
            out.append(AdminEntry(c.action, a))
            if a.peer is None and a.ports is None:
                return tuple(out)
    return tuple(out)


def _subject_matches(pol: AdminPolicy, ns_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
    return pol.subject_namespaces.matches(ns_labels) and (pol.subject_pods is None or pol.subject_pods.matches(pod_labels))


def peer_identity(policy_ns: str, peer: Peer) -> str:
    """The name of the address set a selector peer of a policy in ``policy_ns`` (``""``: a cluster-scoped
    policy) selects: its scope and selectors, never its members."""
    scope = policy_ns if peer.namespace_selector is None else "*"
    return f"pods|{scope}|{peer.pod_selector!r}|{peer.namespace_selector!r}"


def compute(snap: Snapshot, node_name: str | None, only: Container[str] | None = None) -> dict[str, PodVerdict]:
    """Verdicts for the pods ``node_name`` enforces (``None``: every node's pods), keyed by pod key.
    Pods that no policy judges in either direction are left out. ``only``: compute just these pod
    keys (each verdict is a function of the whole snapshot and its own pod: the same as a full compute's)."""
    idx = _Index(snap)
    by_ns: dict[str, list[NetworkPolicy]] = defaultdict(list)
    for pol in sorted(snap.policies, key=lambda p: p.key):
        by_ns[pol.namespace].append(pol)
    # Converted rules stay referenced until compute returns: the index caches by id().
    admins = [(a, _converted(a)) for a in sorted((a for a in snap.admin if a.kind == ADMIN),
                                                 key=lambda a: (a.priority, a.name))]
    baseline = [(a, _converted(a)) for a in snap.admin if a.kind == BASELINE][:1]
    out: dict[str, PodVerdict] = {}
    for pod in idx.peers:
        if node_name is not None and pod.node_name != node_name:
            continue
        if only is not None and pod.key not in only:
            continue
        pols = by_ns.get(pod.namespace)
        if not pols and not admins and not baseline:
            continue
        labels = idx.pod_labels[pod.key]
        selecting = [p for p in pols or () if p.pod_selector.matches(labels)]
        ing = [p for p in selecting if p.isolates_ingress]
        eg = [p for p in selecting if p.isolates_egress]
        a_in: tuple[AdminEntry, ...] = ()
        a_eg: tuple[AdminEntry, ...] = ()
        b_in: tuple[AdminEntry, ...] = ()
        b_eg: tuple[AdminEntry, ...] = ()
        if admins or baseline:
            # A namespace missing from the snapshot still carries its name: subjects fail closed.
            ns_labels = idx.ns_labels.get(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace})
            mine = [conv for a, conv in admins if _subject_matches(a, ns_labels, labels)]
            a_in = _entries(pod, (c for conv in mine for c in conv[0]), True, idx)
            a_eg = _entries(pod, (c for conv in mine for c in conv[1]), False, idx)
            base = [conv for a, conv in baseline if _subject_matches(a, ns_labels, labels)]
            if base and not ing:
                b_in = _entries(pod, base[0][0], True, idx)
            if base and not eg:
                b_eg = _entries(pod, base[0][1], False, idx)
        if not ing and not eg and not (a_in or a_eg or b_in or b_eg):
            continue
        out[pod.key] = PodVerdict(
            pod.key, pod.ips,
            _ingress(pod, ing, idx) if ing else None,
            _egress(eg, idx) if eg else None,
            a_in, a_eg, b_in, b_eg,
        )
    return out


def _judge(admin: tuple[AdminEntry, ...], allows: tuple[Allow, ...] | None, baseline: tuple[AdminEntry, ...],
           peer_ip: str, protocol: str, port: int) -> bool:
    """One direction: admin entries (first match; Pass moves on), then NetworkPolicy, then baseline."""
    for e in admin:
        if e.match.matches(peer_ip, protocol, port):
            if e.action == "Pass":
                break
            return e.action == "Allow"
    if allows is not None:
        return any(a.matches(peer_ip, protocol, port) for a in allows)
    for e in baseline:
        if e.match.matches(peer_ip, protocol, port):
            return e.action == "Allow"
    return True


def allowed(verdicts: Mapping[str, PodVerdict], src_ip: str, dst_ip: str, protocol: str, port: int) -> bool:
    """Whether a new connection passes: the source pod's egress (when it is enforced here) and
    the destination pod's ingress (likewise)."""
    for v in verdicts.values():
        if src_ip in v.ips and not _judge(v.admin_egress, v.egress, v.baseline_egress, dst_ip, protocol, port):
            return False
        if dst_ip in v.ips and not _judge(v.admin_ingress, v.ingress, v.baseline_ingress, src_ip, protocol, port):
            return False
    return True
