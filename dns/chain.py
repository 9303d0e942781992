"""The server-facing handler of a Corefile: server blocks by zone, each with its plugin chain.

:class:`Chain` has the interface :class:`~podnet.dns.server.DnsServer` expects of a handler
(``answer_udp``, ``answer``, ``qtype``, ``stats``; the server sets ``peer`` before each call).
A query goes to the server block with the longest zone that holds its name (CoreDNS's rule; no
block: REFUSED), then through that block's plugins in CoreDNS's fixed order, whatever their order
in the Corefile: ``log`` and ``errors`` see the final reply, ``rewrite`` changes the name first,
``hosts`` answers before ``kubernetes`` and ``forward`` (both in the block's
:class:`~podnet.dns.handler.Handler`).

A Corefile with one ``.`` block and no ``log``/``hosts``/``rewrite`` (kubeadm's) keeps the
handler's byte-level fast path: the reply's rcode byte is all the ``errors`` plugin looks at.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from typing import Awaitable

from podnet.dns.answers import RD, fit, flags_for
from podnet.dns.coreconfig import in_zone
from podnet.dns.forward import Forwarder
from podnet.dns.handler import Handler
from podnet.dns.hosts import Hosts
from podnet.dns.metrics import Stats
from podnet.dns.querylog import QueryLog
from podnet.dns.rewrite import RewriteRule, Rewritten, apply_rules, restore_reply, rewrite_query
from podnet.dns.wire import NOERROR, REFUSED, SERVFAIL, TYPE_NAMES, Encoder, FormErr, Query, RR, opt_rr, parse_query

__all__ = ["Chain", "BlockChain"]

log = logging.getLogger("podnet.dns.errors")

CD = 0x0010
MAX_UDP_REPLY = 1232
Reply = bytes | None | Awaitable[bytes | None]


@dataclass
class BlockChain:
    """One server block at run time."""

    zones: tuple[str, ...]
    handler: Handler
    forwarder: Forwarder | None = None
    errors: bool = False
    log: QueryLog | None = None
    hosts: Hosts | None = None
    rewrites: tuple[RewriteRule, ...] = ()
    cluster_zone: str | None = None

    @property
    def plain(self) -> bool:
        """Nothing to do before the handler (only ``errors`` after it)."""
        return self.log is None and self.hosts is None and not self.rewrites


def _limit(q: Query, udp: bool) -> int:
    if not udp:
        return 65535
    return max(512, min(q.edns[0], MAX_UDP_REPLY)) if q.edns else 512


class Chain:
    def __init__(self, blocks: list[BlockChain], stats: Stats) -> None:
        if not blocks:
            raise ValueError("no server block")
        self.blocks = sorted(blocks, key=lambda b: -max(len(z) for z in b.zones))
        self._routes = sorted(((z, b) for b in blocks for z in b.zones), key=lambda zb: -len(zb[0]))
        self.stats = stats
        self.qtype = b""
        self.peer = None
        self._fallback = self._routes[-1][1]
        only = blocks[0]
        self._fast = only if len(blocks) == 1 and only.zones == ("",) and only.plain else None

    @property
    def fast_handler(self) -> Handler | None:
        """The handler whose byte-level fast path may answer UDP directly (one plain ``.`` block), else None."""
        return self._fast.handler if self._fast is not None else None

    # ------------------------------------------------------------------ entry points

    def answer_udp(self, data: bytes) -> Reply:
        fast = self._fast
        if fast is not None:
            reply = fast.handler.answer_udp(data)
            self.qtype = fast.handler.qtype
            return self._errors_only(fast, data, reply) if fast.errors else reply
        return self._full(data, True)

    def answer(self, data: bytes, udp: bool) -> Reply:
        fast = self._fast
        if fast is not None:
            reply = fast.handler.answer(data, udp)
            self.qtype = fast.handler.qtype
            return self._errors_only(fast, data, reply) if fast.errors else reply
        return self._full(data, udp)

    # ------------------------------------------------------------------ errors only

    def _errors_only(self, block: BlockChain, data: bytes, reply: Reply) -> Reply:
        if reply is None:
            return None
        if isinstance(reply, bytes):
            if len(reply) > 3 and reply[3] & 0xF == SERVFAIL:
                self._log_servfail(block, data, None)
            return reply
        return self._await_errors(block, data, reply)

    async def _await_errors(self, block: BlockChain, data: bytes, aw) -> bytes | None:
        reply = await aw
        if reply is not None and len(reply) > 3 and reply[3] & 0xF == SERVFAIL:
            self._log_servfail(block, data, None)
        return reply

    def _log_servfail(self, block: BlockChain, data: bytes, cause: str | None, shown: Query | None = None) -> None:
        try:
            q = parse_query(data)
        except FormErr:
            return
        shown = shown or q
        if cause is None:
            cause = self._cause(block, q)
        name = (shown.qname + ".") if shown.qname else "."
        log.error("plugin/errors: %d %s %s: %s", SERVFAIL, name, TYPE_NAMES.get(shown.qtype) or f"TYPE{shown.qtype}", cause)

    def _cause(self, block: BlockChain, q: Query) -> str:
        fwd = block.forwarder
        if fwd is not None:
            why = fwd.take_failure(q.key[:-2].lower() + q.question[-4:])
            if why is not None:
                return f"plugin/forward: {why}"
        zone = block.cluster_zone
        if zone is not None and in_zone(q.qname, zone) and not block.handler.table.snapshot.synced:
            return "plugin/kubernetes: not synced with the API server yet"
        if fwd is None or not fwd.usable:
            return "plugin/forward: no usable upstream (none configured, or each one loops back here)"
        return "plugin/forward: no upstream answered"

    # ------------------------------------------------------------------ full chain

    def route(self, qname: str) -> BlockChain | None:
        for zone, block in self._routes:
            if in_zone(qname, zone):
                return block
        return None

    def _full(self, data: bytes, udp: bool) -> Reply:
        t0 = time.perf_counter()
        peer = self.peer
        self.qtype = b""
        if len(data) < 12 or data[2] & 0x80 or (data[2] >> 3) & 0xF:
            return self._plain(self._fallback, data, udp)
        try:
            q = parse_query(data)
        except FormErr:
            return self._plain(self._fallback, data, udp)
        block = self.route(q.qname)
        self.qtype = q.key[-2:]
        if block is None:
            self.stats.count_request(q.qtype, udp)
            reply = self._build(q, REFUSED, (), udp, aa=False)
            return self._finish(None, q, data, reply, None, None, udp, t0, peer)
        if block.plain or q.qclass != 1:
            return self._finish(block, q, data, self._plain(block, data, udp), None, None, udp, t0, peer)
        work, wq, rw = data, q, None
        if block.rewrites:
            try:
                rw = apply_rules(block.rewrites, q.qname)
                if rw is not None:
                    work = rewrite_query(data, len(q.question), rw.name)
                    wq = parse_query(work)
            except ValueError:  # the rewritten name cannot be a DNS name (FormErr is a ValueError too)
                self.stats.count_request(q.qtype, udp)
                return self._finish(block, q, data, self._build(q, SERVFAIL, (), udp, aa=False), None,
                                    "plugin/rewrite: the rewritten name is not a valid domain name", udp, t0, peer)
        if block.hosts is not None:
            d = block.hosts.decide(wq.qname, wq.qtype)
            if d.kind != "next":
                self.stats.count_request(q.qtype, udp)
                if d.kind == "answer":
                    reply = self._build(wq, NOERROR, d.records, udp, plugin="hosts")
                    return self._finish(block, q, data, reply, rw, None, udp, t0, peer)
                reply = self._build(wq, SERVFAIL, (), udp, aa=False)
                return self._finish(block, q, data, reply, rw, "plugin/hosts: name not found (no fallthrough)", udp, t0, peer, wq)
        reply = block.handler.answer_udp(work) if udp else block.handler.answer(work, udp)
        return self._finish(block, q, data, reply, rw, None, udp, t0, peer, wq)

    def _plain(self, block: BlockChain, data: bytes, udp: bool) -> Reply:
        h = block.handler
        reply = h.answer_udp(data) if udp else h.answer(data, udp)
        self.qtype = h.qtype
        return reply

    def _finish(self, block: BlockChain | None, q: Query, data: bytes, reply: Reply, rw: Rewritten | None,
                cause: str | None, udp: bool, t0: float, peer, wq: Query | None = None) -> Reply:
        if reply is None or isinstance(reply, bytes):
            return self._after(block, q, data, reply, rw, cause, udp, t0, peer, wq)
        return self._await_after(block, q, data, reply, rw, cause, udp, t0, peer, wq)

    async def _await_after(self, block, q, data, aw, rw, cause, udp, t0, peer, wq) -> bytes | None:
        return self._after(block, q, data, await aw, rw, cause, udp, t0, peer, wq)

    def _after(self, block: BlockChain | None, q: Query, data: bytes, reply: bytes | None, rw: Rewritten | None,
               cause: str | None, udp: bool, t0: float, peer, wq: Query | None) -> bytes | None:
        if reply is None:
            return None
        if rw is not None:
            reply = restore_reply(reply, q.question, rw, _limit(q, udp))
        if block is None:
            return reply
        if block.errors and len(reply) > 3 and reply[3] & 0xF == SERVFAIL:
            if cause is None and wq is not None and wq is not q:
                cause = self._cause(block, wq)
            self._log_servfail(block, data, cause)
        if block.log is not None:
            block.log.emit(q, len(data), reply, peer, "udp" if udp else "tcp", time.perf_counter() - t0)
        return reply

    def _build(self, q: Query, rcode: int, records: tuple[RR, ...], udp: bool, aa: bool = True, plugin: str = "") -> bytes:
        enc = Encoder(q.qname)
        for rr in records:
            enc.rr(rr)
        flags = flags_for(rcode, aa=aa) | (q.flags & (RD | CD))
        opt = opt_rr(max(512, min(q.edns[0], 4096)), q.edns[2]) if q.edns is not None else b""
        room = _limit(q, udp) - 12 - len(q.question) - len(opt)
        flags, (an, ns, ar), body = fit(flags, (len(records), 0, 0), bytes(enc.body), tuple(enc.ends), room)
        self.stats.count_response(rcode, plugin)
        return q.id + struct.pack("!HHHHH", flags, 1, an, ns, ar + (1 if opt else 0)) + q.question + body + opt
