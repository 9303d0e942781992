"""The workload controllers as pure functions (replicasets, deployments, daemonsets, workloads),
and driven over a bare Store by WorkloadControllers (no HTTP): rollouts step by step."""

from __future__ import annotations

import copy

import pytest

from podnet.netlab.apiserver.appcontrollers import WorkloadControllers
from podnet.netlab.apiserver.apistore import Store
from podnet.netlab.apiserver.daemonsets import HASH_LABEL as DS_HASH, reconcile_daemonset, should_run
from podnet.netlab.apiserver.deployments import (
    HASH_LABEL, REVISION, equal_ignore_hash, new_rs_replicas, reconcile_deployment, resolve_fenceposts,
)
from podnet.netlab.apiserver.nodematch import affinity_matches, tolerates
from podnet.netlab.apiserver.replicasets import deletion_order, reconcile_replicaset
from podnet.netlab.apiserver.scheduler import choose_node
from podnet.netlab.apiserver.workloads import (
    Adopt, Create, Delete, Release, Requeue, Update, claims, defaults, pod_available, scaled_value, selector_matches,
    template_hash,
)

NOW = 1_800_003_600.0  # 2027-01-15T09:00:00Z, an hour after the fixtures became ready
TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}


def meta(name, uid=None, **extra):
    return {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "generation": 1,
            "creationTimestamp": "2027-01-15T08:00:00Z", **extra}


def owned_by(owner_kind, owner_name):
    return [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": f"uid-{owner_name}",
             "controller": True}]


def pod(name, owner="rs", kind="ReplicaSet", *, node="n1", phase="Running", ready=True, created="2027-01-15T08:00:00Z",
        restarts=0, labels=None, ready_at="2027-01-15T08:00:00Z"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**meta(name, creationTimestamp=created), "labels": labels or {"app": "web"},
                         "ownerReferences": owned_by(kind, owner)},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": ready_at}]}}


def replicaset(name="rs", replicas=3, status=None, **spec):
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta(name),
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE, **spec},
            "status": status or {}}


# --------------------------------------------------------------------------- workloads helpers


@pytest.mark.parametrize("value, total, up, want", [
    pytest.param(5, 10, True, 5, id="int"),
    pytest.param("25%", 10, True, 3, id="percent-up"),
    pytest.param("25%", 10, False, 2, id="percent-down"),
    pytest.param("0%", 7, True, 0, id="zero-percent"),
    pytest.param("100%", 3, False, 3, id="all"),
])
def test_scaled_value(value, total, up, want):
    assert scaled_value(value, total, up) == want


@pytest.mark.parametrize("value", [pytest.param("5", id="digits-without-percent"), pytest.param("x%", id="bad-percent"),
                                   pytest.param(True, id="bool"), pytest.param(None, id="none")])
def test_scaled_value_refuses(value):
    with pytest.raises(ValueError):
        scaled_value(value, 10, True)


def test_template_hash_is_stable_and_safe():
    h = template_hash(TEMPLATE)
    assert h == template_hash(copy.deepcopy(TEMPLATE))
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    changed = copy.deepcopy(TEMPLATE)
    changed["spec"]["containers"][0]["image"] = "nginx:2"
    assert template_hash(changed) != h
    assert template_hash(TEMPLATE, 1) != h != template_hash(TEMPLATE, 0)


@pytest.mark.parametrize("selector, labels, want", [
    pytest.param({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True, id="labels"),
    pytest.param({"matchLabels": {"a": "1"}}, {"a": "2"}, False, id="labels-differ"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True,
                 id="in"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True,
                 id="notin-absent"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False, id="dne"),
    pytest.param({}, {"a": "1"}, False, id="empty-matches-nothing"),
])
def test_selector_matches(selector, labels, want):
    assert selector_matches(selector, labels) is want


@pytest.mark.parametrize("min_ready, ready_at, want", [
    pytest.param(0, "2027-01-15T08:00:00Z", True, id="no-min-ready"),
    pytest.param(10, "2027-01-15T08:00:00Z", True, id="ready-long-enough"),
    pytest.param(10 ** 9, "2027-01-15T08:00:00Z", False, id="not-yet"),
])
def test_pod_available(min_ready, ready_at, want):
    assert pod_available(pod("p", ready_at=ready_at), min_ready, NOW) is want


def test_defaults_fill_what_kube_apiserver_fills():
    d = {"spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": {}, "template": copy.deepcopy(TEMPLATE)}}
    defaults("deployments", d)
    assert d["spec"]["replicas"] == 1 and d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
    ds = {"spec": {"template": copy.deepcopy(TEMPLATE)}}
    defaults("daemonsets", ds)
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}


