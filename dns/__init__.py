"""podnet-dns: the Kubernetes DNS schema, served from answers compiled ahead of time.

Data flow (pure modules marked P, side effects S)::

    informers (podnet.kube: Services, EndpointSlices, Namespaces)
        --> watch.ZoneSync (S: indexes, one rebuild per loop turn, /ready while rebuilds succeed)
            snapshot.build / update (P: the zone as records; a bad object leaves out only itself)
            answers.compile (P: lower-cased wire qname + qtype -> precompiled reply bytes)
        --> handler.Handler.swap (one reference swap: no query sees a half-built table)
    server.DnsServer (S: UDP + TCP listeners; per-client TCP limits, idle eviction)
        --> handler (P fast path: splice the query's ID and question into precompiled bytes;
            slow path: NXDOMAIN/NODATA with SOA, pods, ANY; forward.Forwarder (S) + cache for
            other names), capped at the client's EDNS size / 1232 bytes and 10x the query
    Corefile (-conf): corefile (P: syntax) -> coreconfig (P: plugins) -> chain (server blocks by
        zone; hosts, rewrite, querylog, errors) -> coredaemon (S, reload)
    workers (S, --workers N: SO_REUSEPORT processes fed the informer events by one control process)
    health + metrics (S: /health with lameduck, /ready, /metrics with CoreDNS's names)

Listen addresses, HTTP endpoints, signals, the uvloop runner and the rebuild's GC pause are
:mod:`podnet.host`'s; the command line is flags (or -conf) -> the frozen ``daemon.Options`` -> run.
Wire bytes are written by :mod:`.wire` (names re-checked where they are written). Tests use
:mod:`podnet.dns.testing` (FakeUpstream, a real resolver on 127.0.0.1) and kube's FakeInformer.
More in dns/README.md.
"""
