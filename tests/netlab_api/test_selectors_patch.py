"""Pure tables: label/field selectors, merge patch, strategic merge patch, JSON patch, allocators."""

from __future__ import annotations

import pytest

from podnet.netlab.apiserver.allocators import AllocationError, CIDRAllocator, IPAllocator, PortAllocator
from podnet.netlab.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from podnet.netlab.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(
    "selector, matches",
    [
        pytest.param("", True, id="empty-matches-all"),
        pytest.param("app=web", True, id="eq"),
        pytest.param("app = web", True, id="eq-spaces"),
        pytest.param("app==db", False, id="eqeq-miss"),
        pytest.param("app!=db", True, id="neq"),
        pytest.param("missing!=x", True, id="neq-missing-label"),
        pytest.param("app in (db, web)", True, id="in"),
        pytest.param("app notin (web)", False, id="notin"),
        pytest.param("missing notin (web)", True, id="notin-missing"),
        pytest.param("tier", True, id="exists"),
        pytest.param("!tier", False, id="not-exists"),
        pytest.param("!missing", True, id="not-exists-missing"),
        pytest.param("app=web,env in (prod,stage),!canary", True, id="combined"),
        pytest.param("example.com/role", False, id="prefixed-key"),
    ],
)
def test_label_selector(selector, matches):
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param("app in (", id="unbalanced"),
        pytest.param("app in ()", id="empty-set"),
        pytest.param("a b", id="space-in-key"),
        pytest.param("app=we b", id="space-in-value"),
        pytest.param(",", id="empty-requirement"),
        pytest.param("app=web)", id="stray-paren"),
    ],
)
def test_bad_label_selector(selector):
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


POD = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    "plural, selector, matches",
    [
        pytest.param("pods", "metadata.name=p", True, id="name"),
        pytest.param("pods", "metadata.namespace!=ns", False, id="namespace-neq"),
        pytest.param("pods", "spec.nodeName==n1,status.phase=Running", True, id="pod-fields"),
        pytest.param("services", "metadata.name=p", True, id="service-name"),
    ],
)
def test_field_selector(plural, selector, matches):
    assert parse_field_selector(selector, plural).matches(POD) is matches


@pytest.mark.parametrize("plural, selector", [pytest.param("services", "spec.nodeName=n1", id="unsupported"),
                                              pytest.param("pods", "nonsense", id="no-operator")])
def test_bad_field_selector(plural, selector):
    with pytest.raises(SelectorError):
        parse_field_selector(selector, plural)


@pytest.mark.parametrize(
    "target, patch, result",
    [
        pytest.param({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}}, {"a": 1, "b": {"c": 2, "d": 3}}, id="nested-merge"),
        pytest.param({"a": 1, "b": 2}, {"a": None}, {"b": 2}, id="null-deletes"),
        pytest.param({"l": [1, 2]}, {"l": [3]}, {"l": [3]}, id="lists-replace"),
        pytest.param({"a": {"b": 1}}, {"a": 5}, {"a": 5}, id="scalar-replaces-object"),
        pytest.param({"a": 1}, {"missing": None}, {"a": 1}, id="delete-missing-is-noop"),
    ],
)
def test_merge_patch(target, patch, result):
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # pure


PORTS = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}}


@pytest.mark.parametrize(
    "target, patch, result",
    [
        pytest.param(PORTS, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}},
                     [("http", 80, 9090), ("https", 443, 8443)], id="merge-by-port"),
        pytest.param(PORTS, {"spec": {"ports": [{"port": 443, "$patch": "delete"}]}},
                     [("http", 80, 8080)], id="delete-directive"),
        pytest.param(PORTS, {"spec": {"ports": [{"name": "dns", "port": 53}]}},
                     [("http", 80, 8080), ("https", 443, 8443), ("dns", 53, None)], id="append-new-key"),
        pytest.param(PORTS, {"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                                      "ports": [{"port": 80, "targetPort": 1}]}},
                     [("https", 443, 8443), ("http", 80, 1)], id="set-element-order"),
        pytest.param(PORTS, {"spec": {"ports": [{"$patch": "replace"}, {"name": "x", "port": 1}]}},
                     [("x", 1, None)], id="replace-directive"),
    ],
)
def test_strategic_merge_patch_on_ports(target, patch, result):
    out = strategic_merge_patch(target, patch)
    assert [(p.get("name"), p["port"], p.get("targetPort")) for p in out["spec"]["ports"]] == result
    assert not any(k.startswith("$") for k in out["spec"])


