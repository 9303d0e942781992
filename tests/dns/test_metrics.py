"""/metrics against CoreDNS's metric names and label sets (plugin READMEs, CoreDNS 1.11+), through the
real daemon: UDP fast and slow path, TCP, EDNS with DO, and a forwarded name."""

from __future__ import annotations

import asyncio

import aiohttp
import dns.asyncquery
import dns.message
import pytest
from prometheus_client.parser import text_string_to_metric_families

from podnet.dns.daemon import Daemon, Options
from podnet.dns.forward import UpstreamAddr
from podnet.dns.metrics import SIZE_BUCKETS
from podnet.dns.testing import FakeUpstream, cluster_objects
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer

# sample name (counters with _total, histograms by _count) -> CoreDNS's label names (le aside)
COREDNS_LABELS = {
    "coredns_dns_requests_total": {"server", "zone", "view", "proto", "family", "type"},
    "coredns_dns_responses_total": {"server", "zone", "view", "rcode", "plugin"},
    "coredns_dns_request_duration_seconds_count": {"server", "zone", "view", "type"},
    "coredns_dns_request_size_bytes_count": {"server", "zone", "view", "proto"},
    "coredns_dns_response_size_bytes_count": {"server", "zone", "view", "proto"},
    "coredns_dns_do_requests_total": {"server", "view", "zone"},
    "coredns_panics_total": set(),
    "coredns_build_info": {"version", "revision", "goversion"},
    "coredns_plugin_enabled": {"server", "zone", "view", "name"},
    "coredns_cache_entries": {"server", "type", "zones", "view"},
    "coredns_cache_hits_total": {"server", "type", "zones", "view"},
    "coredns_cache_misses_total": {"server", "zones", "view"},
    "coredns_cache_requests_total": {"server", "zones", "view"},
    "coredns_cache_evictions_total": {"server", "type", "zones", "view"},
    "coredns_proxy_request_duration_seconds_count": {"proxy_name", "to", "rcode"},
    "coredns_forward_max_concurrent_rejects_total": set(),
    "coredns_forward_healthcheck_broken_total": set(),
    "coredns_kubernetes_dns_programming_duration_seconds_count": {"service_kind"},
}


@pytest.fixture
async def scraped():
    """Run one daemon, send a fixed set of queries, return the parsed /metrics samples."""
    upstream = await FakeUpstream("127.0.0.2", {("www.example.com", "A"): ["www.example.com. 60 IN A 192.0.2.1"]}).start()
    services, slices, namespaces = cluster_objects()
    infs = (FakeInformer(services), FakeInformer(slices), FakeInformer([Namespace(n) for n in namespaces]))
    opts = Options(listen="127.0.0.1:0", upstreams=[UpstreamAddr("127.0.0.2", upstream.port)], health_listen=None,
                   ready_listen=None, metrics_listen="127.0.0.1:0")
    daemon = Daemon(opts, make_informers=lambda: infs)
    tasks = await daemon.start()
    try:
        for inf in infs:
            inf.synced()
        await asyncio.wait_for(daemon.sync.synced_event.wait(), 10)
        port = daemon.server.port
        queries = [
            ("udp", dns.message.make_query("web.default.svc.cluster.local.", "A")),  # fast path
            ("udp", dns.message.make_query("web.default.svc.cluster.local.", "AAAA")),  # NODATA, slow path
            ("udp", dns.message.make_query("nope.default.svc.cluster.local.", "A", use_edns=0, want_dnssec=True)),
            ("udp", dns.message.make_query("www.example.com.", "A")),  # forwarded
            ("udp", dns.message.make_query("www.example.com.", "A")),  # cache hit
            ("tcp", dns.message.make_query("_http._tcp.web.default.svc.cluster.local.", "SRV")),
        ]
        for proto, m in queries:
            fn = dns.asyncquery.udp if proto == "udp" else dns.asyncquery.tcp
            await fn(m, "127.0.0.1", port=port, timeout=3)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{daemon.http.ports['/metrics']}/metrics") as r:
                text = await r.text()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await daemon.sync.close()
        await daemon.server.stop()
        await daemon.http.stop()
        await daemon.forwarder.close()
        await upstream.stop()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


@pytest.mark.parametrize("sample_name", sorted(COREDNS_LABELS))
def test_family_has_coredns_labels(scraped, sample_name):
    got = [s for s in scraped if s.name == sample_name]
    assert got, f"{sample_name} not exported"
    for s in got:
        assert set(s.labels) - {"le"} == COREDNS_LABELS[sample_name], s


def value(samples, sample_name: str, labels: dict[str, str]) -> float:
    matches = [s.value for s in samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (sample_name, labels, matches)
    return matches[0]


@pytest.mark.parametrize(
    "name,labels,want",
    [
        ("coredns_dns_request_size_bytes_count", {"proto": "udp"}, 5),
        ("coredns_dns_request_size_bytes_count", {"proto": "tcp"}, 1),
        ("coredns_dns_response_size_bytes_count", {"proto": "udp"}, 5),
        ("coredns_dns_request_duration_seconds_count", {"type": "A"}, 4),
        ("coredns_dns_request_duration_seconds_count", {"type": "AAAA"}, 1),
        ("coredns_dns_request_duration_seconds_count", {"type": "SRV"}, 1),
        ("coredns_dns_do_requests_total", {}, 1),
        ("coredns_proxy_request_duration_seconds_count", {"rcode": "NOERROR"}, 1),
        ("coredns_cache_hits_total", {"type": "success"}, 1),
        ("coredns_plugin_enabled", {"name": "kubernetes"}, 1),
        # fast path A, NODATA AAAA, TCP SRV
        ("coredns_dns_responses_total", {"rcode": "NOERROR", "plugin": "kubernetes"}, 3),
        ("coredns_dns_responses_total", {"rcode": "NXDOMAIN", "plugin": "kubernetes"}, 1),
        ("coredns_dns_responses_total", {"rcode": "NOERROR", "plugin": "forward"}, 1),
        ("coredns_dns_responses_total", {"rcode": "NOERROR", "plugin": "cache"}, 1),
    ],
    ids=["req-size-udp", "req-size-tcp", "resp-size-udp", "duration-A", "duration-AAAA", "duration-SRV", "do-bit",
         "proxy-rcode", "cache-hit", "plugin-enabled", "responses-kubernetes", "responses-nxdomain", "responses-forward",
         "responses-cache"],
)
def test_values(scraped, name, labels, want):
    assert value(scraped, name, labels) == want


def test_size_histogram_buckets_and_sums(scraped):
    buckets = sorted((float(s.labels["le"]), s.value) for s in scraped
                     if s.name == "coredns_dns_request_size_bytes_bucket" and s.labels["proto"] == "udp")
    assert [b for b, _ in buckets] == [float(b) for b in SIZE_BUCKETS] + [float("inf")]
    assert buckets[0][1] == 0 and buckets[-1][1] == 5  # no empty requests; all five under +Inf
    assert buckets[1][1] == 5  # every query here is under 100 bytes
    total = value(scraped, "coredns_dns_response_size_bytes_sum", {"proto": "udp"})
    assert 5 * 12 < total < 5 * 512
