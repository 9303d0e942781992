"""``podnet lab check --suite netpol`` with AdminNetworkPolicy and BaselineAdminNetworkPolicy cases on
a real 2-node lab: the cluster-scoped objects are created through the lab API server, every
node's podnet-policy applies them, each truth table is as the network-policy-api conformance
tests expect, and the suite removes the objects it created. Root, slow: about 30 s measured
(lab up, 7 admin cases, down) on the shared 2-core machine; all 35 admin cases took 60 s.

The lab has no pods of its own (``--pods-per-node 0``); ``down`` runs in a finally block."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODNET = str(Path(sys.executable).parent / "podnet")
# one of each shape: ANP deny by port, Pass deferring to a NetworkPolicy, priority order, the
# ANP -> NP -> BANP integration, a BANP on egress, a networks (CIDR) peer, a nodes peer
CASES = ["anp-ingress-deny-at-port-80", "anp-ingress-pass-defers-to-networkpolicy", "anp-priority-lower-number-wins",
         "integration-banp-deny-without-np", "banp-egress-deny-at-port-80", "anp-egress-networks",
         "anp-egress-node-peers"]


def podnet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PODNET, "lab", *args], capture_output=True, text=True, timeout=timeout)


def kubectl(lab: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", f"/run/podnet/{lab}/kubeconfig", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def lab():
    name = "anp" + secrets.token_hex(3)
    try:
        yield name
    finally:
        podnet("down", "--name", name, timeout=60)


def test_admin_network_policy_cases_on_a_two_node_lab(lab):
    up = podnet("up", "--name", lab, "--nodes", "2", "--pods-per-node", "0")
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    args = ["check", "--name", lab, "--suite", "netpol"]
    for c in CASES:
        args += ["--case", c]
    check = podnet(*args)
    out = check.stdout
    assert check.returncode == 0, out[-6000:] + check.stderr[-2000:]
    judged = ["baseline-no-policy", *CASES]
    for c in judged:
        assert re.search(rf"^{re.escape(c)}  \((TCP|UDP)/\d+, .*\): pass$", out, re.M), (c, out[-4000:])
    assert f"{len(judged)}/{len(judged)} netpol cases passed" in out
    # the tables show real denials (9 cells expected and 9 observed): y -> x at 80 by the ANP, x -> y by the BANP
    anp = out.split("anp-ingress-deny-at-port-80  (")[1].split("\n\n")[0]
    assert anp.count(" X ") == 18 and "!" not in anp, anp
    banp = out.split("banp-egress-deny-at-port-80  (")[1].split("\n\n")[0]
    assert banp.count(" X ") == 18 and "!" not in banp, banp
    # the suite removed the cluster-scoped objects it created, and its namespaces
    left = kubectl(lab, "get", "adminnetworkpolicies,baselineadminnetworkpolicies", "-o", "name")
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout + left.stderr
    ns = kubectl(lab, "get", "ns", "-o", "name")
    assert ns.returncode == 0, ns.stderr
    assert not {"namespace/x", "namespace/y", "namespace/z"} & set(ns.stdout.split())
