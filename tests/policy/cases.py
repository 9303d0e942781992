"""The upstream e2e model (kubernetes test/e2e/network/netpol) on the pure policy model.

The cases themselves live in podnet.netlab.check.netpol_cases (shared with ``podnet lab check
--suite netpol``); this module places them on fixed addresses.

Namespaces x, y, z (labelled ``kubernetes.io/metadata.name`` by the API server);
pods a, b, c in each, labelled ``pod: <name>``, serving 80 and 81 over TCP, UDP
and SCTP with container ports named ``serve-<port>-<protocol>``. Pod x/a is
10.1.0.1, y/b 10.1.1.2 and so on. Each case is a list of policies and the
expected truth table as a function of (from, to) -> bool for one protocol/port;
self-to-self pairs are ignored, as upstream ignores loopback.
"""

from __future__ import annotations

from typing import Callable

from podnet.kube.netpol import parse_network_policy, parse_policy_pod
from podnet.kube.objects import parse_namespace
from podnet.netlab.check import netpol_cases as model
from podnet.netlab.check.netpol_cases import ALL, NAMESPACES, PODS, PORTS
from podnet.policy.model import Snapshot
from podnet.policy.testing import raw_ns, raw_pod, raw_policy


def ip(pod: str) -> str:
    ns, name = pod.split("/")
    return f"10.1.{NAMESPACES.index(ns)}.{PODS.index(name) + 1}"


def snapshot(policies: list[tuple[str, dict]], node_of: Callable[[str], str] = lambda pod: "node-a",
             ns_labels: dict[str, dict[str, str]] | None = None) -> Snapshot:
    pods = [parse_policy_pod(raw_pod(p.split("/")[0], p.split("/")[1], ip(p), node=node_of(p),
                                     labels={"pod": p.split("/")[1]}, ports=PORTS)) for p in ALL]
    nss = [parse_namespace(raw_ns(n, **(ns_labels or {}).get(n, {}))) for n in NAMESPACES]
    pols = [parse_network_policy(raw_policy(ns, f"p{i}", spec)) for i, (ns, spec) in enumerate(policies)]
    return Snapshot(tuple(pols), tuple(pods), tuple(nss))


# (id, policies, protocol, port, expected(from, to)): the shared table with ipBlock fields filled
# from the addresses above.
CASES: list[tuple[str, list[tuple[str, dict]], str, int, Callable[[str, str], bool]]] = [
    (c.id, model.resolve(c.policies, {p: ip(p) for p in ALL}), c.protocol, c.port, c.expected) for c in model.CASES]
