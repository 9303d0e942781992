"""Conversion shares repeated strings and small values between objects (memory), and changes nothing else:
the same values, equality, hashing, immutability and rejections as fresh copies."""

from __future__ import annotations

import dataclasses
import json

import pytest

from podnet.kube import objects as o
from podnet.kube import resources as r
from podnet.kube import validate as v


def service(name: str = "web", ns: str = "shop", app: str = "web") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "7",
                     "labels": {"app": app, "tier": "front"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"],
                 "sessionAffinity": "None", "internalTrafficPolicy": "Cluster", "selector": {"app": app},
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                           {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"}]},
    }


def endpoint_slice(name: str = "web-abcde", ns: str = "shop", svc: str = "web") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "8",
                     "labels": {"kubernetes.io/service-name": svc,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": True, "serving": True, "terminating": False},
             "nodeName": "node-1", "zone": "zone-a", "targetRef": {"kind": "Pod", "name": f"{svc}-1"}},
            {"addresses": ["10.244.2.5"], "conditions": {"ready": False, "serving": True, "terminating": True},
             "nodeName": "node-1", "zone": "zone-a"},
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"}],
    }


def fresh(raw: dict) -> dict:
    """A decoder's copy: every string a new object."""
    return json.loads(json.dumps(raw))


def test_repeated_strings_and_values_are_shared_between_services():
    a = r.convert(r.SERVICES, fresh(service("a")))
    b = r.convert(r.SERVICES, fresh(service("b")))
    assert a is not None and b is not None
    assert a.namespace == "shop" and a.namespace is b.namespace
    assert a.labels == (("app", "web"), ("tier", "front")) and a.labels is b.labels
    assert a.selector == (("app", "web"),) and a.selector is b.selector
    assert a.ports is b.ports and a.ports[0] is b.ports[0]
    assert a.ports[0].protocol is v.PROTOCOLS[0] and a.ports[1].protocol is v.PROTOCOLS[1]  # the constants
    assert a.ports[0].name is b.ports[0].name and a.ports[1].target_port is b.ports[1].target_port
    assert a.ip_families == ("IPv4",) and a.ip_families is b.ip_families
    assert a.type is b.type and a.session_affinity is b.session_affinity
    assert a.uid != b.uid and a.name != b.name


def test_repeated_strings_and_values_are_shared_between_slices():
    a = r.convert(r.ENDPOINT_SLICES, fresh(endpoint_slice("web-aaaaa")))
    b = r.convert(r.ENDPOINT_SLICES, fresh(endpoint_slice("web-bbbbb")))
    svc = r.convert(r.SERVICES, fresh(service("web")))
    assert a is not None and b is not None and svc is not None
    assert a.service_name == "web" and a.service_name is b.service_name is svc.name
    assert a.address_type is b.address_type and a.ports is b.ports
    assert a.ports[0].app_protocol is b.ports[0].app_protocol
    e0, e1 = a.endpoints
    assert e0.node_name is e1.node_name is b.endpoints[0].node_name
    assert e0.zone is b.endpoints[1].zone
    assert e0.conditions is b.endpoints[0].conditions and e1.conditions is b.endpoints[1].conditions
    assert e1.conditions == o.EndpointConditions(ready=False, serving=True, terminating=True)
    assert dict(a.labels)["endpointslice.kubernetes.io/managed-by"] is dict(b.labels)[
        "endpointslice.kubernetes.io/managed-by"]


def test_shared_values_compare_hash_and_stay_frozen_like_fresh_ones():
    raw = service("x")
    a, b = r.convert(r.SERVICES, fresh(raw)), r.convert(r.SERVICES, fresh(raw))
    assert a == b and hash(a) == hash(b) and a is not b
    # the same value built by hand, without any sharing
    by_hand = o.Service(
        namespace="shop", name="x", type="ClusterIP", cluster_ips=("10.96.0.10",),
        ports=(o.ServicePort("http", "TCP", 80, 8080), o.ServicePort("dns", "UDP", 53, "dns")),
        ip_families=("IPv4",), selector=(("app", "web"),), labels=(("app", "web"), ("tier", "front")), uid="uid-x",
    )
    assert a == by_hand and hash(a) == hash(by_hand)
    assert {a: 1}[by_hand] == 1
    cond = r.convert(r.ENDPOINT_SLICES, fresh(endpoint_slice())).endpoints[0].conditions
    for obj, attr in ((a, "name"), (a.ports[0], "name"), (cond, "ready")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, "changed")
    changed = fresh(raw)
    changed["spec"]["ports"][0]["port"] = 81
    assert r.convert(r.SERVICES, changed) != a


def test_service_and_slice_ports_are_never_conflated():
    svc = r.convert(r.SERVICES, fresh(service()))
    sl = r.convert(r.ENDPOINT_SLICES, fresh(endpoint_slice()))
    assert type(svc.ports[0]) is o.ServicePort and type(sl.ports[0]) is o.EndpointPort


def test_share_table_is_bounded():
    for i in range(o.SHARE_LIMIT + 50):
        s = r.convert(r.SERVICES, fresh(service(f"s{i}", app=f"app-{i}")))
        assert s is not None and s.selector == (("app", f"app-{i}"),)
    assert len(o._shared) <= o.SHARE_LIMIT
    # sharing still works after the table was emptied
    a = r.convert(r.SERVICES, fresh(service("after-1", app="z")))
    b = r.convert(r.SERVICES, fresh(service("after-2", app="z")))
    assert a.selector is b.selector


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["spec"]["ports"][0].update(protocol="tcp"),
        lambda s: s["spec"].update(type="Cluster"),
        lambda s: s["spec"].update(ipFamilies=["IPv5"]),
        lambda s: s["metadata"]["labels"].update({"bad key!": "x"}),
        lambda s: s["spec"]["ports"][0].update(name="HTTP"),
    ],
)
def test_rejections_are_unchanged(mutate):
    raw = fresh(service())
    mutate(raw)
    with pytest.raises(o.InvalidObject):
        o.parse_service(raw)
