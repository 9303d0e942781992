"""The protobuf subset kubectl's typed clients send (create namespace / create service)."""

from __future__ import annotations

import pytest

from podnet.netlab.apiserver.kproto import MAGIC, ProtobufError, decode_object


def varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def ld(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def vi(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def s(num: int, text: str) -> bytes:
    return ld(num, text.encode())


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + ld(1, s(1, api_version) + s(2, kind)) + ld(2, raw)


def label(num: int, k: str, v: str) -> bytes:
    return ld(num, s(1, k) + s(2, v))


def test_namespace():
    raw = ld(1, s(1, "foo") + label(11, "team", "a")) + ld(2, b"")
    assert decode_object(envelope("v1", "Namespace", raw)) == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo", "labels": {"team": "a"}}, "spec": {}}


def test_service_as_kubectl_create_service_sends_it():
    port = s(1, "80-http") + s(2, "TCP") + vi(3, 80) + ld(4, vi(1, 1) + s(3, "http")) + vi(5, 0)
    port2 = s(1, "dns") + s(2, "UDP") + vi(3, 53) + ld(4, vi(1, 0) + vi(2, 5353))
    spec = ld(1, port) + ld(1, port2) + label(2, "app", "web") + s(3, "") + s(4, "NodePort") + s(5, "192.0.2.1")
    raw = ld(1, s(1, "web") + s(3, "default")) + ld(2, spec)
    obj = decode_object(envelope("v1", "Service", raw))
    assert obj["metadata"] == {"name": "web", "namespace": "default"}
    assert obj["spec"] == {
        "ports": [{"name": "80-http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                  {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353}],
        "selector": {"app": "web"}, "type": "NodePort", "externalIPs": ["192.0.2.1"]}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="not-protobuf"),
        pytest.param(envelope("v1", "Pod", b""), id="unsupported-kind"),
        pytest.param(MAGIC + b"\x0a\x05ab", id="truncated"),
        pytest.param(envelope("v1", "Service", vi(1, 5)), id="wrong-wire-type"),
        pytest.param(envelope("v1", "Service", b"\x0f"), id="bad-wire-type"),
    ],
)
def test_rejected(body):
    with pytest.raises(ProtobufError):
        decode_object(body)
