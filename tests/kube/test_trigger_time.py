"""EndpointSlice's optional last-change-trigger-time annotation at the boundary."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from podnet.kube import resources
from podnet.kube.objects import (
    LAST_CHANGE_TRIGGER_TIME, format_rfc3339_nano, parse_endpoint_slice, parse_rfc3339_ns,
)

T0 = 1_795_332_270  # 2026-11-22T07:24:30Z


def raw_slice(annotations=None):
    meta = {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}


def ignored() -> float:
    return REGISTRY.get_sample_value("podnet_kube_ignored_fields_total",
                                     {"resource": "endpointslices", "field": LAST_CHANGE_TRIGGER_TIME}) or 0.0


PARSE = [
    ("nanoseconds", "2026-11-22T07:24:30.123456789Z", T0 * 10**9 + 123456789),
    ("no-fraction", "2026-11-22T07:24:30Z", T0 * 10**9),
    ("short-fraction", "2026-11-22T07:24:30.5Z", T0 * 10**9 + 500_000_000),
    ("offset", "2026-11-22T08:24:30.25+01:00", T0 * 10**9 + 250_000_000),
    ("negative-offset", "2026-11-22T02:54:30-04:30", T0 * 10**9),
]


@pytest.mark.parametrize("text,ns", [c[1:] for c in PARSE], ids=[c[0] for c in PARSE])
def test_parse_rfc3339(text, ns):
    assert parse_rfc3339_ns(text) == ns


BAD = [
    ("space-separator", "2026-11-22 07:24:30Z"),
    ("ten-fraction-digits", "2026-11-22T07:24:30.1234567891Z"),
    ("no-zone", "2026-11-22T07:24:30"),
    ("month-13", "2026-13-22T07:24:30Z"),
    ("feb-30", "2026-02-30T07:24:30Z"),
    ("second-60", "2026-11-22T07:24:60Z"),
    ("zone-24h", "2026-11-22T07:24:30+24:00"),
    ("unicode-digits", "２026-11-22T07:24:30Z"),
    ("lower-case-t", "2026-11-22t07:24:30Z"),
    ("not-a-string", 1795332270),
    ("trailing-newline", "2026-11-22T07:24:30Z\n"),
]


@pytest.mark.parametrize("text", [c[1] for c in BAD], ids=[c[0] for c in BAD])
def test_parse_rfc3339_rejects(text):
    with pytest.raises(ValueError):
        parse_rfc3339_ns(text)


FORMAT = [
    ("whole-second", T0 * 10**9, "2026-11-22T07:24:30Z"),
    ("trailing-zeros-trimmed", T0 * 10**9 + 100_000_000, "2026-11-22T07:24:30.1Z"),
    ("all-nine-digits", T0 * 10**9 + 1, "2026-11-22T07:24:30.000000001Z"),
]


@pytest.mark.parametrize("ns,text", [c[1:] for c in FORMAT], ids=[c[0] for c in FORMAT])
def test_format_rfc3339_nano_like_go(ns, text):
    assert format_rfc3339_nano(ns) == text
    assert parse_rfc3339_ns(text) == ns


SLICES = [
    ("absent", None, None, False),
    ("other-annotations-only", {"a": "b"}, None, False),
    ("valid", {LAST_CHANGE_TRIGGER_TIME: "2026-11-22T07:24:30.5Z"}, T0 + 0.5, False),
    ("garbage", {LAST_CHANGE_TRIGGER_TIME: "yesterday"}, None, True),
    ("number", {LAST_CHANGE_TRIGGER_TIME: 12}, None, True),
    ("annotations-not-a-map", ["x"], None, False),
]


@pytest.mark.parametrize("annotations,want,counted", [c[1:] for c in SLICES], ids=[c[0] for c in SLICES])
def test_slice_trigger_time_is_optional_and_bad_values_are_ignored(caplog, annotations, want, counted):
    before = ignored()
    with caplog.at_level(logging.WARNING, logger="podnet.kube"):
        sl = resources.convert(resources.ENDPOINT_SLICES, raw_slice(annotations))
    assert sl is not None and sl.endpoints[0].addresses == ("10.0.0.1",)  # the slice itself is kept
    assert sl.last_change_trigger_time == want
    assert ignored() - before == (1 if counted else 0)
    assert (LAST_CHANGE_TRIGGER_TIME in caplog.text) is counted


def test_trigger_time_is_not_part_of_equality():
    a = parse_endpoint_slice(raw_slice({LAST_CHANGE_TRIGGER_TIME: "2026-11-22T07:24:30Z"}))
    b = parse_endpoint_slice(raw_slice({LAST_CHANGE_TRIGGER_TIME: "2026-11-22T07:25:00Z"}))
    assert a == b and hash(a) == hash(b) and a.last_change_trigger_time != b.last_change_trigger_time
