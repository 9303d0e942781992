"""Prometheus metrics with kube-proxy's names (plus a few podnet_proxy_* extras).

Module-level collectors on the default registry, so /metrics also shows
podnet.kube's rejected-object counter. Labels follow kube-proxy where it has
them (``ip_family``, ``table``, ``traffic_policy``, ``code``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SYNC_BUCKETS = tuple(0.001 * 2**k for k in range(15))
_NP_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 45, 60, 120, 180, 240, 300)

SYNC_DURATION = Histogram("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency", ["ip_family"], buckets=_SYNC_BUCKETS)
SYNC_FULL_DURATION = Histogram("kubeproxy_sync_full_proxy_rules_duration_seconds", "Full SyncProxyRules latency", ["ip_family"], buckets=_SYNC_BUCKETS)
SYNC_PARTIAL_DURATION = Histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds", "Partial SyncProxyRules latency", ["ip_family"], buckets=_SYNC_BUCKETS)
NETWORK_PROGRAMMING = Histogram("kubeproxy_network_programming_duration_seconds", "In-cluster network programming latency", ["ip_family"], buckets=_NP_BUCKETS)
LAST_SYNC = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", ["ip_family"])
LAST_QUEUED = Gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued", ["ip_family"])
ENDPOINT_CHANGES_PENDING = Gauge("kubeproxy_sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes")
ENDPOINT_CHANGES_TOTAL = Counter("kubeproxy_sync_proxy_rules_endpoint_changes_total", "Cumulative proxy rules Endpoint changes")
SERVICE_CHANGES_PENDING = Gauge("kubeproxy_sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes")
SERVICE_CHANGES_TOTAL = Counter("kubeproxy_sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes")
IPTABLES_TOTAL = Gauge("kubeproxy_sync_proxy_rules_iptables_total", "Total number of iptables rules owned by podnet-proxy", ["table", "ip_family"])
IPTABLES_LAST = Gauge("kubeproxy_sync_proxy_rules_iptables_last", "Number of iptables rules written in the last sync", ["table", "ip_family"])
RESTORE_FAILURES = Counter("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures", ["ip_family"])
PARTIAL_RESTORE_FAILURES = Counter("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", "Cumulative proxy iptables partial restore failures", ["ip_family"])
NO_LOCAL_ENDPOINTS = Gauge("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints", ["traffic_policy", "ip_family"])
HEALTHZ = Counter("kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status", ["code"])
LIVEZ = Counter("kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", ["code"])
CONNTRACK_DURATION = Histogram("kubeproxy_conntrack_reconciler_sync_duration_seconds", "Conntrack reconciler sync duration", ["ip_family"], buckets=_SYNC_BUCKETS)
CONNTRACK_DELETED = Counter("kubeproxy_conntrack_reconciler_deleted_entries_total", "Cumulative conntrack flows deleted by the reconciler", ["ip_family"])

ENDPOINTS_TRUNCATED = Counter("podnet_proxy_endpoints_truncated_total", "Endpoints left out because a service port exceeded --max-endpoints-per-service-port")
SKIPPED_SERVICES = Counter(
    "podnet_proxy_skipped_services_total",
    "Services left out of a sync because a value could not be written safely (a bug upstream), by reason",
    ["reason", "ip_family"],
)
FOREIGN_CHANGES = Counter(
    "podnet_proxy_foreign_changes_total",
    "Foreign changes to podnet's rules found by the periodic check (flushed tables or chains, deleted jumps), repaired by a full sync",
    ["table", "kind", "ip_family"],
)
CHANGE_TO_PROGRAMMED = Histogram(
    "podnet_proxy_change_to_programmed_seconds",
    "From the first Service/EndpointSlice event this proxy queued to the rules in the kernel",
    ["ip_family"], buckets=_NP_BUCKETS,
)
CANARY_LOST = Counter("podnet_proxy_canary_lost_total", "Foreign flushes of podnet tables detected (canary chain or its rule missing)", ["table", "ip_family"])
# nftables mode. kube-proxy's nftables mode publishes no rule counts (its design notes: a map lookup costs the
# same at any size), so these are podnet's own, named after the iptables mode's rule-count gauges.
NFT_SYNC_FAILURES = Counter("kubeproxy_sync_proxy_rules_nftables_sync_failures_total", "Cumulative proxy nftables sync failures", ["ip_family"])
NFT_OBJECTS = Gauge("podnet_proxy_sync_proxy_rules_nftables_objects", "Chains, rules, maps and sets in podnet's nftables table after the last sync", ["type", "ip_family"])
NFT_ELEMENTS = Gauge("podnet_proxy_sync_proxy_rules_nftables_elements", "Elements of each named map and set of podnet's nftables table after the last sync", ["set", "ip_family"])
NFT_RULES_LAST = Gauge("podnet_proxy_sync_proxy_rules_nftables_last", "Rules written to podnet's nftables table by the last sync", ["ip_family"])
