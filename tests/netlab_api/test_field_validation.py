"""?fieldValidation= on create/update/patch: Strict refuses, Warn warns and drops, Ignore drops (kube-apiserver)."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.fieldvalidation import go_format, loads_noting_duplicates, problems, prune, warning_header

SVC = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
MERGE, SMP, JSONP = ("application/merge-patch+json", "application/strategic-merge-patch+json",
                     "application/json-patch+json")


def svc(**extra_spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"any/label": "ok"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}], **extra_spec}}


def dumps(obj) -> str:
    return json.dumps(obj)


def unknown(*paths: str) -> str:
    return ", ".join(f'unknown field "{p}"' for p in paths)


CANNOT = 'Service in version "v1" cannot be handled as a Service: strict decoding error: '
DUP_BODY = ('{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},'
            '"spec":{"type":"ClusterIP","ports":[{"port":80}],"type":"NodePort"}}')
SLICE = {"metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}, "nodeNme": "n1"}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


# (method, path, fieldValidation, body text, content type) -> (status, message (substring for 2xx: None),
#  Warning headers, field paths that must be absent from the stored Service)
CASES = [
    pytest.param("POST", SVC, "Strict", dumps(svc(foo=1)), "application/json",
                 400, CANNOT + unknown("spec.foo"), [], None, id="create-strict-unknown-field"),
    pytest.param("POST", SVC, "Strict", dumps({**svc(), "extra": 1, "spec": {**svc()["spec"],
                                              "ports": [{"port": 80, "prot": "TCP"}]}}), "application/json",
                 400, CANNOT + unknown("spec.ports[0].prot", "extra"), [], None, id="create-strict-several-in-order"),
    pytest.param("POST", SVC, "Strict", DUP_BODY, "application/json",
                 400, CANNOT + 'duplicate field "spec.type"', [], None, id="create-strict-duplicate-field"),
    pytest.param("POST", SVC, "Strict", dumps({**svc(), "metadata": {"name": "web", "labelz": {}}}),
                 "application/json", 400, CANNOT + unknown("metadata.labelz"), [], None, id="create-strict-metadata"),
    pytest.param("POST", SLICES, "Strict", dumps(SLICE), "application/json", 400,
                 'EndpointSlice in version "v1" cannot be handled as a EndpointSlice: strict decoding error: '
                 + unknown("endpoints[0].nodeNme"), [], None, id="create-strict-endpointslice"),
    pytest.param("POST", SVC, "Strict", dumps(svc(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})),
                 "application/json", 201, None, [], None, id="create-strict-known-fields-pass"),
    pytest.param("POST", SVC, "Warn", dumps(svc(foo=1)), "application/json",
                 201, None, [warning_header('unknown field "spec.foo"')], ["spec", "foo"], id="create-warn"),
    pytest.param("POST", SVC, None, dumps(svc(foo=1)), "application/json",
                 201, None, [warning_header('unknown field "spec.foo"')], ["spec", "foo"], id="create-default-is-warn"),
    pytest.param("POST", SVC, "", DUP_BODY, "application/json", 201, None,
                 [warning_header('duplicate field "spec.type"')], None, id="create-empty-is-warn-duplicate"),
    pytest.param("POST", SVC, "Ignore", dumps(svc(foo=1)), "application/json",
                 201, None, [], ["spec", "foo"], id="create-ignore-drops-silently"),
    pytest.param("POST", SVC, "strict", dumps(svc()), "application/json", 422,
                 'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": '
                 'supported values: "", "Ignore", "Strict", "Warn"', [], None, id="create-bad-directive"),
    pytest.param("PUT", SVC + "/web", "Strict", dumps(svc(foo=1)), "application/json",
                 400, CANNOT + unknown("spec.foo"), [], None, id="update-strict"),
    pytest.param("PUT", SVC + "/web", "Warn", dumps(svc(foo=1)), "application/json",
                 200, None, [warning_header('unknown field "spec.foo"')], ["spec", "foo"], id="update-warn"),
    pytest.param("PUT", SVC + "/web/status", "Strict",
                 dumps({**svc(), "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipp": "x"}]}}}),
                 "application/json", 400, CANNOT + unknown("status.loadBalancer.ingress[0].ipp"), [], None,
                 id="update-status-strict"),
    pytest.param("PUT", SVC + "/web", "bogus", dumps(svc()), "application/json", 422,
                 'UpdateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "bogus"', [], None,
                 id="update-bad-directive"),
    pytest.param("PATCH", SVC + "/web", "Strict", dumps({"spec": {"foo": 1}}), MERGE,
                 400, "strict decoding error: " + unknown("spec.foo"), [], None, id="merge-patch-strict"),
    pytest.param("PATCH", SVC + "/web", "Strict", dumps([{"op": "add", "path": "/spec/foo", "value": 1}]), JSONP,
                 400, "strict decoding error: " + unknown("spec.foo"), [], None, id="json-patch-strict"),
    pytest.param("PATCH", SVC + "/web", "Strict", dumps({"spec": {"foo": 1}}), SMP, 422,
                 ' "" is invalid: patch: Invalid value: "map[spec:map[foo:1]]": strict decoding error: '
                 + unknown("spec.foo"), [], None, id="strategic-merge-patch-strict-is-422"),
    pytest.param("PATCH", SVC + "/web", "Strict", '{"spec":{"type":"NodePort","type":"ClusterIP"}}', MERGE,
                 400, 'strict decoding error: duplicate field "spec.type"', [], None, id="merge-patch-duplicate"),
    pytest.param("PATCH", SVC + "/web", None, dumps({"spec": {"foo": 1}}), MERGE,
                 200, None, [warning_header('unknown field "spec.foo"')], ["spec", "foo"], id="merge-patch-default-warn"),
    pytest.param("PATCH", SVC + "/web", "Ignore", dumps({"spec": {"foo": 1}}), SMP,
                 200, None, [], ["spec", "foo"], id="strategic-merge-patch-ignore"),
    pytest.param("PATCH", SVC + "/web", "Maybe", dumps({}), MERGE, 422,
                 'PatchOptions.meta.k8s.io "" is invalid: fieldValidation', [], None, id="patch-bad-directive"),
]


@pytest.mark.parametrize("method, path, how, body, ctype, status, message, warnings, absent", CASES)
async def test_field_validation(lab_api, client, method, path, how, body, ctype, status, message, warnings, absent):
    if method != "POST":
        await client.create(r.SERVICES, svc(), namespace="default")
    before = None if method == "POST" else await client.get(r.SERVICES, "web", namespace="default")
    params = {} if how is None else {"fieldValidation": how}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, lab_api.url + path, params=params, data=body.encode(),
                             headers={"Content-Type": ctype}) as resp:
            answer = await resp.json()
            got_warnings = resp.headers.getall("Warning", [])
    assert resp.status == status, answer
    assert got_warnings == warnings
    if status >= 300:
        assert answer["kind"] == "Status" and answer["code"] == status
        assert answer["reason"] == ("Invalid" if status == 422 else "BadRequest")
        assert answer["message"].startswith(message) if status == 422 else answer["message"] == message
        if before is not None:  # a refused write changes nothing
            assert await client.get(r.SERVICES, "web", namespace="default") == before
        return
    if absent is not None:
        stored = await client.get(r.SERVICES, "web", namespace="default")
        parent = stored
        for p in absent[:-1]:
            parent = parent[p]
        assert absent[-1] not in parent and parent is not None
        assert stored["metadata"]["labels"] == {"any/label": "ok"}  # free-form maps are never checked


async def test_podnet_client_logs_each_distinct_warning_once(lab_api, caplog):
    caplog.set_level(logging.WARNING, logger="podnet.kube.client")
    async with ApiClient.from_url(lab_api.url) as c:
        for name in ("a", "b"):
            await c.create(r.SERVICES, {**svc(foo=1), "metadata": {"name": name}}, namespace="default")
        assert c.warnings_seen == {warning_header('unknown field "spec.foo"')}
    assert sum("API server warning" in rec.getMessage() for rec in caplog.records) == 1


@pytest.mark.parametrize(
    "plural, obj, dups, expect",
    [
        pytest.param("services", svc(), [], [], id="clean"),
        pytest.param("services", {"spec": {"ports": [{"port": 1}, {"port": 2, "x": 1}]}}, [],
                     [unknown("spec.ports[1].x")], id="list-index"),
        pytest.param("pods", {"spec": {"containers": [{"name": "c", "readinessProbe": {"httpGet": {"anything": 1}},
                                                       "imagePullPolicy": "Never", "imagee": "x"}]}}, [],
                     [unknown("spec.containers[0].imagee")], id="pod-opaque-subtrees-not-checked"),
        pytest.param("nodes", {"status": {"nodeInfo": {"kubeletVersion": "v1", "kernel": "x"},
                                          "capacity": {"cpu": "2"}}}, [],
                     [unknown("status.nodeInfo.kernel")], id="node-status"),
        pytest.param("namespaces", {"spec": {"finalizers": []}, "status": {"phase": "Active"}}, ["spec.x"],
                     ['duplicate field "spec.x"'], id="duplicates-first"),
        pytest.param("services", {"spec": "not-an-object"}, [], [], id="wrong-types-left-to-validation"),
    ],
)
def test_problems(plural, obj, dups, expect):
    assert problems(plural, obj, dups) == expect


def test_prune_never_modifies_its_argument():
    obj = {"spec": {"ports": [{"port": 1, "x": 1}], "y": 2}, "metadata": {"name": "a", "labels": {"k": "v"}}}
    snapshot = json.loads(json.dumps(obj))
    assert prune("services", obj) == {"spec": {"ports": [{"port": 1}]}, "metadata": {"name": "a", "labels": {"k": "v"}}}
    assert obj == snapshot


@pytest.mark.parametrize(
    "raw, dups",
    [
        pytest.param('{"a":1,"a":2}', ["a"], id="top"),
        pytest.param('{"s":{"p":[{"x":1},{"x":1,"x":2}]}}', ["s.p[1].x"], id="nested-list"),
        pytest.param('{"a":{"b":1},"c":{"b":2}}', [], id="same-key-different-objects"),
    ],
)
def test_loads_noting_duplicates(raw, dups):
    assert loads_noting_duplicates(raw)[1] == dups


@pytest.mark.parametrize(
    "value, text",
    [
        pytest.param({"spec": {"foo": 1, "bar": [1.5, True, None, "s"]}}, "map[spec:map[bar:[1.5 true <nil> s] foo:1]]",
                     id="nested"),
        pytest.param([], "[]", id="empty-list"),
    ],
)
def test_go_format(value, text):
    assert go_format(value) == text


def _lab_objects():
    from podnet.netlab.lab import manifests
    from podnet.netlab.node.kubelet import node_object

    return [
        pytest.param("pods", manifests.pod("p", "n1", {"app": "x"}, hostname="h", subdomain="s",
                                           readiness={"tcpSocket": {"port": 80}, "periodSeconds": 1}), id="lab-pod"),
        pytest.param("pods", manifests.dns_pod("n1", ["podnet-dns"]), id="lab-dns-pod"),
        pytest.param("services", manifests.service("s", {"app": "x"}, [("http", "TCP", 80, 8080)], type="NodePort",
                                                   external_traffic_policy="Local", session_affinity="ClientIP",
                                                   publish_not_ready=True, external_ips=["192.0.2.1"]),
                     id="lab-service"),
        pytest.param("services", manifests.dns_service("10.96.0.10"), id="lab-dns-service"),
        pytest.param("nodes", node_object("n1", "192.168.77.2"), id="lab-node"),
    ]


@pytest.mark.parametrize("plural, obj", _lab_objects())
def test_lab_objects_pass_strict(plural, obj):
    """What the lab itself writes must survive the default (Warn) directive untouched."""
    assert problems(plural, obj) == [] and prune(plural, obj) == obj
