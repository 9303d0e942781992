"""Negative replies remembered per table: a repeated plain query gets the very reply (and counts) the
slow path gives, and a new table forgets them all."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from podnet.dns import answers, snapshot
from podnet.dns.handler import Handler
from podnet.dns.testing import cluster_objects, cluster_table, svc


def query(name: str, rtype: str = "A", qid: int = 1, rd: bool = True, **kw) -> bytes:
    msg = dns.message.make_query(name, rtype, **kw)
    msg.id = qid
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg.to_wire()


@pytest.mark.parametrize("first,second,rcode", [
    pytest.param(query("nope.default.svc.cluster.local."), query("nope.default.svc.cluster.local.", qid=2),
                 dns.rcode.NXDOMAIN, id="nxdomain"),
    pytest.param(query("web.default.svc.cluster.local.", "MX"), query("web.default.svc.cluster.local.", "MX", qid=3),
                 dns.rcode.NOERROR, id="nodata"),
    pytest.param(query("nope.default.svc.cluster.local."), query("NoPe.Default.SVC.cluster.local.", qid=4),
                 dns.rcode.NXDOMAIN, id="other-case-keeps-its-case"),
    pytest.param(query("nope.default.svc.cluster.local."), query("nope.default.svc.cluster.local.", qid=5, rd=False),
                 dns.rcode.NXDOMAIN, id="rd-clear"),
    pytest.param(query("nope.default.svc.cluster.local."), query("nope.default.svc.cluster.local.", qid=6, use_edns=0),
                 dns.rcode.NXDOMAIN, id="edns-query-takes-the-slow-path"),
    pytest.param(query("10-0-0-1.default.pod.cluster.local.", "MX"), query("10-0-0-1.default.pod.cluster.local.", "MX", qid=7),
                 dns.rcode.NOERROR, id="pod-nodata"),
])
def test_repeat_is_the_slow_path_reply(first, second, rcode):
    h = Handler(cluster_table())
    h.answer_udp(first)
    got = h.answer_udp(second)
    fresh = Handler(cluster_table())
    want = fresh.answer_udp(second)
    assert got == want
    assert dns.message.from_wire(got).rcode() == rcode
    assert h.stats.responses[(rcode, "kubernetes")] == 2
    assert sum(n for (proto, _), n in h.stats.requests.items() if proto == "udp") == 2
    assert h.qtype == fresh.qtype


def test_new_table_forgets():
    services, slices, namespaces = cluster_objects()
    h = Handler(cluster_table())
    q = query("late.default.svc.cluster.local.")
    assert dns.message.from_wire(h.answer_udp(q)).rcode() == dns.rcode.NXDOMAIN
    assert dns.message.from_wire(h.answer_udp(q)).rcode() == dns.rcode.NXDOMAIN
    snap = snapshot.build([*services, svc("default", "late", clusterIP="10.96.9.9")], slices, namespaces, snapshot.Config(), serial=43)
    h.swap(answers.compile_table(snap))
    reply = dns.message.from_wire(h.answer_udp(query("late.default.svc.cluster.local.", "AAAA")))
    assert reply.rcode() == dns.rcode.NOERROR
    reply = dns.message.from_wire(h.answer_udp(q))
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].to_text() == "10.96.9.9"


def test_tcp_is_never_remembered():
    h = Handler(cluster_table())
    q = query("nope.default.svc.cluster.local.")
    h.answer(q, udp=False)
    assert h._denials == {}
    h.answer_udp(q)
    assert len(h._denials) == 1
