"""Counters kept as plain ints on the hot path, exported with CoreDNS's metric names.

:class:`Stats` is what the handler and server touch per query (dict increments, no locks: the
event loop is the only writer). :class:`Collector` turns it, the cache and the forwarder stats into
Prometheus families only when /metrics is scraped, so scraping costs nothing between scrapes.
Names and labels follow CoreDNS 1.11+ (``coredns_dns_*``, ``coredns_cache_*``, ``coredns_forward_*``,
``coredns_proxy_*``) with server="dns://<listen>", zone=".", view="" (the stock Corefile's one server
block); dns/README.md lists every family and each deliberate difference.

Per answered query the server makes one :meth:`Stats.answered` call: a duration observation by query
type and two size counts (plain dict increments keyed by byte length, turned into histogram buckets
only when scraped); fast-path UDP replies sent in one batch are counted together
(:meth:`Stats.answered_fast_udp`).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from podnet.dns.wire import TYPE_NAMES

__all__ = ["Stats", "Collector", "Histogram", "render", "BUCKETS", "SIZE_BUCKETS", "size_buckets"]

# CoreDNS: prometheus.ExponentialBuckets(0.00025, 2, 16)
BUCKETS = tuple(0.00025 * 2**i for i in range(16))
# CoreDNS (plugin/metrics/vars): request and response size buckets, bytes
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
# The plugins of the stock Kubernetes Corefile whose behaviour podnet-dns provides (coredns_plugin_enabled).
PLUGINS = ("cache", "errors", "forward", "health", "kubernetes", "loadbalance", "loop", "prometheus", "ready")


def type_name(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, "other")


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip(BUCKETS, self.counts):
            acc += c
            out.append((repr(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


def size_buckets(counts: dict[int, int]) -> tuple[list[tuple[str, int]], float]:
    """Cumulative SIZE_BUCKETS buckets and the sum from ``{byte length: count}``."""
    per = [0] * (len(SIZE_BUCKETS) + 1)
    total = 0.0
    for n, c in counts.items():
        per[bisect.bisect_left(SIZE_BUCKETS, n)] += c
        total += n * c
    out, acc = [], 0
    for bound, c in zip(SIZE_BUCKETS, per):
        acc += c
        out.append((repr(float(bound)), acc))
    out.append(("+Inf", acc + per[-1]))
    return out, total


class Stats:
    """Per-query counters. ``fast`` counts fast-path UDP answers by 2-byte qtype (all NOERROR)."""

    def __init__(self) -> None:
        self.fast: defaultdict[bytes, int] = defaultdict(int)
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.responses: defaultdict[tuple[int, str], int] = defaultdict(int)
        """(rcode, plugin) -> count, slow path; fast-path answers are NOERROR from "kubernetes"."""
        self.dropped = 0
        self.do = 0
        """Queries with the DNSSEC OK bit (coredns_dns_do_requests_total)."""
        self.durations: defaultdict[bytes, Histogram] = defaultdict(Histogram)
        """By 2-byte query type (b"" when the question could not be read)."""
        self._udp_req: defaultdict[int, int] = defaultdict(int)
        self._udp_resp: defaultdict[int, int] = defaultdict(int)
        self.request_sizes: dict[str, defaultdict[int, int]] = {"udp": self._udp_req, "tcp": defaultdict(int)}
        """proto -> request byte length -> count."""
        self.response_sizes: dict[str, defaultdict[int, int]] = {"udp": self._udp_resp, "tcp": defaultdict(int)}
        self.programming = Histogram()
        self.rebuilds = 0
        self.family = "1"
        """CoreDNS's family label: 1 for IPv4 listeners, 2 for IPv6."""
        self.errors = 0
        """Handler/task exceptions caught by the server (coredns_panics_total)."""
        self.refused_names = 0
        """Queries refused because their name holds a control byte, whitespace or an 8-bit byte."""
        self.skipped: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(kind, reason) -> objects left out of the zone, counted each time one is newly left out."""
        self.skipped_now: dict[tuple[str, str], int] = {}
        """(kind, reason) -> objects left out of the table being served."""
        self.rebuild_failures = 0
        self.tcp_closed: defaultdict[str, int] = defaultdict(int)
        """reason -> TCP connections closed by the server: idle (timeout), evicted-client (the client
        was at its connection limit), evicted-capacity (the server was full), refused (full of busy ones)."""

    def count_request(self, qtype: int, udp: bool) -> None:
        self.requests[("udp" if udp else "tcp", qtype)] += 1

    def count_response(self, rcode: int, plugin: str = "") -> None:
        self.responses[(rcode, plugin)] += 1

    def answered_udp(self, qtype: bytes, request_len: int, response_len: int, seconds: float) -> None:
        """:meth:`answered` for UDP (the hot path: no proto lookups)."""
        h = self.durations[qtype]
        h.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        h.total += seconds
        h.n += 1
        self._udp_req[request_len] += 1
        self._udp_resp[response_len] += 1

    def answered_fast_udp(self, types: dict[bytes, int], sizes: dict[int, int], seconds: float) -> None:
        """Fast-path UDP replies sent together: their count by 2-byte query type, their sizes as
        ``request_len << 16 | response_len`` -> count, and the time from reading them to sending them
        (each reply's duration)."""
        bucket = bisect.bisect_left(BUCKETS, seconds)
        fast, durations = self.fast, self.durations
        for qtype, n in types.items():
            fast[qtype] += n
            h = durations[qtype]
            h.counts[bucket] += n
            h.total += seconds * n
            h.n += n
        req, resp = self._udp_req, self._udp_resp
        for pair, n in sizes.items():
            req[pair >> 16] += n
            resp[pair & 0xFFFF] += n

    def answered(self, proto: str, qtype: bytes, request_len: int, response_len: int, seconds: float) -> None:
        """One reply sent: its duration (by query type) and the request and response sizes (by proto)."""
        h = self.durations[qtype]
        h.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        h.total += seconds
        h.n += 1
        self.request_sizes[proto][request_len] += 1
        self.response_sizes[proto][response_len] += 1


RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}


