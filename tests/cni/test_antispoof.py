"""The anti-spoofing check as data: the restore text, reading it back from iptables-save, and the repair the
daemon runs with every route re-check (against the in-memory raw table; the kernel is tested in
test_antispoof_netns.py)."""

from __future__ import annotations

import subprocess

import pytest

from podnet.cni import antispoof, daemon
from podnet.cni.cli import parser
from podnet.cni.testing import FakeRawTables

DROP = antispoof.RULES[-1]


def test_restore_text_flushes_the_chain_and_inserts_the_jump_first():
    assert antispoof.restore_text(jump=True) == (
        "*raw\n:PODNET-ANTISPOOF - [0:0]\n-A PODNET-ANTISPOOF -m rpfilter -j RETURN\n-A PODNET-ANTISPOOF -j DROP\n"
        "-I PREROUTING 1 -i pnc+ -j PODNET-ANTISPOOF\nCOMMIT\n")
    assert "PREROUTING" not in antispoof.restore_text(jump=False)


SAVED = ("*raw\n:PREROUTING ACCEPT [10:600]\n:PODNET-ANTISPOOF - [0:0]\n"
         "[10:600] -A PREROUTING -i pnc+ -j PODNET-ANTISPOOF\n"
         "[7:420] -A PODNET-ANTISPOOF -m rpfilter -j RETURN\n[3:180] -A PODNET-ANTISPOOF -j DROP\nCOMMIT\n")


@pytest.mark.parametrize(("text", "want"), [
    pytest.param(SAVED, antispoof.State(True, 1, 3), id="intact-with-counters"),
    pytest.param("*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", antispoof.State(False, 0, 0), id="missing"),
    pytest.param(SAVED.replace("[7:420] -A PODNET-ANTISPOOF -m rpfilter -j RETURN\n", ""),
                 antispoof.State(False, 1, 3), id="rule-removed"),
    pytest.param(SAVED.replace("-m rpfilter -j RETURN", "-m rpfilter --loose -j RETURN"),
                 antispoof.State(False, 1, 3), id="rule-changed"),
    pytest.param(SAVED.replace("COMMIT", "[0:0] -A PREROUTING -i pnc+ -j PODNET-ANTISPOOF\nCOMMIT"),
                 antispoof.State(True, 2, 3), id="two-jumps"),
    pytest.param(SAVED.replace("[3:180] ", "").replace("[7:420] ", "").replace("[10:600] ", ""),
                 antispoof.State(True, 1, 0), id="without-counters"),
])
def test_parse_save(text, want):
    got = antispoof.parse_save(text)
    assert got == want
    assert got.intact == (want.chain_intact and want.jumps == 1)


def test_ensure_writes_once_and_then_only_reads():
    t = FakeRawTables()
    assert antispoof.ensure(t, 4).intact and t.restores == 1
    t.count(4, DROP, 5)
    assert antispoof.ensure(t, 4) == antispoof.State(True, 1, 5)
    assert t.restores == 1
    assert t.chains[6] == {"PREROUTING": []}


@pytest.mark.parametrize("damage", ["flush", "extra-jump", "jump-removed", "rule-appended"])
def test_ensure_repairs_a_foreign_change(damage):
    t = FakeRawTables()
    antispoof.ensure(t, 6)
    pre, chain = t.chains[6]["PREROUTING"], t.chains[6][antispoof.CHAIN]
    if damage == "flush":
        chain.clear()
    elif damage == "extra-jump":
        pre.append([0, antispoof.JUMP])
    elif damage == "jump-removed":
        pre.clear()
    else:
        chain.append([0, f"-A {antispoof.CHAIN} -s 10.0.0.0/8 -j RETURN"])
    assert not antispoof.parse_save(t.save(6)).intact
    assert antispoof.ensure(t, 6).intact
    assert [r for _, r in t.chains[6]["PREROUTING"]] == [antispoof.JUMP]
    assert [r for _, r in t.chains[6][antispoof.CHAIN]] == list(antispoof.RULES)


def test_the_jump_goes_before_other_rules():
    t = FakeRawTables()
    t.chains[4]["PREROUTING"].append([0, "-A PREROUTING -j CT --notrack"])
    antispoof.ensure(t, 4)
    assert [r for _, r in t.chains[4]["PREROUTING"]] == [antispoof.JUMP, "-A PREROUTING -j CT --notrack"]


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon.Daemon, "ensure_forwarding", lambda self: None)
    monkeypatch.setattr(daemon.Daemon, "ensure_masquerade", lambda self: None)
    args = parser().parse_args(["daemon", "--node-name", "n1", "--socket", str(tmp_path / "s"),
                                "--data-dir", str(tmp_path)])
    d = daemon.Daemon(daemon.options_from(args))
    d.antispoof_tables = FakeRawTables()
    return d


@pytest.mark.parametrize(("cidrs", "families"), [
    pytest.param((), [4], id="no-cidr-yet"),
    pytest.param(("10.244.1.0/24",), [4], id="ipv4"),
    pytest.param(("fd00:10:244:1::/64",), [4, 6], id="ipv6-only-cidr"),
    pytest.param(("10.244.1.0/24", "fd00:10:244:1::/64"), [4, 6], id="dual-stack"),
])
def test_daemon_checks_ipv4_and_every_pod_cidr_family(node, cidrs, families):
    node.set_pod_cidrs(cidrs)
    node.ensure_antispoof()
    t = node.antispoof_tables
    assert [f for f in (4, 6) if antispoof.CHAIN in t.chains[f]] == families


def test_daemon_exports_the_drop_counter_and_retries_a_failure(node):
    t = node.antispoof_tables
    t.fail_next = subprocess.CalledProcessError(4, ["iptables-restore"], stderr="xtables lock")
    node.ensure_antispoof()          # logged, nothing written
    assert antispoof.CHAIN not in t.chains[4]
    node.ensure_antispoof()          # the next route re-check
    t.count(4, DROP, 9)
    node.ensure_antispoof()
    assert antispoof.SPOOFED.labels("4")._value.get() == 9
    assert t.restores == 1
