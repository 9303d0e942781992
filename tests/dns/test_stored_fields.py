"""podnet-dns stores Services and EndpointSlices without the fields it never reads: same answers."""

from __future__ import annotations

import dataclasses

import pytest

from podnet.dns import answers, snapshot
from podnet.dns.daemon import dns_fields_only
from podnet.dns.testing import cluster_objects
from podnet.kube.objects import Service


def decorated(objs):
    """The fixture objects with the metadata an API server adds (uid, resourceVersion, labels) and,
    for Services, a selector."""
    out = []
    for i, o in enumerate(objs):
        extra = {"selector": (("app", o.name),)} if isinstance(o, Service) else {}
        out.append(dataclasses.replace(o, uid=f"uid-{i}", resource_version=str(100 + i),
                                       labels=(("app", o.name), ("kubernetes.io/service-name", o.name)), **extra))
    return out


def table(services, slices, namespaces):
    return answers.compile_table(snapshot.build(services, slices, namespaces, serial=3))


def test_stripped_objects_compile_to_the_same_table():
    services, slices, namespaces = cluster_objects()
    full_s, full_e = decorated(services), decorated(slices)
    want = table(full_s, full_e, namespaces)
    got = table([dns_fields_only(s) for s in full_s], [dns_fields_only(e) for e in full_e], namespaces)
    assert want.hot.keys() == got.hot.keys() and len(want.hot) > 20
    for key, entry in want.hot.items():
        other = got.hot[key]
        assert (entry.hdr, entry.body, entry.shape, entry.fits_udp, entry.rot) == \
            (other.hdr, other.body, other.shape, other.fits_udp, other.rot), key
    assert want.ents == got.ents
    assert dict(want.rejected) == dict(got.rejected)
    assert want.snapshot.ptr == got.snapshot.ptr


@pytest.mark.parametrize("pick", [
    pytest.param(lambda s, e: s[0], id="service"),
    pytest.param(lambda s, e: e[0], id="endpointslice"),
])
def test_only_the_unread_fields_change(pick):
    services, slices, _ = cluster_objects()
    obj = pick(decorated(services), decorated(slices))
    kept = dns_fields_only(obj)
    assert (kept.uid, kept.resource_version, kept.labels) == ("", "", ())
    assert kept.key == obj.key
    unread = {"uid", "resource_version", "labels"}
    if isinstance(obj, Service):
        assert obj.selector and kept.selector == ()
        unread.add("selector")
    for f in dataclasses.fields(obj):
        if f.name not in unread:
            assert getattr(kept, f.name) == getattr(obj, f.name), f.name
