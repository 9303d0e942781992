"""Conversion of real-shaped Kubernetes JSON into frozen objects, and rejection of bad ones."""

from __future__ import annotations

import copy

import pytest

from podnet.kube import objects as o
from podnet.kube import resources as r

SERVICE_CLUSTER_IP = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "default", "uid": "5f0c", "resourceVersion": "812",
                 "labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"], "ipFamilies": ["IPv4"],
             "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
             "type": "ClusterIP", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                       {"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": "metrics"}]},
    "status": {"loadBalancer": {}},
}
SERVICE_NODE_PORT = {
    "metadata": {"name": "np", "namespace": "shop"},
    "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "externalTrafficPolicy": "Local",
             "externalIPs": ["192.0.2.10"], "sessionAffinity": "ClientIP",
             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
             "ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]},
}
SERVICE_LB = {
    "metadata": {"name": "lb", "namespace": "default"},
    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00::30"],
             "ipFamilies": ["IPv4", "IPv6"], "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
             "loadBalancerSourceRanges": ["203.0.113.0/24"],
             "ports": [{"name": "https", "port": 443, "targetPort": 8443, "nodePort": 31443, "protocol": "TCP"}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example.com"}]}},
}
SERVICE_HEADLESS = {
    "metadata": {"name": "db", "namespace": "default"},
    "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}, "publishNotReadyAddresses": True,
             "ports": [{"port": 5432}]},
}
SERVICE_EXTERNAL_NAME = {
    "metadata": {"name": "ext", "namespace": "default"},
    "spec": {"type": "ExternalName", "externalName": "example.com."},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "web-abc12", "namespace": "default",
                 "labels": {"kubernetes.io/service-name": "web",
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
    "addressType": "IPv4",
    "endpoints": [
        {"addresses": ["10.244.1.5"], "conditions": {"ready": True, "serving": True, "terminating": False},
         "nodeName": "node-1", "zone": "z1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}},
        {"addresses": ["10.244.2.9"], "conditions": {"ready": False, "serving": True, "terminating": True},
         "hostname": "web-2", "nodeName": "node-2"},
        {"addresses": ["10.244.3.3"]},
    ],
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}
NODE = {
    "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
    "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.11"}, {"type": "Hostname", "address": "node-1"}],
               "conditions": [{"type": "Ready", "status": "True"}]},
}
POD = {
    "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"nodeName": "node-1", "hostname": "web-1", "subdomain": "web", "containers": [{"name": "c"}]},
    "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:1::5"}],
               "conditions": [{"type": "Ready", "status": "True"}]},
}


def test_cluster_ip_service():
    s = o.parse_service(SERVICE_CLUSTER_IP)
    assert (s.key, s.type, s.cluster_ips, s.cluster_ip, s.headless) == ("default/web", "ClusterIP", ("10.96.12.7",),
                                                                       "10.96.12.7", False)
    assert [(p.name, p.protocol, p.port, p.target_port) for p in s.ports] == [
        ("http", "TCP", 80, 8080), ("metrics", "TCP", 9100, "metrics")]
    assert s.selector_dict == {"app": "web"} and s.labels == (("app", "web"),) and s.ip_families == ("IPv4",)


def test_node_port_service():
    s = o.parse_service(SERVICE_NODE_PORT)
    assert s.type == "NodePort" and s.ports[0].node_port == 30053 and s.ports[0].protocol == "UDP"
    assert s.external_ips == ("192.0.2.10",) and s.external_traffic_policy == "Local"
    assert (s.session_affinity, s.session_affinity_timeout) == ("ClientIP", 600)


def test_load_balancer_service():
    s = o.parse_service(SERVICE_LB)
    assert s.cluster_ips == ("10.96.0.30", "fd00::30") and s.load_balancer_ips == ("198.51.100.7",)
    assert s.health_check_node_port == 32000 and s.load_balancer_source_ranges == ("203.0.113.0/24",)


def test_headless_and_external_name():
    h = o.parse_service(SERVICE_HEADLESS)
    assert h.headless and h.cluster_ips == () and h.publish_not_ready_addresses and h.ports[0].target_port == 5432
    e = o.parse_service(SERVICE_EXTERNAL_NAME)
    assert e.type == "ExternalName" and e.external_name == "example.com" and e.cluster_ips == ()


def test_endpoint_slice():
    s = o.parse_endpoint_slice(SLICE)
    assert s.service_name == "web" and s.service_key == "default/web" and s.address_type == "IPv4"
    a, b, c = s.endpoints
    assert (a.node_name, a.zone, a.target_pod, a.conditions) == ("node-1", "z1", "web-1", o.EndpointConditions())
    assert b.conditions == o.EndpointConditions(ready=False, serving=True, terminating=True) and b.hostname == "web-2"
    assert c.conditions == o.EndpointConditions(True, True, False)  # unset means ready
    assert s.ports == (o.EndpointPort("http", "TCP", 8080),)


