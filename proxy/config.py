"""KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) decoded strictly, defaulted, validated.

Pure: :func:`resolve` takes the decoded ``--config`` document (or None) and the
command-line flags that were given, and returns one frozen :class:`ProxySettings`
or raises :class:`ConfigError`, whose text is one line naming the field.

Guarantees:

* every field of v1alpha1 as kube-proxy 1.23-1.33 writes it is known (kubeadm's
  ConfigMap decodes unchanged); fields that only older releases had
  (``udpIdleTimeout``, ``conntrack.max``, ``resourceContainer``) are accepted and
  reported as ignored; any other key is refused with its path, in the words of
  apimachinery's strict decoder (``unknown field "iptables.foo"``);
* values have Go's JSON types: a string where an int is expected is refused,
  durations are strings in Go notation (``1m30s``, ``500ms``, ``0s``);
* defaults are kube-proxy's ``SetDefaults_KubeProxyConfiguration``: a zero
  ``iptables.syncPeriod`` means 30s and a zero ``minSyncPeriod`` 1s, an empty
  ``healthzBindAddress`` means 0.0.0.0:10256 and an empty
  ``metricsBindAddress`` 127.0.0.1:10249 ([::] / [::1] when ``bindAddress`` is
  IPv6), a bare IP gets the default port, an unset ``oomScoreAdj`` is -999;
* after defaulting ``syncPeriod`` is > 0 and ``minSyncPeriod`` >= 0 and <=
  ``syncPeriod`` (kube-proxy's validation), so nothing downstream can pace a loop
  at zero;
* ``mode`` is ``""`` (iptables), ``iptables`` or ``nftables``; ``ipvs`` and
  ``kernelspace`` are refused by name;
* flags override the file: each given flag is written into the document at its
  field's path before defaulting, so a flag value is validated exactly like the
  file value it replaces (``--iptables-sync-period 0s`` means 30s too).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from podnet.host.addr import split_hostport
from podnet.kube.durations import format_duration, parse_duration
from podnet.kube.errors import ConfigError

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"

HEALTHZ_PORT = 10256
METRICS_PORT = 10249
DEFAULT_SYNC_PERIOD = 30.0
DEFAULT_MIN_SYNC_PERIOD = 1.0
DEFAULT_MASQUERADE_BIT = 14
DEFAULT_CONNTRACK_MAX_PER_CORE = 32 * 1024
DEFAULT_CONNTRACK_MIN = 128 * 1024
DEFAULT_TCP_ESTABLISHED_TIMEOUT = 24 * 3600.0
DEFAULT_TCP_CLOSE_WAIT_TIMEOUT = 3600.0
DEFAULT_OOM_SCORE_ADJ = -999

SUPPORTED_MODES = ("", "iptables", "nftables")
OTHER_MODES = ("ipvs", "kernelspace")
SUPPORTED_LOCAL_MODES = ("", "ClusterCIDR")
OTHER_LOCAL_MODES = ("NodeCIDR", "BridgeInterface", "InterfaceNamePrefix")
LOG_FORMATS = ("text", "json")


# -- schema: every v1alpha1 key, by Go JSON type

STR, BOOL, INT, NUM, DUR, STRLIST, BOOLMAP, ANY = "string", "bool", "int32", "number", "duration", "[]string", \
    "map[string]bool", "any"
LEGACY = "legacy"
"""A key only older kube-proxy releases had: accepted, reported as ignored."""

_OUTPUT = {"splitStream": BOOL, "infoBufferSize": ANY}
SCHEMA: dict[str, Any] = {
    "apiVersion": STR, "kind": STR,
    "featureGates": BOOLMAP,
    "clientConnection": {"kubeconfig": STR, "acceptContentTypes": STR, "contentType": STR, "qps": NUM, "burst": INT},
    "logging": {"format": STR, "flushFrequency": ANY, "verbosity": INT,
                "vmodule": ANY, "options": {"text": dict(_OUTPUT), "json": dict(_OUTPUT)}},
    "hostnameOverride": STR, "bindAddress": STR, "healthzBindAddress": STR, "metricsBindAddress": STR,
    "bindAddressHardFail": BOOL, "enableProfiling": BOOL, "showHiddenMetricsForVersion": STR,
    "mode": STR,
    "iptables": {"masqueradeBit": INT, "masqueradeAll": BOOL, "localhostNodePorts": BOOL,
                 "snatNodeInternalIP": BOOL, "syncPeriod": DUR, "minSyncPeriod": DUR},
    "ipvs": {"syncPeriod": DUR, "minSyncPeriod": DUR, "scheduler": STR, "excludeCIDRs": STRLIST,
             "strictARP": BOOL, "tcpTimeout": DUR, "tcpFinTimeout": DUR, "udpTimeout": DUR},
    "nftables": {"masqueradeBit": INT, "masqueradeAll": BOOL, "syncPeriod": DUR, "minSyncPeriod": DUR},
    "winkernel": {"networkName": STR, "sourceVip": STR, "enableDSR": BOOL, "rootHnsEndpointName": STR,
                  "forwardHealthCheckVip": BOOL},
    "detectLocalMode": STR,
    "detectLocal": {"bridgeInterface": STR, "interfaceNamePrefix": STR},
    "clusterCIDR": STR,
    "nodePortAddresses": STRLIST,
    "oomScoreAdj": INT,
    "conntrack": {"maxPerCore": INT, "min": INT, "tcpEstablishedTimeout": DUR, "tcpCloseWaitTimeout": DUR,
                  "tcpBeLiberal": BOOL, "udpTimeout": DUR, "udpStreamTimeout": DUR, "max": LEGACY},
    "configSyncPeriod": DUR,
    "portRange": STR,
    "windowsRunAsService": BOOL,
    "udpIdleTimeout": LEGACY, "resourceContainer": LEGACY,
}

# Flags -> field paths (kube-proxy's flag names). Values arrive already typed by the CLI.
FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "kubeconfig": ("clientConnection", "kubeconfig"),
    "hostname_override": ("hostnameOverride",),
    "bind_address": ("bindAddress",),
    "healthz_bind_address": ("healthzBindAddress",),
    "metrics_bind_address": ("metricsBindAddress",),
    "proxy_mode": ("mode",),
    "cluster_cidr": ("clusterCIDR",),
    "detect_local_mode": ("detectLocalMode",),
    "masquerade_all": ("iptables", "masqueradeAll"),
    "iptables_masquerade_bit": ("iptables", "masqueradeBit"),
    "iptables_localhost_nodeports": ("iptables", "localhostNodePorts"),
    "iptables_sync_period": ("iptables", "syncPeriod"),
    "iptables_min_sync_period": ("iptables", "minSyncPeriod"),
    "nodeport_addresses": ("nodePortAddresses",),
    "conntrack_max_per_core": ("conntrack", "maxPerCore"),
    "conntrack_min": ("conntrack", "min"),
    "conntrack_tcp_timeout_established": ("conntrack", "tcpEstablishedTimeout"),
    "conntrack_tcp_timeout_close_wait": ("conntrack", "tcpCloseWaitTimeout"),
    "conntrack_tcp_be_liberal": ("conntrack", "tcpBeLiberal"),
    "conntrack_udp_timeout": ("conntrack", "udpTimeout"),
    "conntrack_udp_timeout_stream": ("conntrack", "udpStreamTimeout"),
    "config_sync_period": ("configSyncPeriod",),
    "oom_score_adj": ("oomScoreAdj",),
    "feature_gates": ("featureGates",),
    "logging_format": ("logging", "format"),
    "v": ("logging", "verbosity"),
}


# -- Go value syntax

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_feature_gates(text: str) -> dict[str, bool]:
    """'A=true,B=false' as component-base's MapStringBool reads it."""
    out: dict[str, bool] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"missing bool value for {item.strip()}")
        out[key.strip()] = parse_bool(value.strip())
    return out


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Go's net.ParseIP: no zones, no leading zeros, no surrounding space."""
    if "%" in text or text != text.strip():
        raise ValueError(text)
    return ipaddress.ip_address(text)