# --------------------------------------------------------------------------- ReplicaSet


def test_replicaset_creates_the_missing_pods_from_its_template():
    rs = replicaset(replicas=3)
    actions = reconcile_replicaset(rs, [pod("a"), pod("other", owner="someone-else")], NOW)
    creates = [a for a in actions if isinstance(a, Create)]
    assert len(creates) == 2
    p = creates[0].obj
    assert p["metadata"]["generateName"] == "rs-" and p["metadata"]["labels"] == {"app": "web"}
    assert p["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                                 "uid": "uid-rs", "controller": True, "blockOwnerDeletion": True}]
    assert p["spec"] == TEMPLATE["spec"] and creates[0].event.reason == "SuccessfulCreate"
    (status,) = [a for a in actions if isinstance(a, Update)]
    assert status.status == {"replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                             "observedGeneration": 1}


@pytest.mark.parametrize("pods, first", [
    pytest.param([pod("bound"), pod("unbound", node=None)], "unbound", id="unassigned-first"),
    pytest.param([pod("running"), pod("pending", phase="Pending", ready=False)], "pending", id="pending-first"),
    pytest.param([pod("ready"), pod("unready", ready=False)], "unready", id="not-ready-first"),
    pytest.param([pod("old-ready", ready_at="2027-01-15T07:00:00Z"), pod("new-ready", ready_at="2027-01-15T08:00:00Z")],
                 "new-ready", id="ready-for-less-time-first"),
    pytest.param([pod("calm"), pod("crashy", restarts=4)], "crashy", id="more-restarts-first"),
    pytest.param([pod("old", created="2027-01-15T07:00:00Z"), pod("young", created="2027-01-15T09:00:00Z")], "young",
                 id="newer-first"),
])
def test_scale_down_order(pods, first):
    assert deletion_order(pods)[0]["metadata"]["name"] == first
    actions = reconcile_replicaset(replicaset(replicas=1), pods, NOW)
    assert [a.name for a in actions if isinstance(a, Delete)] == [first]


def test_replicaset_ignores_inactive_pods_and_waits_for_min_ready():
    pods = [pod("done", phase="Succeeded"), pod("fresh", ready_at="2027-01-15T08:00:00Z")]
    rs = replicaset(replicas=1, minReadySeconds=10 ** 9)
    actions = reconcile_replicaset(rs, pods, NOW)
    assert not [a for a in actions if isinstance(a, (Create, Delete))]
    (status,) = [a for a in actions if isinstance(a, Update)]
    assert status.status["replicas"] == 1 and status.status["readyReplicas"] == 1
    assert "availableReplicas" not in status.status
    assert [type(a) for a in actions][-1] is Requeue


# --------------------------------------------------------------------------- Deployment


@pytest.mark.parametrize("surge, unavailable, desired, want", [
    pytest.param("25%", "25%", 4, (1, 1), id="defaults-4"),
    pytest.param("25%", "25%", 1, (1, 0), id="defaults-1-rounding"),
    pytest.param(0, 0, 3, (0, 1), id="both-zero-means-one-unavailable"),
    pytest.param("50%", "0%", 3, (2, 0), id="surge-rounds-up"),
    pytest.param(2, "34%", 10, (2, 3), id="unavailable-rounds-down"),
])
def test_resolve_fenceposts(surge, unavailable, desired, want):
    assert resolve_fenceposts(surge, unavailable, desired) == want


@pytest.mark.parametrize("desired, surge, all_replicas, new, want", [
    pytest.param(4, 1, 4, 0, 1, id="one-surge"),
    pytest.param(4, 1, 5, 1, 1, id="at-max-total"),
    pytest.param(4, 2, 3, 1, 4, id="capped-by-desired"),
    pytest.param(3, 0, 2, 0, 1, id="room-left-by-scale-down"),
])
def test_new_rs_replicas(desired, surge, all_replicas, new, want):
    assert new_rs_replicas(desired, surge, all_replicas, new) == want


def deployment(replicas=4, template=TEMPLATE, strategy=None, **spec):
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template,
                  "progressDeadlineSeconds": 600, **spec}}
    d["spec"]["strategy"] = strategy or {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    return d


def test_deployment_creates_its_replicaset():
    actions = reconcile_deployment(deployment(replicas=3), [], [], set(), "2027-01-15T08:00:00Z")
    (create,) = [a for a in actions if isinstance(a, Create)]
    rs = create.obj
    h = template_hash(TEMPLATE)
    assert rs["metadata"]["name"] == f"web-{h}" and rs["spec"]["replicas"] == 3
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", HASH_LABEL: h}}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", HASH_LABEL: h}
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert create.event.message == f"Scaled up replica set web-{h} from 0 to 3"
    status = [a.status for a in actions if isinstance(a, Update) and a.status is not None][0]
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Available": "MinimumReplicasUnavailable", "Progressing": "NewReplicaSetCreated"}


