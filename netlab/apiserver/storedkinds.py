"""Validation of the kinds the lab API server stores without parsing them into frozen types.

ConfigMap, Secret, ServiceAccount, Event, Endpoints; apps/v1 DaemonSet, Deployment, ReplicaSet
(the workload controllers of :mod:`.appcontrollers` act on these and write Endpoints);
rbac.authorization.k8s.io/v1 ClusterRole, ClusterRoleBinding, Role, RoleBinding; policy/v1
PodDisruptionBudget. Only the parts of kube-apiserver's validation that are cheap to check
are checked, with its messages (pkg/apis/core/validation, pkg/apis/apps/validation, apimachinery's
validation and path packages):

- metadata.name: a DNS-1123 subdomain (NameIsDNSSubdomain), or for the RBAC kinds a path
  segment (ValidateRBACName = path.IsValidPathSegmentName: not ``.``/``..``, no ``/`` or ``%``);
- labels and annotation keys as ValidateObjectMeta checks them;
- ConfigMap ``data``/``binaryData`` and Secret ``data`` keys: IsConfigMapKey; a key in both
  ``data`` and ``binaryData`` is a duplicate; the values' total size (bytes, decoded) at most
  1 MiB (MaxSecretSize);
- apps/v1 workloads: ``spec.selector`` is required and not empty, ``spec.template.metadata.labels``
  must match it, ``spec.replicas`` (Deployment, ReplicaSet) is a non-negative integer;
- Secret ``data`` and ConfigMap ``binaryData`` values are base64 (Go's []byte JSON decoding,
  StdEncoding): otherwise 400, as the decoder answers before validation runs.

A refusal is kube-apiserver's 422 Invalid Status (``<Kind>[.<group>] "<name>" is invalid:
<field>: <detail>``, details with group, kind and one cause) for the first error found, where
kube-apiserver lists every error. An accepted object is stored as given: nothing is parsed into
a frozen type; the workload controllers read them defensively.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Callable, Mapping

from podnet.kube import validate as v
from podnet.netlab.apiserver.apistore import StatusError

__all__ = ["MAX_DATA_SIZE", "config_map_key_errors", "rbac_name_errors", "validator", "secret_from_string_data"]

MAX_DATA_SIZE = 1024 * 1024
"""core.MaxSecretSize: the limit on a ConfigMap's and a Secret's total data."""

_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                   "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


def _go_quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else json.dumps(value)


class _FieldError(Exception):
    """One field.Error: its path, its type (the cause's reason) and its detail (the cause's message)."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


def _invalid(field: str, value: Any, message: str) -> _FieldError:
    return _FieldError(field, "FieldValueInvalid", f"Invalid value: {_go_quote(value)}: {message}")


def _too_long(field: str) -> _FieldError:
    return _FieldError(field, "FieldValueTooLong", f"Too long: may not be more than {MAX_DATA_SIZE} bytes")


def _refuse(kind: str, group: str, obj: Mapping[str, Any], e: _FieldError) -> StatusError:
    """errors.NewInvalid: ``<Kind[.group]> "<name>" is invalid: <field>: <detail>``."""
    name = str(((obj.get("metadata") or {}).get("name")) or "")
    qualified = f"{kind}.{group}" if group else kind
    return StatusError(422, "Invalid", f"{qualified} {_go_quote(name)} is invalid: {e.field}: {e.message}",
                       kind=kind, name=name, group=group,
                       causes=[{"reason": e.reason, "message": e.message, "field": e.field}])


