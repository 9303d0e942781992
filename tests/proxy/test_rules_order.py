"""A full sync declares service chains in descending name order, and the SEP DNAT rule carries no
empty match.

Why order matters: libiptc keeps user chains in one name-sorted list with an index it rebuilds every
355 new chains, and creating a chain walks that list three times from the index entry before the
name. Chains created in random name order make every walk a cache miss (a 10k-service restore
~1.4x); in ascending order every walk crosses the whole tail bucket; in descending order each new
chain sorts first among its kind and every walk stops within a few steps (bench/results/proxy.md).
names.py gives every chain of one Service the same leading characters (names.service_order); the
streamed full sync writes services in descending order of them and sorts each block's declarations,
so each kind of chain (SVC, SEP, ...) and the dispatch tree's chains are created in descending order.
"""

from __future__ import annotations

import re

import pytest

from podnet.proxy import names
from podnet.proxy.proxier import STREAM_BLOCK, FamilyProxier, Proxier
from podnet.proxy.testing import NODE, FakeIptables, ctx, ep, slice_, svc

SERVICES = STREAM_BLOCK * 2 + 17  # several streamed blocks


async def streamed_full_sync(n: int, ports=((80, "TCP", "http"),)) -> str:
    fake = FakeIptables()
    p = Proxier([FamilyProxier(fake, ctx(), NODE)])
    for i in range(n):
        p.on_service(None, svc(name=f"s{i:04d}", cluster_ip=f"172.30.{i // 250}.{i % 250 + 1}", ports=ports))
        p.on_slice(None, slice_(service=f"s{i:04d}", name=f"s{i:04d}-x",
                                ports=tuple((80, proto, name) for _, proto, name, *_ in ports),
                                endpoints=[ep(f"10.0.{i // 50}.{(i % 50) * 5 + j + 1}") for j in range(3)]))
    p.services_synced = p.slices_synced = True
    assert await p.sync()
    return fake.restores[0]


def declared(text: str, kind: str) -> list[str]:
    nat = text.split("*filter", 1)[0]
    return re.findall(rf"^:(PODNET-{kind}-\w+) ", nat, re.M)


@pytest.mark.parametrize("kind,count", [
    pytest.param("SVC", SERVICES, id="SVC"),
    pytest.param("SEP", SERVICES * 3, id="SEP"),
    pytest.param("DST", None, id="DST-dispatch-tree"),
])
async def test_full_sync_creates_chains_in_descending_name_order(kind, count):
    text = await streamed_full_sync(SERVICES)
    chains = declared(text, kind)
    if count is not None:
        assert len(chains) == count
    assert len(chains) > 1
    assert chains == sorted(chains, reverse=True)  # across every block


async def test_every_chain_of_a_service_shares_its_order_prefix():
    ports = ((80, "TCP", "http"), (53, "UDP", "dns"))
    text = await streamed_full_sync(3, ports)
    for i in range(3):
        prefix = names.service_order(f"ns/s{i:04d}")
        spns = [f"ns/s{i:04d}:{name}" for _, _, name in ports]
        own = [c for spn, (_, proto, _) in zip(spns, ports) for c in names.service_port_chains(spn, proto)]
        own += [names.endpoint_chain(spns[0], "TCP", f"10.0.0.{i * 5 + j + 1}:80") for j in range(3)]
        assert all(c.split("-", 2)[2].startswith(prefix) for c in own)
        assert all(f":{c} " in text for c in own if c.startswith(("PODNET-SVC-", "PODNET-SEP-")))


@pytest.mark.parametrize(
    "spn,proto,endpoint",
    [
        pytest.param("ns/web:http", "TCP", "10.0.0.1:80", id="named-port"),
        pytest.param("ns/web", "UDP", "[fd00::1]:53", id="unnamed-port-ipv6"),
        pytest.param("n" * 63 + "/" + "s" * 63 + ":" + "p" * 15, "SCTP", "10.0.0.1:65535", id="longest"),
    ],
)
def test_endpoint_chain_namer_matches_endpoint_chain(spn, proto, endpoint):
    one = names.endpoint_chain(spn, proto, endpoint)
    assert one == names.endpoint_chain_namer(spn, proto.lower())(endpoint)
    assert len(one) == len("PODNET-SEP-") + 16 <= names.MAX_CHAIN_NAME
    assert one.startswith("PODNET-SEP-" + names.service_order(spn.partition(":")[0]))


async def test_dnat_rule_is_protocol_only():
    text = await streamed_full_sync(1)
    dnat = [ln for ln in text.splitlines() if "-j DNAT" in ln]
    assert len(dnat) == 3
    assert all(re.search(r" -p tcp -j DNAT --to-destination 10\.0\.0\.\d:80$", ln) for ln in dnat)
