"""The network-policy-api conformance cases for AdminNetworkPolicy and BaselineAdminNetworkPolicy, on the
x/y/z a/b/c model of tests/policy/cases.py.

The cases themselves live in podnet.netlab.check.netpol_admin_cases (shared with ``podnet lab check
--suite netpol``, read from sigs.k8s.io/network-policy-api's conformance tests); this module places
them on the fixed addresses of tests/policy/cases.py and parses the admin objects for the model.
"""

from __future__ import annotations

from typing import Any, Callable

from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
from podnet.netlab.check import netpol_admin_cases as shared
from podnet.netlab.check.netpol_admin_cases import NS_Y, NS_Z, SUBJ_X, anp, banp, ns, pod, rule, tcp
from podnet.netlab.check.netpol_cases import ALL, resolve
from podnet.policy.model import Snapshot

from .cases import ip, snapshot

__all__ = ["CASES", "admin_snapshot", "parse", "NS_Y", "NS_Z", "SUBJ_X", "anp", "banp", "ns", "pod", "rule", "tcp"]


def parse(raw: dict) -> Any:
    if raw["kind"] == "AdminNetworkPolicy":
        return parse_admin_network_policy(raw)
    return parse_baseline_admin_network_policy(raw)


def admin_snapshot(admin: list[dict], policies: list[tuple[str, dict]] = ()) -> Snapshot:
    snap = snapshot(list(policies))
    return Snapshot(snap.policies, snap.pods, snap.namespaces, tuple(parse(a) for a in admin))


def _fill(objs: list, ips: dict[str, str]) -> list:
    return [o for _, o in resolve([("", o) for o in objs], ips)]


_IPS = {p: ip(p) for p in ALL}

# (id, admin objects, NetworkPolicies, protocol, port, expected(from, to)): the shared table with
# ``{ns/pod}`` fields filled from the fixed addresses of tests/policy/cases.py.
CASES: list[tuple[str, list[dict], list[tuple[str, dict]], str, int, Callable[[str, str], bool]]] = [
    (c.id, _fill(c.admin, _IPS), resolve(c.policies, _IPS), c.protocol, c.port, c.expected)
    for c in shared.ADMIN_CASES]
