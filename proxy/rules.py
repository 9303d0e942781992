"""Desired iptables state as pure data: per service port, then for the node.

:func:`service_rules` turns one service port and its endpoints into a
:class:`ServiceRules` fragment: the chains it owns (SVC/SVL/EXT/FW/SEP) and
the entries it contributes to the shared dispatch chains. Fragments depend
only on their inputs, so the daemon caches them per service and recomputes
only the services that changed (KEP-3453's partial sync, done in Python).
:func:`assemble` adds the fixed chains, builds the destination dispatch
trees (dispatch.py) and returns ``{table: {chain: rules}}``.

A rule is the text after ``-A CHAIN``. Every value in it is an IP, CIDR or
port that podnet.kube validated, or a name from names.py; comments only
carry validated Kubernetes names. snapshot.py has guard.py check the values
and every rule line of a fragment again, and drops a service that fails. Semantics follow kube-proxy's iptables
mode rule for rule (see the module tests for the packet-level contract).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from podnet.proxy import names as n
from podnet.proxy.dispatch import build_tree
from podnet.proxy.endpoints import categorize
from podnet.proxy.model import EndpointInfo, ServicePortInfo

Tables = dict[str, dict[str, tuple[str, ...]]]
TABLE_ORDER = ("mangle", "filter", "nat")
CANARY_RULE = '-m comment --comment "podnet canary: a flush of this table removes this rule" -j RETURN'
"""The one rule of PODNET-CANARY (never jumped to): a flush of the table removes it, the chain survives."""


@dataclass(frozen=True)
class NodeContext:
    """What the rules need to know about this node, for one IP family."""

    family: int = 4
    cluster_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False
    node_ips: tuple[str, ...] = ()
    """This node's own addresses in this family (NodePort targets, FW check)."""
    nodeport_cidrs: tuple[str, ...] = ()
    """--nodeport-addresses in this family; empty means every local address."""
    localhost_nodeports: bool = True
    masq_mark: int = 0x4000
    drop_invalid: bool = True
    random_fully: bool = True
    dispatch_leaf: int = 16
    """Destinations per dispatch-tree leaf; a huge value gives kube-proxy's flat chain."""
    zone: str = ""
    """This node's topology.kubernetes.io/zone label; '' (unlabelled) turns topology-aware routing off."""

    @property
    def host_prefix(self) -> int:
        return 32 if self.family == 4 else 128

    @property
    def loopback(self) -> str:
        return "127.0.0.0/8" if self.family == 4 else "::1/128"

    @property
    def localhost_nodeports_active(self) -> bool:
        """IPv4 only; needs route_localnet and the CVE-2020-8558 martian drop."""
        if self.family != 4 or not self.localhost_nodeports:
            return False
        lo = ipaddress.ip_address("127.0.0.1")
        return not self.nodeport_cidrs or any(lo in ipaddress.ip_network(c) for c in self.nodeport_cidrs)

    def nodeport_ips(self) -> tuple[str, ...]:
        nets = [ipaddress.ip_network(c) for c in self.nodeport_cidrs]
        return tuple(ip for ip in self.node_ips if any(ipaddress.ip_address(ip) in net for net in nets))


@dataclass(frozen=True)
class ServiceRules:
    """Everything one service port adds to the node's rules."""

    nat_chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nat_dispatch: tuple[tuple[str, str], ...] = ()
    nat_nodeports: tuple[str, ...] = ()
    filter_services: tuple[tuple[str, str], ...] = ()
    filter_external: tuple[tuple[str, str], ...] = ()
    filter_external_plain: tuple[str, ...] = ()
    filter_firewall: tuple[tuple[str, str], ...] = ()
    filter_nodeports: tuple[str, ...] = ()
    no_local_endpoints: tuple[str, ...] = ()
    """'internal' and/or 'external': endpoints exist but none is local."""
    local_endpoints: int = 0
    endpoint_count: int = 0


def _proto(sp: ServicePortInfo) -> str:
    p = sp.protocol.lower()
    return f"-p {p} -m {p}"


_PROBABILITIES: dict[int, str] = {}


def _probability(n_left: int) -> str:
    """kube-proxy's ``%0.10f`` of 1/n, memoized (n is bounded by max endpoints)."""
    p = _PROBABILITIES.get(n_left)
    if p is None:
        p = _PROBABILITIES[n_left] = f"{1.0 / n_left:0.10f}"
    return p


def _balance(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], seps: dict[int, str]) -> list[str]:
    """Affinity checks first, then equal-probability jumps (1/(n-i))."""
    chains = [seps[id(ep)] for ep in eps]
    rules = []
    if sp.affinity_timeout is not None:
        seconds = sp.affinity_timeout
        rules = [f"-m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}" for sep in chains]
    left = len(chains)
    for sep in chains:
        if left > 1:
            rules.append(f"-m statistic --mode random --probability {_probability(left)} -j {sep}")
        else:
            rules.append(f"-j {sep}")
        left -= 1
    return rules


