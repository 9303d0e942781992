"""Counters kept as plain ints on the hot path, exported with CoreDNS's metric names.

:class:`Stats` is what the handler and server touch per query (dict increments, no locks: the
event loop is the only writer). :class:`Collector` turns it, the cache and the forwarder stats into
Prometheus families only when /metrics is scraped, so scraping costs nothing between scrapes.
Names and labels follow CoreDNS (``coredns_dns_*``, ``coredns_cache_*``, ``coredns_forward_*``,
``coredns_proxy_*``) with server="dns://<listen>", zone=".", view="".
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from podnet.dns.wire import TYPE_NAMES

__all__ = ["Stats", "Collector", "Histogram", "render", "BUCKETS"]

# CoreDNS: prometheus.ExponentialBuckets(0.00025, 2, 16)
BUCKETS = tuple(0.00025 * 2**i for i in range(16))


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


class Stats:
    """Per-query counters. ``fast`` counts fast-path UDP answers by 2-byte qtype (all NOERROR)."""

    def __init__(self) -> None:
        self.fast: defaultdict[bytes, int] = defaultdict(int)
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.responses: defaultdict[int, int] = defaultdict(int)
        self.dropped = 0
        self.durations: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.programming = Histogram()
        self.rebuilds = 0
        self.family = "1"
        """CoreDNS's family label: 1 for IPv4 listeners, 2 for IPv6."""
        self.errors = 0
        """Handler/task exceptions caught by the server (coredns_panics_total)."""

    def count_request(self, qtype: int, udp: bool) -> None:
        self.requests[("udp" if udp else "tcp", qtype)] += 1

    def count_response(self, rcode: int) -> None:
        self.responses[rcode] += 1

    def observe(self, proto: str, seconds: float) -> None:
        self.durations[proto].observe(seconds)


RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}


class Collector:
    """A prometheus_client collector over Stats plus optional cache/forwarder stats getters."""

    def __init__(self, stats: Stats, server: str, cache=None, forwarder=None, ready: Callable[[], bool] | None = None) -> None:
        self.stats = stats
        self.server = server
        self.cache = cache
        self.forwarder = forwarder
        self.ready = ready

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
        rc[0] = rc.get(0, 0) + fast_total
        for code, n in sorted(rc.items()):
            resp.add_metric([srv, ".", "", RCODES.get(code, str(code)), ""], n)
        yield resp
        dur = HistogramMetricFamily(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took, by transport (CoreDNS labels by qtype).",
            labels=["server", "zone", "view", "proto"],
        )
        for proto, h in sorted(st.durations.items()):
            dur.add_metric([srv, ".", "", proto], h.buckets(), h.total)
        yield dur
        panics = CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics (here: caught exceptions).")
        panics.add_metric([], st.errors)
        yield panics
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
                ("coredns_cache_misses", c.stats.misses, "The count of cache misses."),
                ("coredns_cache_requests", c.stats.requests, "The count of cache requests."),
                ("coredns_cache_evictions", c.stats.evictions, "The count of cache evictions."),
            ):
                m = CounterMetricFamily(name, doc, labels=["server", "zones", "view"])
                m.add_metric([srv, ".", ""], value)
                yield m
        if self.forwarder is not None:
            fs = self.forwarder.stats
            m = CounterMetricFamily("coredns_forward_requests", "Counter of requests made per upstream.", labels=["to"])
            for to, n in sorted(fs.requests.items()):
                m.add_metric([to], n)
            yield m
            m = CounterMetricFamily("coredns_forward_responses", "Counter of responses received per upstream.", labels=["to", "rcode"])
            for (to, code), n in sorted(fs.responses.items()):
                m.add_metric([to, RCODES.get(code, str(code))], n)
            yield m
            h = HistogramMetricFamily("coredns_proxy_request_duration_seconds", "Histogram of the time each upstream request took.",
                                      labels=["proxy_name", "to"])
            for to, hist in sorted(fs.durations.items()):
                h.add_metric(["forward", to], hist.buckets(), hist.total)
            yield h
            m = CounterMetricFamily("coredns_forward_max_concurrent_rejects", "Queries refused because too many were in flight.")
            m.add_metric([], fs.max_concurrent_rejects)
            yield m
            m = CounterMetricFamily("coredns_proxy_healthcheck_failures", "Count of failed upstream health checks.", labels=["proxy_name", "to"])
            for to, n in sorted(fs.healthcheck_failures.items()):
                m.add_metric(["forward", to], n)
            yield m
            m = CounterMetricFamily(
                "coredns_forward_healthcheck_broken", "Queries made while every upstream was unhealthy or looping."
            )
            m.add_metric([], 0 if self.forwarder.usable else 1)
            yield m
        if self.ready is not None:
            g = GaugeMetricFamily("podnet_dns_ready", "1 once the first full sync is done.")
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
