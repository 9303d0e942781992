"""podnet-dns configured by a Corefile: a :class:`~podnet.dns.daemon.Daemon` whose listener answers
through a :class:`~podnet.dns.chain.Chain` of server blocks.

The block with the ``kubernetes`` plugin is the daemon's own handler (cluster zone kept in step
with the API by the informers, its ``forward`` and ``cache`` as the daemon's forwarder and cache,
which /metrics reports). Every other block (a stub domain) gets a handler with no cluster names,
its own forwarder and, with ``cache``, its own cache. ``loop`` in the kubernetes block sends the
loop probe through that block's upstreams after the first sync.

``reload``: every INTERVAL ± JITTER the Corefile (with its imports) is read again; when it is valid
and its configuration changed, new server blocks (forwarders, caches, hosts, rewrite rules, query logs, stub domains) are
swapped in between two queries, the cluster zone's table and informers kept; the old forwarders are
closed once their queries had time to finish. A change of what the running process is built on (the
kubernetes plugin's settings, the port, ``bind``, the HTTP addresses) is refused with one error line
and the running configuration kept (CoreDNS would restart its servers); so is an invalid Corefile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Callable

from podnet.dns import snapshot
from podnet.dns.cache import Cache
from podnet.dns.chain import BlockChain, Chain
from podnet.dns.corefile import CorefileError
from podnet.dns.coreconfig import Block, CacheConfig, ForwardConfig, ServerConfig
from podnet.dns.daemon import Daemon, Options
from podnet.dns.forward import Forwarder, UpstreamAddr, read_resolv_conf, self_matcher
from podnet.dns.handler import Handler
from podnet.dns.health import HttpEndpoints
from podnet.dns.hosts import Hosts
from podnet.dns.metrics import Collector, Stats
from podnet.dns.querylog import QueryLog
from podnet.dns.server import DnsServer
from podnet.dns.watch import initial_table
from podnet.host import loop
from podnet.host.addr import listen_address

__all__ = ["CorefileDaemon", "options_for", "run_corefile"]

log = logging.getLogger("podnet.dns")
RETIRE_AFTER = 10.0
"""Seconds a replaced forwarder stays open for the queries it is answering (5 times its timeout)."""
STUB_ZONE = "invalid"
"""The (RFC 6761 reserved) cluster zone of stub-domain handlers: they own no names."""


def options_for(cfg: ServerConfig, master: str | None = None, kubeconfig: str | None = None) -> Options:
    """The daemon options a Corefile amounts to (flags given on the command line win for the API)."""
    kb = cfg.kubernetes_block
    k = kb.kubernetes
    fwd = kb.forward or ForwardConfig()
    cache = kb.cache or CacheConfig()
    return Options(
        master=master or k.endpoint, kubeconfig=kubeconfig or k.kubeconfig, zone=k.zone, listen=cfg.listen,
        upstreams=list(fwd.upstreams), resolv_conf=fwd.resolv_conf or "", ttl=k.ttl, health_listen=cfg.health,
        ready_listen=cfg.ready, metrics_listen=cfg.prometheus, lameduck=cfg.lameduck, max_concurrent=fwd.max_concurrent,
        cache_capacity=cache.capacity, cache_max_ttl=cache.max_ttl,
    )


def _upstreams(fwd: ForwardConfig) -> list[UpstreamAddr]:
    ups = list(fwd.upstreams)
    if fwd.resolv_conf:
        try:
            ups += read_resolv_conf(Path(fwd.resolv_conf).read_text())
        except OSError as e:
            log.warning("plugin/forward: cannot read %s: %s", fwd.resolv_conf, e)
    return ups


def _cache(c: CacheConfig | None) -> Cache | None:
    if c is None:
        return None
    return Cache(capacity=c.capacity, max_ttl=c.max_ttl, max_denial_ttl=c.max_denial_ttl, min_ttl=c.min_ttl,
                 zones=c.zones, disable_success=c.disable_success, disable_denial=c.disable_denial)


class CorefileDaemon(Daemon):
    def __init__(self, cfg: ServerConfig, master: str | None = None, kubeconfig: str | None = None,
                 make_informers: Callable[[], tuple] | None = None, log_write: Callable[[str], None] | None = None,
                 source: Callable[[], tuple[str, ServerConfig]] | None = None, text: str = "") -> None:
        """``source`` reads the Corefile again for ``reload``: (text, configuration), CorefileError or
        OSError; ``text`` is the text ``cfg`` came from."""
        # Daemon.__init__ is not called: every attribute it sets is set here, from the Corefile.
        opts = options_for(cfg, master, kubeconfig)
        self.opts = opts
        self.corefile = cfg
        self.cfg = snapshot.Config(zone=opts.zone, ttl=opts.ttl, dns_service=opts.dns_service)
        host, port = listen_address(opts.listen, 53)
        is_self = self_matcher(host, port)
        self.stats = Stats()
        self._is_self = is_self
        self._log_write = log_write
        self.source = source
        self.digest = hashlib.sha512(text.encode()).hexdigest()
        self._refused: object = None
        """The last refused configuration or error text (logged once)."""
        self.handler = Handler(initial_table(self.cfg), None, self.stats)
        self.chain, self.forwarder, self.stub_forwarders = self._build(cfg)
        self.cache = self.forwarder.cache or Cache(capacity=0)
        self.loop_probe = cfg.kubernetes_block.loop
        self.server = DnsServer(self.chain, host, port)
        self.make_informers = make_informers or self._kube_informers
        self.sync = None
        self.http = HttpEndpoints(self.ready, self._metrics)
        self.collector = Collector(self.stats, f"dns://{opts.listen}", self.cache, self.forwarder, self.ready)
        self.collector.plugins = _plugins(cfg)
        self.stopping = asyncio.Event()
        self._client = None

    def _build(self, cfg: ServerConfig) -> tuple[Chain, Forwarder, list[Forwarder]]:
        """(chain, the kubernetes block's forwarder, the other blocks' forwarders); the kubernetes
        block answers through ``self.handler``, which gets the new forwarder."""
        kb = cfg.kubernetes_block
        chains: list[BlockChain] = []
        main, stubs = None, []
        for b in cfg.blocks:
            chain = self._block(b, b is kb)
            chains.append(chain)
            if b is kb:
                main = chain.forwarder
            elif chain.forwarder is not None:
                stubs.append(chain.forwarder)
        self.handler.forwarder = main
        return Chain(chains, self.stats), main or Forwarder([], None), stubs

    def _block(self, b: Block, is_kube: bool) -> BlockChain:
        fwd = None
        if b.forward is not None:
            fwd = Forwarder(_upstreams(b.forward), _cache(b.cache), max_concurrent=b.forward.max_concurrent,
                            max_fails=b.forward.max_fails, is_self=self._is_self, policy=b.forward.policy,
                            force_tcp=b.forward.force_tcp)
        if is_kube:
            handler = self.handler
        else:
            handler = Handler(initial_table(snapshot.Config(zone=STUB_ZONE, ttl=self.cfg.ttl)), fwd, self.stats)
        log_write = self._log_write
        return BlockChain(
            zones=b.zones, handler=handler, forwarder=fwd, errors=b.errors,
            log=QueryLog(b.log, log_write) if b.log is not None else None,
            hosts=Hosts(b.hosts) if b.hosts is not None else None,
            rewrites=b.rewrites, cluster_zone=self.cfg.zone if is_kube else None,
        )

    async def _after_sync(self) -> None:
        if self.loop_probe:
            await super()._after_sync()
        else:
            await self.sync.synced_event.wait()

    async def start(self) -> list[asyncio.Task]:
        tasks = await super().start()
        if self.corefile.reload is not None and self.source is not None:
            tasks.append(asyncio.create_task(self._reload_loop()))
        return tasks

    async def _reload_loop(self) -> None:
        interval, jitter = self.corefile.reload
        while True:
            await asyncio.sleep(interval + random.uniform(-jitter, jitter))
            await self.reload()

    async def reload(self) -> bool:
        """Read the Corefile (and its imports) again and apply it when the configuration changed;
        True when a new one was applied. Each refusal is logged once."""
        try:
            text, new = self.source()
        except (OSError, UnicodeDecodeError, CorefileError) as e:
            if str(e) != self._refused:
                log.error("plugin/reload: keeping the running configuration: %s", e)
                self._refused = str(e)
            return False
        if new == self.corefile:
            self._refused = None
            return False
        why = _needs_restart(self.corefile, new)
        if why:
            if new != self._refused:
                log.error("plugin/reload: keeping the running configuration: a change of %s needs a restart", why)
                self._refused = new
            return False
        self._refused = None
        digest = hashlib.sha512(text.encode()).hexdigest()
        old = [self.forwarder, *self.stub_forwarders]
        self.chain, self.forwarder, self.stub_forwarders = self._build(new)
        self.server.handler = self.chain
        self.cache = self.collector.cache = self.forwarder.cache or Cache(capacity=0)
        self.collector.forwarder = self.forwarder
        self.collector.plugins = _plugins(new)
        self.corefile = new
        self.opts = replace(self.opts, lameduck=new.lameduck)
        self.digest = digest
        log.info("plugin/reload: running configuration SHA512 = %s", digest)
        asyncio.get_running_loop().call_later(RETIRE_AFTER, lambda: asyncio.ensure_future(_close_all(old)))
        return True

    async def run(self) -> int:
        try:
            return await super().run()
        finally:
            for f in self.stub_forwarders:
                await f.close()


def _plugins(cfg: ServerConfig) -> list[tuple[str, str]]:
    """coredns_plugin_enabled's (zone, plugin) pairs: every plugin of every server block, zones written
    as CoreDNS does ('.' for the root, a trailing dot otherwise)."""
    return [(f"{z}." if z else ".", p) for b in cfg.blocks for z in b.zones for p in sorted(b.plugins)]


def _needs_restart(old: ServerConfig, new: ServerConfig) -> str | None:
    for what, a, b in (("the kubernetes plugin", old.kubernetes_block.kubernetes, new.kubernetes_block.kubernetes),
                       ("the kubernetes plugin's server block zones", old.kubernetes_block.zones, new.kubernetes_block.zones),
                       ("the port", old.port, new.port), ("bind", old.bind, new.bind), ("health", old.health, new.health),
                       ("ready", old.ready, new.ready), ("prometheus", old.prometheus, new.prometheus),
                       ("loop", old.kubernetes_block.loop, new.kubernetes_block.loop)):
        if a != b:
            return what
    return None


async def _close_all(forwarders: list[Forwarder]) -> None:
    for f in forwarders:
        await f.close()


def run_corefile(cfg: ServerConfig, master: str | None = None, kubeconfig: str | None = None,
                 source: Callable[[], tuple[str, ServerConfig]] | None = None, text: str = "") -> int:
    """Run until SIGTERM/SIGINT + lameduck; uvloop when it is installed."""
    def daemon() -> CorefileDaemon:
        return CorefileDaemon(cfg, master, kubeconfig, source=source, text=text)

    return loop.run(daemon().run())