def subdomain_errors(name: str) -> list[str]:
    """IsDNS1123Subdomain."""
    errs = []
    if len(name) > v.DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {v.DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        errs.append(_SUBDOMAIN_MSG)
    return errs


def rbac_name_errors(name: str) -> list[str]:
    """path.IsValidPathSegmentName (ValidateRBACName)."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def config_map_key_errors(key: str) -> list[str]:
    """IsConfigMapKey: length, charset, and no ``.``/``..`` (hasChDirPrefix)."""
    errs = []
    if len(key) > v.DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {v.DNS1123_SUBDOMAIN_MAX} characters")
    if not _CONFIG_MAP_KEY.fullmatch(key):
        errs.append(_CONFIG_KEY_MSG)
    if key == ".":
        errs.append("must not be '.'")
    elif key == "..":
        errs.append("must not be '..'")
    elif key.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def _metadata(obj: Mapping[str, Any], name_errors: Callable[[str], list[str]]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _FieldError("metadata", "FieldValueRequired", "Required value")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise _FieldError("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
    for msg in name_errors(name):
        raise _invalid("metadata.name", name, msg)
    try:
        if "namespace" in meta:
            v.dns_label("metadata.namespace", meta["namespace"])
        labels = meta.get("labels") or {}
        if not isinstance(labels, dict):
            raise v.InvalidField("metadata.labels", labels, "not an object")
        for k, val in labels.items():
            v.label_key("metadata.labels", k)
            v.label_value(f"metadata.labels[{k}]", val)
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise v.InvalidField("metadata.annotations", annotations, "not an object")
        for k, val in annotations.items():
            v.annotation_key("metadata.annotations", k)
            if not isinstance(val, str):
                raise v.InvalidField(f"metadata.annotations[{k}]", val, "not a string")
    except v.InvalidField as e:
        raise _FieldError(e.field, "FieldValueInvalid", f"Invalid value: {e.why}") from None


def _string_map(field: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(x, str) for x in value.values()):
        raise _FieldError(field, "FieldValueInvalid", "Invalid value: must be a map of strings")
    return value


def _key(field: str, key: str) -> None:
    for msg in config_map_key_errors(key):
        raise _invalid(f"{field}[{key}]", key, msg)


_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/=]*")


def _base64_error_offset(value: str) -> int:
    """Go's CorruptInputError offset for the common cases: the first character outside the alphabet,
    or for a value cut short of its padding the start of its last quantum; otherwise (padding in
    the wrong place) the first ``=``."""
    end = _B64_ALPHABET.match(value).end()
    if end < len(value):
        return end
    if "=" not in value and len(value) % 4:
        return len(value) - len(value) % 4
    return value.index("=") if "=" in value else 0


def _decoded_size(kind: str, data: Mapping[str, str]) -> int:
    """Total decoded bytes of base64 values. A value that is not padded standard base64 is refused
    as kube-apiserver's decoder refuses it, before validation: 400 ``<Kind> in version "v1"
    cannot be handled as a <Kind>: illegal base64 data at input byte N``."""
    total = 0
    for value in data.values():
        try:
            total += len(base64.b64decode(value.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise StatusError(400, "BadRequest", f'{kind} in version "v1" cannot be handled as a {kind}: '
                              f"illegal base64 data at input byte {_base64_error_offset(value)}") from None
    return total


def _validate_config_map(obj: Mapping[str, Any]) -> None:
    _metadata(obj, subdomain_errors)
    data = _string_map("data", obj.get("data"))
    binary = _string_map("binaryData", obj.get("binaryData"))
    for key in data:
        _key("data", key)
        if key in binary:
            raise _invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
    for key in binary:
        _key("binaryData", key)
    size = sum(len(x.encode()) for x in data.values()) + _decoded_size("ConfigMap", binary)
    if size > MAX_DATA_SIZE:
        raise _too_long("[]")  # field.NewPath(""): the whole object


def _validate_secret(obj: Mapping[str, Any]) -> None:
    _metadata(obj, subdomain_errors)
    data = _string_map("data", obj.get("data"))
    for key in data:
        _key("data", key)
    if _decoded_size("Secret", data) > MAX_DATA_SIZE:
        raise _too_long("data")


def secret_from_string_data(obj: dict[str, Any]) -> None:
    """The v1 conversion: ``stringData`` entries overwrite ``data`` (base64-encoded) and are dropped;
    ``type`` defaults to Opaque."""
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for k, val in string_data.items():
            if isinstance(val, str):
                data[k] = base64.b64encode(val.encode()).decode()
    if not obj.get("type"):
        obj["type"] = "Opaque"


def _go_string_map(m: Mapping[str, Any]) -> str:
    """Go's ``%#v`` of a map[string]string (field.Invalid's value), keys sorted."""
    return "map[string]string{" + ", ".join(f"{json.dumps(str(k))}:{json.dumps(str(v))}"
                                            for k, v in sorted(m.items())) + "}"


def _template_selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(k) != val for k, val in match_labels.items()):
        return False
    for e in selector.get("matchExpressions") or ():
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or (
                op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _workload(replicas: bool) -> Callable[[Mapping[str, Any]], None]:
    """ValidateDeploymentSpec / ValidateReplicaSetSpec / ValidateDaemonSetSpec, the cheap parts."""

    def check(obj: Mapping[str, Any]) -> None:
        _metadata(obj, subdomain_errors)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise _FieldError("spec", "FieldValueRequired", "Required value")
        if replicas and "replicas" in spec:
            n = spec["replicas"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise _invalid("spec.replicas", n, "must be greater than or equal to 0")
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            raise _FieldError("spec.selector", "FieldValueRequired", "Required value")
        template = spec.get("template")
        labels = ((template or {}).get("metadata") or {}).get("labels") if isinstance(template, dict) else None
        if not isinstance(labels, dict) or not _template_selects(selector, labels):
            raise _FieldError("spec.template.metadata.labels", "FieldValueInvalid",
                              f"Invalid value: {_go_string_map(labels or {})}: `selector` does not match template "
                              "`labels`")
        containers = ((template or {}).get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            raise _FieldError("spec.template.spec.containers", "FieldValueRequired", "Required value")

    return check


def _plain(name_errors: Callable[[str], list[str]]) -> Callable[[Mapping[str, Any]], None]:
    def check(obj: Mapping[str, Any]) -> None:
        _metadata(obj, name_errors)

    return check


_RBAC = "rbac.authorization.k8s.io"
_VALIDATORS: dict[str, tuple[str, Callable[[Mapping[str, Any]], None]]] = {
    "ConfigMap": ("", _validate_config_map),
    "Secret": ("", _validate_secret),
    "ServiceAccount": ("", _plain(subdomain_errors)),
    "Event": ("", _plain(subdomain_errors)),
    "Endpoints": ("", _plain(subdomain_errors)),
    "DaemonSet": ("apps", _workload(False)),
    "Deployment": ("apps", _workload(True)),
    "ReplicaSet": ("apps", _workload(True)),
    "PodDisruptionBudget": ("policy", _plain(subdomain_errors)),
    "ClusterRole": (_RBAC, _plain(rbac_name_errors)),
    "ClusterRoleBinding": (_RBAC, _plain(rbac_name_errors)),
    "Role": (_RBAC, _plain(rbac_name_errors)),
    "RoleBinding": (_RBAC, _plain(rbac_name_errors)),
}


def validator(kind: str) -> Callable[[Mapping[str, Any]], None]:
    """The validator of ``kind``: raises 422 Invalid (kube-apiserver's Status) or 400 (bad base64)."""
    group, check = _VALIDATORS[kind]

    def validate(obj: Mapping[str, Any]) -> None:
        try:
            check(obj)
        except _FieldError as e:
            raise _refuse(kind, group, obj, e) from None

    return validate
