"""The lab API server refuses what kube-apiserver refuses: 422 Invalid with a Status body, nothing stored.

Each hostile value is one an attacker with a pod in the lab sent; the rules behind the answers are
tabled with kube-apiserver's own examples in tests/kube/test_validate_apiserver_table.py.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import os
import shutil

import pytest

from podnet.kube import resources as r
from podnet.kube import validate as v
from podnet.kube.client import ApiClient, ApiError
from podnet.netlab.apiserver.allocators import AllocationError, IPAllocator
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.apiserver.services import ServiceAllocator, _take_ip

SERVICE = {"metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"example.com/note": "x"}},
           "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
LB = {"metadata": {"name": "lb"},
      "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"],
               "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}
EXTERNAL_NAME = {"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}
SLICE = {"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "web-1", "zone": "z1", "nodeName": "node-1",
                        "conditions": {"ready": True}}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
NODE = {"metadata": {"name": "node-9"}, "spec": {"podCIDRs": ["10.244.9.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.9"}]}}
POD = {"metadata": {"name": "p1"}, "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
       "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}]}}
NAMESPACE = {"metadata": {"name": "team-a"}}

BASES = {"svc": (r.SERVICES, SERVICE), "lb": (r.SERVICES, LB), "ext": (r.SERVICES, EXTERNAL_NAME),
         "slice": (r.ENDPOINT_SLICES, SLICE), "node": (r.NODES, NODE), "pod": (r.PODS, POD),
         "ns": (r.NAMESPACES, NAMESPACE)}


def mutate(base: str, path: tuple, value):
    res, body = BASES[base]
    out = copy.deepcopy(body)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return res, out


HOSTILE = [
    pytest.param(*mutate("svc", ("metadata", "name"), "x\n"), id="service-name-x-newline"),
    pytest.param(*mutate("svc", ("spec", "clusterIP"), "fd00:96::77%x"), id="cluster-ip-zone"),
    pytest.param(*mutate("svc", ("spec", "clusterIPs"), ["fd00:96::77%x"]), id="cluster-ips-zone"),
    pytest.param(*mutate("svc", ("spec", "clusterIP"), "010.96.0.50"), id="cluster-ip-leading-zeros"),
    pytest.param(*mutate("svc", ("spec", "clusterIP"), "::ffff:10.96.0.50"), id="cluster-ip-ipv4-mapped"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["0.0.0.0"]), id="external-ip-0.0.0.0"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["127.0.0.1"]), id="external-ip-127.0.0.1"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["169.254.169.254"]), id="external-ip-169.254.169.254"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["224.0.0.1"]), id="external-ip-224.0.0.1"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["fe80::1"]), id="external-ip-fe80::1"),
    pytest.param(*mutate("svc", ("spec", "externalIPs"), ["fd00::1%x y"]), id="external-ip-zone"),
    pytest.param(*mutate("svc", ("spec", "ports"), [{"name": "http\n", "port": 80, "protocol": "TCP"}]),
                 id="port-name-http-newline"),
    pytest.param(*mutate("svc", ("spec", "ports"), [{"name": "http", "port": 80, "targetPort": "http\n"}]),
                 id="target-port-http-newline"),
    pytest.param(*mutate("svc", ("spec", "ports"), [{"name": "http", "port": 80, "targetPort": "8080"}]),
                 id="target-port-digits-as-string"),
    pytest.param(*mutate("svc", ("spec", "ports"), [{"name": "http", "port": 80, "appProtocol": "h2c\n"}]),
                 id="app-protocol-newline"),
    pytest.param(*mutate("svc", ("metadata", "labels"), {"app": "a\n"}), id="label-value-a-newline"),
    pytest.param(*mutate("svc", ("metadata", "labels"), {"a\n": "x"}), id="label-key-a-newline"),
    pytest.param(*mutate("svc", ("metadata", "annotations"), {"a\n": "x"}), id="annotation-key-a-newline"),
    pytest.param(*mutate("svc", ("spec", "selector"), {"app": "web\n"}), id="selector-value-newline"),
    pytest.param(*mutate("lb", ("spec", "loadBalancerSourceRanges"), ["fd00::%1\n-A PODNET-SERVICES -j ACCEPT"]),
                 id="source-range-zone-line-injection"),
    pytest.param(*mutate("lb", ("spec", "loadBalancerSourceRanges"), ["10.0.0.0/8\n-A PODNET-SERVICES -j ACCEPT"]),
                 id="source-range-line-injection"),
    pytest.param(*mutate("lb", ("spec", "loadBalancerSourceRanges"), ["203.0.113.7/24"]), id="source-range-host-bits"),
    pytest.param(*mutate("ext", ("spec", "externalName"), "evil.com\n"), id="external-name-evil.com-newline"),
    pytest.param(*mutate("ext", ("spec", "externalName"), "Evil.com"), id="external-name-upper-case"),
    pytest.param(*mutate("ext", ("spec", "externalName"), "evil.com.."), id="external-name-two-dots"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["0.0.0.0"]), id="endpoint-0.0.0.0"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["127.0.0.1"]), id="endpoint-127.0.0.1"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["169.254.169.254"]), id="endpoint-169.254.169.254"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["224.0.0.1"]), id="endpoint-224.0.0.1"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["10.244.1.5\n"]), id="endpoint-trailing-newline"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["010.244.1.5"]), id="endpoint-leading-zeros"),
    pytest.param(*mutate("slice", ("endpoints", 0, "addresses"), ["::ffff:10.244.1.5"]), id="endpoint-ipv4-mapped"),
    pytest.param(*mutate("slice", ("endpoints", 0, "hostname"), "web-1\n"), id="endpoint-hostname-newline"),
    pytest.param(*mutate("slice", ("endpoints", 0, "zone"), "z1\n"), id="endpoint-zone-newline"),
    pytest.param(*mutate("slice", ("ports",), [{"name": "http\n", "port": 8080, "protocol": "TCP"}]),
                 id="slice-port-name-newline"),
    pytest.param(*mutate("slice", ("metadata", "name"), "web-abc\n"), id="slice-name-newline"),
    pytest.param(*mutate("node", ("spec", "podCIDRs"), ["10.244.9.0/24\n"]), id="pod-cidr-newline"),
    pytest.param(*mutate("node", ("spec", "podCIDRs"), ["fd00::%1/64"]), id="pod-cidr-zone"),
    pytest.param(*mutate("node", ("spec", "podCIDRs"), ["10.244.9.1/24"]), id="pod-cidr-host-bits"),
    pytest.param(*mutate("node", ("spec", "podCIDRs"), ["10.244.9.0/24", "10.244.10.0/24"]), id="pod-cidrs-one-family"),
    pytest.param(*mutate("node", ("status", "addresses"), [{"type": "InternalIP", "address": "192.168.77.9%x"}]),
                 id="node-address-zone"),
    pytest.param(*mutate("pod", ("status", "podIPs"), [{"ip": "10.244.1.7\n"}]), id="pod-ip-newline"),
    pytest.param(*mutate("pod", ("status", "podIPs"), [{"ip": "10.244.1.7"}, {"ip": "10.244.1.8"}]),
                 id="pod-ips-one-family"),
    pytest.param(*mutate("svc", ("spec", "clusterIPs"), ["10.96.0.7", "10.96.0.8"]), id="cluster-ips-one-family"),
    pytest.param(*mutate("ns", ("metadata", "name"), "x\n"), id="namespace-name-newline"),
]


@pytest.fixture
async def dual_client():
    async with LabApiServer(bookmark_interval=0.2, service_cidr_v6="fd00:96::/112") as api:
        async with ApiClient.from_url(api.url) as c:
            yield api, c


def _stored(api, res):
    return sorted((o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in api.store.items(res.plural))


@pytest.mark.parametrize("base", list(BASES))
async def test_base_objects_are_accepted(dual_client, base):
    api, client = dual_client
    res, body = BASES[base]
    out = await client.create(res, copy.deepcopy(body))
    assert out["metadata"]["uid"]


@pytest.mark.parametrize("res, body", HOSTILE)
async def test_hostile_object_is_422_and_nothing_is_stored(dual_client, res, body):
    api, client = dual_client
    before = _stored(api, res)
    with pytest.raises(ApiError) as e:
        await client.create(res, body)
    status = e.value.status
    assert e.value.code == 422 and status["kind"] == "Status" and status["reason"] == "Invalid"
    assert status["code"] == 422 and status["status"] == "Failure"
    assert " is invalid: " in status["message"]
    cause = status["details"]["causes"][0]
    assert cause["reason"] == "FieldValueInvalid" and cause["field"]
    assert _stored(api, res) == before


@pytest.mark.parametrize("res, body", [p for p in HOSTILE if p.id.startswith(("external-ip", "label", "selector"))])
async def test_hostile_update_is_422_and_the_stored_object_is_unchanged(dual_client, res, body):
    api, client = dual_client
    good = await client.create(res, copy.deepcopy(SERVICE))
    hostile = {**copy.deepcopy(good), "spec": {**good["spec"], **body["spec"]},
               "metadata": {**good["metadata"], "labels": body["metadata"]["labels"],
                            "annotations": body["metadata"]["annotations"]}}
    with pytest.raises(ApiError) as e:
        await client.request("PUT", res.path("default", "web"), body=hostile)
    assert e.value.code == 422 and e.value.status["reason"] == "Invalid"
    assert api.store.get("services", "default", "web") == good


@pytest.mark.parametrize("address", [
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("224.0.1.1", id="global-multicast"),
])
async def test_addresses_kube_apiserver_allows_are_accepted(dual_client, address):
    """ValidateNonSpecialIP refuses only unspecified, loopback, link-local and link-local multicast."""
    api, client = dual_client
    res, body = mutate("slice", ("endpoints", 0, "addresses"), [address])
    out = await client.create(res, body)
    assert out["endpoints"][0]["addresses"] == [address]


async def test_non_canonical_cluster_ip_is_stored_canonical(dual_client):
    api, client = dual_client
    res, body = mutate("svc", ("spec", "clusterIPs"), ["10.96.0.77", "FD00:96:0::0077"])
    body["spec"]["ipFamilyPolicy"] = "RequireDualStack"
    out = await client.create(res, body)
    assert out["spec"]["clusterIPs"] == ["10.96.0.77", "fd00:96::77"]


# ---------------------------------------------------------------------------- the ClusterIP allocator


def test_every_dynamic_cluster_ip_passes_the_validator():
    alloc = ServiceAllocator(["10.96.0.0/28", "fd00:96::/124"])
    got = []
    for i in range(14):
        spec = {"ports": [{"port": 80}], "ipFamilyPolicy": "RequireDualStack"}
        alloc.allocate({"metadata": {"name": f"s{i}"}, "spec": spec}, None, [])
        got += spec["clusterIPs"]
    assert len(set(got)) == 28
    assert all(v.ip_address("clusterIP", ip) == ip for ip in got)


def test_dynamic_addresses_the_validator_refuses_are_never_handed_out():
    # ::fffe:0:0/95 holds ::ffff:0:0/96, whose addresses are IPv4-mapped; start just below it.
    alloc = IPAllocator("::fffe:0:0/95")
    alloc._pool._cursor = int(ipaddress.ip_address("::fffe:ffff:fffd"))
    got = []
    with pytest.raises(AllocationError):
        for _ in range(8):
            got.append(_take_ip(alloc, None))
    assert got == ["::fffe:ffff:fffd", "::fffe:ffff:fffe", "::fffe:ffff:ffff"]
    assert all(v.ip_address("clusterIP", ip) == ip for ip in got)


@pytest.mark.parametrize("explicit", [
    pytest.param("fd00:96::77%x", id="zone"),
    pytest.param("010.96.0.9", id="leading-zeros"),
    pytest.param("::ffff:10.96.0.9", id="ipv4-mapped"),
    pytest.param("10.96.0.9\n", id="newline"),
])
def test_explicit_cluster_ip_refused_by_the_validator_is_422_before_allocation(explicit):
    alloc = ServiceAllocator(["10.96.0.0/16", "fd00:96::/112"])
    allocated: list = []
    with pytest.raises(StatusError) as e:
        alloc.allocate({"metadata": {"name": "s"}, "spec": {"clusterIP": explicit, "ports": [{"port": 80}]}},
                       None, allocated)
    assert e.value.code == 422 and e.value.reason == "Invalid"
    assert allocated == [] and all(not a._pool.used for a in alloc.ip_allocators.values())


@pytest.mark.parametrize("cidr", [
    pytest.param("fd00::%1/112", id="zone"),
    pytest.param("10.96.0.1/16", id="host-bits"),
    pytest.param("::ffff:10.96.0.0/112", id="ipv4-mapped"),
])
def test_service_range_the_validator_refuses_is_a_configuration_error(cidr):
    with pytest.raises(ValueError):
        ServiceAllocator([cidr])


# ---------------------------------------------------------------------------- the lab's EndpointSlice controller


@pytest.mark.parametrize("pod_ip", [
    pytest.param("127.0.0.1", id="loopback"),
    pytest.param("169.254.169.254", id="link-local"),
    pytest.param("0.0.0.0", id="unspecified"),
])
async def test_controller_never_writes_an_endpoint_kube_apiserver_refuses(client, pod_ip):
    """A pod IP may be special (podIPs are not special-checked); an EndpointSlice address may not."""
    def pod(name, ip):
        return {"metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    await client.create(r.SERVICES, {"metadata": {"name": "web"},
                                     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}})
    await client.create(r.PODS, pod("special", pod_ip))
    await client.create(r.PODS, pod("normal", "10.244.1.9"))
    items, _ = await client.list(r.ENDPOINT_SLICES, namespace="default",
                                 label_selector="kubernetes.io/service-name=web")
    addresses = sorted(a for s in items for e in s["endpoints"] or () for a in e["addresses"])
    assert addresses == ["10.244.1.9"]
    assert all(r.convert(r.ENDPOINT_SLICES, s) is not None for s in items)


async def test_status_message_quotes_the_name_as_go_does(dual_client):
    """kube-apiserver formats the name with %q: a control byte in it never reaches a log line raw."""
    api, client = dual_client
    res, body = mutate("svc", ("metadata", "name"), "x\ny")
    with pytest.raises(ApiError) as e:
        await client.create(res, body)
    assert e.value.message.startswith('Service "x\\ny" is invalid: metadata.name: ')
    assert "\n" not in e.value.message


# ---------------------------------------------------------------------------- the real kubectl

KUBECTL = os.environ.get("PODNET_TEST_KUBECTL") or shutil.which("kubectl")

HOSTILE_YAML = [
    pytest.param("""\
apiVersion: v1
kind: Service
metadata: {name: meta}
spec:
  externalIPs: ["169.254.169.254"]
  ports: [{name: http, port: 80}]
""", "services", "may not be in the link-local range", id="service-external-ip-metadata"),
    pytest.param("""\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: ["127.0.0.1"]}]
ports: [{name: http, port: 80, protocol: TCP}]
""", "endpointslices", "may not be in the loopback range", id="slice-loopback"),
    pytest.param("""\
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: "evil.com\\n"}
""", "services", "not a DNS-1123 subdomain", id="external-name-newline"),
]


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed")
@pytest.mark.parametrize("manifest, plural, why", HOSTILE_YAML)
async def test_kubectl_apply_of_a_hostile_object_fails_with_the_reason(lab_api, tmp_path, manifest, plural, why):
    before = _stored(lab_api, r.BY_PLURAL[plural])
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", lab_api.url, "apply", "-f", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    out, err = await asyncio.wait_for(proc.communicate(manifest.encode()), 60)
    assert proc.returncode != 0
    assert "is invalid" in err.decode() and why in err.decode()
    assert _stored(lab_api, r.BY_PLURAL[plural]) == before
