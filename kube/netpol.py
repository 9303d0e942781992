"""NetworkPolicy (networking.k8s.io/v1) and the pod fields policy needs, as frozen values.

:func:`parse_network_policy` refuses exactly what kube-apiserver's
``ValidateNetworkPolicy`` (pkg/apis/networking/validation) refuses and applies
the v1 defaulting (``SetDefaults_NetworkPolicy``: a port's protocol defaults
to TCP; an empty ``policyTypes`` becomes ``[Ingress]``, plus ``Egress`` when
egress rules exist). Label selectors are checked as apimachinery's
``ValidateLabelSelector`` checks them: qualified-name keys, label values,
``In``/``NotIn`` with at least one value, ``Exists``/``DoesNotExist`` with none.
An ipBlock's cidr and every except are strict CIDRs (:mod:`podnet.kube.goip`:
no zones, no leading zeros, no host bits), and every except must be a strict
subset of its cidr. A peer with an ipBlock and a selector, or with nothing,
is refused.

:func:`parse_policy_pod` is :func:`podnet.kube.objects.parse_pod` plus the
pod's named container ports (``spec.containers[].ports``, validated as core
validation does: port 1-65535, IANA service names, TCP/UDP/SCTP), which a
named port in a policy resolves against.

Every string kept is validated text; nothing here can hold whitespace, a
control character or ``%``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from podnet.kube import goip
from podnet.kube import objects as o
from podnet.kube import validate as v
from podnet.kube.names import NAMESPACE_NAME_LABEL

__all__ = [
    "Requirement",
    "Selector",
    "IPBlock",
    "Peer",
    "PolicyPort",
    "Rule",
    "NetworkPolicy",
    "ContainerPort",
    "PolicyPod",
    "parse_selector",
    "parse_network_policy",
    "parse_policy_pod",
    "NAMESPACE_NAME_LABEL",
    "MAX_RULES",
    "MAX_PEERS",
]

"""The label kube-apiserver sets on every Namespace to its name."""

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")
MAX_RULES = 10_000
MAX_PEERS = 100_000
"""Bounds on list lengths: far above what etcd's 1.5 MiB object limit lets through."""


# --------------------------------------------------------------------------- label selectors


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """apimachinery's ``Requirement.Matches`` for the four selector operators."""
        has = self.key in labels
        if self.operator == "In":
            return has and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not has or labels[self.key] not in self.values
        if self.operator == "Exists":
            return has
        return not has  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A LabelSelector: all of ``match_labels`` and all ``expressions`` (empty matches everything)."""

    match_labels: o.Labels = ()
    expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, val in self.match_labels:
            if labels.get(k) != val:
                return False
        return all(r.matches(labels) for r in self.expressions)


def parse_selector(raw: Any, path: str) -> Selector:
    m = o._map(raw, path)
    labels = o._labels(m.get("matchLabels"), f"{path}.matchLabels")
    reqs = []
    for i, e in enumerate(o._list(m.get("matchExpressions"), f"{path}.matchExpressions", 1000)):
        ep = f"{path}.matchExpressions[{i}]"
        e = o._map(e, ep)
        key = v.label_key(f"{ep}.key", e.get("key"))
        op = e.get("operator")
        if op not in OPERATORS:
            raise v.InvalidField(f"{ep}.operator", op, "not a valid selector operator")
        values = o._list(e.get("values"), f"{ep}.values", 10_000)
        if op in ("In", "NotIn") and not values:
            raise v.InvalidField(f"{ep}.values", values, "must be specified when `operator` is 'In' or 'NotIn'")
        if op in ("Exists", "DoesNotExist") and values:
            raise v.InvalidField(f"{ep}.values", values, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        vals = tuple(sorted({v.label_value(f"{ep}.values[{j}]", x) for j, x in enumerate(values)}))
        reqs.append(Requirement(key, op, vals))
    return Selector(labels, tuple(reqs))


# --------------------------------------------------------------------------- peers, ports, rules


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()

    @property
    def family(self) -> int:
        return 6 if ":" in self.cidr else 4


@dataclass(frozen=True, slots=True)
class Peer:
    """One NetworkPolicyPeer: an ipBlock alone, or pod and/or namespace selectors (both: AND).

    ``pod_selector`` None with a namespace selector means every pod of those namespaces;
    ``namespace_selector`` None with a pod selector means the policy's own namespace."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """A port by number (``port``, optional ``end_port``), by name (``name``), or every port of
    ``protocol`` (neither set)."""

    protocol: str = "TCP"
    port: int | None = None
    end_port: int | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress or egress rule. Empty ``ports``: every port and protocol. Empty ``peers``:
    every address."""

    ports: tuple[PolicyPort, ...] = ()
    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: Selector = Selector()
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    policy_types: tuple[str, ...] = ("Ingress",)
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return o.object_key(self.namespace, self.name)

    @property
    def isolates_ingress(self) -> bool:
        return "Ingress" in self.policy_types

    @property
    def isolates_egress(self) -> bool:
        return "Egress" in self.policy_types


