"""podnet-dns on every core: one control process relays the informers' events to N worker processes
that each build the answer table and answer queries on the same UDP/TCP port (``SO_REUSEPORT``).

Control process (:class:`WorkerPool`): runs the informers (the only API connections), reserves the
listen address, starts the workers and relays every informer event to each of them in order over a
socketpair, as length-prefixed pickles. A worker started later (first start or restart) is first
sent each informer's current store and sync state, then the live events, so every worker holds the
same objects. Workers report their counters and readiness every ``REPORT_INTERVAL`` seconds (at
once when readiness changes); /metrics sums them, counters of exited workers included, so totals
never go backwards when a worker is replaced. /ready is 200 only while every worker has synced and
its last rebuild succeeded. A worker that exits is started again after ``RESTART_DELAY`` seconds
(doubling up to ``MAX_RESTART_DELAY`` while it keeps failing before it is up); one that stops reading
its events (see ``MAX_BEHIND``) is killed and started again. Events of one loop turn are one frame.

Worker process (:func:`worker_main`): the daemon's data path unchanged (Handler, the stock Corefile's
errors-only Chain, Forwarder with its own cache and loop probe, DnsServer), fed by a
:class:`~podnet.dns.watch.ZoneSync` whose informers are relays of the control's events, so answers,
rebuild kinds (small in place, large in chunks) and rejection rules are the single-process ones. A
worker exits when the control closes the socketpair (the control died) or on SIGTERM; it ignores
SIGINT (the control owns lameduck). A worker started before the informers have synced listens at
once (SERVFAIL for cluster names until the first sync, as one process); one started after (a
restart) listens only once it has built the synced table, so a restart never shows clients a
SERVFAIL the other workers would not give.

Why events and not compiled tables: the slow path (ANY, ExternalName chasing, pod names, negative
answers) reads the snapshot behind the table, which is rebuilt from the objects; relaying the
objects keeps every worker's table and snapshot exactly what a single process would build.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from podnet.dns.forward import UpstreamAddr
from podnet.dns.metrics import Histogram, Stats
from podnet.host import loop

__all__ = ["WorkerConfig", "WorkerPool", "Relay", "merge_reports", "worker_main", "log_settings", "REPORT_INTERVAL"]

log = logging.getLogger("podnet.dns.workers")

FRAME = struct.Struct("!I")
REPORT_INTERVAL = 1.0
"""Seconds between a worker's counter reports (readiness changes are reported within POLL)."""
POLL = 0.05
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
STOP_TIMEOUT = 5.0
MAX_BACKLOG = 64 << 20
MAX_BEHIND = 10.0
"""A worker that has more than MAX_BACKLOG bytes of events waiting and has read none of them for
MAX_BEHIND seconds (stopped, stuck) is killed and started again from the stores, so the control's
memory stays bounded; a worker that keeps reading, however far behind, is never replaced."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to serve: the daemon's options that reach the data path."""

    host: str
    port: int
    zone: str = "cluster.local"
    ttl: int = 30
    dns_service: str = "kube-system/kube-dns"
    upstreams: tuple[UpstreamAddr, ...] = ()
    cache_capacity: int = 9984
    cache_max_ttl: int = 30
    max_concurrent: int = 1000
    log_format: str = "text"
    log_verbosity: int = 0
    report_interval: float = REPORT_INTERVAL
    probe_names: tuple[tuple[str, str], ...] = ()
    """(upstream, loop probe name) pairs shared by every worker (worker 0 sends the probes)."""


def log_settings() -> tuple[str, int]:
    """(format, verbosity) of this process's podnet log handler, for workers to log the same way."""
    from podnet.kube import logsetup

    h = logsetup._handler
    if h is None:
        return "text", 0
    fmt = "json" if isinstance(h.formatter, logsetup.JsonFormatter) else "text"
    verbosity = next((f.verbosity for f in h.filters if isinstance(f, logsetup.VerbosityFilter)), 0)
    return fmt, verbosity


