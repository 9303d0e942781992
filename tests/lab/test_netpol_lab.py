"""``podnet lab check --suite netpol`` on a real 2-node lab: a few upstream cases (two of them
label updates: a namespace and a pod relabelled under a policy), every truth table as expected,
and a case with a deliberately wrong table reported as a mismatch. Root, slow: 35-70 s measured
(lab up, 6 cases, 2 update cases, 1 wrong case, down) as the shared 2-core machine's load varies.

The lab has no pods of its own (``--pods-per-node 0``): the suite creates namespaces x, y, z,
pods a, b, c spread over both nodes and a Service per pod, probes through the Services, and
removes them; ``down`` runs in a finally block."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.netlab.check.netpol_cases import ALL, Case
from podnet.netlab.check.netpol_suite import render_case, run_suite
from podnet.netlab.lab import labstate

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODNET = str(Path(sys.executable).parent / "podnet")
CASES = ["default-deny-ingress", "podselector-and-namespaceselector", "named-port-ingress-other-port-denied",
         "egress-ipblock-with-except", "udp-only-policy-allows-udp", "udp-only-policy-denies-tcp"]
UPDATES = ["allow-ingress-from-updated-namespace", "deny-ingress-to-updated-pod"]


def podnet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PODNET, "lab", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab():
    name = "np" + secrets.token_hex(3)
    try:
        yield name
    finally:
        podnet("down", "--name", name, timeout=60)


def test_upstream_cases_on_a_two_node_lab(lab):
    up = podnet("up", "--name", lab, "--nodes", "2", "--pods-per-node", "0")
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert re.search(r"policy\s*: podnet-policy", up.stdout), up.stdout[-1000:]
    args = ["check", "--name", lab, "--suite", "netpol"]
    for c in CASES + UPDATES + ["sctp-protocol-only-all-ports"]:
        args += ["--case", c]
    check = podnet(*args)
    out = check.stdout
    assert check.returncode == 0, out[-6000:] + check.stderr[-2000:]
    judged = ["baseline-no-policy", *CASES, *(f"{u}/{phase}" for u in UPDATES for phase in ("before", "after"))]
    for c in judged:
        assert re.search(rf"^{re.escape(c)}  \((TCP|UDP)/\d+, .*\): pass$", out, re.M), (c, out[-4000:])
    assert re.search(r"^sctp-protocol-only-all-ports .*: skip", out, re.M)
    assert f"{len(judged)}/{len(judged)} netpol cases passed, 1 skipped" in out
    # the default-deny table really shows blocked cells (the suite observed denials, not only passes)
    deny = out.split("default-deny-ingress  (")[1].split("\n\n")[0]
    assert deny.count(" X ") >= 18 and "!" not in deny
    # the suite removed what it created: the lab's namespaces are back to its own
    ns = subprocess.run(["kubectl", "--kubeconfig", f"/run/podnet/{lab}/kubeconfig", "get", "ns", "-o", "name"],
                        capture_output=True, text=True, timeout=60)
    assert ns.returncode == 0, ns.stderr
    assert not {"namespace/x", "namespace/y", "namespace/z"} & set(ns.stdout.split())

    # the suite can fail: default deny in x, but a table that expects everything open
    st = labstate.load(lab)
    wrong = Case("wrong-on-purpose", [("x", {"podSelector": {}, "ingress": []})], "TCP", 80, lambda f, t: True)
    results = asyncio.run(run_suite(st.plan(), st, [wrong]))
    res = results[-1]
    assert res.ok is False and res.attempts == 2, render_case(res)
    assert set(res.wrong) == {(f, t) for f in ALL for t in ALL if f != t and t.startswith("x/")}, render_case(res)
