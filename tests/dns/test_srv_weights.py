"""SRV answers as CoreDNS's kubernetes plugin writes them: weight floor(100/n) (at least 1) with n the
number of (address, port) services, and every address of every target in the additional section."""

from __future__ import annotations

import dns.message
import pytest

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler, run_sync
from podnet.dns.testing import eps, svc

ZONE = "default.svc.cluster.local."


def query(services, slices, name: str, qtype: str = "SRV"):
    snap = snapshot.build(services, slices, ["default"], snapshot.Config(), serial=1)
    h = Handler(answers.compile_table(snap))
    q = dns.message.make_query(name, qtype)
    return dns.message.from_wire(run_sync(h.answer(q.to_wire(), udp=False)))


def headless(n_v4: int, n_v6: int = 0, ports=({"name": "p", "port": 80},)):
    s = svc("default", "h", clusterIP="None", ports=[dict(p) for p in ports])
    slices = [eps("default", "h", "h4", "IPv4", [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"], "hostname": f"h{i}"}
                                               for i in range(n_v4)], [dict(p, protocol="TCP") for p in ports])]
    if n_v6:
        slices.append(eps("default", "h", "h6", "IPv6", [{"addresses": [f"fd00::{i + 1:x}"], "hostname": f"h{i}"}
                                                       for i in range(n_v6)], [dict(p, protocol="TCP") for p in ports]))
    return [s], slices


@pytest.mark.parametrize("n, weight", [
    pytest.param(1, 100, id="one"), pytest.param(2, 50, id="two"), pytest.param(3, 33, id="three"),
    pytest.param(7, 14, id="seven"), pytest.param(100, 1, id="hundred"), pytest.param(101, 1, id="at-least-one"),
])
def test_headless_weights(n, weight):
    r = query(*headless(n), f"_p._tcp.h.{ZONE}")
    srvs = [rr for rrset in r.answer for rr in rrset]
    assert len(srvs) == n or r.flags & dns.flags.TC
    assert {rr.weight for rr in srvs} == {weight}


def test_dual_stack_endpoints_count_per_address_and_carry_both_addresses():
    """Two dual-stack endpoints: 4 (address, port) services -> weight 25, two SRV records (one per
    target), and each target's A and AAAA in the additional section."""
    r = query(*headless(2, 2), f"_p._tcp.h.{ZONE}")
    assert sorted((rr.weight, rr.target.to_text()) for rrset in r.answer for rr in rrset) == [(25, f"h0.h.{ZONE}"), (25, f"h1.h.{ZONE}")]
    extra = sorted((rrset.name.to_text(), rr.to_text()) for rrset in r.additional for rr in rrset)
    assert extra == [(f"h0.h.{ZONE}", "10.1.0.1"), (f"h0.h.{ZONE}", "fd00::1"), (f"h1.h.{ZONE}", "10.1.0.2"), (f"h1.h.{ZONE}", "fd00::2")]


@pytest.mark.parametrize("cluster_ips, families, ports, name, want", [
    pytest.param(["10.96.0.7"], ["IPv4"], [{"name": "a", "port": 53}], "_a._tcp.s.", [(100, 53)], id="one-ip-one-port"),
    pytest.param(["10.96.0.7", "fd00::7"], ["IPv4", "IPv6"], [{"name": "a", "port": 53}], "_a._tcp.s.", [(50, 53)], id="dual-stack"),
    pytest.param(["10.96.0.7", "fd00::7"], ["IPv4", "IPv6"], [{"name": "a", "port": 53}, {"name": "b", "port": 54}], "s.",
                 [(25, 53), (25, 54)], id="bare-name-every-port"),
])
def test_clusterip_weights_and_glue(cluster_ips, families, ports, name, want):
    s = svc("default", "s", clusterIPs=cluster_ips, ipFamilies=families, ports=ports)
    r = query([s], [], name + ZONE)
    assert sorted((rr.weight, rr.port) for rrset in r.answer for rr in rrset) == want
    assert sorted(rr.to_text() for rrset in r.additional for rr in rrset) == sorted(cluster_ips)
