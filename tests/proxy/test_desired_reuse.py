"""FamilyProxier.desired() reuses its last result: always equal to assembling every fragment again.

A partial sync after an endpoint change swaps only the changed services' own chains into the last
desired state (rules.reassemble); any change that touches a shared chain (dispatch tree, NodePorts,
filter verdicts), a new or deleted service, or a new node context assembles everything again.
"""

from __future__ import annotations

import pytest

from podnet.proxy.proxier import FamilyProxier, Proxier
from podnet.proxy.rules import assemble
from podnet.proxy.testing import NODE, FakeIptables, ctx, ep, slice_, svc

PORTS = ((80, "TCP", "http"),)


def _service(i: int, **spec):
    return svc(name=f"s{i}", cluster_ip=f"172.30.0.{i + 1}", ports=PORTS, **spec)


def _slice(i: int, n: int, first: int = 1):
    return slice_(service=f"s{i}", name=f"s{i}-x", ports=((8080, "TCP", "http"),),
                  endpoints=[ep(f"10.0.{i}.{first + j}") for j in range(n)])


async def _synced(n: int = 6) -> tuple[Proxier, FamilyProxier, list, list]:
    fam = FamilyProxier(FakeIptables(), ctx(), NODE)
    p = Proxier([fam])
    services = [_service(i) for i in range(n)]
    slices = [_slice(i, 3) for i in range(n)]
    for service, endpoints in zip(services, slices):
        p.on_service(None, service)
        p.on_slice(None, endpoints)
    p.on_services_synced()
    p.on_slices_synced()
    assert await p.sync()
    return p, fam, services, slices


def _endpoint_added(p, services, slices):
    p.on_slice(slices[2], _slice(2, 4))


def _endpoint_replaced(p, services, slices):
    p.on_slice(slices[3], _slice(3, 3, first=7))


def _two_services_endpoints(p, services, slices):
    p.on_slice(slices[0], _slice(0, 1))
    p.on_slice(slices[5], _slice(5, 5))


def _last_endpoint_removed(p, services, slices):
    p.on_slice(slices[1], _slice(1, 0))  # cluster IP: dispatch entry becomes a filter REJECT


def _service_added(p, services, slices):
    p.on_service(None, _service(9))
    p.on_slice(None, _slice(9, 2))


def _service_deleted(p, services, slices):
    p.on_service(services[4], None)


def _became_nodeport(p, services, slices):
    p.on_service(services[2], svc(name="s2", cluster_ip="172.30.0.3", ports=((80, "TCP", "http", 30080),),
                                  type="NodePort"))


def _nothing(p, services, slices):
    pass


CASES = [
    # (id, change, reuses the shared chains)
    ("endpoint-added", _endpoint_added, True),
    ("endpoint-replaced", _endpoint_replaced, True),
    ("two-services-endpoints", _two_services_endpoints, True),
    ("nothing-changed", _nothing, True),
    ("last-endpoint-removed", _last_endpoint_removed, False),
    ("service-added", _service_added, False),
    ("service-deleted", _service_deleted, False),
    ("became-nodeport", _became_nodeport, False),
]


@pytest.mark.parametrize("change,reused", [pytest.param(c, r, id=i) for i, c, r in CASES])
async def test_desired_equals_assembling_everything_again(change, reused):
    p, fam, services, slices = await _synced()
    before = fam.desired()
    change(p, services, slices)
    assert await p.sync()
    after = fam.desired()
    assert after == assemble((f for k in sorted(fam.fragments) for f in fam.fragments[k]), fam.ctx)
    assert fam.applied == after
    assert (after["filter"] is before["filter"]) is reused


async def test_new_node_context_assembles_everything_again():
    p, fam, services, slices = await _synced()
    before = fam.desired()
    assert fam.update_zone("zone-a")
    assert await p.sync()
    after = fam.desired()
    assert after["filter"] is not before["filter"]
    assert after == assemble((f for k in sorted(fam.fragments) for f in fam.fragments[k]), fam.ctx)


async def test_partial_sync_after_endpoint_change_writes_only_that_services_chains():
    p, fam, services, slices = await _synced()
    fake: FakeIptables = fam.ipt  # type: ignore[assignment]
    restores = len(fake.restores)
    _endpoint_added(p, services, slices)
    assert await p.sync()
    assert not p.last_reports[0].full
    text = fake.restores[restores]
    written = {ln[1:].split()[0] for ln in text.splitlines() if ln.startswith(":")}
    assert written and all(c.startswith(("PODNET-SVC-", "PODNET-SEP-")) for c in written)
