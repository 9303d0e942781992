"""CNI protocol values: error codes, the plugin network config, and results.

Pure module (no I/O). Everything the runtime sends is validated here, at the
boundary, into small values; every failure is a :class:`CniError` carrying a
spec error code and a message that names the offending key or variable.

Results are kept internally in the newest shape (1.1.0) and converted down to
the version the config asked for only when printed (:mod:`podnet.cni.version`).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

# Spec error codes (SPEC.md "Error", plus libcni's 999 ErrInternal).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_DEGRADED = 51
INTERNAL = 999

PLUGIN_TYPE = "podnet-cni"
VALID_ATTACHMENT_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class CniError(Exception):
    """A failure reported to the runtime as ``{"code", "msg", "details"}`` on stdout."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        d: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            d["details"] = self.details
        return d


@dataclass(frozen=True, slots=True)
class Attachment:
    """What the spec calls an attachment: one interface of one container."""

    container_id: str
    ifname: str


@dataclass(frozen=True)
class NetConf:
    """The plugin's entry of a conflist, as the runtime sends it on stdin.

    Unknown keys are kept in ``raw`` and never rejected (spec: pass them through).
    """

    cni_version: str
    name: str
    type: str
    socket: str = ""
    prev_result: dict[str, Any] | None = None
    valid_attachments: frozenset[Attachment] | None = None
    dns: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def parse_json_object(data: bytes | str, what: str = "network config") -> dict[str, Any]:
    """Decode stdin; anything but a JSON object is error 6."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODE_FAILURE, f"failed to decode {what}: {e}") from None
    if not isinstance(obj, dict):
        raise CniError(DECODE_FAILURE, f"failed to decode {what}: not a JSON object")
    return obj


def parse_netconf(obj: dict[str, Any]) -> NetConf:
    """Validate a decoded plugin config. The version itself is checked by the caller."""
    version = obj.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, f"cniVersion {version!r} is not a string")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "network config: missing or empty 'name'")
    ptype = obj.get("type", PLUGIN_TYPE)
    if not isinstance(ptype, str):
        raise CniError(INVALID_CONFIG, f"network config: 'type' {ptype!r} is not a string")
    socket = obj.get("socket", "")
    if not isinstance(socket, str):
        raise CniError(INVALID_CONFIG, f"network config: 'socket' {socket!r} is not a string")
    prev = obj.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(DECODE_FAILURE, "prevResult is not a JSON object")
    dns = obj.get("dns") or {}
    if not isinstance(dns, dict):
        raise CniError(INVALID_CONFIG, f"network config: 'dns' {dns!r} is not an object")
    valid = None
    for key in VALID_ATTACHMENT_KEYS:
        if key in obj:
            valid = (valid or frozenset()) | _attachments(key, obj[key])
    return NetConf(version, name, ptype, socket, prev, valid, dns, obj)


def _attachments(key: str, raw: Any) -> frozenset[Attachment]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise CniError(INVALID_CONFIG, f"{key}: not a list")
    out = set()
    for i, a in enumerate(raw):
        if not isinstance(a, dict) or not isinstance(a.get("containerID"), str) or not isinstance(a.get("ifname"), str):
            raise CniError(INVALID_CONFIG, f"{key}[{i}]: want {{containerID, ifname}} strings, got {a!r}")
        out.add(Attachment(a["containerID"], a["ifname"]))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class IPConfig:
    """One address the plugin configured: ``address`` is an interface CIDR (ip/prefix)."""

    address: str
    gateway: str

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def family(self) -> int:
        return ipaddress.ip_interface(self.address).version


def build_result(
    version: str,
    host_if: dict[str, Any],
    pod_if: dict[str, Any],
    ips: list[IPConfig],
    routes: list[dict[str, Any]],
    dns: dict[str, Any],
    prev: dict[str, Any] | None,
) -> dict[str, Any]:
    """A 1.1-shaped result: prevResult (if chained) with our interfaces, ips and routes appended."""
    res: dict[str, Any] = dict(prev) if prev else {}
    interfaces = list(res.get("interfaces") or [])
    base = len(interfaces)
    interfaces += [host_if, pod_if]
    res["cniVersion"] = version
    res["interfaces"] = interfaces
    res["ips"] = list(res.get("ips") or []) + [
        {"address": c.address, "gateway": c.gateway, "interface": base + 1} for c in ips
    ]
    res["routes"] = list(res.get("routes") or []) + routes
    if dns:
        res["dns"] = dns
    elif "dns" not in res:
        res["dns"] = {}
    return res