def test_deployment_name_collision_bumps_collision_count():
    taken = {f"web-{template_hash(TEMPLATE)}"}
    (update,) = reconcile_deployment(deployment(), [], [], taken, "2027-01-15T08:00:00Z")
    assert update.status == {"collisionCount": 1}


def _rs_for(d, name, replicas, available, template, revision):
    rs = replicaset(name, replicas, {"replicas": replicas, "availableReplicas": available, "observedGeneration": 1})
    rs["metadata"]["ownerReferences"] = owned_by("Deployment", d["metadata"]["name"])
    rs["metadata"]["annotations"] = {REVISION: str(revision)}
    rs["spec"]["template"] = template
    return rs


V2 = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}


def test_rolling_update_first_step_surges_then_scales_old_down():
    d = deployment(replicas=4, template=V2)
    old = _rs_for(d, "web-old", 4, 4, TEMPLATE, 1)
    (create, *_rest) = reconcile_deployment(d, [old], [], {"web-old"}, "t")
    assert isinstance(create, Create) and create.obj["spec"]["replicas"] == 1  # 4 + 25% surge = 5 in all
    assert create.obj["metadata"]["annotations"][REVISION] == "2"
    new = _rs_for(d, create.obj["metadata"]["name"], 1, 0, V2, 2)
    actions = reconcile_deployment(d, [old, new], [], {"web-old"}, "t")
    scales = [(a.name, a.spec["replicas"]) for a in actions if isinstance(a, Update) and a.spec]
    assert scales == [("web-old", 3)]  # floor of availability: 4 - 25% = 3


@pytest.mark.parametrize("old_available, new_available, want", [
    pytest.param(4, 0, [("web-old", 3)], id="healthy-old-one-at-a-time"),
    pytest.param(4, 1, [("web-old", 2)], id="new-pod-available-frees-one-more"),
    pytest.param(1, 0, [("web-old", 3)], id="unhealthy-bounded-by-new-unavailable"),
    # 2 pods available in all, under the floor of 3: only the unhealthy old pods may go
    pytest.param(1, 1, [("web-old", 2)], id="unhealthy-old-pods-go-below-the-floor"),
])
def test_rolling_update_old_scale_down(old_available, new_available, want):
    d = deployment(replicas=4, template=V2)
    old = _rs_for(d, "web-old", 4, old_available, TEMPLATE, 1)
    new = _rs_for(d, "web-new", 1, new_available, V2, 2)
    actions = reconcile_deployment(d, [old, new], [], set(), "t")
    assert [(a.name, a.spec["replicas"]) for a in actions if isinstance(a, Update) and a.spec] == want


