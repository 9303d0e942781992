"""Random policies on the e2e topology: the model agrees with a direct reading of the API
semantics (written here independently, pod by pod), and the rendered rules on the fake kernel
agree with the model, for every pair of pods and every port/protocol probed."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.kube.netpol import NAMESPACE_NAME_LABEL, NetworkPolicy
from podnet.policy.model import allowed, compute
from podnet.policy.programmer import Programmer
from podnet.policy.testing import FakeKernel

from .cases import ALL, ip, snapshot

labels = st.sampled_from([{}, {"pod": "a"}, {"pod": "b"}])
ns_labels = st.sampled_from([{}, {NAMESPACE_NAME_LABEL: "y"}, {"team": "t"}])
exprs = st.sampled_from([
    [], [{"key": "pod", "operator": "In", "values": ["a", "c"]}], [{"key": "pod", "operator": "NotIn", "values": ["b"]}],
    [{"key": "pod", "operator": "Exists"}], [{"key": "team", "operator": "DoesNotExist"}],
])


@st.composite
def selector(draw, label_st):
    out = {"matchLabels": draw(label_st)}
    e = draw(exprs) if label_st is labels else []
    if e:
        out["matchExpressions"] = e
    return out


@st.composite
def peer(draw):
    kind = draw(st.sampled_from(["pod", "ns", "both", "block"]))
    if kind == "block":
        return {"ipBlock": draw(st.sampled_from([
            {"cidr": "10.1.0.0/16"}, {"cidr": "10.1.0.0/16", "except": ["10.1.1.0/24"]},
            {"cidr": "10.1.1.0/24", "except": ["10.1.1.2/32"]}, {"cidr": "0.0.0.0/0", "except": ["10.1.2.0/24"]}]))}
    out = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selector(labels))
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selector(ns_labels))
    return out


ports = st.lists(st.sampled_from([
    {"port": 80}, {"port": 81, "protocol": "UDP"}, {"port": 80, "endPort": 81}, {"protocol": "SCTP"},
    {"port": "serve-81-tcp"}, {"port": "serve-80-udp", "protocol": "UDP"}, {"port": "nosuch"}]), max_size=2)
rule = st.fixed_dictionaries({}, optional={"peers": st.lists(peer(), max_size=2), "ports": ports})


@st.composite
def policy(draw):
    spec = {"podSelector": draw(selector(labels))}
    ing, eg = draw(st.lists(rule, max_size=2)), draw(st.lists(rule, max_size=2))
    if ing:
        spec["ingress"] = [{"from": r.get("peers", []), "ports": r.get("ports", [])} for r in ing]
    if eg:
        spec["egress"] = [{"to": r.get("peers", []), "ports": r.get("ports", [])} for r in eg]
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types:
        spec["policyTypes"] = types
    return draw(st.sampled_from(["x", "y"])), spec


# ----------------------------------------------------------------- the API semantics, read directly

def _in(ipaddr: str, cidr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ipaddr) in ipaddress.ip_network(cidr)


def _peer_ok(pol: NetworkPolicy, p, other: str, ns_of: dict, pod_labels: dict, ns_lbl: dict) -> bool:
    if p.ip_block is not None:
        return _in(ip(other), p.ip_block.cidr) and not any(_in(ip(other), e) for e in p.ip_block.excepts)
    ns = ns_of[other]
    if p.namespace_selector is None and ns != pol.namespace:
        return False
    if p.namespace_selector is not None and not p.namespace_selector.matches(ns_lbl[ns]):
        return False
    return p.pod_selector is None or p.pod_selector.matches(pod_labels[other])


def _port_ok(rule, dest_pod, proto: str, port: int, pods_by_key, named_ok: bool) -> bool:
    """``named_ok``: named ports may match (false when the destination is matched only as an
    ipBlock address on egress: it has no container ports to resolve a name on)."""
    if not rule.ports:
        return True
    for pp in rule.ports:
        if pp.protocol != proto:
            continue
        if pp.name:
            if named_ok and pods_by_key[dest_pod].named_port(pp.name, proto) == port:
                return True
        elif pp.port is None or pp.port <= port <= (pp.end_port or pp.port):
            return True
    return False


def spec_allows(snap, src: str, dst: str, proto: str, port: int) -> bool:
    pods = {p.key: p for p in snap.pods}
    ns_of = {k: p.namespace for k, p in pods.items()}
    pod_labels = {k: dict(p.labels) for k, p in pods.items()}
    ns_lbl = {n.name: {**dict(n.labels), NAMESPACE_NAME_LABEL: n.name} for n in snap.namespaces}
    for direction, me, other in (("Egress", src, dst), ("Ingress", dst, src)):
        pols = [p for p in snap.policies if p.namespace == ns_of[me] and p.pod_selector.matches(pod_labels[me])
                and direction in p.policy_types]
        if not pols:
            continue
        ok = False
        for pol in pols:
            for r in (pol.egress if direction == "Egress" else pol.ingress):
                if not r.peers:
                    ok = ok or _port_ok(r, dst, proto, port, pods, True)
                for pe in r.peers:
                    if _peer_ok(pol, pe, other, ns_of, pod_labels, ns_lbl):
                        named_ok = direction == "Ingress" or pe.ip_block is None
                        ok = ok or _port_ok(r, dst, proto, port, pods, named_ok)
        if not ok:
            return False
    return True


PROBES = [("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81), ("SCTP", 80)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policy(), max_size=3), st.sampled_from([{}, {"z": {"team": "t"}}]))
def test_model_and_rules_agree_with_the_api_semantics(policies, extra_ns_labels):
    snap = snapshot(policies, ns_labels=extra_ns_labels)
    verdicts = compute(snap, None)
    k = FakeKernel()
    asyncio.run(Programmer(k).apply(verdicts))
    for proto, port in PROBES:
        for f in ALL:
            for t in ALL:
                if f == t:
                    continue
                want = spec_allows(snap, f, t, proto, port)
                assert allowed(verdicts, ip(f), ip(t), proto, port) == want, (f, t, proto, port)
                assert k.forward(ip(f), ip(t), proto, port) == want, (f, t, proto, port)
