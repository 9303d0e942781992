"""Verb dispatch: the runtime's environment + stdin in, stdout bytes + exit code out.

The environment and stdin are *injected* (a mapping and bytes), never read from
``os.environ``, so the daemon can serve many requests at once and tests drive
the whole protocol in-process. Validation order follows the Go ``pkg/skel``:
CNI_COMMAND, then the env vars that verb requires (error 4 naming all missing
ones), then the config (6 undecodable, 7 invalid, 1 unsupported version),
then CNI_ARGS (4 malformed; 2 unknown key without ``IgnoreUnknown``).

Values are checked as the Go reference checks them (``pkg/utils``
``ValidateContainerID``/``ValidateInterfaceName``) and as the kernel's
``dev_valid_name`` does, with whole-string matches: CNI_CONTAINERID is
``[A-Za-z0-9][A-Za-z0-9_.-]*`` and nothing else (no trailing newline);
CNI_IFNAME is 1-15 bytes of UTF-8, not ``.``/``..``, without ``/``, ``:``,
whitespace (Unicode's, and the byte 0xA0 the kernel's ``isspace`` refuses) or
control characters; CNI_NETNS, where a verb uses it (ADD, CHECK), is an
absolute path. Each failure is error 4 naming the variable.

Guarantee: :func:`dispatch` never raises. Every failure becomes spec error JSON on
stdout with a non-zero exit code; unexpected exceptions become code 999.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from podnet.cni import version as ver
from podnet.cni.types import (
    INTERNAL,
    INVALID_ENV,
    UNSUPPORTED_FIELD,
    CniError,
    NetConf,
    parse_json_object,
    parse_netconf,
)

log = logging.getLogger("podnet.cni")

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
KNOWN_ARGS = frozenset(
    {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID",
     "IP", "MAC"}  # requested addresses: podnet.cni.requested
)
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # always used with fullmatch
IFNAMSIZ = 16
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")  # lib/ctype.c: the bytes isspace() is true for


@dataclass(frozen=True)
class Request:
    """One validated invocation."""

    verb: str
    conf: NetConf
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @property
    def pod(self) -> str:
        ns, name = self.args.get("K8S_POD_NAMESPACE", ""), self.args.get("K8S_POD_NAME", "")
        return f"{ns}/{name}" if name else ""


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    stdout: bytes


class Handler(Protocol):
    """What the daemon implements; each verb returns a result dict (ADD) or None."""

    async def add(self, req: Request) -> dict[str, Any]: ...
    async def delete(self, req: Request) -> None: ...
    async def check(self, req: Request) -> None: ...
    async def status(self, req: Request) -> None: ...
    async def gc(self, req: Request) -> None: ...


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K=V;K=V`` -> dict; unknown keys are error 2 unless IgnoreUnknown is true."""
    args: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise CniError(INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r} (want KEY=VALUE)")
        args[k] = v
    ignore = args.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(set(args) - KNOWN_ARGS)
    if unknown and not ignore:
        k = unknown[0]
        raise CniError(UNSUPPORTED_FIELD, f"CNI_ARGS: unknown key {k}={args[k]!r} (set IgnoreUnknown=1 to allow it)")
    return args


def validate_container_id(cid: str) -> None:
    if not _CONTAINER_ID.fullmatch(cid):
        raise CniError(INVALID_ENV, f"CNI_CONTAINERID {cid!r} is invalid (want [A-Za-z0-9][A-Za-z0-9_.-]*)")


def validate_ifname(name: str) -> None:
    def bad(why: str) -> CniError:
        return CniError(INVALID_ENV, f"CNI_IFNAME {name!r} is not a valid interface name: {why}")

    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the environment
        raise bad("not UTF-8") from None
    if not raw:
        raise bad("empty")
    if len(raw) >= IFNAMSIZ:
        raise bad(f"{len(raw)} bytes, the kernel allows at most {IFNAMSIZ - 1}")
    if name in (".", ".."):
        raise bad("'.' and '..' are not allowed")
    if "/" in name or ":" in name:
        raise bad("'/' and ':' are not allowed")
    if any(b in _KERNEL_SPACE for b in raw) or any(c.isspace() or unicodedata.category(c) == "Cc" for c in name):
        raise bad("whitespace and control characters are not allowed")


def validate_netns_path(path: str) -> None:
    if not path.startswith("/"):
        raise CniError(INVALID_ENV, f"CNI_NETNS {path!r} is not an absolute path")


def parse_request(environ: Mapping[str, str], stdin: bytes) -> Request:
    verb = environ.get("CNI_COMMAND", "")
    if not verb:
        raise CniError(INVALID_ENV, "required env variables [CNI_COMMAND] missing")
    if verb not in VERBS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {verb}")
    missing = [k for k in REQUIRED_ENV[verb] if not environ.get(k)]
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{', '.join(missing)}] missing")
    conf = parse_netconf(parse_json_object(stdin))
    ver.check(conf.cni_version, verb)
    req = Request(verb, conf)
    if verb in ("ADD", "DEL", "CHECK"):
        cid, ifname, netns = environ["CNI_CONTAINERID"], environ["CNI_IFNAME"], environ.get("CNI_NETNS", "")
        validate_container_id(cid)
        validate_ifname(ifname)
        if verb != "DEL":  # DEL never opens the netns; refusing it would strand the reservation
            validate_netns_path(netns)
        req = Request(verb, conf, cid, netns, ifname, parse_cni_args(environ.get("CNI_ARGS", "")))
    return req


def error_response(err: CniError, version: str = ver.CURRENT) -> Response:
    return Response(err.code, json.dumps(err.to_dict(version)).encode() + b"\n")


def version_response() -> Response:
    """VERSION needs nothing but CNI_COMMAND and ignores stdin (podman sends dummy env vars)."""
    return Response(0, json.dumps(ver.version_info()).encode() + b"\n")


def _config_version(stdin: bytes) -> str:
    try:
        v = json.loads(stdin).get("cniVersion")
        return v if v in ver.SUPPORTED else ver.CURRENT
    except Exception:  # noqa: BLE001 - only for labelling the error
        return ver.CURRENT


async def dispatch(environ: Mapping[str, str], stdin: bytes, handler: Handler) -> Response:
    """Run one CNI invocation against ``handler``; never raises."""
    try:
        if environ.get("CNI_COMMAND") == "VERSION":
            return version_response()
        req = parse_request(environ, stdin)
        if req.verb == "ADD":
            result = await handler.add(req)
            return Response(0, json.dumps(ver.convert(result, req.conf.cni_version)).encode() + b"\n")
        if req.verb == "DEL":
            await handler.delete(req)
        elif req.verb == "CHECK":
            await handler.check(req)
        elif req.verb == "STATUS":
            await handler.status(req)
        elif req.verb == "GC":
            await handler.gc(req)
        return Response(0, b"")
    except CniError as e:
        return error_response(e, _config_version(stdin))
    except Exception as e:  # noqa: BLE001 - the runtime must always get spec JSON
        log.exception("internal error in %s", environ.get("CNI_COMMAND"))
        return error_response(CniError(INTERNAL, f"internal error: {type(e).__name__}: {e}"), _config_version(stdin))
