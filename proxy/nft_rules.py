"""Desired nftables state as pure data: per service port, then for the node.

The nftables mode reads the same frozen per-service model as the iptables
mode (model.service_ports / endpoints_by_port) and picks endpoints with the
same :func:`podnet.proxy.endpoints.categorize`, so which endpoints serve which
traffic is decided in one place for both modes.

Shape (one table per family, ``table ip podnet`` / ``table ip6 podnet``),
modelled on kube-proxy's nftables proxier (pkg/proxy/nftables/README.md and
proxier.go: ``services`` dispatching ``ip daddr . meta l4proto . th dport
vmap @service-ips`` and ``... vmap @service-nodeports``, ``filter-*`` chains
at priority -110 for REJECT/DROP, ``mark-for-masquerade``/``masquerading``)
with one change kept on purpose for load speed: no per-endpoint chains and no
anonymous ``numgen ... vmap`` sets; a service chain is a list of plain rules
``numgen random mod N == 0 meta l4proto tcp dnat to A:port`` (1/N of what
the earlier rules left: the iptables ``statistic`` trick), which loads an order
of magnitude faster. A service chain holds only those endpoint rules: the
masquerade of ClusterIP traffic from outside the cluster CIDR (kube-proxy's
per-service ``ip daddr CLUSTER-IP ... ip saddr != CIDR jump mark-for-masquerade``)
is one rule in ``services`` looking the destination up in the named set
``cluster-ips`` (a sixth of the rules of a 5-endpoint table, and the rule
kube-proxy scopes to the ClusterIP: traffic reaching a chain through an
external IP, a load balancer IP or a NodePort is masqueraded by the ``ext-*``
chain's policy alone).

Base chains and their priorities (documented so other nftables users can
order themselves around them):

* ``nat-prerouting``  nat hook prerouting  priority dstnat (-100): jump services
* ``nat-output``      nat hook output      priority -100:          jump services
* ``nat-postrouting`` nat hook postrouting priority srcnat (100):  jump masquerading
* ``filter-input``    filter hook input    priority -110: REJECT/DROP of NodePorts
  and service IPs without (local) endpoints, the martian drop for localhost NodePorts
* ``filter-forward``  filter hook forward  priority -110: ``ct state invalid drop`` (when
  drop_invalid), REJECT/DROP of service IPs, then accept marked (to be masqueraded) and
  established/related traffic (the iptables mode's PODNET-FORWARD)
* ``filter-output``   filter hook output   priority -110 (before nat-output's DNAT):
  REJECT/DROP of service IPs, the martian drop

Hairpin (a pod sent to itself through its Service) is masqueraded from one
named set of ``endpoint . endpoint`` pairs matched in postrouting, since the
endpoint is not known before the random pick. Only this node's endpoints are
in it: a hairpinned client is the endpoint itself, and its packets are NATed
on its own node, so the set stays small (10k services x 5 endpoints on 100
nodes: ~500 pairs per node instead of 50k, the difference between a full
sync that loads like plain chains and one that spends most of its time in
set elements). ClientIP affinity uses one
dynamic set per endpoint (``aff-*``, timeout = the Service's) only for
Services that ask for it. LoadBalancer source ranges are a ``fw-*`` chain
(``ip saddr R goto ext-*`` per range, then ``drop``). Health-check node ports
(eTP Local) are one set, accepted in ``filter-input``.

An ``accept`` in nftables is final only for the base chain it is in: a base
chain of another table on the same hook (a host firewall, iptables-nft's
``filter`` table) still sees the packet and may drop it, while a ``drop`` here
is final everywhere. So the forward and health-check accepts keep podnet's own
table from dropping that traffic, as in the iptables mode, but cannot open a
host firewall that drops it; kube-proxy's nftables mode writes no accepts at
all for that reason.

Every value interpolated into a rule is re-checked here (:func:`_ip`,
:func:`_cidr`, :func:`_port`): IPs re-parsed and required canonical, ports in
range, names from a fixed alphabet, so no text can break out of a rule.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from podnet.proxy import names as n
from podnet.proxy.endpoints import categorize
from podnet.proxy.model import EndpointInfo, ServicePortInfo
from podnet.proxy.rules import NodeContext

TABLE = "podnet"
MAP_SERVICE_IPS = "service-ips"
MAP_NODEPORTS = "service-nodeports"
MAP_NO_EP_IPS = "no-endpoint-services"
MAP_NO_EP_NODEPORTS = "no-endpoint-nodeports"
SET_HAIRPIN = "hairpin"
SET_HEALTH_CHECK = "health-check-nodeports"
SET_CLUSTER_IPS = "cluster-ips"
"""``ClusterIP . protocol . port`` of every service port with internal endpoints: traffic to them from
outside the cluster CIDR (every source with masquerade_all) is marked for masquerade."""
SERVICES = "services"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
SERVICE_EP_CHECK = "service-endpoints-check"
NODEPORT_EP_CHECK = "nodeport-endpoints-check"
CANARY = "canary"
REJECT_CHAIN = "reject-chain"
"""Verdict maps cannot hold ``reject``: elements ``goto`` this chain (kube-proxy's reject-chain)."""
CANARY_RULE = "return"

BASE_CHAINS: dict[str, str] = {
    "nat-prerouting": "type nat hook prerouting priority dstnat ; policy accept ;",
    "nat-output": "type nat hook output priority -100 ; policy accept ;",
    "nat-postrouting": "type nat hook postrouting priority srcnat ; policy accept ;",
    "filter-input": "type filter hook input priority -110 ; policy accept ;",
    "filter-forward": "type filter hook forward priority -110 ; policy accept ;",
    "filter-output": "type filter hook output priority -110 ; policy accept ;",
}
"""Base chain -> its declaration (type, hook, explicit priority)."""

FIXED_CHAINS = tuple(BASE_CHAINS) + (SERVICES, MARK_MASQ, MASQUERADING, SERVICE_EP_CHECK, NODEPORT_EP_CHECK, REJECT_CHAIN, CANARY)

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")
"""Every chain, map and set name podnet writes (full match)."""


class UnsafeValue(ValueError):
    """A value that must not be written into nft text."""


def family_kw(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def addr_type(family: int) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _ip(value: str, family: int) -> str:
    """``value`` unchanged when it is the canonical text of an address of ``family`` (C-speed
    round trip through inet_pton/inet_ntop: no zone, no leading zero, no stray character)."""
    try:
        ok = socket.inet_ntop(_AF[family], socket.inet_pton(_AF[family], value)) == value
    except (OSError, ValueError, TypeError):
        ok = False
    if not ok:
        raise UnsafeValue(f"not a canonical IPv{family} address: {value!r}")
    return value


def _cidr(value: str, family: int) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise UnsafeValue(f"not a CIDR: {value!r}") from None
    if net.version != family or "/" not in value:
        raise UnsafeValue(f"not an IPv{family} CIDR: {value!r}")
    return str(net)


def _port(value: int) -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise UnsafeValue(f"not a port: {value!r}")
    return value


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise UnsafeValue(f"not a safe nft name: {value!r}")
    return value


def _proto(value: str) -> str:
    p = value.lower()
    if p not in ("tcp", "udp", "sctp"):
        raise UnsafeValue(f"not a protocol: {value!r}")
    return p


def service_chain_names(spn: str, protocol: str) -> tuple[str, str, str, str]:
    """(svc, svl, ext, fw) chains of one service port: a stable hash (names.py's recipe), lower-cased."""
    h = n.port_proto_hash(spn, protocol).lower()
    return f"svc-{h}", f"svl-{h}", f"ext-{h}", f"fw-{h}"


def affinity_set_name(spn: str, protocol: str, endpoint: str) -> str:
    return "aff-" + n.endpoint_chain(spn, protocol, endpoint)[len("PODNET-SEP-"):].lower()


Element = tuple[str, str, str]
"""(map or set name, key text, verdict text; '' for a set element such as a hairpin pair)."""
Claims = dict[tuple[str, str], dict[str, str]]
"""(map, key) -> {service key: verdict}: every service claiming that key."""


@dataclass(frozen=True)
class NftService:
    """Everything one service port adds to podnet's nftables table."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    elements: tuple[Element, ...] = ()
    affinity_sets: dict[str, int] = field(default_factory=dict)
    """Dynamic set name -> timeout seconds."""
    no_local_endpoints: tuple[str, ...] = ()
    local_endpoints: int = 0
    endpoint_count: int = 0


def _endpoint_text(ep: EndpointInfo, family: int) -> str:
    ip = _ip(ep.ip, family)
    port = _port(ep.port)
    return f"{ip}:{port}" if family == 4 else f"[{ip}]:{port}"


def _balance(proto: str, eps: tuple[EndpointInfo, ...], ctx: NodeContext,
             affinity: dict[int, str], fam: str) -> list[str]:
    """Affinity lookups first, then plain probability rules: rule i matches 1/(n-i) of what is left.

    Every connection that lands on an endpoint through affinity refreshes the client's entry
    (``update`` restarts an element's timeout), so affinity lasts the timeout after the client's
    last connection, as kube-proxy's ``recent --set`` on every connection does."""
    dnats = [f"meta l4proto {proto} dnat to {_endpoint_text(e, ctx.family)}" for e in eps]
    if not affinity:
        n = len(dnats)
        return [f"numgen random mod {n - i} == 0 {d}" for i, d in enumerate(dnats[:-1])] + dnats[-1:]
    rules = []
    dnat = {id(e): d for e, d in zip(eps, dnats)}
    for e in eps:
        if id(e) in affinity:
            aff = affinity[id(e)]
            rules.append(f"{fam} saddr @{aff} update @{aff} {{ {fam} saddr }} {dnat[id(e)]}")
    left = len(eps)
    for e in eps:
        upd = f"update @{affinity[id(e)]} {{ {fam} saddr }} " if id(e) in affinity else ""
        pick = f"numgen random mod {left} == 0 " if left > 1 else ""
        rules.append(f"{pick}{upd}{dnat[id(e)]}")
        left -= 1
    return rules


def service_nft(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], ctx: NodeContext) -> NftService:
    """The fragment for one service port in ``ctx.family``. Raises UnsafeValue on a bad value."""
    family = ctx.family
    fam = family_kw(family)
    spn = str(sp.name)
    proto = _proto(sp.protocol)
    port = _port(sp.port)
    svc, svl, ext, fw = service_chain_names(spn, sp.protocol)
    cat = categorize(sp, eps, ctx.zone)
    cip = _ip(sp.cluster_ip, family)
    chains: dict[str, tuple[str, ...]] = {}
    elements: list[Element] = []
    no_local: list[str] = []

    affinity: dict[int, str] = {}
    aff_sets: dict[str, int] = {}
    if sp.affinity_timeout is not None:
        timeout = sp.affinity_timeout
        if type(timeout) is not int or not 0 < timeout <= 86400:
            raise UnsafeValue(f"not an affinity timeout: {timeout!r}")
        for e in cat.cluster + cat.local:
            # The timeout is part of the name: a changed timeout is a new set, never a redefinition.
            name = _name(f"{affinity_set_name(spn, proto, _endpoint_text(e, family))}-{timeout}")
            affinity[id(e)] = name
            aff_sets[name] = timeout

    internal_chain = svl if sp.itp_local else svc
    used: set[int] = set()
    if cat.cluster and (not sp.itp_local or sp.externally_reachable):
        chains[svc] = tuple(_balance(proto, cat.cluster, ctx, affinity, fam))
        used.update(map(id, cat.cluster))
    if cat.local and sp.uses_local:
        chains[svl] = tuple(_balance(proto, cat.local, ctx, affinity, fam))
        used.update(map(id, cat.local))

    key = f"{cip} . {proto} . {port}"
    if cat.internal:
        elements.append((MAP_SERVICE_IPS, key, f"goto {internal_chain}"))
        if ctx.masquerade_all or ctx.cluster_cidrs:
            elements.append((SET_CLUSTER_IPS, key, ""))
    elif cat.has_any:
        no_local.append("internal")
        elements.append((MAP_NO_EP_IPS, key, "drop"))
    else:
        elements.append((MAP_NO_EP_IPS, key, f"goto {REJECT_CHAIN}"))

    ext_ips = tuple(_ip(ip, family) for ip in sp.external_ips)
    lb_ips = tuple(_ip(ip, family) for ip in sp.lb_ips)
    if sp.externally_reachable:
        node_port = _port(sp.node_port) if sp.node_port else None
        if cat.has_any:
            chains[ext] = tuple(_external_chain(sp, ctx, svc, svl, bool(cat.local)))
            for ip in ext_ips:
                elements.append((MAP_SERVICE_IPS, f"{ip} . {proto} . {port}", f"goto {ext}"))
            target = fw if sp.source_ranges else ext
            for ip in lb_ips:
                elements.append((MAP_SERVICE_IPS, f"{ip} . {proto} . {port}", f"goto {target}"))
            if lb_ips and sp.source_ranges:
                chains[fw] = tuple(_firewall_chain(sp, ctx, ext, lb_ips))
            if node_port:
                elements.append((MAP_NODEPORTS, f"{proto} . {node_port}", f"goto {ext}"))
        if not cat.external:
            verdict = "drop" if cat.has_any else f"goto {REJECT_CHAIN}"
            if cat.has_any:
                no_local.append("external")
            for ip in ext_ips + lb_ips:
                elements.append((MAP_NO_EP_IPS, f"{ip} . {proto} . {port}", verdict))
            if node_port:
                elements.append((MAP_NO_EP_NODEPORTS, f"{proto} . {node_port}", verdict))
    for c in chains:
        _name(c)
    # Hairpin needs the client pod and the endpoint to be one pod, and the client pod is on this
    # node (its packet is being NATed here): only local endpoints can hairpin here.
    elements += [(SET_HAIRPIN, f"{e.ip} . {e.ip}", "") for e in eps if id(e) in used and e.local]
    if sp.hc_node_port:
        elements.append((SET_HEALTH_CHECK, str(_port(sp.hc_node_port)), ""))
    return NftService(
        chains=chains,
        elements=tuple(elements),
        affinity_sets=aff_sets,
        no_local_endpoints=tuple(no_local),
        local_endpoints=len(cat.local),
        endpoint_count=len(used),
    )


def _external_chain(sp: ServicePortInfo, ctx: NodeContext, svc: str, svl: str, has_local: bool) -> list[str]:
    fam = family_kw(ctx.family)
    if not sp.etp_local:
        return [f"jump {MARK_MASQ}", f"goto {svc}"]
    rules = []
    if ctx.cluster_cidrs:
        rules.append(f"{fam} saddr {_cidr(ctx.cluster_cidrs[0], ctx.family)} goto {svc}")
    rules.append(f"fib saddr type local jump {MARK_MASQ}")
    rules.append(f"fib saddr type local goto {svc}")
    if has_local:
        rules.append(f"goto {svl}")
    return rules


def _firewall_chain(sp: ServicePortInfo, ctx: NodeContext, ext: str, lb_ips: tuple[str, ...]) -> list[str]:
    fam = family_kw(ctx.family)
    rules = [f"{fam} saddr {_cidr(c, ctx.family)} goto {ext}" for c in sp.source_ranges]
    nets = [ipaddress.ip_network(c, strict=False) for c in sp.source_ranges]
    if any(ipaddress.ip_address(ip) in net for ip in ctx.node_ips for net in nets):
        rules += [f"{fam} saddr {ip} goto {ext}" for ip in lb_ips]
    rules.append("drop")
    return rules


@dataclass(frozen=True)
class NftState:
    """The whole desired table of one family."""

    family: int
    fixed: dict[str, tuple[str, ...]]
    services: dict[str, tuple[NftService, ...]]
    """Service key -> its port fragments."""
    claims: Claims | None = None
    """Index of :attr:`services`' elements, when the caller maintains one (see :func:`claims_of`)."""

    def chains(self) -> dict[str, tuple[str, ...]]:
        out = dict(self.fixed)
        for frs in self.services.values():
            for f in frs:
                out.update(f.chains)
        return out

    def elements(self) -> set[Element]:
        """One element per (map, key): when two services claim one key (two Services may list the
        same externalIP and port, two may share an endpoint), the least service key wins, as an
        nft map holds one verdict per key."""
        return {(m, k, v) for (m, k), v in self.element_map().items()}

    def element_map(self) -> dict[tuple[str, str], str]:
        return {mk: winner(owners) for mk, owners in self.index().items()}

    def index(self) -> Claims:
        return self.claims if self.claims is not None else claims_of(self.services)

    def affinity_sets(self) -> dict[str, int]:
        return {k: v for frs in self.services.values() for f in frs for k, v in f.affinity_sets.items()}

    def hairpin(self) -> set[str]:
        return {k.split(" . ")[0] for m, k, _ in self.elements() if m == SET_HAIRPIN}


def winner(owners: dict[str, str]) -> str:
    return owners[min(owners)]


def claims_of(services: dict[str, tuple[NftService, ...]]) -> Claims:
    out: Claims = {}
    for key, frs in services.items():
        add_claims(out, key, frs)
    return out


def add_claims(claims: Claims, key: str, frs: tuple[NftService, ...]) -> None:
    for f in frs:
        for m, k, v in f.elements:
            claims.setdefault((m, k), {})[key] = v


def drop_claims(claims: Claims, key: str, frs: tuple[NftService, ...]) -> None:
    for f in frs:
        for m, k, _ in f.elements:
            owners = claims.get((m, k))
            if owners is not None:
                owners.pop(key, None)
                if not owners:
                    del claims[(m, k)]

def fixed_chains(ctx: NodeContext) -> dict[str, tuple[str, ...]]:
    """Base chains and the shared chains, for ``ctx``."""
    fam = family_kw(ctx.family)
    mark = f"{int(ctx.masq_mark):#x}"
    martian: list[str] = []
    if ctx.localhost_nodeports_active:
        martian = [f"{fam} daddr 127.0.0.0/8 {fam} saddr != 127.0.0.0/8 "
                   "ct state & (established | related) == 0 ct status & dnat == 0 drop"]
    masq = "masquerade fully-random" if ctx.random_fully else "masquerade"
    if not ctx.nodeport_cidrs:
        not_lo = "" if ctx.localhost_nodeports_active else f"{fam} daddr != {ctx.loopback} "
        dests = [f"fib daddr type local {not_lo}"]
    else:
        ips = [_ip(ip, ctx.family) for ip in ctx.nodeport_ips()]
        if ctx.localhost_nodeports_active and "127.0.0.1" not in ips:
            ips.append("127.0.0.0/8")
        dests = [f"{fam} daddr {ip} " for ip in ips]
    return {
        "nat-prerouting": (f"jump {SERVICES}",),
        "nat-output": (f"jump {SERVICES}",),
        "nat-postrouting": (f"jump {MASQUERADING}",),
        "filter-input": (f"ct state new jump {NODEPORT_EP_CHECK}", f"ct state new jump {SERVICE_EP_CHECK}", *martian,
                         f"tcp dport @{SET_HEALTH_CHECK} accept"),
        "filter-forward": (*(["ct state invalid drop"] if ctx.drop_invalid else []),
                           f"ct state new jump {SERVICE_EP_CHECK}",
                           f"meta mark & {mark} == {mark} accept",
                           "ct state established,related accept"),
        "filter-output": (f"ct state new jump {SERVICE_EP_CHECK}", *martian),
        SERVICES: (*_cluster_ip_masquerade(ctx),
                   f"{fam} daddr . meta l4proto . th dport vmap @{MAP_SERVICE_IPS}",
                   *(f"{d}meta l4proto . th dport vmap @{MAP_NODEPORTS}" for d in dests)),
        SERVICE_EP_CHECK: (f"{fam} daddr . meta l4proto . th dport vmap @{MAP_NO_EP_IPS}",),
        NODEPORT_EP_CHECK: tuple(f"{d}meta l4proto . th dport vmap @{MAP_NO_EP_NODEPORTS}" for d in dests),
        MARK_MASQ: (f"meta mark set meta mark | {mark}",),
        MASQUERADING: (f"{fam} saddr . {fam} daddr @{SET_HAIRPIN} jump {MARK_MASQ}",
                       f"meta mark & {mark} == 0 return",
                       f"meta mark set meta mark ^ {mark}",
                       masq),
        REJECT_CHAIN: ("reject",),
        CANARY: (CANARY_RULE,),
    }


def _cluster_ip_masquerade(ctx: NodeContext) -> list[str]:
    """The one rule that marks ClusterIP traffic for masquerade (kube-proxy writes it per service:
    ``ip daddr CLUSTER-IP th dport PORT ip saddr != CIDR jump mark-for-masquerade``); one lookup in
    @cluster-ips instead keeps a service chain to its endpoint rules."""
    fam = family_kw(ctx.family)
    lookup = f"{fam} daddr . meta l4proto . th dport @{SET_CLUSTER_IPS} jump {MARK_MASQ}"
    if ctx.masquerade_all:
        return [lookup]
    if ctx.cluster_cidrs:
        return [f"{fam} saddr != {_cidr(ctx.cluster_cidrs[0], ctx.family)} {lookup}"]
    return []


def build_state(services: dict[str, tuple[NftService, ...]], ctx: NodeContext, claims: Claims | None = None) -> NftState:
    return NftState(ctx.family, fixed_chains(ctx), dict(services), claims)


def static_sets(family: int) -> dict[str, str]:
    """Named sets every table has (elements from the services) -> their type."""
    a = addr_type(family)
    return {SET_HAIRPIN: f"{a} . {a}", SET_HEALTH_CHECK: "inet_service", SET_CLUSTER_IPS: f"{a} . inet_proto . inet_service"}


def map_types(family: int) -> dict[str, str]:
    a = addr_type(family)
    return {
        MAP_SERVICE_IPS: f"type {a} . inet_proto . inet_service : verdict ;",
        MAP_NODEPORTS: "type inet_proto . inet_service : verdict ;",
        MAP_NO_EP_IPS: f"type {a} . inet_proto . inet_service : verdict ;",
        MAP_NO_EP_NODEPORTS: "type inet_proto . inet_service : verdict ;",
    }
