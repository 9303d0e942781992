"""kubeproxy_network_programming_duration_seconds from the slices' trigger-time annotation."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY

from podnet.proxy.programming import TriggerTimes
from podnet.proxy.proxier import FamilyProxier, Proxier
from podnet.proxy.testing import FakeIptables, ctx, ep, slice_, svc

START = 1_000_000.0


def sl(t=None, service="svc", name="svc-a", family="IPv4", ip="10.0.0.1"):
    s = slice_(service=service, name=name, family=family, endpoints=[ep(ip if family == "IPv4" else "fd00::1")])
    return dataclasses.replace(s, last_change_trigger_time=t)


# ---------------------------------------------------------------- the queue (pure)
QUEUE = [
    ("add-queues", [(None, sl(START + 1))], {"IPv4": {"ns/svc": [START + 1]}}),
    ("update-queues-each-change", [(None, sl(START + 1)), (sl(START + 1), sl(START + 2, ip="10.0.0.2"))],
     {"IPv4": {"ns/svc": [START + 1, START + 2]}}),
    ("no-annotation-nothing", [(None, sl(None))], {"IPv4": {}}),
    ("before-proxy-start-ignored", [(None, sl(START - 5))], {"IPv4": {}}),
    ("equal-update-ignored", [(sl(START + 1), sl(START + 3))], {}),
    ("delete-drops-service", [(None, sl(START + 1)), (None, sl(START + 2, name="svc-b")), (sl(START + 1), None)],
     {"IPv4": {}}),
    ("ipv6-separate", [(None, sl(START + 1, family="IPv6"))], {"IPv6": {"ns/svc": [START + 1]}}),
    ("fqdn-ignored", [(None, dataclasses.replace(sl(START + 1), address_type="FQDN"))], {}),
    ("no-service-label-ignored", [(None, dataclasses.replace(sl(START + 1), service_name=""))], {}),
]


@pytest.mark.parametrize("events,want", [c[1:] for c in QUEUE], ids=[c[0] for c in QUEUE])
def test_trigger_time_queue(events, want):
    q = TriggerTimes(started_at=START)
    for old, new in events:
        q.slice_changed(old, new)
    assert q.checkout() == want
    assert q.checkout() == {} and q.pending() == 0


def test_queue_is_bounded_per_service():
    q = TriggerTimes(started_at=START, max_per_service=3)
    prev = None
    for i in range(10):
        new = sl(START + i + 1, ip=f"10.0.0.{i + 1}")
        q.slice_changed(prev, new)
        prev = new
    assert q.checkout()["IPv4"]["ns/svc"] == [START + 1, START + 2, START + 3]


# ---------------------------------------------------------------- observed after a successful sync


def hist(family="IPv4"):
    get = REGISTRY.get_sample_value
    labels = {"ip_family": family}
    return (get("kubeproxy_network_programming_duration_seconds_count", labels) or 0.0,
            get("kubeproxy_network_programming_duration_seconds_sum", labels) or 0.0)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def proxier():
    clock = Clock(START)
    fake = FakeIptables()
    p = Proxier([FamilyProxier(fake, ctx(), "node-a")], wall=clock)
    p.on_service(None, svc())
    p.on_services_synced()
    p.on_slices_synced()
    return p, fake, clock


async def test_observed_per_trigger_after_successful_sync():
    p, _, clock = proxier()
    p.on_slice(None, sl(START + 1))
    assert await p.sync()  # initial sync: one observation, 9 s
    c0, s0 = hist()
    first = sl(START + 10, ip="10.0.0.2")
    p.on_slice(sl(START + 1), first)
    p.on_slice(first, sl(START + 11, ip="10.0.0.3"))
    clock.t = START + 12.5
    assert await p.sync()
    c1, s1 = hist()
    assert c1 - c0 == 2 and s1 - s0 == pytest.approx(2.5 + 1.5)
    assert await p.sync()  # nothing new: nothing observed
    assert hist() == (c1, s1)


async def test_failed_sync_observes_nothing_and_drops_times():
    p, fake, clock = proxier()
    assert await p.sync()
    c0, s0 = hist()
    p.on_slice(None, sl(START + 1))
    fake.fail_table = "filter"  # fails the partial restore and its immediate full repair
    clock.t = START + 2
    assert not await p.sync()
    assert hist() == (c0, s0)
    fake.fail_table = None
    assert await p.sync()  # the retry programs the change but the trigger was checked out (kube-proxy)
    assert hist() == (c0, s0)


async def test_nothing_observed_before_both_informers_synced():
    clock = Clock(START)
    p = Proxier([FamilyProxier(FakeIptables(), ctx(), "node-a")], wall=clock)
    p.on_service(None, svc())
    p.on_slice(None, sl(START + 1))
    c0, _ = hist()
    assert await p.sync()  # not ready: nothing written, the trigger stays queued
    assert hist()[0] == c0
    p.on_services_synced()
    p.on_slices_synced()
    clock.t = START + 4
    assert await p.sync()
    assert hist()[0] == c0 + 1