class Collector:
    """A prometheus_client collector over Stats plus optional cache/forwarder stats getters."""

    def __init__(self, stats: Stats, server: str, cache=None, forwarder=None, ready: Callable[[], bool] | None = None) -> None:
        self.stats = stats
        self.server = server
        self.cache = cache
        self.forwarder = forwarder
        self.ready = ready
        self.plugins: list[tuple[str, str]] = [(".", n) for n in PLUGINS]
        """(zone, plugin) pairs reported by coredns_plugin_enabled (a Corefile's server blocks replace them)."""

    def collect(self) -> Iterable:
        st, srv = self.stats, self.server
        req = CounterMetricFamily(
            "coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        by: defaultdict[tuple[str, str], int] = defaultdict(int)
        fast_total = 0
        for qtype, n in st.fast.items():
            by[("udp", type_name(int.from_bytes(qtype, "big")))] += n
            fast_total += n
        for (proto, qtype), n in st.requests.items():
            by[(proto, type_name(qtype))] += n
        for (proto, t), n in sorted(by.items()):
            req.add_metric([srv, ".", "", proto, st.family, t], n)
        yield req
        resp = CounterMetricFamily(
            "coredns_dns_responses", "Counter of response status codes.", labels=["server", "zone", "view", "rcode", "plugin"]
        )
        rc = dict(st.responses)
        if fast_total:
            rc[(0, "kubernetes")] = rc.get((0, "kubernetes"), 0) + fast_total
        for (code, plugin), n in sorted(rc.items()):
            resp.add_metric([srv, ".", "", RCODES.get(code, str(code)), plugin], n)
        yield resp
        dur = HistogramMetricFamily(
            "coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took per zone.",
            labels=["server", "zone", "view", "type"],
        )
        merged: dict[str, Histogram] = {}
        for qtype, h in st.durations.items():
            m = merged.setdefault(type_name(int.from_bytes(qtype, "big")) if qtype else "other", Histogram())
            m.counts = [a + b for a, b in zip(m.counts, h.counts)]
            m.total += h.total
        for t, h in sorted(merged.items()):
            dur.add_metric([srv, ".", "", t], h.buckets(), h.total)
        yield dur
        for name, doc, per_proto in (
            ("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
             st.request_sizes),
            ("coredns_dns_response_size_bytes", "Size of the returned response in bytes.", st.response_sizes),
        ):
            fam = HistogramMetricFamily(name, doc, labels=["server", "zone", "view", "proto"])
            for proto, counts in sorted(per_proto.items()):
                if counts:
                    buckets, total = size_buckets(counts)
                    fam.add_metric([srv, ".", "", proto], buckets, total)
            yield fam
        do = CounterMetricFamily("coredns_dns_do_requests", "Counter of DNS requests with DO bit set per zone.",
                                 labels=["server", "view", "zone"])
        do.add_metric([srv, "", "."], st.do)
        yield do
        enabled = GaugeMetricFamily("coredns_plugin_enabled", "A metric that indicates whether a plugin is enabled on per server and zone basis.",
                                    labels=["server", "zone", "view", "name"])
        for zone, name in self.plugins:
            enabled.add_metric([srv, zone, "", name], 1)
        yield enabled
        panics = CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics (here: caught exceptions).")
        panics.add_metric([], st.errors)
        yield panics
        fam = CounterMetricFamily("podnet_dns_refused_names", "Queries refused for a control byte, whitespace or 8-bit byte in the name.",
                                  labels=["server"])
        fam.add_metric([srv], st.refused_names)
        yield fam
        fam = CounterMetricFamily("podnet_dns_skipped_objects", "Objects left out of the zone (a value kube-apiserver would refuse, "
                                  "or one that cannot be encoded), counted when newly left out.", labels=["kind", "reason"])
        for (kind, reason), n in sorted(st.skipped.items()):
            fam.add_metric([kind, reason], n)
        yield fam
        g = GaugeMetricFamily("podnet_dns_skipped_objects_current", "Objects left out of the table being served.", labels=["kind", "reason"])
        for (kind, reason), n in sorted(st.skipped_now.items()):
            g.add_metric([kind, reason], n)
        yield g
        fam = CounterMetricFamily("podnet_dns_rebuild_failures", "Table rebuilds that failed (the previous table kept being served).")
        fam.add_metric([], st.rebuild_failures)
        yield fam
        fam = CounterMetricFamily("podnet_dns_tcp_closed_connections", "DNS-over-TCP connections closed or refused by the server.",
                                  labels=["server", "reason"])
        for reason, n in sorted(st.tcp_closed.items()):
            fam.add_metric([srv, reason], n)
        yield fam
        drop = CounterMetricFamily("podnet_dns_dropped_packets", "Packets dropped unanswered (not a query, or no header).", labels=["server"])
        drop.add_metric([srv], st.dropped)
        yield drop
        prog = HistogramMetricFamily(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Time from a watch event to the new answers being served.", labels=["service_kind"],
        )
        prog.add_metric(["all"], st.programming.buckets(), st.programming.total)
        yield prog
        if self.cache is not None:
            c = self.cache
            success, denial = c.counts()
            ent = GaugeMetricFamily("coredns_cache_entries", "The number of elements in the cache.", labels=["server", "type", "zones", "view"])
            ent.add_metric([srv, "success", ".", ""], success)
            ent.add_metric([srv, "denial", ".", ""], denial)
            yield ent
            hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.", labels=["server", "type", "zones", "view"])
            hits.add_metric([srv, "success", ".", ""], c.stats.hits_success)
            hits.add_metric([srv, "denial", ".", ""], c.stats.hits_denial)
            yield hits
            for name, value, doc in (
                ("coredns_cache_misses", c.stats.misses, "The count of cache misses. Deprecated, derive misses from cache hits/requests counters."),
                ("coredns_cache_requests", c.stats.requests, "The count of cache requests."),
            ):
                m = CounterMetricFamily(name, doc, labels=["server", "zones", "view"])
                m.add_metric([srv, ".", ""], value)
                yield m
            ev = CounterMetricFamily("coredns_cache_evictions", "The count of cache evictions.", labels=["server", "type", "zones", "view"])
            ev.add_metric([srv, "success", ".", ""], c.stats.evictions - c.stats.evictions_denial)
            ev.add_metric([srv, "denial", ".", ""], c.stats.evictions_denial)
            yield ev
        if self.forwarder is not None:
            fs = self.forwarder.stats
            # coredns_forward_{requests,responses}_total: CoreDNS < 1.11 names (now derived from the proxy
            # histogram's _count), kept for older dashboards.
            m = CounterMetricFamily("coredns_forward_requests", "Counter of requests made per upstream.", labels=["to"])
            for to, n in sorted(fs.requests.items()):
                m.add_metric([to], n)
            yield m
            m = CounterMetricFamily("coredns_forward_responses", "Counter of responses received per upstream.", labels=["to", "rcode"])
            for (to, code), n in sorted(fs.responses.items()):
                m.add_metric([to, RCODES.get(code, str(code))], n)
            yield m
            h = HistogramMetricFamily("coredns_proxy_request_duration_seconds", "Histogram of the time each request took.",
                                      labels=["proxy_name", "to", "rcode"])
            for (to, code), hist in sorted(fs.durations.items()):
                h.add_metric(["forward", to, RCODES.get(code, str(code))], hist.buckets(), hist.total)
            yield h
            m = CounterMetricFamily("coredns_forward_max_concurrent_rejects", "Queries refused because too many were in flight.")
            m.add_metric([], fs.max_concurrent_rejects)
            yield m
            m = CounterMetricFamily("coredns_proxy_healthcheck_failures", "Count of failed upstream health checks.", labels=["proxy_name", "to"])
            for to, n in sorted(fs.healthcheck_failures.items()):
                m.add_metric(["forward", to], n)
            yield m
            m = CounterMetricFamily(
                "coredns_forward_healthcheck_broken", "Counter of the number of complete failures of the healthchecks."
            )
            m.add_metric([], fs.healthcheck_broken)
            yield m
        if self.ready is not None:
            g = GaugeMetricFamily("podnet_dns_ready", "1 once the first full sync is done and while rebuilds succeed.")
            g.add_metric([], 1 if self.ready() else 0)
            yield g
        info = GaugeMetricFamily("coredns_build_info", "A metric with a constant '1' value.", labels=["version", "revision", "goversion"])
        info.add_metric(["podnet-0.1.0", "", "python"], 1)
        yield info


def render(collector: Collector) -> bytes:
    """The text exposition of our collector plus the process-wide registry (podnet_kube_*, process_*)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return generate_latest(reg) + generate_latest(REGISTRY)
