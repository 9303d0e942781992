"""AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1), as frozen values.

The kinds are CRDs of the sigs.k8s.io/network-policy-api project; there is no
kube-apiserver validation function, so :func:`parse_admin_network_policy` and
:func:`parse_baseline_admin_network_policy` refuse what the CRDs' OpenAPI
schema and CEL rules refuse (``apis/v1alpha1/adminnetworkpolicy_types.go``,
``baselineadminnetworkpolicy_types.go``, ``shared_types.go``):

- cluster-scoped; a BaselineAdminNetworkPolicy must be named ``default``
  (``self.metadata.name == 'default'``);
- ``spec.priority`` an integer 0..1000 (ANP only, required);
- ``spec.subject``: exactly one of ``namespaces`` (a label selector) or ``pods``
  (``namespaceSelector`` and ``podSelector``, both required);
- ``ingress``/``egress``: at most 100 rules; a rule's ``name`` at most 100
  characters; ``action`` Allow, Deny or Pass (BANP: Allow or Deny); ``from``/``to``
  1..100 peers; ``ports`` (when present) 1..100 entries;
- a peer: exactly one of ``namespaces`` or ``pods`` (ingress), and for egress
  also ``nodes`` (a label selector) or ``networks`` (1..25 CIDRs, each at most
  43 characters, IPv4 xor IPv6, parsed as Go's ``net.ParseCIDR``: host bits are
  masked off, leading zeros and zones refused). A peer whose one field is a kind
  this version does not know (a newer CRD's) is kept as ``AdminPeer.unknown``:
  the API asks implementations to fail closed on it, not to drop the policy;
- a port: exactly one of ``portNumber`` ({protocol, port 1..65535}),
  ``namedPort`` (a string) or ``portRange`` ({protocol, start < end, both 1..65535});
  the protocol defaults to TCP; an egress rule with a ``networks`` or ``nodes``
  peer may not use ``namedPort``.

Label selectors are checked as :func:`podnet.kube.netpol.parse_selector` checks
NetworkPolicy's. A ``namedPort`` that is not an IANA service name is kept as
:data:`NO_SUCH_PORT`, which no container port can carry: the API accepts it, and
it names no port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from podnet.kube import goip
from podnet.kube import objects as o
from podnet.kube import validate as v
from podnet.kube.netpol import Selector, parse_selector

__all__ = ["AdminPeer", "AdminPort", "AdminRule", "AdminPolicy", "parse_admin_network_policy",
           "parse_baseline_admin_network_policy", "BASELINE_NAME", "MAX_RULES", "NO_SUCH_PORT",
           "ADMIN", "BASELINE"]

ADMIN = "AdminNetworkPolicy"
BASELINE = "BaselineAdminNetworkPolicy"
BASELINE_NAME = "default"
MAX_RULES = 100
MAX_PEERS = 100
MAX_PORTS = 100
MAX_NETWORKS = 25
MAX_CIDR_LENGTH = 43
MAX_RULE_NAME = 100
PRIORITY_MAX = 1000
NO_SUCH_PORT = "<invalid>"
"""The name kept for a ``namedPort`` that no container port can have (not an IANA service name)."""


@dataclass(frozen=True, slots=True)
class AdminPeer:
    """One peer: pods of the namespaces ``namespace_selector`` matches (``pod_selector`` None: all of
    them), or ``networks`` (CIDRs), or the nodes ``node_selector`` matches."""

    namespace_selector: Selector | None = None
    pod_selector: Selector | None = None
    networks: tuple[str, ...] = ()
    node_selector: Selector | None = None
    unknown: str = ""
    """The field name of a peer kind this version does not know (a newer CRD's): the rule fails closed."""


@dataclass(frozen=True, slots=True)
class AdminPort:
    """``protocol`` port ``lo``..``hi``, or the container port called ``name``."""

    protocol: str = "TCP"
    lo: int = 0
    hi: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class AdminRule:
    action: str
    """Allow, Deny or Pass."""
    peers: tuple[AdminPeer, ...]
    ports: tuple[AdminPort, ...] | None = None
    """None: every port and protocol."""
    name: str = ""


@dataclass(frozen=True, slots=True)
class AdminPolicy:
    """An AdminNetworkPolicy (``kind`` ADMIN, with ``priority``) or the BaselineAdminNetworkPolicy.

    The subject is the pods of the namespaces ``subject_namespaces`` matches, narrowed by
    ``subject_pods`` when it is set."""

    kind: str
    name: str
    priority: int
    subject_namespaces: Selector
    subject_pods: Selector | None
    ingress: tuple[AdminRule, ...] = ()
    egress: tuple[AdminRule, ...] = ()
    uid: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return self.name


def _one_of(m: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> str:
    """The single key set in ``m`` (MinProperties=1, MaxProperties=1), which must be one of ``allowed``."""
    present = [k for k, val in m.items() if val is not None]
    if len(present) != 1:
        raise v.InvalidField(path, dict(m), f"must have exactly one of {', '.join(allowed)}")
    if present[0] not in allowed:
        raise v.InvalidField(f"{path}.{present[0]}", m[present[0]], f"unknown field (want one of {', '.join(allowed)})")
    return present[0]


def _required_selector(m: Mapping[str, Any], key: str, path: str) -> Selector:
    if m.get(key) is None:
        raise v.InvalidField(f"{path}.{key}", None, "Required value")
    return parse_selector(m[key], f"{path}.{key}")


def _subject(raw: Any, path: str) -> tuple[Selector, Selector | None]:
    m = o._map(raw, path)
    which = _one_of(m, path, ("namespaces", "pods"))
    if which == "namespaces":
        return parse_selector(m["namespaces"], f"{path}.namespaces"), None
    pods = o._map(m["pods"], f"{path}.pods")
    return (_required_selector(pods, "namespaceSelector", f"{path}.pods"),
            _required_selector(pods, "podSelector", f"{path}.pods"))


def network(path: str, raw: Any) -> str:
    """A ``networks`` entry: the CRD's CEL rule (IPv4 xor IPv6 text, at most 43 characters), then Go's
    ``net.ParseCIDR`` (no leading zeros, no zone), returned as the masked network in canonical form."""
    if not isinstance(raw, str):
        raise v.InvalidField(path, raw, "not a string")
    if len(raw) > MAX_CIDR_LENGTH:
        raise v.InvalidField(path, raw, f"may not be longer than {MAX_CIDR_LENGTH}")
    if (":" in raw) == ("." in raw):
        raise v.InvalidField(path, raw, "CIDR must be either an IPv4 or IPv6 address. "
                                        "IPv4 address embedded in IPv6 addresses are not supported")
    sloppy = goip.parse_cidr_sloppy(raw)
    if sloppy is None or goip.parse_prefix_netip(raw) is None:
        raise v.InvalidField(path, raw, "invalid CIDR address")
    ip, n, is4 = sloppy
    bits = 32 if is4 else 128
    mask = ((1 << n) - 1) << (bits - n)
    value = (ip.value - ip.v4) | (ip.v4 & mask) if is4 else ip.value & mask
    return goip.format_cidr(goip.Addr(value), n)


KNOWN_PEERS = ("namespaces", "pods", "nodes", "networks")


def _peer(raw: Any, path: str, egress: bool) -> AdminPeer:
    m = o._map(raw, path)
    present = [k for k, val in m.items() if val is not None]
    unknown = [k for k in present if k not in KNOWN_PEERS]
    if len(present) == 1 and unknown:
        # A peer kind of a newer CRD version: kept so that the rule fails closed, as the API asks.
        return AdminPeer(unknown=unknown[0] if _plain(unknown[0]) else "?")
    which = _one_of(m, path, ("namespaces", "pods", "nodes", "networks") if egress else ("namespaces", "pods"))
    if which == "namespaces":
        return AdminPeer(namespace_selector=parse_selector(m["namespaces"], f"{path}.namespaces"))
    if which == "pods":
        pods = o._map(m["pods"], f"{path}.pods")
        return AdminPeer(_required_selector(pods, "namespaceSelector", f"{path}.pods"),
                         _required_selector(pods, "podSelector", f"{path}.pods"))
    if which == "nodes":
        return AdminPeer(node_selector=parse_selector(m["nodes"], f"{path}.nodes"))
    nets = o._list(m["networks"], f"{path}.networks", MAX_NETWORKS)
    if not nets:
        raise v.InvalidField(f"{path}.networks", nets, "should have at least 1 items")
    if len(set(map(str, nets))) != len(nets):
        raise v.InvalidField(f"{path}.networks", nets, "Duplicate value")  # listType=set
    return AdminPeer(networks=tuple(sorted({network(f"{path}.networks[{i}]", n) for i, n in enumerate(nets)})))


def _plain(name: str) -> bool:
    return isinstance(name, str) and name.isascii() and name.isalnum() and len(name) <= 63


def _port(raw: Any, path: str) -> AdminPort:
    m = o._map(raw, path)
    which = _one_of(m, path, ("portNumber", "namedPort", "portRange"))
    if which == "namedPort":
        name = m["namedPort"]
        if not isinstance(name, str):
            raise v.InvalidField(f"{path}.namedPort", name, "not a string")
        try:
            return AdminPort(name=v.port_name(f"{path}.namedPort", name) or NO_SUCH_PORT)
        except v.InvalidField:
            return AdminPort(name=NO_SUCH_PORT)
    if which == "portNumber":
        p = o._map(m["portNumber"], f"{path}.portNumber")
        proto = v.protocol(f"{path}.portNumber.protocol", p.get("protocol"))
        n = v.port_number(f"{path}.portNumber.port", p.get("port"))
        return AdminPort(proto, n, n)
    r = o._map(m["portRange"], f"{path}.portRange")
    proto = v.protocol(f"{path}.portRange.protocol", r.get("protocol"))
    lo = v.port_number(f"{path}.portRange.start", r.get("start"))
    hi = v.port_number(f"{path}.portRange.end", r.get("end"))
    if lo >= hi:
        raise v.InvalidField(f"{path}.portRange", dict(r), "Start port must be less than End port")
    return AdminPort(proto, lo, hi)


def _rules(raw: Any, path: str, actions: tuple[str, ...], egress: bool) -> tuple[AdminRule, ...]:
    peers_key = "to" if egress else "from"
    out = []
    for i, r in enumerate(o._list(raw, path, MAX_RULES)):
        rp = f"{path}[{i}]"
        r = o._map(r, rp)
        name = r.get("name") or ""
        if not isinstance(name, str):
            raise v.InvalidField(f"{rp}.name", name, "not a string")
        if len(name) > MAX_RULE_NAME:
            raise v.InvalidField(f"{rp}.name", name[:20] + "...", f"may not be longer than {MAX_RULE_NAME}")
        action = r.get("action")
        if action not in actions:
            raise v.InvalidField(f"{rp}.action", action, "supported values: " + ", ".join(f'"{a}"' for a in actions))
        raw_peers = o._list(r.get(peers_key), f"{rp}.{peers_key}", MAX_PEERS)
        if not raw_peers:
            raise v.InvalidField(f"{rp}.{peers_key}", raw_peers, "should have at least 1 items")
        peers = tuple(_peer(p, f"{rp}.{peers_key}[{j}]", egress) for j, p in enumerate(raw_peers))
        ports: tuple[AdminPort, ...] | None = None
        if r.get("ports") is not None:
            raw_ports = o._list(r.get("ports"), f"{rp}.ports", MAX_PORTS)
            if not raw_ports:
                raise v.InvalidField(f"{rp}.ports", raw_ports, "should have at least 1 items")
            ports = tuple(_port(p, f"{rp}.ports[{j}]") for j, p in enumerate(raw_ports))
            if egress and any(p.name for p in ports) and any(p.networks or p.node_selector for p in peers):
                raise v.InvalidField(rp, "", "networks/nodes peer cannot be set with namedPorts since there are "
                                             "no namedPorts for networks/nodes")
        out.append(AdminRule(action, peers, ports, name))
    return tuple(out)


def _parse(raw: Mapping[str, Any], kind: str) -> AdminPolicy:
    meta = o._meta(raw, kind, False, v.dns_subdomain)
    try:
        if kind == BASELINE and meta.name != BASELINE_NAME:
            raise v.InvalidField("metadata.name", meta.name, 'Only one baseline admin network policy with '
                                                            'metadata.name="default" can be created in the cluster')
        spec = o._map(raw.get("spec"), "spec")
        if not spec:
            raise v.InvalidField("spec", None, "Required value")
        priority = 0
        actions = ("Allow", "Deny")
        if kind == ADMIN:
            actions = ("Allow", "Deny", "Pass")
            priority = spec.get("priority")
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise v.InvalidField("spec.priority", priority, "Required integer value")
            if not 0 <= priority <= PRIORITY_MAX:
                raise v.InvalidField("spec.priority", priority, f"must be between 0 and {PRIORITY_MAX}")
        if spec.get("subject") is None:
            raise v.InvalidField("spec.subject", None, "Required value")
        ns_sel, pod_sel = _subject(spec["subject"], "spec.subject")
        ingress = _rules(spec.get("ingress"), "spec.ingress", actions, False)
        egress = _rules(spec.get("egress"), "spec.egress", actions, True)
        return AdminPolicy(kind, meta.name, priority, ns_sel, pod_sel, ingress, egress, meta.uid, meta.resource_version)
    except (v.InvalidField, KeyError, TypeError) as e:
        raise o.InvalidObject(kind, meta.name, str(e)) from None


def parse_admin_network_policy(raw: Mapping[str, Any]) -> AdminPolicy:
    return _parse(raw, ADMIN)


def parse_baseline_admin_network_policy(raw: Mapping[str, Any]) -> AdminPolicy:
    return _parse(raw, BASELINE)