def _cidr(path: str, raw: Any) -> tuple[str, goip.Addr, int]:
    text = v.cidr(path, raw)
    ip, length = goip.parse_cidr(text)
    return text, ip, length


def _ip_block(raw: Any, path: str) -> IPBlock:
    m = o._map(raw, path)
    if not m.get("cidr"):
        raise v.InvalidField(f"{path}.cidr", m.get("cidr"), "Required value")
    cidr, net, n = _cidr(f"{path}.cidr", m["cidr"])
    bits = 32 if net.is4 else 128
    excepts = []
    for i, e in enumerate(o._list(m.get("except"), f"{path}.except", 10_000)):
        text, ip, k = _cidr(f"{path}.except[{i}]", e)
        # netutils' IPNet.Contains on the except's address, then a strictly longer prefix.
        same_family = ip.is4 == net.is4
        shift = bits - n
        inside = same_family and (ip.value >> shift) == (net.value >> shift)
        if not inside or n >= k:
            raise v.InvalidField(f"{path}.except[{i}]", e, "must be a strict subset of `cidr`")
        excepts.append(text)
    return IPBlock(cidr, tuple(sorted(set(excepts))))


def _peer(raw: Any, path: str) -> Peer:
    m = o._map(raw, path)
    pod = parse_selector(m["podSelector"], f"{path}.podSelector") if m.get("podSelector") is not None else None
    ns = (parse_selector(m["namespaceSelector"], f"{path}.namespaceSelector")
          if m.get("namespaceSelector") is not None else None)
    block = _ip_block(m["ipBlock"], f"{path}.ipBlock") if m.get("ipBlock") is not None else None
    count = (pod is not None) + (ns is not None) + (block is not None)
    if count == 0:
        raise v.InvalidField(path, raw, "must specify a peer")
    if count > 1 and block is not None:
        raise v.InvalidField(path, raw, "may not specify both ipBlock and another peer")
    return Peer(pod, ns, block)


def _port(raw: Any, path: str) -> PolicyPort:
    m = o._map(raw, path)
    proto = v.protocol(f"{path}.protocol", m.get("protocol"))
    port = m.get("port")
    end = m.get("endPort")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
        raise v.InvalidField(f"{path}.endPort", end, "not an integer")
    if port is None:
        if end is not None:
            raise v.InvalidField(f"{path}.endPort", end, "may not be specified when `port` is not specified")
        return PolicyPort(proto)
    if isinstance(port, str):
        if end is not None:
            raise v.InvalidField(f"{path}.endPort", end, "may not be specified when `port` is non-numeric")
        if port == "":
            raise v.InvalidField(f"{path}.port", port, "not an IANA service name")
        return PolicyPort(proto, name=v.port_name(f"{path}.port", port))
    number = v.port_number(f"{path}.port", port)
    if end is not None:
        if end < number:
            raise v.InvalidField(f"{path}.endPort", end, "must be greater than or equal to `port`")
        v.port_number(f"{path}.endPort", end)
    return PolicyPort(proto, number, end)


