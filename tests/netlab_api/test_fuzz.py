"""Malformed bodies never produce a 5xx or break a controller: every field of a valid object,
replaced by values of every JSON type (and injection strings), through create and patch."""

from __future__ import annotations

import copy
import logging

from podnet.kube.client import ApiError

VALUES = [None, 1, -1, 0, "", "x", "80 -j ACCEPT", [], {}, [1], {"a": 1}, True, 1.5, "a\nb", "None", "10.96.0.1"]
SERVICE = {"metadata": {"name": "s"}, "spec": {
    "type": "NodePort", "selector": {"a": "b"}, "clusterIP": "", "externalTrafficPolicy": "Local",
    "ipFamilyPolicy": "SingleStack",
    "ports": [{"name": "p", "port": 80, "targetPort": "http", "nodePort": 30001, "protocol": "TCP"}]}}
BASES = {
    "/api/v1/namespaces/default/services": SERVICE,
    "/api/v1/namespaces/default/pods": {
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"nodeName": "n", "hostname": "h", "subdomain": "s",
                 "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
    "/api/v1/nodes": {"metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": "z"}},
                      "spec": {"podCIDR": ""}, "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}]}},
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices": {
        "metadata": {"name": "e", "labels": {"kubernetes.io/service-name": "s"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["1.2.3.4"], "conditions": {"ready": True}}], "ports": [{"port": 80}]},
    "/api/v1/namespaces": {"metadata": {"name": "ns1"}},
}


def field_paths(obj, prefix=()):
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from field_paths(v, prefix + (k,))


def with_value(obj, path, value):
    out = copy.deepcopy(obj)
    cur = out
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return out


async def test_no_request_gets_a_5xx(client, caplog):
    caplog.set_level(logging.WARNING)
    # A service that selects the fuzzed pods, so the EndpointSlice controller sees every variant.
    await client.request("POST", "/api/v1/namespaces/default/services",
                         body={**SERVICE, "metadata": {"name": "sel"}, "spec": {**SERVICE["spec"], "type": "ClusterIP",
                               "ports": [{"name": "p", "port": 80, "targetPort": "http"}]}})
    codes: dict[int, int] = {}

    async def call(method, path, body, ctype="application/json"):
        try:
            await client.request(method, path, body=body, content_type=ctype)
            codes[200] = codes.get(200, 0) + 1
            return True
        except ApiError as e:
            codes[e.code] = codes.get(e.code, 0) + 1
            assert e.code < 500, (method, path, body, e.message)
            return False

    for path, base in BASES.items():
        name = base["metadata"]["name"]
        for fpath in list(field_paths(base)):
            for value in VALUES:
                body = with_value(base, fpath, value)
                if await call("POST", path, body):
                    await call("PATCH", f"{path}/{name}", body, "application/strategic-merge-patch+json")
                    await call("DELETE", f"{path}/{name}", None)
        await call("POST", path, base)
        for fpath in list(field_paths(base)):
            for value in VALUES:
                for ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    await call("PATCH", f"{path}/{name}", with_value(base, fpath, value), ctype)
    assert codes.get(200, 0) > 100 and codes.get(422, 0) > 100  # both paths were really exercised
    assert not [r for r in caplog.records if "hook" in r.getMessage() or "internal error" in r.getMessage()]
