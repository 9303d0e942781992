"""Pure name helpers and the cluster qname parser, as tables."""

from __future__ import annotations

import pytest

from podnet.dns import names
from podnet.dns.names import ClusterName


@pytest.mark.parametrize(
    "labels,want",
    [
        ([], ClusterName("apex")),
        (["dns-version"], ClusterName("version")),
        (["svc"], ClusterName("svc-root")),
        (["pod"], ClusterName("pod-root")),
        (["foo"], ClusterName("invalid")),
        (["default", "svc"], ClusterName("namespace", namespace="default")),
        (["web", "default", "svc"], ClusterName("service", namespace="default", service="web")),
        (["db-0", "db", "default", "svc"], ClusterName("endpoint", namespace="default", service="db", endpoint="db-0")),
        (["_tcp", "web", "default", "svc"], ClusterName("port", namespace="default", service="web", protocol="tcp")),
        (["_http", "_tcp", "web", "default", "svc"],
         ClusterName("port", namespace="default", service="web", port="http", protocol="tcp")),
        (["http", "_tcp", "web", "default", "svc"], ClusterName("invalid")),
        (["a", "b", "web", "default", "svc"], ClusterName("invalid")),
        (["default", "pod"], ClusterName("pod-namespace", namespace="default")),
        (["10-1-2-3", "default", "pod"], ClusterName("pod", namespace="default", pod_ip="10.1.2.3")),
        (["fd00--1", "default", "pod"], ClusterName("pod", namespace="default", pod_ip="fd00::1")),
        (["10-1-2", "default", "pod"], ClusterName("invalid")),
        (["web", "default", "pod"], ClusterName("invalid")),
        (["x", "10-1-2-3", "default", "pod"], ClusterName("invalid")),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, list) else None,
)
def test_parse_cluster_name(labels, want):
    assert names.parse_cluster_name(labels) == want


@pytest.mark.parametrize(
    "ip,want",
    [("10.11.12.13", "10-11-12-13"), ("2001:db8::", "2001-db8--0"), ("::1", "0--1"), ("fd00::7", "fd00--7")],
)
def test_dashed_ip(ip, want):
    assert names.dashed_ip(ip) == want


@pytest.mark.parametrize(
    "label,want",
    [("10-1-2-3", "10.1.2.3"), ("2001-db8--0", "2001:db8::"), ("10-1-2-300", None), ("a-b-c-d", None),
     ("1--2-3", "1::2:3"), ("web", None), ("10-1-2", None)],
)
def test_pod_label_ip(label, want):
    assert names.pod_label_ip(label) == want


@pytest.mark.parametrize(
    "ip,want",
    [("10.96.0.5", "5.0.96.10.in-addr.arpa"),
     ("fd00::7", "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa")],
)
def test_reverse_name(ip, want):
    assert names.reverse_name(ip) == want


@pytest.mark.parametrize(
    "name,zone,want",
    [("cluster.local", "cluster.local", []), ("a.b.cluster.local", "cluster.local", ["a", "b"]),
     ("xcluster.local", "cluster.local", None), ("example.com", "cluster.local", None)],
)
def test_relative_labels(name, zone, want):
    assert names.relative_labels(name, zone) == want


def test_to_wire_limits():
    assert names.to_wire("a.bc") == b"\x01a\x02bc\x00"
    assert names.to_wire("") == b"\x00"
    with pytest.raises(ValueError):
        names.to_wire("a" * 64)
    with pytest.raises(ValueError):
        names.to_wire(".".join(["a" * 63] * 4))


def test_from_wire_labels_escapes():
    assert names.from_wire_labels([b"a.b", b"c\x00"]) == "a\\046b.c\\000"
