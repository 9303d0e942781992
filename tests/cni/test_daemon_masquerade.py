"""The CNI daemon's masquerade rules: a failed attempt is retried with the route re-checks, once
done they are not rewritten every tick; and the proxy never treats the CNI's chain as its own."""

from __future__ import annotations

import subprocess

import pytest

from podnet.cni import daemon, routes
from podnet.cni.cli import parser
from podnet.proxy import names


@pytest.fixture
def node(monkeypatch, tmp_path):
    calls: list[list[str]] = []
    outcomes: list[Exception | None] = []

    def fake_apply(pod_cidrs, cluster_cidrs, enabled):
        calls.append(list(pod_cidrs))
        err = outcomes.pop(0) if outcomes else None
        if err is not None:
            raise err

    monkeypatch.setattr(routes, "apply_masquerade", fake_apply)
    monkeypatch.setattr(daemon.Daemon, "ensure_forwarding", lambda self: None)
    args = parser().parse_args(["daemon", "--node-name", "n1", "--socket", str(tmp_path / "s"),
                                "--data-dir", str(tmp_path), "--masquerade"])
    d = daemon.Daemon(daemon.options_from(args))
    return d, calls, outcomes


def test_failed_masquerade_is_retried_until_it_succeeds(node):
    d, calls, outcomes = node
    outcomes += [subprocess.CalledProcessError(1, ["iptables"], stderr="Couldn't load target `PODNET-MASQ'"),
                 RuntimeError("xtables lock")]
    d.set_pod_cidrs(("10.244.1.0/24",))     # first attempt fails
    d.ensure_masquerade()                   # the next route re-check: fails again
    d.ensure_masquerade()                   # and again: succeeds
    d.ensure_masquerade()                   # done: nothing more
    assert calls == [["10.244.1.0/24"]] * 3


def test_new_pod_cidrs_apply_again(node):
    d, calls, _ = node
    d.set_pod_cidrs(("10.244.1.0/24",))
    d.ensure_masquerade()
    d.set_pod_cidrs(("10.244.1.0/24", "fd00:10:244:1::/64"))
    assert calls == [["10.244.1.0/24"], ["10.244.1.0/24", "fd00:10:244:1::/64"]]


@pytest.mark.parametrize(("chain", "ours"), [
    pytest.param("PODNET-SERVICES", True, id="proxy-services"),
    pytest.param("PODNET-SVC-ABCD0123456789EF", True, id="proxy-service-chain"),
    pytest.param("PODNET-MASQ", False, id="cni-masquerade"),
    pytest.param("PODNET-NP-I-ABC", False, id="policy-ingress"),
    pytest.param("PODNET-POL-FWD", False, id="policy-forward"),
    pytest.param("KUBE-SERVICES", False, id="kube-proxy"),
])
def test_proxy_owns_only_its_own_chains(chain, ours):
    assert names.is_ours(chain) is ours