def test_recreate_scales_old_to_zero_and_waits_for_its_pods():
    d = deployment(replicas=2, template=V2, strategy={"type": "Recreate"})
    old = _rs_for(d, "web-old", 2, 2, TEMPLATE, 1)
    actions = reconcile_deployment(d, [old], [], set(), "t")
    assert [(a.name, a.spec["replicas"]) for a in actions if isinstance(a, Update) and a.spec] == [("web-old", 0)]
    assert not [a for a in actions if isinstance(a, Create)]
    old = _rs_for(d, "web-old", 0, 0, TEMPLATE, 1)
    running = pod("old-pod", owner="web-old")
    assert not [a for a in reconcile_deployment(d, [old], [running], set(), "t") if isinstance(a, Create)]
    (create,) = [a for a in reconcile_deployment(d, [old], [], set(), "t") if isinstance(a, Create)]
    assert create.obj["spec"]["replicas"] == 2


def test_complete_deployment_reports_new_replicaset_available_and_prunes_history():
    d = deployment(replicas=2, revisionHistoryLimit=1)
    new = _rs_for(d, "web-new", 2, 2, TEMPLATE, 3)
    new["status"].update(readyReplicas=2)
    olds = [_rs_for(d, f"web-r{i}", 0, 0, {"metadata": {"labels": {"app": "web", "v": str(i)}}}, i) for i in (1, 2)]
    actions = reconcile_deployment(d, [*olds, new], [], set(), "t")
    status = [a.status for a in actions if isinstance(a, Update) and a.status is not None][0]
    assert {k: status[k] for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")} == {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    assert "unavailableReplicas" not in status
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    assert [a.name for a in actions if isinstance(a, Delete)] == ["web-r1"]  # lowest revision beyond the limit


def test_equal_ignore_hash():
    with_hash = copy.deepcopy(TEMPLATE)
    with_hash["metadata"]["labels"][HASH_LABEL] = "abc"
    assert equal_ignore_hash(with_hash, TEMPLATE) and not equal_ignore_hash(with_hash, V2)


# --------------------------------------------------------------------------- DaemonSet


@pytest.mark.parametrize("toleration, taint, want", [
    pytest.param({"operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, True, id="exists-everything"),
    pytest.param({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"},
                 True, id="equal"),
    pytest.param({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False,
                 id="value-differs"),
    pytest.param({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"},
                 False, id="effect-differs"),
])
def test_tolerates(toleration, taint, want):
    assert tolerates(toleration, taint) is want


def node(name, labels=None, taints=None, **spec):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {**({"taints": taints} if taints else {}), **spec}}


def _affinity(*terms):
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}}


@pytest.mark.parametrize("labels, pod_spec, want", [
    pytest.param({}, {}, True, id="no-affinity"),
    pytest.param({"kubernetes.io/os": "linux"},
                 _affinity({"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}),
                 True, id="in"),
    pytest.param({"kubernetes.io/os": "windows"},
                 _affinity({"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}),
                 False, id="in-mismatch"),
    pytest.param({"gpu": "2"}, _affinity({"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["1"]}]}),
                 True, id="gt"),
    pytest.param({}, _affinity({"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                               {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}),
                 True, id="terms-ored-match-fields"),
    pytest.param({}, _affinity({}), False, id="empty-term-matches-nothing"),
])
def test_affinity_matches(labels, pod_spec, want):
    assert affinity_matches(node("a", labels), pod_spec) is want


@pytest.mark.parametrize("pod_spec, want", [
    pytest.param({}, "plain", id="tainted-node-avoided"),
    pytest.param({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}, "dedicated", id="tolerated-fewer-pods"),
    pytest.param(_affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["dedicated"]}]}),
                 None, id="affinity-to-the-tainted-node-only"),
])
def test_scheduler_honours_taints_and_affinity(pod_spec, want):
    nodes = [node("dedicated", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}],
                  podCIDR="10.244.0.0/24"), node("plain", podCIDR="10.244.1.0/24")]
    assert choose_node({"spec": pod_spec}, nodes, {"plain": 1}) == want


@pytest.mark.parametrize("n, pod_spec, want", [
    pytest.param(node("a"), {}, True, id="plain"),
    pytest.param(node("a", {"role": "x"}), {"nodeSelector": {"role": "y"}}, False, id="selector-mismatch"),
    pytest.param(node("a", taints=[{"key": "dedicated", "effect": "NoSchedule"}]), {}, False, id="untolerated-taint"),
    pytest.param(node("a", taints=[{"key": "dedicated", "effect": "PreferNoSchedule"}]), {}, True, id="prefer-ignored"),
    pytest.param(node("a", taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
                      unschedulable=True), {}, True, id="unschedulable-tolerated"),
    pytest.param(node("a", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
                 {"tolerations": [{"operator": "Exists"}]}, True, id="tolerate-all"),
    pytest.param(node("a", {"kubernetes.io/os": "linux"}),
                 _affinity({"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn",
                                                  "values": ["linux"]}]}),
                 False, id="node-affinity"),
])
def test_should_run(n, pod_spec, want):
    assert should_run(n, pod_spec) is want


def daemonset(**spec):
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent"),
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE,
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}, **spec}}


def test_daemonset_one_pod_per_node_bound_directly():
    ds = daemonset()
    nodes = [node("a"), node("b"), node("c", {"x": "y"}, [{"key": "t", "effect": "NoExecute"}])]
    stray = pod("stray", "agent", "DaemonSet", node="c", labels={"app": "web", DS_HASH: template_hash(TEMPLATE)})
    gone = pod("gone", "agent", "DaemonSet", node="vanished")
    actions = reconcile_daemonset(ds, [stray, gone], nodes, NOW)
    assert sorted(a.obj["spec"]["nodeName"] for a in actions if isinstance(a, Create)) == ["a", "b"]
    assert sorted(a.name for a in actions if isinstance(a, Delete)) == ["gone", "stray"]
    create = next(a for a in actions if isinstance(a, Create))
    assert create.obj["metadata"]["labels"][DS_HASH] == template_hash(TEMPLATE)
    status = next(a.status for a in actions if isinstance(a, Update))
    counts = ("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled")
    assert tuple(status[k] for k in counts) == (2, 0, 2)


def test_daemonset_rolling_update_respects_max_unavailable():
    ds = daemonset(template=V2)
    old_hash = template_hash(TEMPLATE)
    pods = [pod(f"p{i}", "agent", "DaemonSet", node=f"n{i}", labels={"app": "web", DS_HASH: old_hash})
            for i in range(3)]
    nodes = [node(f"n{i}") for i in range(3)]
    actions = reconcile_daemonset(ds, pods, nodes, NOW)
    assert [a.name for a in actions if isinstance(a, Delete)] == ["p0"]
    pods[1]["status"]["conditions"][0]["status"] = "False"  # an unavailable old pod goes regardless
    actions = reconcile_daemonset(ds, pods, nodes, NOW)
    assert [a.name for a in actions if isinstance(a, Delete)] == ["p1"]
    status = next(a.status for a in actions if isinstance(a, Update))
    assert status["numberAvailable"] == 2 and status["numberUnavailable"] == 1
    assert "updatedNumberScheduled" not in status


# --------------------------------------------------------------------------- the driver over a Store


class World:
    """A Store with the workload controllers, plus a kubelet stand-in that binds and readies pods."""

    def __init__(self) -> None:
        self.store = Store()
        self.store.create("namespaces", {"metadata": {"name": "default"}})
        self.ctl = WorkloadControllers(self.store)
        self.store.hooks.append(self.ctl.hook)
        self.max_pods = 0
        self.store.hooks.append(self._count)

    def _count(self, ev) -> None:
        if ev.plural == "pods":
            self.max_pods = max(self.max_pods, sum(1 for p in self.store.items("pods") if not p["metadata"].get(
                "deletionTimestamp")))

    def create(self, plural, obj):
        obj = copy.deepcopy(obj)
        obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels")}
        defaults(plural, obj)
        return self.store.create(plural, obj)

    def set_template(self, name, template):
        d = self.store.get("deployments", "default", name)
        self.store.update("deployments", {**d, "spec": {**d["spec"], "template": template}})

    def ready_one(self) -> bool:
        for p in self.store.items("pods"):
            if p["status"].get("phase") != "Running":
                self.store.update("pods", {**p, "status": {"phase": "Running", "podIP": "10.244.0.9", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2027-01-15T08:00:00Z"}]}})
                return True
        return False

    def available(self) -> int:
        return sum(1 for p in self.store.items("pods") if p["status"].get("phase") == "Running")


@pytest.mark.parametrize("replicas, strategy, max_pods, min_available", [
    pytest.param(4, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, 5, 3,
                 id="rolling-25-25"),
    pytest.param(3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 3, 2,
                 id="rolling-no-surge"),
    pytest.param(3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 4, 3,
                 id="rolling-no-unavailable"),
    pytest.param(2, {"type": "Recreate"}, 2, 0, id="recreate"),
])
def test_rollout_bounds_over_a_store(replicas, strategy, max_pods, min_available):
    w = World()
    w.create("deployments", deployment(replicas=replicas, strategy=strategy))
    while w.ready_one():
        pass
    assert w.available() == replicas
    d = w.store.get("deployments", "default", "web")
    assert d["status"]["updatedReplicas"] == replicas and d["status"]["availableReplicas"] == replicas
    w.max_pods = 0
    w.set_template("web", V2)
    lowest = w.available()
    for _ in range(100):
        lowest = min(lowest, w.available())
        if not w.ready_one():
            break
    assert w.max_pods == max_pods and lowest == min_available
    pods = list(w.store.items("pods"))
    assert len(pods) == replicas and all(p["spec"]["containers"][0]["image"] == "nginx:2" for p in pods)
    d = w.store.get("deployments", "default", "web")
    assert d["metadata"]["annotations"][REVISION] == "2"
    assert {c["type"]: c["reason"] for c in d["status"]["conditions"]}["Progressing"] == "NewReplicaSetAvailable"
    rss = {r["metadata"]["annotations"][REVISION]: r["spec"]["replicas"] for r in w.store.items("replicasets")}
    assert rss == {"1": 0, "2": replicas}
    reasons = [e["reason"] for e in w.store.items("events")]
    assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"} <= set(reasons)


def test_deleting_a_deployment_collects_its_replicasets_and_pods():
    w = World()
    w.create("deployments", deployment(replicas=2))
    assert w.store.count("replicasets") == 1 and w.store.count("pods") == 2
    w.store.delete("deployments", "default", "web")
    assert w.store.count("replicasets") == 0 and w.store.count("pods") == 0


def test_daemonset_follows_nodes_over_a_store():
    w = World()
    w.store.create("nodes", node("a"))
    w.create("daemonsets", daemonset())
    assert [p["spec"]["nodeName"] for p in w.store.items("pods")] == ["a"]
    w.store.create("nodes", node("b"))
    assert sorted(p["spec"]["nodeName"] for p in w.store.items("pods")) == ["a", "b"]
    w.store.delete("nodes", "", "a")
    assert [p["spec"]["nodeName"] for p in w.store.items("pods")] == ["b"]
    while w.ready_one():
        pass
    ds = w.store.get("daemonsets", "default", "agent")
    assert ds["status"]["numberReady"] == 1 and ds["status"]["updatedNumberScheduled"] == 1


def test_resync_converges_loaded_state_and_collects_orphans():
    store = Store()
    store.create("namespaces", {"metadata": {"name": "default"}})
    d = copy.deepcopy(deployment(replicas=2))
    d["metadata"] = {"name": "web", "namespace": "default"}
    store.create("deployments", d)
    orphan = pod("orphan", owner="gone-rs")
    orphan["metadata"] = {k: v for k, v in orphan["metadata"].items() if k in ("name", "namespace", "ownerReferences")}
    store.create("pods", orphan)
    ctl = WorkloadControllers(store)
    ctl.resync()  # as at server start, before the hook is installed
    assert store.count("replicasets") == 1
    names = [p["metadata"]["name"] for p in store.items("pods")]
    assert len(names) == 2 and "orphan" not in names


def test_events_are_bounded():
    w = World()
    w.ctl.max_events = 3
    w.create("deployments", deployment(replicas=5))
    events = list(w.store.items("events"))
    assert len(events) == 3
    assert all(e["source"]["component"] in ("replicaset-controller", "deployment-controller") for e in events)


async def test_deleting_a_namespace_leaves_no_workload_behind(client):
    """Deleting the namespace deletes pods first: the ReplicaSet and DaemonSet recreate theirs until
    they are deleted in turn, and garbage collection takes those."""
    await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "shop"}})
    await client.request("POST", "/api/v1/nodes", body={"metadata": {"name": "n1"}})
    body = deployment(replicas=2)
    body["metadata"] = {"name": "web"}
    await client.request("POST", "/apis/apps/v1/namespaces/shop/deployments", body=body)
    ds = daemonset()
    ds["metadata"] = {"name": "agent"}
    await client.request("POST", "/apis/apps/v1/namespaces/shop/daemonsets", body=ds)
    await client.request("POST", "/api/v1/namespaces/shop/services", body={
        "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    assert len((await client.request("GET", "/api/v1/namespaces/shop/pods"))["items"]) == 3
    assert (await client.request("GET", "/api/v1/namespaces/shop/endpoints/web"))["kind"] == "Endpoints"
    await client.request("DELETE", "/api/v1/namespaces/shop")
    for path in ("/api/v1/pods", "/apis/apps/v1/replicasets", "/apis/apps/v1/deployments",
                 "/apis/apps/v1/daemonsets", "/api/v1/endpoints", "/api/v1/events"):
        items = (await client.request("GET", path))["items"]
        assert [i for i in items if i["metadata"]["namespace"] == "shop"] == [], path


def test_paused_deployment_scales_but_rolls_nothing_out():
    w = World()
    w.create("deployments", deployment(replicas=2))
    d = w.store.get("deployments", "default", "web")
    w.store.update("deployments", {**d, "spec": {**d["spec"], "paused": True, "replicas": 3}})
    w.set_template("web", V2)
    assert w.store.count("replicasets") == 1 and w.store.count("pods") == 3
    d = w.store.get("deployments", "default", "web")
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    w.store.update("deployments", {**d, "spec": {**d["spec"], "paused": False}})
    while w.ready_one():
        pass
    images = sorted(p["spec"]["containers"][0]["image"] for p in w.store.items("pods"))
    assert images == ["nginx:2"] * 3
    d = w.store.get("deployments", "default", "web")
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


@pytest.mark.parametrize("rolling, max_pods, min_ready_nodes", [
    pytest.param({"maxUnavailable": 1, "maxSurge": 0}, 3, 2, id="one-node-at-a-time"),
    pytest.param({"maxUnavailable": "50%", "maxSurge": 0}, 3, 1, id="percent-rounded-up"),
    pytest.param({"maxUnavailable": 0, "maxSurge": 1}, 4, 3, id="surge-one"),
    pytest.param({"maxUnavailable": 0, "maxSurge": "100%"}, 6, 3, id="surge-everywhere"),
])
def test_daemonset_rollout_bounds_over_a_store(rolling, max_pods, min_ready_nodes):
    w = World()
    for i in range(3):
        w.store.create("nodes", node(f"n{i}"))
    w.create("daemonsets", daemonset(updateStrategy={"type": "RollingUpdate", "rollingUpdate": rolling}))
    while w.ready_one():
        pass
    ds = w.store.get("daemonsets", "default", "agent")
    w.max_pods = 0
    w.store.update("daemonsets", {**ds, "spec": {**ds["spec"], "template": V2}})
    lowest = 3
    for _ in range(100):
        ready_nodes = {p["spec"]["nodeName"] for p in w.store.items("pods") if p["status"].get("phase") == "Running"}
        lowest = min(lowest, len(ready_nodes))
        if not w.ready_one():
            break
    assert (w.max_pods, lowest) == (max_pods, min_ready_nodes)
    pods = list(w.store.items("pods"))
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n0", "n1", "n2"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:2"}
    status = w.store.get("daemonsets", "default", "agent")["status"]
    assert status["updatedNumberScheduled"] == status["numberAvailable"] == 3


@pytest.mark.parametrize("replicas, want", [
    # the example of the Kubernetes documentation (Deployments, "Proportional scaling"): 10 replicas,
    # maxSurge 3, a rollout under way with 8 old and 5 new pods, scaled to 15: 3 more old, 2 more new
    pytest.param(15, [("web-old", 11), ("web-new", 7)], id="docs-example-up"),
    pytest.param(5, [("web-old", 5), ("web-new", 3)], id="down"),
    pytest.param(0, [("web-old", 0), ("web-new", 0)], id="to-zero"),
])
def test_proportional_scaling_during_a_rollout(replicas, want):
    d = deployment(replicas=replicas, template=V2, strategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}})
    old = _rs_for(d, "web-old", 8, 8, TEMPLATE, 1)
    new = _rs_for(d, "web-new", 5, 0, V2, 2)
    for rs in (old, new):
        rs["metadata"]["annotations"].update({"deployment.kubernetes.io/desired-replicas": "10",
                                              "deployment.kubernetes.io/max-replicas": "13"})
    new["metadata"]["creationTimestamp"] = "2027-01-15T09:00:00Z"
    actions = reconcile_deployment(d, [old, new], [], set(), "t")
    assert sorted((a.name, a.spec["replicas"]) for a in actions if isinstance(a, Update) and a.spec) == sorted(want)


