"""Corefile directives -> podnet-dns's configuration (pure, validated; nothing is opened or bound).

:func:`load` turns the server blocks of :mod:`podnet.dns.corefile` into a :class:`ServerConfig`.
Every plugin of kubeadm's default Corefile is accepted and mapped onto podnet-dns's settings; so
are ``log``, ``hosts``, ``rewrite`` (name rules), ``bind`` and server blocks for other zones (stub
domains). Anything else (an unknown plugin, an option podnet-dns does not implement, a wrong
argument) is a :class:`~podnet.dns.corefile.CorefileError` naming the line, never silently
ignored. Semantics and defaults follow CoreDNS's plugin READMEs:

=============  =================================================================================
plugin         podnet-dns
=============  =================================================================================
errors         SERVFAIL causes logged as ``plugin/errors: 2 NAME TYPE: cause``
health         /health on ADDRESS (default ``:8080``); ``lameduck DURATION`` = SIGTERM lameduck
ready          /ready on ADDRESS (default ``:8181``)
prometheus     /metrics on ADDRESS (default ``localhost:9153``)
kubernetes     one cluster zone (+ reverse zones); ``ttl`` (0-3600, default 5), ``pods insecure``,
               ``fallthrough`` (reverse zones only), ``endpoint URL``, ``kubeconfig FILE``. PTR names of
               cluster IPs and endpoints are answered, and other reverse names passed on, whether
               or not the reverse zones and their fallthrough are listed (the stock Corefile's behaviour)
forward        ``forward FROM TO...``: FROM is ``.`` or the block's zone; TO is IP[:port],
               ``dns://`` IP or a resolv.conf file; ``max_concurrent``, ``max_fails``, ``policy``,
               ``force_tcp``, ``prefer_udp`` (the default here), ``health_check`` (accepted; upstream
               health is passive: failed queries count), ``expire`` (accepted; no connection pool)
cache          ``cache [TTL] [ZONES...]``; ``success``/``denial CAPACITY [TTL [MINTTL]]``,
               ``disable success|denial [ZONES...]``; one entry limit for both kinds (success's
               CAPACITY, default 9984), one MINTTL (the last given)
loop           loop probe through every upstream of the kubernetes block after the first sync
reload         the Corefile is checked every INTERVAL ± JITTER (default 30s 15s); a changed, valid one
               is applied in place (see :mod:`podnet.dns.coredaemon` for what needs a restart)
loadbalance    ``round_robin`` (podnet-dns always rotates address sets)
log            query log in CoreDNS's formats (``{common}``, ``{combined}`` or placeholders)
hosts          ``hosts [FILE [ZONES...]] { inline entries, ttl, no_reverse, reload, fallthrough }``
rewrite        ``rewrite [continue|stop] name [exact|prefix|suffix|substring|regex] FROM TO [answer ...]``
bind           one listen address for every block
=============  =================================================================================
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from podnet.dns import corefile, names
from podnet.dns.corefile import CorefileError, Directive, ServerBlock
from podnet.dns.forward import POLICIES, UpstreamAddr, parse_upstream
from podnet.dns.rewrite import RewriteRule, parse_rewrite
from podnet.host.addr import split_hostport
from podnet.kube import durations

__all__ = [
    "ServerConfig", "Block", "KubernetesConfig", "ForwardConfig", "CacheConfig", "LogConfig", "HostsConfig",
    "load", "parse_duration", "in_zone", "normalize_zone",
]

DEFAULT_PORT = 53
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
COREDNS_PLUGINS = frozenset(
    "acl any auto autopath azure bufsize cancel chaos clouddns debug dns64 dnssec dnstap erratic etcd file "
    "geoip grpc grpc_server header https https3 import k8s_external local metadata minimal multisocket "
    "nomcache nsid on pprof quic root route53 secondary sign template timeouts tls trace transfer tsig view "
    "whoami".split()
)
"""CoreDNS plugins podnet-dns does not implement (named as such in the error, rather than 'unknown')."""

def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (:func:`podnet.kube.durations.parse_duration`) for non-negative,
    unsigned values ('5s', '1m30s', '500ms', '0'); ValueError otherwise."""
    if text[:1] in ("-", "+"):
        raise ValueError(f"invalid duration {text!r}")
    return durations.parse_duration(text)