def service_rules(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], ctx: NodeContext) -> ServiceRules:
    """The fragment for one service port in ``ctx.family``."""
    spn, proto = str(sp.name), sp.protocol
    svc, svl, ext, fw = n.service_port_chains(spn, proto)
    cat = categorize(sp, eps, ctx.zone)
    hp = ctx.host_prefix
    match = f"{_proto(sp)} --dport {sp.port}"
    nat: dict[str, tuple[str, ...]] = {}
    dispatch: list[tuple[str, str]] = []
    f_services: list[tuple[str, str]] = []
    f_external: list[tuple[str, str]] = []
    f_external_plain: list[str] = []
    f_firewall: list[tuple[str, str]] = []
    no_local: list[str] = []

    internal_chain = svl if sp.itp_local else svc
    head: list[str] = []
    cip_match = f"-d {sp.cluster_ip}/{hp} {match}"
    if ctx.masquerade_all:
        head.append(f"{cip_match} -j {n.MARK_MASQ}")
    elif ctx.cluster_cidrs:
        head.append(f"! -s {ctx.cluster_cidrs[0]} {cip_match} -j {n.MARK_MASQ}")

    # Endpoint chains, keyed by object identity: cluster/local are sub-tuples of eps.
    proto_l = proto.lower()
    if ctx.family == 4:
        addresses = {id(e): f"{e.ip}:{e.port}" for e in cat.cluster + cat.local}
    else:
        addresses = {id(e): str(e) for e in cat.cluster + cat.local}
    sep_of = n.endpoint_chain_namer(spn, proto_l)
    seps = {k: sep_of(a) for k, a in addresses.items()}
    used: set[int] = set()
    if cat.cluster and (not sp.itp_local or sp.externally_reachable):
        nat[svc] = tuple((head if internal_chain == svc else []) + _balance(sp, cat.cluster, seps))
        used.update(map(id, cat.cluster))
    if cat.local and sp.uses_local:
        nat[svl] = tuple((head if internal_chain == svl else []) + _balance(sp, cat.local, seps))
        used.update(map(id, cat.local))

    # ClusterIP
    if cat.internal:
        dispatch.append((sp.cluster_ip, f'{cip_match} -m comment --comment "{spn} cluster IP" -j {internal_chain}'))
    elif cat.has_any:
        no_local.append("internal")
        f_services.append((sp.cluster_ip, f'{cip_match} -m comment --comment "{spn} has no local endpoints" -j DROP'))
    else:
        f_services.append((sp.cluster_ip, f'{cip_match} -m comment --comment "{spn} has no endpoints" -j REJECT'))

    # External destinations: NodePort, externalIPs, load-balancer IPs.
    nodeports: list[str] = []
    filter_nodeports: list[str] = []
    if sp.externally_reachable:
        if cat.has_any:
            nat[ext] = tuple(_external_chain(sp, ctx, svc, svl, bool(cat.local)))
            for ip in sp.external_ips:
                dispatch.append((ip, f'-d {ip}/{hp} {match} -m comment --comment "{spn} external IP" -j {ext}'))
            for ip in sp.lb_ips:
                target = fw if sp.source_ranges else ext
                dispatch.append((ip, f'-d {ip}/{hp} {match} -m comment --comment "{spn} loadbalancer IP" -j {target}'))
            if sp.lb_ips and sp.source_ranges:
                nat[fw] = tuple(_firewall_chain(sp, ctx, ext))
                for ip in sp.lb_ips:
                    f_firewall.append((ip, f'-d {ip}/{hp} {match} -m comment --comment "{spn} traffic not accepted by {fw}" -j DROP'))
            if sp.node_port:
                nodeports.append(f'{_proto(sp)} --dport {sp.node_port} -m comment --comment "{spn}" -j {ext}')
        if not cat.external:
            verdict, why = ("DROP", "has no local endpoints") if cat.has_any else ("REJECT", "has no endpoints")
            if cat.has_any:
                no_local.append("external")
            for ip in sp.external_ips + sp.lb_ips:
                f_external.append((ip, f'-d {ip}/{hp} {match} -m comment --comment "{spn} {why}" -j {verdict}'))
            if sp.node_port:
                f_external_plain.append(
                    f'-m addrtype --dst-type LOCAL {_proto(sp)} --dport {sp.node_port} -m comment --comment "{spn} {why}" -j {verdict}'
                )
    if sp.hc_node_port:
        filter_nodeports.append(
            f'-p tcp -m tcp --dport {sp.hc_node_port} -m comment --comment "{spn} health check node port" -j ACCEPT'
        )
    # DNAT needs only the protocol (``-p``) to take a port; a bare ``-m tcp`` would match every
    # packet that ``-p tcp`` does in nat (conntrack defragments first), so it is left out.
    proto_p = f"-p {proto_l}"
    masq = f"/{hp} -j {n.MARK_MASQ}"
    affinity = sp.affinity_timeout is not None
    for ep in eps:  # already in address order; the SEP chain: hairpin masquerade, then the DNAT
        k = id(ep)
        if k in used:
            sep = seps[k]
            recent = f" -m recent --name {sep} --set" if affinity else ""
            nat[sep] = (f"-s {ep.ip}{masq}", f"{proto_p}{recent} -j DNAT --to-destination {addresses[k]}")
    return ServiceRules(
        nat_chains=nat,
        nat_dispatch=tuple(dispatch),
        nat_nodeports=tuple(nodeports),
        filter_services=tuple(f_services),
        filter_external=tuple(f_external),
        filter_external_plain=tuple(f_external_plain),
        filter_firewall=tuple(f_firewall),
        filter_nodeports=tuple(filter_nodeports),
        no_local_endpoints=tuple(no_local),
        local_endpoints=len(cat.local),
        endpoint_count=len(used),
    )