def _cidr(text: str) -> str:
    """Go's net.ParseCIDR; the network is returned canonical (host bits cleared)."""
    addr, slash, bits = text.partition("/")
    if not slash or not re.fullmatch(r"\d{1,3}", bits):
        raise ValueError(text)
    ip = _ip(addr)
    return str(ipaddress.ip_network(f"{ip}/{int(bits)}", strict=False))


def _host_port(text: str, default_port: int) -> str:
    """kube-proxy's AppendPortIfNeeded + validateHostPort: 'IP' -> 'IP:port'; 'IP:port' checked."""
    try:
        ip = _ip(text.strip("[]"))
        return f"[{ip}]:{default_port}" if ip.version == 6 else f"{ip}:{default_port}"
    except ValueError:
        pass
    try:
        host, port = split_hostport(text)
    except ValueError as e:
        raise ValueError("must be a valid port" if "invalid port" in str(e) else "must be IP:port") from None
    try:
        _ip(host)
    except ValueError:
        raise ValueError("must be a valid IP") from None
    if port == 0:
        raise ValueError("must be a valid port")
    return text


# -- decoding


def _typename(v: Any) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(v), type(v).__name__)


def _check(value: Any, spec: Any, path: str, legacy: list[str]) -> None:
    if value is None:
        return  # YAML null: Go leaves the zero value / nil pointer
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object, got {_typename(value)}")
        for k, v in value.items():
            child = f"{path}.{k}" if path else str(k)
            if k not in spec:
                raise ConfigError(f'strict decoding error: unknown field "{child}"')
            _check(v, spec[k], child, legacy)
        return
    if spec == LEGACY:
        legacy.append(path)
        return
    ok = {
        STR: isinstance(value, str),
        BOOL: isinstance(value, bool),
        INT: isinstance(value, int) and not isinstance(value, bool),
        NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
        DUR: isinstance(value, str),
        STRLIST: isinstance(value, list) and all(isinstance(x, str) for x in value),
        BOOLMAP: isinstance(value, dict) and all(isinstance(x, bool) for x in value.values()),
        ANY: True,
    }[spec]
    if not ok:
        raise ConfigError(f"{path}: cannot unmarshal {_typename(value)} into a Go value of type {spec}")
    if spec == DUR:
        try:
            parse_duration(value)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
    if spec == INT and not -(2 ** 31) <= value < 2 ** 31:
        raise ConfigError(f"{path}: value {value} overflows int32")