def _rules(raw: Any, path: str, peers_key: str) -> tuple[Rule, ...]:
    out = []
    for i, r in enumerate(o._list(raw, path, MAX_RULES)):
        rp = f"{path}[{i}]"
        r = o._map(r, rp)
        ports = tuple(_port(p, f"{rp}.ports[{j}]") for j, p in enumerate(o._list(r.get("ports"), f"{rp}.ports", MAX_PEERS)))
        peers = tuple(_peer(p, f"{rp}.{peers_key}[{j}]")
                      for j, p in enumerate(o._list(r.get(peers_key), f"{rp}.{peers_key}", MAX_PEERS)))
        out.append(Rule(ports, peers))
    return tuple(out)


def parse_network_policy(raw: Mapping[str, Any]) -> NetworkPolicy:
    meta = o._meta(raw, "NetworkPolicy", True, v.dns_subdomain)
    key = o.object_key(meta.namespace, meta.name)
    try:
        spec = o._map(raw.get("spec"), "spec")
        selector = parse_selector(spec.get("podSelector"), "spec.podSelector")
        ingress = _rules(spec.get("ingress"), "spec.ingress", "from")
        egress = _rules(spec.get("egress"), "spec.egress", "to")
        types_raw = o._list(spec.get("policyTypes"), "spec.policyTypes", 100)
        if len(types_raw) > 2:
            raise v.InvalidField("spec.policyTypes", types_raw, "may not specify more than two policyTypes")
        for i, t in enumerate(types_raw):
            if t not in POLICY_TYPES:
                raise v.InvalidField(f"spec.policyTypes[{i}]", t, 'supported values: "Ingress", "Egress"')
        if types_raw:
            types = tuple(t for t in POLICY_TYPES if t in types_raw)
        else:
            types = ("Ingress", "Egress") if egress else ("Ingress",)
        return NetworkPolicy(meta.namespace, meta.name, selector, ingress, egress, types, meta.uid, meta.resource_version)
    except (v.InvalidField, KeyError, TypeError) as e:
        raise o.InvalidObject("NetworkPolicy", key, str(e)) from None


# --------------------------------------------------------------------------- pods


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class PolicyPod:
    """A Pod with what policy needs: labels, IPs, node, hostNetwork, phase and container ports."""

    namespace: str
    name: str
    ips: tuple[str, ...] = ()
    labels: o.Labels = ()
    node_name: str = ""
    host_network: bool = False
    phase: str = "Running"
    ports: tuple[ContainerPort, ...] = ()
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return o.object_key(self.namespace, self.name)

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: its addresses may already belong to another pod."""
        return self.phase in ("Succeeded", "Failed")

    def named_port(self, name: str, protocol: str) -> int | None:
        """The first container port with this name and protocol (names are unique per pod)."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


def _container_ports(spec: Mapping[str, Any]) -> tuple[ContainerPort, ...]:
    out: list[ContainerPort] = []
    for i, c in enumerate(o._list(spec.get("containers"), "spec.containers", 1000)):
        c = o._map(c, f"spec.containers[{i}]")
        for j, p in enumerate(o._list(c.get("ports"), f"spec.containers[{i}].ports", 10_000)):
            pp = f"spec.containers[{i}].ports[{j}]"
            p = o._map(p, pp)
            out.append(ContainerPort(
                v.port_number(f"{pp}.containerPort", p.get("containerPort")),
                v.protocol(f"{pp}.protocol", p.get("protocol")),
                v.port_name(f"{pp}.name", p.get("name")),
            ))
    return tuple(out)


def parse_policy_pod(raw: Mapping[str, Any]) -> PolicyPod:
    pod = o.parse_pod(raw)
    try:
        ports = _container_ports(o._map(raw.get("spec"), "spec"))
    except (v.InvalidField, KeyError, TypeError) as e:
        raise o.InvalidObject("Pod", pod.key, str(e)) from None
    return PolicyPod(pod.namespace, pod.name, pod.ips, pod.labels, pod.node_name, pod.host_network,
                     pod.phase, ports, pod.uid, pod.resource_version)