@pytest.mark.parametrize("last_update, now, reason", [
    pytest.param("2027-01-15T08:00:00Z", "2027-01-15T08:05:00Z", "ReplicaSetUpdated", id="within-deadline"),
    pytest.param("2027-01-15T08:00:00Z", "2027-01-15T08:10:01Z", "ProgressDeadlineExceeded", id="past-deadline"),
])
def test_progress_deadline(last_update, now, reason):
    d = deployment(replicas=2)
    d["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "unavailableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                   "message": "m", "lastUpdateTime": last_update, "lastTransitionTime": last_update}]}
    rs = _rs_for(d, "web-new", 2, 0, TEMPLATE, 1)
    actions = reconcile_deployment(d, [rs], [], set(), now)
    statuses = [a.status for a in actions if isinstance(a, Update) and a.status is not None]
    conditions = statuses[0]["conditions"] if statuses else d["status"]["conditions"]
    progressing = next(c for c in conditions if c["type"] == "Progressing")
    assert progressing["reason"] == reason
    requeues = [a.after for a in actions if isinstance(a, Requeue)]
    assert requeues == ([] if reason == "ProgressDeadlineExceeded" else [301.0])


def _orphan(name, labels=None, **kw):
    p = pod(name, labels=labels, **kw)
    del p["metadata"]["ownerReferences"]
    return p