def test_strategic_merge_patch_other_lists():
    pod = {"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}]}]},
           "metadata": {"finalizers": ["a"]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    out = strategic_merge_patch(pod, {
        "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 81}]}]},
        "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
    assert out["spec"]["containers"][0]["image"] == "x"
    assert [p["containerPort"] for p in out["spec"]["containers"][0]["ports"]] == [80, 81]
    assert out["metadata"]["finalizers"] == ["b"]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    slice_ = {"endpoints": [{"addresses": ["10.0.0.1"]}]}
    assert strategic_merge_patch(slice_, {"endpoints": [{"addresses": ["10.0.0.2"]}]}) == {
        "endpoints": [{"addresses": ["10.0.0.2"]}]}


def test_strategic_merge_patch_missing_merge_key():
    with pytest.raises(PatchError):
        strategic_merge_patch(PORTS, {"spec": {"ports": [{"targetPort": 1}]}})


@pytest.mark.parametrize(
    "ops, result",
    [
        pytest.param([{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3], "b": {"c": 1}}, id="append"),
        pytest.param([{"op": "remove", "path": "/b/c"}], {"a": [1, 2], "b": {}}, id="remove"),
        pytest.param([{"op": "replace", "path": "/a/0", "value": 9}], {"a": [9, 2], "b": {"c": 1}}, id="replace"),
        pytest.param([{"op": "move", "from": "/b/c", "path": "/d"}], {"a": [1, 2], "b": {}, "d": 1}, id="move"),
        pytest.param([{"op": "test", "path": "/b/c", "value": 1}, {"op": "add", "path": "/e", "value": 0}],
                     {"a": [1, 2], "b": {"c": 1}, "e": 0}, id="test-then-add"),
    ],
)
def test_json_patch(ops, result):
    assert json_patch({"a": [1, 2], "b": {"c": 1}}, ops) == result


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "remove", "path": "/nope"}], id="remove-missing"),
        pytest.param([{"op": "test", "path": "/b/c", "value": 2}], id="test-fails"),
        pytest.param([{"op": "replace", "path": "/a/5", "value": 1}], id="index-out-of-range"),
        pytest.param({"op": "add"}, id="not-a-list"),
        pytest.param([{"op": "add", "path": "no-slash", "value": 1}], id="bad-pointer"),
    ],
)
def test_bad_json_patch(ops):
    with pytest.raises(PatchError):
        json_patch({"a": [1, 2], "b": {"c": 1}}, ops)


def test_ip_allocator_static_band_and_exhaustion():
    a = IPAllocator("10.0.0.0/28")  # 14 usable, static band 16 -> starts at the top and wraps
    got = {a.allocate() for _ in range(14)}
    assert len(got) == 14 and "10.0.0.0" not in got and "10.0.0.15" not in got
    with pytest.raises(AllocationError):
        a.allocate()
    a.release("10.0.0.5")
    assert a.allocate() == "10.0.0.5"
    with pytest.raises(AllocationError):
        a.allocate("10.0.0.5")


def test_port_and_cidr_allocators():
    p = PortAllocator(30000, 30002)
    assert [p.allocate() for _ in range(3)] == [30000, 30001, 30002]
    with pytest.raises(AllocationError):
        p.allocate()
    c = CIDRAllocator("10.244.0.0/23", 24)
    assert [c.allocate(), c.allocate()] == ["10.244.0.0/24", "10.244.1.0/24"]
    with pytest.raises(AllocationError):
        c.allocate()
    assert c.reserve("10.250.0.0/24") is False  # outside: not ours
    with pytest.raises(ValueError):
        CIDRAllocator("10.244.0.0/24", 16)
