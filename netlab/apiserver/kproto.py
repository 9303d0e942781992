"""Just enough Kubernetes protobuf to accept what ``kubectl create`` sends for Namespace, Service,
ConfigMap, Secret, ServiceAccount, the RBAC kinds and Deployment (``kubectl create deployment``:
metadata, replicas, selector, strategy, and a pod template's common fields: containers with
name, image, command, args, ports, plain env values; nodeSelector, tolerations, hostNetwork).

kubectl's typed clients send ``application/vnd.kubernetes.protobuf`` bodies
(and accept JSON answers). The lab decodes the envelope (``k8s\\x00`` +
runtime.Unknown) and, for each of those kinds, the fields those commands
set, using the field numbers of k8s.io/api's generated.proto. Anything else
raises :class:`ProtobufError` (the server answers 415, naming JSON), never a
guess: an unknown field number is skipped, a wrong wire type is an error.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["ProtobufError", "decode_object", "MAGIC"]

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) triples; value is int (varint) or bytes (length-delimited)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated field")
            v, i = buf[i : i + n], i + n
        elif wt == 1:
            v, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


# A schema maps field number -> (json name, kind) where kind is "str", "int", "bool", "strs" (repeated string),
# "map" (map<string,string>), "bytesmap" (map<string,bytes>: base64 values, as JSON carries []byte),
# or a nested schema (message; "[]" suffix in the name = repeated).
Schema = dict[int, tuple[str, Any]]

INT_OR_STRING = "intorstring"
KEEP_ZERO_INT = "int0"
"""An optional (pointer) integer: present means set, even to 0 (``replicas: 0``)."""
OBJECT_META: Schema = {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"),
                       11: ("labels", "map"), 12: ("annotations", "map"), 14: ("finalizers", "strs")}
SERVICE_PORT: Schema = {1: ("name", "str"), 2: ("protocol", "str"), 3: ("port", "int"),
                        4: ("targetPort", INT_OR_STRING), 5: ("nodePort", "int"), 6: ("appProtocol", "str")}
SERVICE_SPEC: Schema = {1: ("ports[]", SERVICE_PORT), 2: ("selector", "map"), 3: ("clusterIP", "str"),
                        4: ("type", "str"), 5: ("externalIPs", "strs"), 7: ("sessionAffinity", "str"),
                        10: ("externalName", "str"), 11: ("externalTrafficPolicy", "str"),
                        13: ("publishNotReadyAddresses", "bool"), 18: ("clusterIPs", "strs"),
                        22: ("internalTrafficPolicy", "str")}
POLICY_RULE: Schema = {1: ("verbs", "strs"), 2: ("apiGroups", "strs"), 3: ("resources", "strs"),
                       4: ("resourceNames", "strs"), 5: ("nonResourceURLs", "strs")}
SUBJECT: Schema = {1: ("kind", "str"), 2: ("apiGroup", "str"), 3: ("name", "str"), 4: ("namespace", "str")}
ROLE_REF: Schema = {1: ("apiGroup", "str"), 2: ("kind", "str"), 3: ("name", "str")}
LABEL_SELECTOR: Schema = {1: ("matchLabels", "map"),
                          2: ("matchExpressions[]", {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "strs")})}
CONTAINER: Schema = {1: ("name", "str"), 2: ("image", "str"), 3: ("command", "strs"), 4: ("args", "strs"),
                     5: ("workingDir", "str"),
                     6: ("ports[]", {1: ("name", "str"), 2: ("hostPort", "int"), 3: ("containerPort", "int"),
                                     4: ("protocol", "str"), 5: ("hostIP", "str")}),
                     7: ("env[]", {1: ("name", "str"), 2: ("value", "str")}),
                     13: ("terminationMessagePath", "str"), 14: ("imagePullPolicy", "str"),
                     20: ("terminationMessagePolicy", "str")}
TOLERATION: Schema = {1: ("key", "str"), 2: ("operator", "str"), 3: ("value", "str"), 4: ("effect", "str"),
                      5: ("tolerationSeconds", "int")}
POD_SPEC: Schema = {2: ("containers[]", CONTAINER), 3: ("restartPolicy", "str"),
                    4: ("terminationGracePeriodSeconds", "int"), 6: ("dnsPolicy", "str"), 7: ("nodeSelector", "map"),
                    8: ("serviceAccountName", "str"), 10: ("nodeName", "str"), 11: ("hostNetwork", "bool"),
                    16: ("hostname", "str"), 17: ("subdomain", "str"), 19: ("schedulerName", "str"),
                    20: ("initContainers[]", CONTAINER), 22: ("tolerations[]", TOLERATION)}
POD_TEMPLATE_SPEC: Schema = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
DEPLOYMENT_SPEC: Schema = {1: ("replicas", KEEP_ZERO_INT), 2: ("selector", LABEL_SELECTOR),
                           3: ("template", POD_TEMPLATE_SPEC),
                           4: ("strategy", {1: ("type", "str"), 2: ("rollingUpdate", {
                               1: ("maxUnavailable", INT_OR_STRING), 2: ("maxSurge", INT_OR_STRING)})}),
                           5: ("minReadySeconds", "int"), 6: ("revisionHistoryLimit", KEEP_ZERO_INT),
                           7: ("paused", "bool"), 9: ("progressDeadlineSeconds", KEEP_ZERO_INT)}
SCHEMAS: dict[str, Schema] = {
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", "strs")})},
    "Service": {1: ("metadata", OBJECT_META), 2: ("spec", SERVICE_SPEC)},
    "ServiceAccount": {1: ("metadata", OBJECT_META), 4: ("automountServiceAccountToken", "bool")},
    "ClusterRole": {1: ("metadata", OBJECT_META), 2: ("rules[]", POLICY_RULE)},
    "Role": {1: ("metadata", OBJECT_META), 2: ("rules[]", POLICY_RULE)},
    "ClusterRoleBinding": {1: ("metadata", OBJECT_META), 2: ("subjects[]", SUBJECT), 3: ("roleRef", ROLE_REF)},
    "RoleBinding": {1: ("metadata", OBJECT_META), 2: ("subjects[]", SUBJECT), 3: ("roleRef", ROLE_REF)},
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", "map"), 3: ("binaryData", "bytesmap"),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", "bytesmap"), 3: ("type", "str"), 4: ("stringData", "map"),
               5: ("immutable", "bool")},
    "Deployment": {1: ("metadata", OBJECT_META), 2: ("spec", DEPLOYMENT_SPEC)},
    # kubectl auth can-i (authorization/v1 generated.proto)
    "SelfSubjectAccessReview": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("resourceAttributes", {1: ("namespace", "str"), 2: ("verb", "str"), 3: ("group", "str"),
                                   4: ("version", "str"), 5: ("resource", "str"), 6: ("subresource", "str"),
                                   7: ("name", "str")}),
        2: ("nonResourceAttributes", {1: ("path", "str"), 2: ("verb", "str")})})},
}


def _scalar(kind: str, wt: int, v: Any) -> Any:
    if kind in ("str", "strs"):
        if wt != 2:
            raise ProtobufError("expected a string")
        return v.decode("utf-8")
    if kind == "int":
        if wt != 0:
            raise ProtobufError("expected an integer")
        return v - (1 << 64) if v >= 1 << 63 else v
    if kind == "bool":
        if wt != 0:
            raise ProtobufError("expected a boolean")
        return bool(v)
    raise ProtobufError(f"unknown kind {kind}")


def _int_or_string(buf: bytes) -> int | str:
    f = {n: v for n, _, v in fields(buf)}
    return f.get(3, b"").decode() if f.get(1) == 1 else f.get(2, 0)


def decode_message(buf: bytes, schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, wt, v in fields(buf):
        if num not in schema:
            continue
        name, kind = schema[num]
        if isinstance(kind, dict):
            if wt != 2:
                raise ProtobufError(f"{name}: expected a message")
            if name.endswith("[]"):
                out.setdefault(name[:-2], []).append(decode_message(v, kind))
            else:
                out[name] = decode_message(v, kind)
        elif kind == "map":
            entry = {n: val for n, _, val in fields(v)}
            out.setdefault(name, {})[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
        elif kind == "bytesmap":
            entry = {n: val for n, _, val in fields(v)}
            out.setdefault(name, {})[entry.get(1, b"").decode()] = base64.b64encode(entry.get(2, b"")).decode()
        elif kind == INT_OR_STRING:
            out[name] = _int_or_string(v)
        elif kind == KEEP_ZERO_INT:
            out[name] = _scalar("int", wt, v)
        elif kind == "strs":
            out.setdefault(name, []).append(_scalar(kind, wt, v))
        else:
            value = _scalar(kind, wt, v)
            if value not in ("", 0, False):  # proto3 zero values are JSON's omitted fields
                out[name] = value
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a Kubernetes protobuf body (the kinds of :data:`SCHEMAS` only)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf envelope")
    unknown = {n: v for n, _, v in fields(body[len(MAGIC):])}
    type_meta = {n: v.decode() for n, _, v in fields(unknown.get(1, b""))}
    kind, api_version = type_meta.get(2, ""), type_meta.get(1, "")
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise ProtobufError(f"protobuf bodies are not supported for kind {kind!r}")
    obj = decode_message(unknown.get(2, b""), schema)
    return {"apiVersion": api_version, "kind": kind, **obj}