@pytest.mark.parametrize("candidate, want", [
    pytest.param(_orphan("stray"), "adopt", id="matching-orphan-adopted"),
    pytest.param(_orphan("done", phase="Succeeded"), None, id="inactive-orphan-left"),
    pytest.param(_orphan("other", labels={"app": "db"}), None, id="not-matching-left"),
    pytest.param(pod("mine", labels={"app": "debug"}), "release", id="relabelled-released"),
    pytest.param(pod("theirs", owner="other-rs"), None, id="another-controllers-pod-left"),
    pytest.param(pod("mine"), None, id="owned-and-matching-kept"),
])
def test_claims(candidate, want):
    actions = claims(replicaset(), "pods", [candidate], active_only=True)
    kinds = {Adopt: "adopt", Release: "release"}
    assert [kinds[type(a)] for a in actions] == ([want] if want else [])
    if want == "adopt":
        assert actions[0].owner["uid"] == "uid-rs" and actions[0].owner["controller"] is True


def test_relabelled_pod_is_released_and_replaced_over_a_store():
    w = World()
    w.create("replicasets", replicaset(replicas=2))
    victim = next(w.store.items("pods"))
    w.store.update("pods", {**victim, "metadata": {**victim["metadata"], "labels": {"app": "debug"}}})
    freed = w.store.get("pods", "default", victim["metadata"]["name"])
    assert "ownerReferences" not in freed["metadata"]
    owned = [p for p in w.store.items("pods") if p["metadata"].get("ownerReferences")]
    assert len(owned) == 2 and victim["metadata"]["name"] not in {p["metadata"]["name"] for p in owned}


def test_an_orphan_pod_created_later_is_adopted_and_counted():
    w = World()
    w.create("replicasets", replicaset(replicas=2))
    extra = _orphan("handmade")
    extra["metadata"] = {k: v for k, v in extra["metadata"].items() if k in ("name", "namespace", "labels")}
    w.store.create("pods", extra)
    pods = list(w.store.items("pods"))
    assert len(pods) == 2  # adopted, then one of the three deleted as surplus
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == w.store.get("replicasets", "default", "rs")[
        "metadata"]["uid"] for p in pods)