def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping, as strict decoding does."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f'strict decoding error: duplicate field "{key}" (line {line})')
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return StrictLoader


class DuplicateKey(ConfigError):
    pass


def decode(text: str, source: str = "--config") -> dict[str, Any]:
    """Parse YAML or JSON and check every key and type against v1alpha1; returns the plain document."""
    import yaml

    try:
        docs = [d for d in yaml.load_all(text, Loader=_strict_loader()) if d is not None]  # noqa: S506 - SafeLoader
    except DuplicateKey as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not YAML or JSON{where}: {getattr(e, 'problem', None) or e}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError(f"{source}: expected one {KIND} object")
    doc = docs[0]
    if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise ConfigError(f"{source}: expected apiVersion {API_VERSION} kind {KIND}, "
                          f"got apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r}")
    _check(doc, SCHEMA, "", [])
    return doc


def legacy_fields(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """Keys of older releases present in a decoded document (accepted, ignored)."""
    out: list[str] = []
    _check(dict(doc), SCHEMA, "", out)
    return tuple(out)


# -- the settings podnet runs with


@dataclass(frozen=True)
class Conntrack:
    """kube-proxy's conntrack settings after defaulting (None: leave the kernel's value)."""

    max_per_core: int = DEFAULT_CONNTRACK_MAX_PER_CORE
    min: int = DEFAULT_CONNTRACK_MIN
    tcp_established_timeout: float = DEFAULT_TCP_ESTABLISHED_TIMEOUT
    tcp_close_wait_timeout: float = DEFAULT_TCP_CLOSE_WAIT_TIMEOUT
    tcp_be_liberal: bool = False
    udp_timeout: float = 0.0
    udp_stream_timeout: float = 0.0


@dataclass(frozen=True)
class ProxySettings:
    kubeconfig: str = ""
    hostname_override: str = ""
    bind_address: str = "0.0.0.0"
    healthz_bind_address: str = f"0.0.0.0:{HEALTHZ_PORT}"
    metrics_bind_address: str = f"127.0.0.1:{METRICS_PORT}"
    mode: str = "iptables"
    cluster_cidrs: tuple[str, ...] = ()
    detect_local_mode: str = "ClusterCIDR"
    masquerade_all: bool = False
    masquerade_bit: int = DEFAULT_MASQUERADE_BIT
    localhost_nodeports: bool = True
    sync_period: float = DEFAULT_SYNC_PERIOD
    min_sync_period: float = DEFAULT_MIN_SYNC_PERIOD
    nodeport_addresses: tuple[str, ...] = ()
    conntrack: Conntrack = field(default_factory=Conntrack)
    feature_gates: tuple[tuple[str, bool], ...] = ()
    logging_format: str = "text"
    verbosity: int = 0
    oom_score_adj: int = DEFAULT_OOM_SCORE_ADJ
    ignored: tuple[str, ...] = ()
    """Fields set to something podnet does not act on, for one log line at start-up."""


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cur = doc
    for p in path[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[path[-1]] = value


def overlay(doc: Mapping[str, Any] | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The document with every given flag written at its field's path (flags win)."""
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(doc)) if doc else {"apiVersion": API_VERSION, "kind": KIND}
    for name, value in flags.items():
        if value is None:
            continue
        if name == "feature_gates":
            gates = dict(_get(out, "featureGates") or {})
            gates.update(value)
            value = gates
        _set(out, FLAG_PATHS[name], value)
    return out


def _dur(doc: Mapping[str, Any], *path: str) -> float:
    v = _get(doc, *path)
    return parse_duration(v) if v else 0.0


def _invalid(path: str, value: Any, why: str) -> ConfigError:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return ConfigError(f"KubeProxyConfiguration.{path}: Invalid value: {shown}: {why}")


def resolve(doc: Mapping[str, Any] | None, flags: Mapping[str, Any] | None = None) -> ProxySettings:
    """Defaults and validation over the file document with the given flags laid on top."""
    from podnet.proxy import nodeports

    d = overlay(doc, flags or {})
    _check(d, SCHEMA, "", [])
    ignored = [f"{p} (a field of older kube-proxy releases)" for p in legacy_fields(d)]

    mode = _get(d, "mode") or ""
    if mode in OTHER_MODES:
        raise _invalid("mode", mode, "podnet-proxy implements only the iptables and nftables proxy modes; must be iptables, nftables or blank")
    if mode not in SUPPORTED_MODES:
        raise _invalid("mode", mode, "must be iptables, ipvs, nftables or blank (blank means iptables)")

    bind = _get(d, "bindAddress") or "0.0.0.0"
    try:
        bind_ip = _ip(bind)
    except ValueError:
        raise _invalid("bindAddress", bind, "not a valid textual representation of an IP address") from None
    if bind not in ("0.0.0.0", "::"):
        ignored.append(f"bindAddress {bind} (podnet reads its node IPs from the node's interfaces)")
    any_addr, loop = ("[::]", "[::1]") if bind_ip.version == 6 else ("0.0.0.0", "127.0.0.1")

    def addr(key: str, host: str, port: int) -> str:
        v = _get(d, key)
        if not v:
            return f"{host}:{port}"
        try:
            return _host_port(v, port)
        except ValueError as e:
            raise _invalid(key, v, str(e)) from None

    healthz = addr("healthzBindAddress", any_addr, HEALTHZ_PORT)
    metrics = addr("metricsBindAddress", loop, METRICS_PORT)

    sync = _dur(d, "iptables", "syncPeriod") or DEFAULT_SYNC_PERIOD
    min_sync = _dur(d, "iptables", "minSyncPeriod") or DEFAULT_MIN_SYNC_PERIOD
    if sync <= 0:
        raise _invalid("iptables.syncPeriod", _get(d, "iptables", "syncPeriod"), "must be greater than 0")
    if min_sync < 0:
        raise _invalid("iptables.minSyncPeriod", _get(d, "iptables", "minSyncPeriod"),
                       "must be greater than or equal to 0")
    if min_sync > sync:
        raise _invalid("iptables.syncPeriod", format_duration(sync),
                       f"must be greater than or equal to iptables.minSyncPeriod ({format_duration(min_sync)})")

    bit = _get(d, "iptables", "masqueradeBit")
    bit = DEFAULT_MASQUERADE_BIT if bit is None else bit
    if not 0 <= bit <= 31:
        raise _invalid("iptables.masqueradeBit", bit, "must be within the range [0, 31]")
    lnp = _get(d, "iptables", "localhostNodePorts")

    cidrs: list[str] = []
    raw_cidr = _get(d, "clusterCIDR") or ""
    for c in (x for x in raw_cidr.split(",") if x):
        try:
            cidrs.append(_cidr(c))
        except ValueError:
            raise _invalid("clusterCIDR", raw_cidr, "must be a valid CIDR block (e.g. 10.100.0.0/16 or "
                           "fde4:8dba:82e1::/48)") from None
    if len(cidrs) > 2 or (len(cidrs) == 2 and (":" in cidrs[0]) == (":" in cidrs[1])):
        raise _invalid("clusterCIDR", raw_cidr, "only one CIDR allowed or a valid DualStack CIDR "
                       "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)")

    local_mode = _get(d, "detectLocalMode") or ""
    if local_mode in OTHER_LOCAL_MODES:
        raise _invalid("detectLocalMode", local_mode, "podnet-proxy detects local traffic by ClusterCIDR only; "
                       "must be ClusterCIDR or blank")
    if local_mode not in SUPPORTED_LOCAL_MODES:
        raise _invalid("detectLocalMode", local_mode,
                       "must be ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or blank")

    try:
        np = nodeports.parse(_get(d, "nodePortAddresses") or [])
    except ValueError as e:
        raise _invalid("nodePortAddresses", _get(d, "nodePortAddresses"), str(e)) from None

    ct = _conntrack(d)

    fmt = _get(d, "logging", "format") or "text"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f'logging.format: Unsupported value: "{fmt}": supported values: "json", "text"')
    verbosity = _get(d, "logging", "verbosity") or 0
    if verbosity < 0:
        raise _invalid("logging.verbosity", verbosity, "must be greater than or equal to 0")

    oom = _get(d, "oomScoreAdj")
    oom = DEFAULT_OOM_SCORE_ADJ if oom is None else oom
    if not -1000 <= oom <= 1000:
        raise _invalid("oomScoreAdj", oom, "must be within the range [-1000, 1000]")
    gates = tuple(sorted((_get(d, "featureGates") or {}).items()))
    if gates:
        ignored.append("featureGates " + ",".join(f"{k}={str(v).lower()}" for k, v in gates)
                       + " (podnet has no feature gates)")
    for key in ("enableProfiling", "bindAddressHardFail"):
        if _get(d, key):
            ignored.append(f"{key}: true")
    return ProxySettings(
        kubeconfig=_get(d, "clientConnection", "kubeconfig") or "",
        hostname_override=(_get(d, "hostnameOverride") or "").strip().lower(),
        bind_address=bind,
        healthz_bind_address=healthz,
        metrics_bind_address=metrics,
        mode=mode or "iptables",
        cluster_cidrs=tuple(cidrs),
        detect_local_mode="ClusterCIDR",
        masquerade_all=bool(_get(d, "iptables", "masqueradeAll")),
        masquerade_bit=bit,
        localhost_nodeports=True if lnp is None else lnp,
        sync_period=sync,
        min_sync_period=min_sync,
        nodeport_addresses=np,
        conntrack=ct,
        feature_gates=gates,
        logging_format=fmt,
        verbosity=verbosity,
        oom_score_adj=oom,
        ignored=tuple(ignored),
    )


def _conntrack(d: Mapping[str, Any]) -> Conntrack:
    def num(key: str, default: int) -> int:
        v = _get(d, "conntrack", key)
        v = default if v is None else v
        if v < 0:
            raise _invalid(f"conntrack.{key}", v, "must be greater than or equal to 0")
        return v

    def dur(key: str, default: float | None) -> float:
        raw = _get(d, "conntrack", key)
        v = parse_duration(raw) if raw is not None else default
        if v is None:
            v = 0.0
        if v < 0:
            raise _invalid(f"conntrack.{key}", raw, "must be greater than or equal to 0")
        return v

    return Conntrack(
        max_per_core=num("maxPerCore", DEFAULT_CONNTRACK_MAX_PER_CORE),
        min=num("min", DEFAULT_CONNTRACK_MIN),
        tcp_established_timeout=dur("tcpEstablishedTimeout", DEFAULT_TCP_ESTABLISHED_TIMEOUT),
        tcp_close_wait_timeout=dur("tcpCloseWaitTimeout", DEFAULT_TCP_CLOSE_WAIT_TIMEOUT),
        tcp_be_liberal=bool(_get(d, "conntrack", "tcpBeLiberal")),
        udp_timeout=dur("udpTimeout", 0.0),
        udp_stream_timeout=dur("udpStreamTimeout", 0.0),
    )


def conntrack_sysctls(ct: Conntrack, ncpu: int) -> dict[str, int]:
    """The sysctls kube-proxy's conntrack setup writes (name under /proc/sys -> value); 0 means leave as is.

    nf_conntrack_max = max(maxPerCore * CPUs, min) when maxPerCore > 0; the TCP
    timeouts when > 0 (seconds); be_liberal only when asked; UDP timeouts when > 0.
    """
    out: dict[str, int] = {}
    if ct.max_per_core > 0:
        out["net/netfilter/nf_conntrack_max"] = max(ct.max_per_core * max(ncpu, 1), ct.min)
    for key, secs in (("nf_conntrack_tcp_timeout_established", ct.tcp_established_timeout),
                      ("nf_conntrack_tcp_timeout_close_wait", ct.tcp_close_wait_timeout),
                      ("nf_conntrack_udp_timeout", ct.udp_timeout),
                      ("nf_conntrack_udp_timeout_stream", ct.udp_stream_timeout)):
        if secs > 0:
            out[f"net/netfilter/{key}"] = int(secs)
    if ct.tcp_be_liberal:
        out["net/netfilter/nf_conntrack_tcp_be_liberal"] = 1
    return out