def normalize_zone(text: str) -> str:
    """'Example.ORG.' -> 'example.org'; '.' -> '' (the root)."""
    z = text.strip().lower().rstrip(".")
    if z:
        names.to_wire(z)  # ValueError for an impossible name
    return z


def in_zone(name: str, zone: str) -> bool:
    """``name`` (normalized) is ``zone`` or below it."""
    return not zone or name == zone or name.endswith("." + zone)


@dataclass(frozen=True)
class KubernetesConfig:
    zone: str = "cluster.local"
    reverse_zones: tuple[str, ...] = ()
    ttl: int = 5
    endpoint: str | None = None
    kubeconfig: str | None = None
    fallthrough: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ForwardConfig:
    from_zone: str = ""
    upstreams: tuple[UpstreamAddr, ...] = ()
    resolv_conf: str | None = None
    """A resolv.conf-style file whose nameservers are upstreams (read when the server starts)."""
    max_concurrent: int = 1000
    max_fails: int = 2
    policy: str = "random"
    force_tcp: bool = False


@dataclass(frozen=True)
class CacheConfig:
    max_ttl: int = 3600
    max_denial_ttl: int = 1800
    min_ttl: int = 5
    capacity: int = 9984
    zones: tuple[str, ...] = ("",)
    disable_success: tuple[str, ...] = ()
    disable_denial: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogConfig:
    names: tuple[str, ...] = ("",)
    format: str = "{common}"
    classes: frozenset[str] = frozenset({"all"})