def test_node_and_pod():
    n = o.parse_node(NODE)
    assert n.internal_ip == "192.168.1.11" and n.pod_cidrs == ("10.244.1.0/24", "fd00:1::/64") and n.ready
    p = o.parse_pod(POD)
    assert p.ips == ("10.244.1.5", "fd00:1::5") and p.ready and p.node_name == "node-1"
    assert (p.hostname, p.subdomain, p.phase) == ("web-1", "web", "Running")


def test_resource_version_does_not_affect_equality():
    a = o.parse_service(SERVICE_CLUSTER_IP)
    changed = copy.deepcopy(SERVICE_CLUSTER_IP)
    changed["metadata"]["resourceVersion"] = "999"
    changed["metadata"]["annotations"] = {"x": "y"}
    assert o.parse_service(changed) == a and hash(o.parse_service(changed)) == hash(a)


def _mutate(base, path, value):
    obj = copy.deepcopy(base)
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


BAD = [
    ("services", _mutate(_mutate(SERVICE_CLUSTER_IP, ["spec", "clusterIP"], "10.96.12.700"), ["spec", "clusterIPs"],
                         ["10.96.12.700"]), "invalid-cluster-ip"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "clusterIPs"], ["10.96.0.1 -j ACCEPT"]), "injection-cluster-ip"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "ports"], [{"port": 65536}]), "port-out-of-range"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "ports"], [{"port": "80 -j ACCEPT"}]), "injection-port"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "ports"], [{"port": 80, "protocol": "ICMP"}]), "unknown-protocol"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "ports"], [{"port": 80, "name": "a b"}]), "port-name-space"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["metadata", "name"], "Web_1"), "name-not-dns-label"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["metadata", "name"], "web\nCOMMIT"), "newline-in-name"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["metadata", "namespace"], "a;rm"), "bad-namespace"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "type"], "Magic"), "unknown-type"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["spec", "externalIPs"], ["1.2.3.4\n-A INPUT"]), "newline-in-ip"),
    ("services", _mutate(SERVICE_EXTERNAL_NAME, ["spec", "externalName"], "evil.com. IN A 1.2.3.4"), "bad-external-name"),
    ("services", _mutate(SERVICE_CLUSTER_IP, ["metadata", "labels"], {"app": "a b"}), "bad-label-value"),
    ("endpointslices", _mutate(SLICE, ["endpoints", 0, "addresses"], ["10.244.1.300"]), "invalid-endpoint-ip"),
    ("endpointslices", _mutate(SLICE, ["endpoints", 0, "addresses"], ["fd00::1"]), "wrong-family"),
    ("endpointslices", _mutate(SLICE, ["ports", 0, "protocol"], "HTTP"), "slice-unknown-protocol"),
    ("endpointslices", _mutate(SLICE, ["endpoints", 1, "hostname"], "web 2"), "bad-hostname"),
    ("endpointslices", _mutate(SLICE, ["addressType"], None), "missing-address-type"),
    ("nodes", _mutate(NODE, ["spec"], {"podCIDR": "10.244.1.0/33"}), "bad-pod-cidr"),
    ("nodes", _mutate(NODE, ["spec", "podCIDRs"], ["not-a-cidr"]), "bad-pod-cidrs"),
    ("nodes", _mutate(NODE, ["status", "addresses"], [{"type": "InternalIP", "address": "1.2.3"}]), "bad-node-ip"),
    ("pods", _mutate(POD, ["status", "podIPs"], [{"ip": "10.0.0.1; reboot"}]), "bad-pod-ip"),
    ("pods", _mutate(POD, ["spec", "hostname"], "Web_1"), "bad-pod-hostname"),
    ("namespaces", {"metadata": {"name": "Kube System"}}, "bad-namespace-name"),
    ("services", {"spec": {}}, "no-metadata"),
]


@pytest.mark.parametrize("plural, raw", [pytest.param(p, raw, id=i) for p, raw, i in BAD])
def test_bad_objects_are_rejected_and_counted(plural, raw):
    res = r.BY_PLURAL[plural]
    with pytest.raises(o.InvalidObject):
        res.parse(raw)
    before = r.REJECTED.labels(plural)._value.get()
    assert r.convert(res, raw) is None
    assert r.REJECTED.labels(plural)._value.get() == before + 1


@pytest.mark.parametrize(
    "plural, raw",
    [pytest.param("services", s, id=s["metadata"]["name"]) for s in
     (SERVICE_CLUSTER_IP, SERVICE_NODE_PORT, SERVICE_LB, SERVICE_HEADLESS, SERVICE_EXTERNAL_NAME)]
    + [pytest.param("endpointslices", SLICE, id="slice"), pytest.param("nodes", NODE, id="node"),
       pytest.param("pods", POD, id="pod")],
)
def test_convert_accepts_good_objects(plural, raw):
    obj = r.convert(r.BY_PLURAL[plural], raw)
    assert obj is not None and obj.key