def _external_chain(sp: ServicePortInfo, ctx: NodeContext, svc: str, svl: str, has_local: bool) -> list[str]:
    spn = str(sp.name)
    if not sp.etp_local:
        return [f'-m comment --comment "masquerade traffic for {spn} external destinations" -j {n.MARK_MASQ}', f"-j {svc}"]
    rules = []
    if ctx.cluster_cidrs:
        rules.append(f'-s {ctx.cluster_cidrs[0]} -m comment --comment "pod traffic for {spn} external destinations" -j {svc}')
    rules.append(f'-m comment --comment "masquerade LOCAL traffic for {spn} external destinations" -m addrtype --src-type LOCAL -j {n.MARK_MASQ}')
    rules.append(f'-m comment --comment "route LOCAL traffic for {spn} external destinations" -m addrtype --src-type LOCAL -j {svc}')
    if has_local:
        rules.append(f"-j {svl}")
    return rules


def _firewall_chain(sp: ServicePortInfo, ctx: NodeContext, ext: str) -> list[str]:
    spn = str(sp.name)
    rules = [f'-s {c} -m comment --comment "{spn} loadbalancer IP" -j {ext}' for c in sp.source_ranges]
    nets = [ipaddress.ip_network(c) for c in sp.source_ranges]
    if any(ipaddress.ip_address(ip) in net for ip in ctx.node_ips for net in nets):
        for ip in sp.lb_ips:
            rules.append(f'-s {ip}/{ctx.host_prefix} -m comment --comment "{spn} loadbalancer IP" -j {ext}')
    rules.append(f'-m comment --comment "other traffic to {spn} loadbalancer IP will be dropped by {n.PROXY_FIREWALL}"')
    return rules