def frame(msg: Any) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """One message; raises asyncio.IncompleteReadError at EOF."""
    (n,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return pickle.loads(await reader.readexactly(n))


# ---------------------------------------------------------------------- reports and their sum


@dataclass
class Report:
    """One worker's counters and state, as last reported."""

    ready: bool = False
    stats: Stats = field(default_factory=Stats)
    cache_counts: tuple[int, int] = (0, 0)
    cache_stats: Any = None
    fwd_stats: Any = None
    looping: tuple[str, ...] = ()
    """Upstreams this worker found looping back to us (its forwarder stopped using them)."""


def _add_hist(dst: Histogram, src: Histogram) -> None:
    dst.counts = [a + b for a, b in zip(dst.counts, src.counts)]
    dst.total += src.total
    dst.n += src.n


def _add_counts(dst: dict, src: dict) -> None:
    for k, v in src.items():
        dst[k] = dst.get(k, 0) + v


SUMMED_INTS = ("dropped", "do", "errors", "refused_names")


def _sum_stats(total: Stats, st: Stats) -> None:
    """Per-query counters: every worker answers its own share of the queries."""
    _add_counts(total.fast, st.fast)
    _add_counts(total.requests, st.requests)
    _add_counts(total.responses, st.responses)
    _add_counts(total.tcp_closed, st.tcp_closed)
    for name in SUMMED_INTS:
        setattr(total, name, getattr(total, name) + getattr(st, name))
    for qtype, h in st.durations.items():
        _add_hist(total.durations[qtype], h)
    for mine, theirs in ((total.request_sizes, st.request_sizes), (total.response_sizes, st.response_sizes)):
        for proto, counts in theirs.items():
            _add_counts(mine.setdefault(proto, {}), counts)
    total.family = st.family


def _sum_dataclass(total: Any, part: Any) -> Any:
    if part is None:
        return total
    if total is None:
        return pickle.loads(pickle.dumps(part))
    for name in vars(part):
        a, b = getattr(total, name), getattr(part, name)
        if isinstance(b, dict):
            for k, v in b.items():
                if isinstance(v, Histogram):
                    _add_hist(a.setdefault(k, Histogram()), v)
                else:
                    a[k] = a.get(k, 0) + v
        elif isinstance(b, (int, float)):
            setattr(total, name, a + b)
    return total


def merge_reports(live: Sequence[Report], retired: Sequence[Report] = ()) -> Report:
    """The whole server's view: per-query, cache and forward counters summed over every report
    (``retired``: last reports of workers that have exited, so counters stay monotonic); gauges
    (cache entries, objects left out now) over live workers only. Zone-sync figures (programming
    latency, rebuild failures, objects left out) are the same work done by every worker: they come
    from the live worker that has rebuilt most often, not multiplied by the number of workers."""
    out = Report(ready=bool(live) and all(r.ready for r in live))
    st = out.stats
    for r in (*live, *retired):
        _sum_stats(st, r.stats)
        out.cache_stats = _sum_dataclass(out.cache_stats, r.cache_stats)
        out.fwd_stats = _sum_dataclass(out.fwd_stats, r.fwd_stats)
    success = denial = 0
    for r in live:
        success += r.cache_counts[0]
        denial += r.cache_counts[1]
    out.cache_counts = (success, denial)
    if live:
        lead = max(live, key=lambda r: (r.stats.programming.n, r.stats.rebuilds))
        st.programming, st.rebuilds, st.rebuild_failures = lead.stats.programming, lead.stats.rebuilds, lead.stats.rebuild_failures
        st.skipped, st.skipped_now = lead.stats.skipped, lead.stats.skipped_now
    return out


class CacheView:
    """What :class:`~podnet.dns.metrics.Collector` reads of a cache, from summed reports."""

    def __init__(self, counts: tuple[int, int], stats: Any) -> None:
        self._counts, self.stats = counts, stats

    def counts(self) -> tuple[int, int]:
        return self._counts


class ForwarderView:
    def __init__(self, stats: Any) -> None:
        self.stats = stats


# ---------------------------------------------------------------------- control process


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.report = Report()
        self.up = asyncio.Event()
        self.starts = 0
        self.behind_since: float | None = None
        """Loop time since which its waiting events exceed the pool's ``max_backlog`` with nothing read."""
        self.written = 0
        self.last_delivered = 0
        """Bytes written to the current connection / handed to the kernel at the last look (the worker
        has read them or the socket holds them)."""


class WorkerPool:
    """N worker processes serving ``cfg.host:cfg.port`` from the events of ``informers``
    (Services, EndpointSlices, Namespaces: anything with ``add_handler``, ``list`` and ``has_synced``)."""

    def __init__(self, n: int, cfg: WorkerConfig, informers: Sequence[Any], *,
                 argv: Callable[[int], list[str]] | None = None) -> None:
        if n < 1:
            raise ValueError("at least one worker")
        if len(cfg.probe_names) != len(cfg.upstreams):
            from podnet.dns.forward import Forwarder

            cfg = replace(cfg, probe_names=tuple((str(u), Forwarder.probe_name()) for u in cfg.upstreams))
        self.cfg = cfg
        self.looping: set[str] = set()
        """Upstreams some worker found looping: every worker (also one started later) is told."""
        self.informers = tuple(informers)
        self.workers = [_Worker(i) for i in range(n)]
        self.retired: list[Report] = []
        """At most one: the summed counters of every worker that has exited."""
        self.port = cfg.port
        self.stopping = False
        self._argv = argv or _worker_argv
        self._tasks: set[asyncio.Task] = set()
        self._reserved: list[socket.socket] = []
        self._pending: list[tuple] = []
        self.max_backlog = MAX_BACKLOG
        self.max_behind = MAX_BEHIND
        self.restarts = 0
        self.synced_logged = False
        """The one "synced:" line of the server is logged here, once every worker has synced (a
        worker's own first-sync line is not logged: it would claim a sync the others may not have)."""

    # ---------------------------------------------------------------- state for /ready and /metrics

    def merged(self) -> Report:
        """Counters of every worker (running or exited); readiness of all of them."""
        out = merge_reports([w.report for w in self.workers if w.up.is_set()], self.retired)
        out.ready = self.ready()
        return out

    def ready(self) -> bool:
        return all(w.up.is_set() and w.report.ready for w in self.workers)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None and w.proc.returncode is None]

    # ---------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = 30.0) -> None:
        """Reserve the address, attach to the informers, start every worker and wait until each listens."""
        self._reserve()
        for i, inf in enumerate(self.informers):
            inf.add_handler(
                on_add=lambda obj, i=i: self._broadcast(("add", i, obj)),
                on_update=lambda old, new, i=i: self._broadcast(("update", i, old, new)),
                on_delete=lambda obj, i=i: self._broadcast(("delete", i, obj)),
                on_synced=lambda i=i: self._broadcast(("synced", i)),
            )
        for w in self.workers:
            self._spawn_task(self._supervise(w))
        try:
            await asyncio.wait_for(asyncio.gather(*(w.up.wait() for w in self.workers)), timeout)
        finally:
            self._release()
        log.info("%d workers on %s:%d (SO_REUSEPORT)", len(self.workers), self.cfg.host, self.port)

    def _reserve(self) -> None:
        """Bind UDP+TCP with SO_REUSEPORT (port 0: one free port for both) so the address is checked
        and the port fixed before any worker starts; released once the workers hold it."""
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        for _ in range(20):
            socks = [socket.socket(family, socket.SOCK_STREAM), socket.socket(family, socket.SOCK_DGRAM)]
            try:
                for s in socks:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                socks[0].bind((self.cfg.host, self.port))
                port = socks[0].getsockname()[1]
                socks[1].bind((self.cfg.host, port))
            except OSError:
                for s in socks:
                    s.close()
                if self.port:
                    raise
                continue
            self.port = port
            self._reserved = socks
            return
        raise OSError("no free port for both UDP and TCP")

    def _release(self) -> None:
        for s in self._reserved:
            s.close()
        self._reserved = []

    def _spawn_task(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _supervise(self, w: _Worker) -> None:
        delay = RESTART_DELAY
        while not self.stopping:
            started = await self._run_once(w)
            if self.stopping:
                return
            self.restarts += 1
            delay = RESTART_DELAY if started else min(delay * 2, MAX_RESTART_DELAY)
            await asyncio.sleep(delay)

    async def _run_once(self, w: _Worker) -> bool:
        """Start worker ``w``, feed it until it exits; True if it got as far as listening."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.proc = await asyncio.create_subprocess_exec(*self._argv(child.fileno()), pass_fds=(child.fileno(),))
        except OSError as e:
            log.error("cannot start DNS worker %d: %s", w.index, e)
            parent.close()
            return False
        finally:
            child.close()
        w.starts += 1
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        w.writer = writer
        # Configuration, then every store as it is now, then (from the next loop turn on) live events.
        # A worker started once the informers have synced listens only after its own first sync.
        late = all(inf.has_synced for inf in self.informers)
        dump = [("config", w.index, _with_port(self.cfg, self.port), late)]
        for i, inf in enumerate(self.informers):
            dump.append(("bulk", i, list(inf.list())))
            if inf.has_synced:
                dump.append(("synced", i))
        dump += [("seen", self._probe_of(name)) for name in sorted(self.looping)]
        data = b"".join(frame(m) for m in dump)
        writer.write(data)
        w.written, w.last_delivered, w.behind_since = len(data), 0, None
        reports = asyncio.ensure_future(self._read_reports(w, reader))
        rc = await w.proc.wait()
        up = w.up.is_set()
        w.writer = None
        writer.close()
        reports.cancel()
        await asyncio.gather(reports, return_exceptions=True)
        if up:
            self.retired = [merge_reports([], [*self.retired, w.report])]
        w.report = Report()
        w.up.clear()
        if not self.stopping:
            log.warning("DNS worker %d (pid %d) exited with status %s; starting it again", w.index, w.proc.pid, rc)
        return up

    async def _read_reports(self, w: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                msg = await read_frame(reader)
                if msg[0] == "up":
                    w.up.set()
                    if self._reserved:
                        self._release()  # a worker holds the port now: stop taking datagrams here
                elif msg[0] == "report":
                    w.report = msg[1]
                    if not self.synced_logged and self.ready():
                        self.synced_logged = True
                        log.info("synced: every DNS worker (%d) serves the zone", len(self.workers))
                    for name in set(w.report.looping) - self.looping:
                        # One worker's probe came back to some worker: every worker stops using it.
                        self.looping.add(name)
                        self._broadcast(("seen", self._probe_of(name)))
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def _probe_of(self, upstream: str) -> str:
        return dict(self.cfg.probe_names)[upstream]

    def _broadcast(self, msg: tuple) -> None:
        """Queue ``msg`` for every worker; the events of one loop turn go out as one frame (one pickle,
        whose memo shares equal strings across the objects of a list burst)."""
        self._pending.append(msg)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        msgs, self._pending = self._pending, []
        if not msgs:
            return
        data = frame(("batch", msgs))
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                w.writer.write(data)
                w.written += len(data)
                backlog = w.writer.transport.get_write_buffer_size()
                delivered = w.written - backlog
                now = asyncio.get_running_loop().time()
                if backlog <= self.max_backlog or delivered > w.last_delivered:
                    # Within bounds, or the worker has read since the last look: it is alive.
                    w.behind_since, w.last_delivered = None, delivered
                elif w.behind_since is None:
                    w.behind_since = now
                elif now - w.behind_since > self.max_behind and w.proc is not None:
                    log.warning("DNS worker %d (pid %d) has read nothing for %.1fs with %d bytes of events waiting; replacing it",
                                w.index, w.proc.pid, now - w.behind_since, backlog)
                    w.behind_since = None
                    w.writer.transport.abort()
                    w.writer = None
                    try:
                        w.proc.kill()
                    except ProcessLookupError:
                        pass

    async def stop(self) -> None:
        """SIGTERM every worker and wait for them (SIGKILL after STOP_TIMEOUT)."""
        self.stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in procs:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._release()


def _with_port(cfg: WorkerConfig, port: int) -> WorkerConfig:
    return replace(cfg, port=port)


def _worker_argv(fd: int) -> list[str]:
    # -P: never the working directory on sys.path (a checkout's dns/ would shadow dnspython's).
    return [sys.executable, "-P", "-c", "import sys; from podnet.dns.workers import worker_main; sys.exit(worker_main())", str(fd)]


# ---------------------------------------------------------------------- worker process


class Relay:
    """An informer surface (``add_handler``, ``has_synced``) driven by the control's events."""

    def __init__(self) -> None:
        self.has_synced = False
        self._handlers: list[dict] = []

    def add_handler(self, on_add=None, on_update=None, on_delete=None, on_synced=None):
        h = {"add": on_add, "update": on_update, "delete": on_delete, "synced": on_synced}
        self._handlers.append(h)
        return h

    def emit(self, kind: str, *args: Any) -> None:
        if kind == "synced":
            if self.has_synced:
                return
            self.has_synced = True
        for h in self._handlers:
            if h[kind] is not None:
                h[kind](*args)


class WorkerServer:
    """One worker's data path (what :class:`~podnet.dns.daemon.Daemon` wires, minus informers and HTTP)."""

    def __init__(self, cfg: WorkerConfig) -> None:
        from podnet.dns import snapshot
        from podnet.dns.cache import Cache
        from podnet.dns.chain import BlockChain, Chain
        from podnet.dns.forward import Forwarder, self_matcher
        from podnet.dns.handler import Handler
        from podnet.dns.server import DnsServer
        from podnet.dns.watch import ZoneSync, initial_table

        self.cfg = cfg
        snap_cfg = snapshot.Config(zone=cfg.zone.strip(".").lower(), ttl=cfg.ttl, dns_service=cfg.dns_service)
        self.cache = Cache(capacity=cfg.cache_capacity, max_ttl=cfg.cache_max_ttl, max_denial_ttl=cfg.cache_max_ttl)
        self.forwarder = Forwarder(list(cfg.upstreams), self.cache, max_concurrent=cfg.max_concurrent,
                                   is_self=self_matcher(cfg.host, cfg.port))
        self.stats = Stats()
        self.handler = Handler(initial_table(snap_cfg), self.forwarder, self.stats)
        chain = Chain([BlockChain(("",), self.handler, self.forwarder, errors=True, cluster_zone=snap_cfg.zone)], self.stats)
        self.server = DnsServer(chain, cfg.host, cfg.port, reuse_port=True)
        self.relays = (Relay(), Relay(), Relay())
        self.sync = ZoneSync(self.handler, *self.relays, snap_cfg)
        self.sync.attach()
        self.forwarder.expect_probes(dict(cfg.probe_names))

    def apply(self, msg: tuple) -> None:
        kind, i = msg[0], msg[1]
        if kind == "batch":
            for m in i:
                self.apply(m)
            return
        if kind == "seen":
            self.forwarder.seen_query(i)  # a probe another worker received: stop using that upstream
            return
        relay = self.relays[i]
        if kind == "bulk":
            for obj in msg[2]:
                relay.emit("add", obj)
        elif kind == "synced":
            relay.emit("synced")
        else:
            relay.emit(kind, *msg[2:])

    def report(self) -> Report:
        return Report(ready=self.sync.ready, stats=self.stats, cache_counts=self.cache.counts(),
                      cache_stats=self.cache.stats, fwd_stats=self.forwarder.stats,
                      looping=tuple(u.name for u in self.forwarder.upstreams if u.looping))


class _NotFirstSync(logging.Filter):
    """Drops a worker's "synced: ..." line (the control logs one for all workers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("synced:")


async def _worker(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    kind, index, cfg, late = await read_frame(reader)
    if kind != "config":
        raise RuntimeError(f"expected the configuration first, got {kind!r}")
    from podnet.kube import logsetup

    logsetup.setup(cfg.log_format, cfg.log_verbosity)
    logging.getLogger("podnet.dns.watch").addFilter(_NotFirstSync())
    done = loop.stop_on_signals(signals=(signal.SIGTERM,))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    w = WorkerServer(cfg)

    async def feed() -> None:
        try:
            while True:
                w.apply(await read_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("control process gone: stopping")
        done.set()

    async def reports() -> None:
        last, waited = None, 0.0
        while True:
            state = (w.sync.ready, sum(u.looping for u in w.forwarder.upstreams))
            if state != last or waited >= cfg.report_interval:
                writer.write(frame(("report", w.report())))
                last, waited = state, 0.0
            await asyncio.sleep(POLL)
            waited += POLL

    async def probe() -> None:
        await w.sync.synced_event.wait()
        if index != 0:
            return  # one probe per upstream for the whole server; every worker recognises it
        try:
            await w.forwarder.probe(dict(cfg.probe_names))
        except Exception as e:  # noqa: BLE001
            log.warning("loop probe failed: %s", e)

    tasks = [asyncio.ensure_future(feed())]
    try:
        if late:
            # The other workers already serve the synced zone: listen only once this one has it too,
            # so no client is answered SERVFAIL because of a restart.
            waits = {asyncio.ensure_future(w.sync.synced_event.wait()), asyncio.ensure_future(done.wait())}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for t in waits:
                t.cancel()
        if not done.is_set():
            await w.server.start()
            writer.write(frame(("up", os.getpid())))
            tasks += [asyncio.ensure_future(c) for c in (reports(), probe())]
            await done.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await w.sync.close()
        await w.server.stop()
        await w.forwarder.close()
        writer.close()
    return 0


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``argv[0]`` is the socketpair's file descriptor."""
    args = sys.argv[1:] if argv is None else argv
    fd = int(args[0])
    return loop.run(_worker(fd))