@dataclass(frozen=True)
class HostsConfig:
    path: str | None = "/etc/hosts"
    inline: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(address, names) pairs written in the block."""
    zones: tuple[str, ...] = ("",)
    ttl: int = 3600
    no_reverse: bool = False
    reload: float = 5.0
    fallthrough: tuple[str, ...] | None = None
    """None: no fallthrough; () : every zone; else the listed zones."""


@dataclass(frozen=True)
class Block:
    zones: tuple[str, ...]
    line: int
    plugins: tuple[str, ...]
    errors: bool = False
    log: LogConfig | None = None
    hosts: HostsConfig | None = None
    rewrites: tuple[RewriteRule, ...] = ()
    kubernetes: KubernetesConfig | None = None
    forward: ForwardConfig | None = None
    cache: CacheConfig | None = None
    loop: bool = False


@dataclass(frozen=True)
class ServerConfig:
    blocks: tuple[Block, ...]
    port: int = DEFAULT_PORT
    bind: str = "0.0.0.0"
    health: str | None = None
    lameduck: float = 0.0
    ready: str | None = None
    prometheus: str | None = None
    reload: tuple[float, float] | None = None
    """(interval, jitter) seconds between checks of the Corefile for changes; None: never."""
    loadbalance: bool = False

    @property
    def listen(self) -> str:
        return f"[{self.bind}]:{self.port}" if ":" in self.bind else f"{self.bind}:{self.port}"

    @property
    def kubernetes_block(self) -> Block | None:
        return next((b for b in self.blocks if b.kubernetes is not None), None)


# ---------------------------------------------------------------------------------------------- helpers


class _Ctx:
    def __init__(self, path: str, plugin: str, line: int) -> None:
        self.path, self.plugin, self.line = path, plugin, line

    def error(self, msg: str, line: int | None = None) -> CorefileError:
        return CorefileError(self.path, line or self.line, msg, plugin=self.plugin)

    def int_arg(self, text: str, lo: int, hi: int, what: str, line: int | None = None) -> int:
        if not re.fullmatch(r"\d+", text) or not lo <= int(text) <= hi:
            raise self.error(f"{what} must be an integer within {lo}..{hi}, not {text!r}", line)
        return int(text)

    def duration(self, text: str, what: str, line: int | None = None) -> float:
        try:
            return parse_duration(text)
        except ValueError:
            raise self.error(f"{what}: invalid duration {text!r}", line) from None

    def zone(self, text: str, line: int | None = None) -> str:
        try:
            return normalize_zone(text)
        except ValueError:
            raise self.error(f"invalid zone {text!r}", line) from None

    def no_block(self, d: Directive) -> None:
        if d.block is not None:
            raise self.error(f"'{d.name}' takes no block", d.line)

    def nargs(self, d: Directive, lo: int, hi: int) -> None:
        if not lo <= len(d.args) <= hi:
            raise self.error(f"Wrong argument count or unexpected line ending after '{d.name}'", d.line)


def _address(ctx: _Ctx, text: str) -> str:
    """An HTTP listen address as CoreDNS writes it (':8080', 'localhost:9153', '[::]:8181')."""
    try:
        _, port = split_hostport(text)
    except ValueError:
        port = 0
    if port == 0:
        raise ctx.error(f"invalid address {text!r} (want HOST:PORT or :PORT)")
    return text


def _server_key(ctx: _Ctx, key: str, default_port: int) -> tuple[str, int]:
    text = key
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "dns":
            raise ctx.error(f"server block '{key}': transport {scheme}:// is not supported by podnet-dns (dns:// only)")
    zone, port = text, default_port
    if text.startswith("[") or text.count(":") == 1:
        zone, _, p = text.rpartition(":")
        if not re.fullmatch(r"\d+", p) or not 0 < int(p) < 65536:
            raise ctx.error(f"server block '{key}': invalid port {p!r}")
        port = int(p)
    if "/" in zone:
        raise ctx.error(f"server block '{key}': CIDR zones are not supported by podnet-dns (write the reverse zone)")
    return ctx.zone(zone or "."), port


# ---------------------------------------------------------------------------------------------- plugins


def _kubernetes(ctx: _Ctx, d: Directive, block_zones: tuple[str, ...]) -> KubernetesConfig:
    zones = [ctx.zone(a) for a in d.args] or list(block_zones)
    forward = [z for z in zones if not any(in_zone(z, r) for r in REVERSE_ZONES)]
    reverse = tuple(z for z in zones if z not in forward)
    if len(forward) != 1 or not forward[0]:
        raise ctx.error("podnet-dns serves exactly one cluster zone (e.g. 'kubernetes cluster.local in-addr.arpa ip6.arpa')")
    kw: dict = {}
    for sub in d.block or ():
        a = sub.args
        if sub.name == "pods":
            if a != ("insecure",):
                raise ctx.error(f"'pods {' '.join(a)}' is not supported by podnet-dns (only 'pods insecure')", sub.line)
        elif sub.name == "ttl":
            if len(a) != 1:
                raise ctx.error("ttl takes one argument", sub.line)
            kw["ttl"] = ctx.int_arg(a[0], 0, 3600, "ttl", sub.line)
        elif sub.name == "fallthrough":
            kw["fallthrough"] = tuple(ctx.zone(z, sub.line) for z in a)
        elif sub.name == "endpoint":
            if len(a) != 1:
                raise ctx.error("podnet-dns takes one endpoint URL", sub.line)
            kw["endpoint"] = a[0]
        elif sub.name == "kubeconfig":
            if len(a) != 1:
                raise ctx.error("kubeconfig takes a file (a context argument is not supported by podnet-dns)", sub.line)
            kw["kubeconfig"] = a[0]
        elif sub.name == "upstream":
            pass  # deprecated in CoreDNS and ignored there too: names are chased through forward
        else:
            raise ctx.error(f"unknown or unsupported property '{sub.name}'", sub.line)
        if sub.block is not None:
            raise ctx.error(f"'{sub.name}' takes no block", sub.line)
    ft = kw.get("fallthrough")
    if ft is not None and (not ft or any(in_zone(forward[0], z) for z in ft)):
        raise ctx.error(f"fallthrough for the cluster zone {forward[0]} is not supported by podnet-dns (it answers its names "
                        "authoritatively; list the reverse zones: 'fallthrough in-addr.arpa ip6.arpa')")
    return KubernetesConfig(zone=forward[0], reverse_zones=reverse, **kw)


def _forward(ctx: _Ctx, d: Directive, block_zones: tuple[str, ...]) -> ForwardConfig:
    if len(d.args) < 2:
        raise ctx.error(f"Wrong argument count or unexpected line ending after '{d.args[0] if d.args else d.name}'")
    frm = ctx.zone(d.args[0])
    if frm and frm not in block_zones:
        raise ctx.error(f"forward FROM {d.args[0]!r} must be '.' or this server block's zone (write a server block per stub domain)")
    ups: list[UpstreamAddr] = []
    resolv = None
    for to in d.args[1:]:
        if to.startswith("/"):
            if resolv is not None:
                raise ctx.error("only one resolv.conf file per forward")
            resolv = to
            continue
        addr = to.removeprefix("dns://")
        if "://" in addr:
            raise ctx.error(f"upstream {to!r}: only plain DNS (dns://) is supported by podnet-dns")
        try:
            ups.append(parse_upstream(addr))
        except ValueError:
            raise ctx.error(f"not an IP address or file: {to!r}") from None
    kw: dict = {}
    for sub in d.block or ():
        a = sub.args
        if sub.name == "max_concurrent" and len(a) == 1:
            kw["max_concurrent"] = ctx.int_arg(a[0], 1, 1_000_000, "max_concurrent", sub.line)
        elif sub.name == "max_fails" and len(a) == 1:
            kw["max_fails"] = ctx.int_arg(a[0], 0, 1000, "max_fails", sub.line)
        elif sub.name == "policy" and len(a) == 1:
            if a[0] not in POLICIES:
                raise ctx.error(f"unknown policy {a[0]!r} (random, round_robin, sequential)", sub.line)
            kw["policy"] = a[0]
        elif sub.name in ("health_check", "expire") and len(a) >= 1:
            ctx.duration(a[0], sub.name, sub.line)
        elif sub.name == "force_tcp" and not a:
            kw["force_tcp"] = True
        elif sub.name == "prefer_udp" and not a:
            pass  # podnet-dns always asks over UDP first (TCP when the reply is truncated)
        elif sub.name in ("tls", "tls_servername", "except", "next", "max_idle_conns", "failfast_all_unhealthy_upstreams"):
            raise ctx.error(f"'{sub.name}' is not supported by podnet-dns", sub.line)
        else:
            raise ctx.error(f"unknown property '{sub.name}' or wrong arguments", sub.line)
        if sub.block is not None:
            raise ctx.error(f"'{sub.name}' takes no block", sub.line)
    return ForwardConfig(from_zone=frm, upstreams=tuple(ups), resolv_conf=resolv, **kw)


def _cache(ctx: _Ctx, d: Directive, block_zones: tuple[str, ...]) -> CacheConfig:
    args = list(d.args)
    kw: dict = {}
    if args and re.fullmatch(r"\d+", args[0]):
        ttl = ctx.int_arg(args.pop(0), 0, 2**31 - 1, "cache TTL")
        kw["max_ttl"] = kw["max_denial_ttl"] = ttl
    kw["zones"] = tuple(ctx.zone(z) for z in args) or block_zones
    success_cap = None
    for sub in d.block or ():
        a = sub.args
        if sub.name in ("success", "denial") and 1 <= len(a) <= 3:
            cap = ctx.int_arg(a[0], 1, 10_000_000, f"{sub.name} capacity", sub.line)
            if sub.name == "success":
                success_cap = cap
            if len(a) >= 2:
                kw["max_ttl" if sub.name == "success" else "max_denial_ttl"] = ctx.int_arg(a[1], 0, 2**31 - 1, "TTL", sub.line)
            if len(a) == 3:
                kw["min_ttl"] = ctx.int_arg(a[2], 0, 2**31 - 1, "MINTTL", sub.line)
        elif sub.name == "disable" and a and a[0] in ("success", "denial"):
            zones = tuple(ctx.zone(z, sub.line) for z in a[1:]) or kw["zones"]
            kw["disable_" + a[0]] = kw.get("disable_" + a[0], ()) + zones
        elif sub.name in ("prefetch", "serve_stale", "servfail", "keepttl"):
            raise ctx.error(f"'{sub.name}' is not supported by podnet-dns", sub.line)
        else:
            raise ctx.error(f"unknown property '{sub.name}' or wrong arguments", sub.line)
    if success_cap is not None:
        kw["capacity"] = success_cap
    return CacheConfig(**kw)


def _log(ctx: _Ctx, d: Directive) -> LogConfig:
    args = list(d.args)
    fmt = "{common}"
    if args and "{" in args[-1]:
        fmt = args.pop()
    classes: set[str] = set()
    for sub in d.block or ():
        if sub.name != "class" or not sub.args:
            raise ctx.error(f"unknown property '{sub.name}'", sub.line)
        for c in sub.args:
            if c not in ("all", "success", "denial", "error"):
                raise ctx.error(f"unknown class {c!r} (all, success, denial, error)", sub.line)
            classes.add(c)
    return LogConfig(names=tuple(ctx.zone(n) for n in args) or ("",), format=fmt, classes=frozenset(classes or {"all"}))


def _hosts(ctx: _Ctx, d: Directive, block_zones: tuple[str, ...]) -> HostsConfig:
    kw: dict = {}
    if d.args:
        kw["path"] = d.args[0]
        kw["zones"] = tuple(ctx.zone(z) for z in d.args[1:]) or block_zones
    else:
        kw["zones"] = block_zones
    inline = []
    for sub in d.block or ():
        a = sub.args
        if sub.name == "ttl" and len(a) == 1:
            kw["ttl"] = ctx.int_arg(a[0], 0, 2**31 - 1, "ttl", sub.line)
        elif sub.name == "no_reverse" and not a:
            kw["no_reverse"] = True
        elif sub.name == "reload" and len(a) == 1:
            kw["reload"] = ctx.duration(a[0], "reload", sub.line)
        elif sub.name == "fallthrough":
            kw["fallthrough"] = tuple(ctx.zone(z, sub.line) for z in a)
        else:
            try:
                ip = ipaddress.ip_address(sub.name)
            except ValueError:
                raise ctx.error(f"unknown property '{sub.name}' (or not an IP address of an inline entry)", sub.line) from None
            if not a or "%" in sub.name:
                raise ctx.error(f"inline entry {sub.name} without a name", sub.line)
            inline.append((str(ip), tuple(ctx.zone(n, sub.line) for n in a)))
            continue
        if sub.block is not None:
            raise ctx.error(f"'{sub.name}' takes no block", sub.line)
    return HostsConfig(inline=tuple(inline), **kw)


# ---------------------------------------------------------------------------------------------- load


def load(text: str, path: str = "Corefile", env: Mapping[str, str] | None = None, *,
         default_port: int = DEFAULT_PORT, port_override: int | None = None) -> ServerConfig:
    """The configuration of a Corefile; CorefileError (one line, with the line number) when refused."""
    blocks = corefile.parse(text, path, env)
    out: list[Block] = []
    ports: set[int] = set()
    server: dict = {}
    seen_zones: dict[str, int] = {}
    for sb in blocks:
        ctx = _Ctx(sb.path or path, "", sb.line)
        zones = []
        for key in sb.keys:
            zone, port = _server_key(ctx, key, default_port)
            if zone in seen_zones:
                raise CorefileError(path, sb.line, f"zone '{zone or '.'}' is defined by the server block at line {seen_zones[zone]} too")
            seen_zones[zone] = sb.line
            zones.append(zone)
            ports.add(port if port_override is None else port_override)
        out.append(_block(path, sb, tuple(zones), server))
    if len(ports) != 1:
        raise CorefileError(path, blocks[-1].line, f"podnet-dns listens on one port; the server blocks use {sorted(ports)}")
    kube = [b for b in out if b.kubernetes is not None]
    if not kube:
        raise CorefileError(path, blocks[0].line, "podnet-dns needs the kubernetes plugin in one server block")
    if len(kube) > 1:
        raise CorefileError(path, kube[1].line, "podnet-dns serves one kubernetes plugin")
    return ServerConfig(blocks=tuple(out), port=ports.pop(), **server)


def _set_server(server: dict, key: str, value, ctx: _Ctx) -> None:
    if key in server and server[key] != value:
        raise ctx.error(f"podnet-dns serves one {key} address for every server block ({server[key]!r} already set)")
    server[key] = value


def _block(block_path: str, sb: ServerBlock, zones: tuple[str, ...], server: dict) -> Block:
    kw: dict = {}
    seen: dict[str, int] = {}
    rewrites: list[RewriteRule] = []
    for d in sb.directives:
        path = d.path or block_path  # a directive may come from an imported file
        ctx = _Ctx(path, d.name, d.line)
        if d.name in seen and d.name not in ("rewrite", "log"):
            raise ctx.error(f"'{d.name}' is already set at line {seen[d.name]}")
        seen.setdefault(d.name, d.line)
        if d.name == "errors":
            ctx.nargs(d, 0, 0)
            if d.block:
                raise ctx.error(f"'{d.block[0].name}' is not supported by podnet-dns", d.block[0].line)
            kw["errors"] = True
        elif d.name == "health":
            ctx.nargs(d, 0, 1)
            _set_server(server, "health", _address(ctx, d.args[0]) if d.args else ":8080", ctx)
            for sub in d.block or ():
                if sub.name != "lameduck" or len(sub.args) != 1:
                    raise ctx.error(f"unknown property '{sub.name}' or wrong arguments", sub.line)
                server["lameduck"] = ctx.duration(sub.args[0], "lameduck", sub.line)
        elif d.name == "ready":
            ctx.nargs(d, 0, 1)
            ctx.no_block(d)
            _set_server(server, "ready", _address(ctx, d.args[0]) if d.args else ":8181", ctx)
        elif d.name == "prometheus":
            ctx.nargs(d, 0, 1)
            ctx.no_block(d)
            _set_server(server, "prometheus", _address(ctx, d.args[0]) if d.args else "localhost:9153", ctx)
        elif d.name == "kubernetes":
            kw["kubernetes"] = _kubernetes(ctx, d, zones)
        elif d.name == "forward":
            kw["forward"] = _forward(ctx, d, zones)
        elif d.name == "cache":
            kw["cache"] = _cache(ctx, d, zones)
        elif d.name == "loop":
            ctx.nargs(d, 0, 0)
            ctx.no_block(d)
            kw["loop"] = True
        elif d.name == "reload":
            ctx.nargs(d, 0, 2)
            ctx.no_block(d)
            interval = ctx.duration(d.args[0], "reload interval") if d.args else 30.0
            jitter = ctx.duration(d.args[1], "reload jitter") if len(d.args) > 1 else 15.0
            if interval < 2.0:
                raise ctx.error("reload interval must be at least 2s")
            if jitter > interval / 2:
                raise ctx.error("reload jitter must be at most half the interval")
            _set_server(server, "reload", (interval, jitter), ctx)
        elif d.name == "loadbalance":
            ctx.nargs(d, 0, 1)
            ctx.no_block(d)
            if d.args and d.args[0] != "round_robin":
                raise ctx.error(f"loadbalance policy {d.args[0]!r} is not supported by podnet-dns (round_robin)")
            server["loadbalance"] = True
        elif d.name == "log":
            if "log" in kw:
                raise ctx.error(f"'log' is already set at line {seen['log']}")
            kw["log"] = _log(ctx, d)
        elif d.name == "hosts":
            kw["hosts"] = _hosts(ctx, d, zones)
        elif d.name == "rewrite":
            try:
                rewrites.extend(parse_rewrite(d.args, [(s.name, s.args) for s in d.block] if d.block is not None else None))
            except ValueError as e:
                raise ctx.error(str(e)) from None
        elif d.name == "bind":
            ctx.nargs(d, 1, 1)
            ctx.no_block(d)
            try:
                ip = str(ipaddress.ip_address(d.args[0]))
            except ValueError:
                raise ctx.error(f"bind {d.args[0]!r}: podnet-dns binds one IP address (interface names are not supported)") from None
            _set_server(server, "bind", ip, ctx)
        elif d.name in COREDNS_PLUGINS:
            raise CorefileError(path, d.line, f"plugin '{d.name}' is not supported by podnet-dns")
        else:
            raise CorefileError(path, d.line, f"Unknown directive '{d.name}'")
    return Block(zones=zones, line=sb.line, plugins=tuple(seen), rewrites=tuple(rewrites), **kw)
