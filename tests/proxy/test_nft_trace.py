"""The nftables tracer's own semantics (the flow tables in test_flows.py rely on them)."""

from __future__ import annotations

import pytest

from podnet.proxy.nft_rules import BASE_CHAINS
from podnet.proxy.nft_trace import NftTracer, hooks, parse_rule
from podnet.proxy.trace import Packet

NODE_IP = "192.168.0.2"


def tracer(chains: dict[str, list[str]], elements: dict[str, set[str]] | None = None) -> NftTracer:
    base = {c: [] for c in BASE_CHAINS}
    base.update(chains)
    return NftTracer(base, elements or {}, (NODE_IP,))


def test_base_chains_run_in_hook_and_priority_order():
    h = hooks()
    assert h["output"] == ["filter-output", "nat-output"]  # -110 before -100: filters see the service IP
    assert h["prerouting"] == ["nat-prerouting"] and h["postrouting"] == ["nat-postrouting"]


@pytest.mark.parametrize("rule", [
    pytest.param("ip saddr 10.0.0.1 counter accept", id="counter"),
    pytest.param("ct mark 0x1 accept", id="ct-mark"),
    pytest.param("log prefix x drop", id="log"),
    pytest.param("ip daddr 10.0.0.1 snat to 10.0.0.2", id="snat"),
    pytest.param("meta l4proto tcp dnat ip to 10.0.0.1:80", id="dnat-with-family"),
    pytest.param("jump", id="jump-without-chain"),
])
def test_rules_outside_the_grammar_are_refused(rule):
    with pytest.raises(ValueError):
        parse_rule(rule)


CASES = [
    pytest.param({"filter-output": ["accept"], "nat-output": ["meta l4proto tcp dnat to 10.0.1.1:80"]},
                 Packet(NODE_IP, "172.30.0.1", 80, local_origin=True), ("ACCEPT", ("10.0.1.1:80",)),
                 id="accept-ends-only-its-base-chain"),
    pytest.param({"filter-output": ["drop"], "nat-output": ["meta l4proto tcp dnat to 10.0.1.1:80"]},
                 Packet(NODE_IP, "172.30.0.1", 80, local_origin=True), ("DROP", ()), id="drop-is-final"),
    pytest.param({"nat-prerouting": ["jump a", "meta l4proto tcp dnat to 10.0.1.2:80"], "a": ["return", "drop"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("ACCEPT", ("10.0.1.2:80",)), id="jump-returns"),
    pytest.param({"nat-prerouting": ["goto a", "meta l4proto tcp dnat to 10.0.1.2:80"], "a": ["return"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("ACCEPT", ()), id="goto-does-not-return"),
    pytest.param({"nat-prerouting": ["numgen random mod 2 == 0 meta l4proto tcp dnat to 10.0.1.1:80",
                                     "meta l4proto tcp dnat to 10.0.1.2:80"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("ACCEPT", ("10.0.1.1:80", "10.0.1.2:80")), id="numgen-forks"),
    pytest.param({"nat-prerouting": ["ip daddr . meta l4proto . th dport vmap @m", "drop"], "a": ["reject"]},
                 Packet("10.0.3.3", "172.30.0.9", 80), ("DROP", ()), id="vmap-miss-falls-through"),
    pytest.param({"nat-prerouting": ["ip daddr . meta l4proto . th dport vmap @m", "drop"], "a": ["reject"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("REJECT", ()), id="vmap-hit-takes-the-verdict"),
    pytest.param({"nat-prerouting": ["meta l4proto udp dnat to 10.0.1.1:80"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("ACCEPT", ()), id="protocol-must-match"),
    pytest.param({"nat-prerouting": ["meta l4proto tcp dnat to 10.0.1.1:80"],
                  "filter-forward": ["ct status & dnat == 0 drop", "ip daddr 10.0.1.1 reject"]},
                 Packet("10.0.3.3", "172.30.0.1", 80), ("REJECT", ()), id="filter-sees-translated-destination"),
    pytest.param({"filter-forward": ["ct state invalid drop", "ct state established,related drop", "ct state new accept", "drop"]},
                 Packet("10.0.3.3", "10.0.1.1", 80), ("ACCEPT", ()), id="first-packet-is-new-only"),
]


@pytest.mark.parametrize("chains,pkt,want", CASES)
def test_walk(chains, pkt, want):
    r = tracer(chains, {"m": {"172.30.0.1 . tcp . 80 : goto a"}}).trace(pkt)
    assert (r.verdict, r.endpoints) == want


def test_masquerade_follows_the_mark_in_postrouting():
    t = tracer({
        "nat-prerouting": ["meta mark set meta mark | 0x4000", "meta l4proto tcp dnat to 10.0.1.1:80"],
        "nat-postrouting": ["meta mark & 0x4000 == 0 return", "meta mark set meta mark ^ 0x4000", "masquerade fully-random"],
    })
    assert t.trace(Packet("10.0.3.3", "172.30.0.1", 80)).masq


def test_affinity_set_membership_comes_from_the_packet_history():
    t = tracer({"nat-prerouting": ["ip saddr @aff update @aff { ip saddr } meta l4proto tcp dnat to 10.0.1.1:80",
                                   "meta l4proto tcp dnat to 10.0.1.2:80"]})
    assert t.trace(Packet("10.0.3.3", "172.30.0.1", 80)).endpoints == ("10.0.1.2:80",)
    again = t.trace(Packet("10.0.3.3", "172.30.0.1", 80, recent=frozenset({"aff"})))
    assert again.endpoints == ("10.0.1.1:80",) and again.recent_set == ("aff",)
