"""Addresses a runtime asks for: static IPs and a MAC for one attachment.

Pure module (no I/O). Where a request can come from (CONVENTIONS.md):

* IPs: ``runtimeConfig.ips`` (the ``ips`` capability, as multus and libcni pass it),
  ``args.cni.ips`` in the plugin config, and ``CNI_ARGS IP=`` (podman's ``--ip``;
  several addresses comma-separated, as host-local accepts). Entries may be plain
  addresses or CIDRs; the prefix is ignored (a pod always gets a /32 or /128).
* MAC: ``runtimeConfig.mac`` (the ``mac`` capability) and ``CNI_ARGS MAC=`` (podman's
  ``--mac-address``).

Precedence (as host-local and the bridge plugin): ``runtimeConfig`` wins over
``args.cni``, which wins over ``CNI_ARGS``; sources are not merged.

Error codes follow where the request came from, so the message and code point
the operator at the right place: a request in ``CNI_ARGS`` that cannot be met
is error 4 (invalid environment variable), one in ``runtimeConfig``/``args`` is
error 7 (invalid network config). An address held by another attachment is
error 11 (try again later): the usual cause is a pod re-created with the same
static IP before the old sandbox's DEL ran, which clears up by itself, and
runtimes retry 11.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

from podnet.cni.types import INVALID_CONFIG, INVALID_ENV, CniError

CNI_ARGS = "CNI_ARGS"


@dataclass(frozen=True, slots=True)
class RequestedIP:
    ip: str
    """Canonical text of the address (no prefix)."""
    source: str
    """Where it came from: ``runtimeConfig.ips``, ``args.cni.ips`` or ``CNI_ARGS IP``."""
    code: int
    """The error code for a request from this source that cannot be met (4 or 7)."""

    def error(self, why: str) -> CniError:
        return CniError(self.code, f"requested IP {self.ip} ({self.source}) {why}")


@dataclass(frozen=True, slots=True)
class Requested:
    ips: tuple[RequestedIP, ...] = ()
    mac: str = ""
    """Canonical lower-case ``aa:bb:cc:dd:ee:ff``, or empty."""


def _code(source: str) -> int:
    return INVALID_ENV if source.startswith(CNI_ARGS) else INVALID_CONFIG


def parse_ip(item: Any, source: str) -> RequestedIP:
    code = _code(source)
    if not isinstance(item, str) or not item.strip():
        raise CniError(code, f"{source}: {item!r} is not an IP address")
    try:
        ip = ipaddress.ip_interface(item.strip()).ip
    except ValueError:
        raise CniError(code, f"{source}: {item!r} is not an IP address") from None
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        raise CniError(code, f"{source}: {item!r} is not a unicast pod address")
    return RequestedIP(str(ip), source, code)


def parse_mac(text: Any, source: str) -> str:
    code = _code(source)
    parts = text.split(":") if isinstance(text, str) else []
    try:
        octets = [int(p, 16) for p in parts if len(p) == 2]
    except ValueError:
        octets = []
    if len(parts) != 6 or len(octets) != 6:
        raise CniError(code, f"{source}: {text!r} is not a MAC address (want aa:bb:cc:dd:ee:ff)")
    if octets[0] & 1 or not any(octets):
        raise CniError(code, f"{source}: {text!r} is not a unicast MAC address")
    return ":".join(f"{o:02x}" for o in octets)


def _list(value: Any, source: str) -> list[Any]:
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, f"{source}: want a list of IP addresses, got {value!r}")
    return value


def from_request(conf: Mapping[str, Any], args: Mapping[str, str]) -> Requested:
    """The requested IPs and MAC of one ADD; errors name the source and carry its code.

    ``conf`` is the plugin's decoded network config, ``args`` the parsed ``CNI_ARGS``.
    """
    runtime = conf.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise CniError(INVALID_CONFIG, f"runtimeConfig {runtime!r} is not an object")
    cni_args = (conf.get("args") or {}).get("cni") if isinstance(conf.get("args"), dict) else None
    cni_args = cni_args if isinstance(cni_args, dict) else {}

    ips: list[RequestedIP] = []
    if runtime.get("ips"):
        src = "runtimeConfig.ips"
        ips = [parse_ip(i, src) for i in _list(runtime["ips"], src)]
    elif cni_args.get("ips"):
        src = "args.cni.ips"
        ips = [parse_ip(i, src) for i in _list(cni_args["ips"], src)]
    elif args.get("IP"):
        ips = [parse_ip(i, "CNI_ARGS IP") for i in args["IP"].split(",")]
    seen: set[str] = set()
    for r in ips:
        if r.ip in seen:
            raise r.error("is listed twice")
        seen.add(r.ip)

    mac = ""
    if runtime.get("mac"):
        mac = parse_mac(runtime["mac"], "runtimeConfig.mac")
    elif cni_args.get("mac"):
        mac = parse_mac(cni_args["mac"], "args.cni.mac")
    elif args.get("MAC"):
        mac = parse_mac(args["MAC"], "CNI_ARGS MAC")
    return Requested(tuple(ips), mac)