def assemble(fragments: Iterable[ServiceRules], ctx: NodeContext) -> Tables:
    """The whole desired state: fixed chains, dispatch trees, service chains."""
    nat_chains: dict[str, tuple[str, ...]] = {}
    dispatch: list[tuple[str, str]] = []
    nodeports: list[str] = []
    f_services: list[tuple[str, str]] = []
    f_external: list[tuple[str, str]] = []
    f_external_plain: list[str] = []
    f_firewall: list[tuple[str, str]] = []
    f_nodeports: list[str] = []
    for fr in fragments:
        nat_chains.update(fr.nat_chains)
        dispatch.extend(fr.nat_dispatch)
        nodeports.extend(fr.nat_nodeports)
        f_services.extend(fr.filter_services)
        f_external.extend(fr.filter_external)
        f_external_plain.extend(fr.filter_external_plain)
        f_firewall.extend(fr.filter_firewall)
        f_nodeports.extend(fr.filter_nodeports)

    mark = f"{ctx.masq_mark:#08x}"
    leaf = ctx.dispatch_leaf
    nat: dict[str, list[str]] = build_tree("nat", n.SERVICES, dispatch, leaf)
    nat[n.SERVICES].extend(_nodeport_jumps(ctx))
    nat[n.NODEPORTS] = nodeports
    nat[n.POSTROUTING] = [
        f"-m mark ! --mark {mark}/{mark} -j RETURN",
        f"-j MARK --xor-mark {mark}",
        '-m comment --comment "podnet service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if ctx.random_fully else ""),
    ]
    nat[n.MARK_MASQ] = [f"-j MARK --or-mark {mark}"]
    nat[n.CANARY] = [CANARY_RULE]

    flt: dict[str, list[str]] = build_tree("filter", n.SERVICES, f_services, leaf)
    flt.update(build_tree("filter", n.EXTERNAL_SERVICES, f_external, leaf))
    flt[n.EXTERNAL_SERVICES].extend(f_external_plain)
    flt.update(build_tree("filter", n.PROXY_FIREWALL, f_firewall, leaf))
    flt[n.NODEPORTS] = f_nodeports
    forward = []
    if ctx.drop_invalid:
        forward.append("-m conntrack --ctstate INVALID -j DROP")
    forward += [
        f'-m comment --comment "podnet forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT',
        '-m comment --comment "podnet forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]
    flt[n.FORWARD] = forward
    flt[n.FIREWALL] = (
        [
            '-m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 '
            "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        ]
        if ctx.localhost_nodeports_active
        else []
    )
    flt[n.CANARY] = [CANARY_RULE]

    out_nat = {k: tuple(v) for k, v in nat.items()}
    out_nat.update(nat_chains)
    return {
        "mangle": {n.CANARY: (CANARY_RULE,)},
        "filter": {k: tuple(v) for k, v in flt.items()},
        "nat": out_nat,
    }


def shared_part(fr: ServiceRules) -> tuple:
    """What a fragment contributes to chains it does not own (dispatch trees, NodePorts, filter)."""
    return (fr.nat_dispatch, fr.nat_nodeports, fr.filter_services, fr.filter_external,
            fr.filter_external_plain, fr.filter_firewall, fr.filter_nodeports)


def reassemble(previous: Tables, old: Iterable[ServiceRules], new: Iterable[ServiceRules]) -> Tables:
    """``previous`` (an :func:`assemble` result) with the fragments ``old`` replaced by ``new``.

    Equal to assembling the whole set again when the replaced fragments' shared parts
    (:func:`shared_part`, in order) equal the new ones': then only chains the fragments own
    differ. The caller checks that; unchanged tables and chains are shared, not copied."""
    nat = dict(previous["nat"])
    for fr in old:
        for chain in fr.nat_chains:
            nat.pop(chain, None)
    for fr in new:
        nat.update(fr.nat_chains)
    return {**previous, "nat": nat}


def _nodeport_jumps(ctx: NodeContext) -> list[str]:
    comment = '-m comment --comment "podnet service nodeports; NOTE: this must be the last rule in this chain"'
    if not ctx.nodeport_cidrs:
        not_lo = "" if ctx.localhost_nodeports_active else f"! -d {ctx.loopback} "
        return [f"{comment} -m addrtype --dst-type LOCAL {not_lo}-j {n.NODEPORTS}"]
    ips = list(ctx.nodeport_ips())
    if ctx.localhost_nodeports_active and "127.0.0.1" not in ips:
        ips.append("127.0.0.0/8")
    return [f"{comment} -d {ip if '/' in ip else f'{ip}/{ctx.host_prefix}'} -j {n.NODEPORTS}" for ip in ips]


# Jumps from the built-in chains, ensured (inserted first) on full syncs.
JUMPS: tuple[tuple[str, str, str], ...] = (
    ("filter", "INPUT", f'-m conntrack --ctstate NEW -m comment --comment "podnet load balancer firewall" -j {n.PROXY_FIREWALL}'),
    ("filter", "OUTPUT", f'-m conntrack --ctstate NEW -m comment --comment "podnet load balancer firewall" -j {n.PROXY_FIREWALL}'),
    ("filter", "FORWARD", f'-m conntrack --ctstate NEW -m comment --comment "podnet load balancer firewall" -j {n.PROXY_FIREWALL}'),
    ("filter", "INPUT", f'-m conntrack --ctstate NEW -m comment --comment "podnet externally-visible service portals" -j {n.EXTERNAL_SERVICES}'),
    ("filter", "FORWARD", f'-m conntrack --ctstate NEW -m comment --comment "podnet externally-visible service portals" -j {n.EXTERNAL_SERVICES}'),
    ("filter", "INPUT", f'-m comment --comment "podnet health check service ports" -j {n.NODEPORTS}'),
    ("filter", "FORWARD", f'-m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j {n.SERVICES}'),
    ("filter", "OUTPUT", f'-m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j {n.SERVICES}'),
    ("filter", "FORWARD", f'-m comment --comment "podnet forwarding rules" -j {n.FORWARD}'),
    ("filter", "INPUT", f"-j {n.FIREWALL}"),
    ("filter", "OUTPUT", f"-j {n.FIREWALL}"),
    ("nat", "OUTPUT", f'-m comment --comment "podnet service portals" -j {n.SERVICES}'),
    ("nat", "PREROUTING", f'-m comment --comment "podnet service portals" -j {n.SERVICES}'),
    ("nat", "POSTROUTING", f'-m comment --comment "podnet postrouting rules" -j {n.POSTROUTING}'),
)
