"""The official ``kubernetes`` and ``kubernetes-asyncio`` clients (and lightkube) against every kind served.

One named case per kind of :data:`podnet.netlab.apiserver.apikinds.KINDS`. Against an in-process lab API
server over HTTPS with a bearer token, each client creates a valid object, reads it, lists it, patches it
(the typed clients send a strategic merge patch, the custom-objects API a merge patch) and deletes it,
while a watch bounded by ``timeout_seconds`` sees that object's ADDED, MODIFIED (with the patched label)
and DELETED events. Every answer goes through the client's own deserialiser, which raises where a field
the API marks required is missing. The policy.networking.k8s.io kinds have no typed client: they go
through ``CustomObjectsApi``. ``kubernetes.dynamic`` does the same through discovery and adds a
server-side apply, and lightkube does the same with its typed and generic resources. Beside the
table: the typed client's strategic merge patch and the scale subresource, the media types a PATCH
takes (custom resources take no strategic merge patch), and the 410 a watch from an unknown
resourceVersion ends in.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from podnet.netlab.apiserver.apikinds import KINDS
from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab.credentials import make_pki
from podnet.netlab.node.kubelet import node_object

kc = pytest.importorskip("kubernetes.client")
kw = pytest.importorskip("kubernetes.watch")

ADMIN = "admin-token-h16-0123456789"
NS = "default"
WATCH_SECONDS = 20
LABELS = {"app": "kinds"}
TEMPLATE = {"metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}
SELECTOR = {"matchLabels": LABELS}


@dataclass(frozen=True)
class Case:
    plural: str
    api: str  # the typed API class, or "" for CustomObjectsApi
    suffix: str  # the typed method suffix: read_namespaced_<suffix>, list_<suffix>, ...
    body: dict[str, Any]

    @property
    def namespaced(self) -> bool:
        return KINDS[self.plural].namespaced

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def manifest(self) -> dict[str, Any]:
        """The object to create: the body with its apiVersion, kind and (namespaced kinds) namespace."""
        kind = KINDS[self.plural]
        group_version = kind.api_path.removeprefix("/api/").removeprefix("/apis/")
        body = {"apiVersion": group_version, "kind": kind.kind, **self.body}
        if self.namespaced:
            body["metadata"] = {**body["metadata"], "namespace": NS}
        return body


def _case(plural: str, api: str, suffix: str, name: str, **rest: Any) -> Any:
    return pytest.param(Case(plural, api, suffix, {"metadata": {"name": name}, **rest}), id=plural)


RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
SUBJECTS = [{"kind": "ServiceAccount", "name": "default", "namespace": NS}]
ANP_SPEC = {"priority": 10, "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"x": "y"}}}]}]}

CASES = [
    _case("namespaces", "CoreV1Api", "namespace", "kinds-ns"),
    _case("nodes", "CoreV1Api", "node", "kinds-node",
          **{k: v for k, v in node_object("kinds-node", "192.168.77.99").items() if k != "metadata"}),
    _case("pods", "CoreV1Api", "pod", "kinds-pod", spec={"nodeName": "n-none", **TEMPLATE["spec"]}),
    _case("services", "CoreV1Api", "service", "kinds-svc",
          spec={"selector": LABELS, "ports": [{"port": 80, "targetPort": 8080}]}),
    _case("endpoints", "CoreV1Api", "endpoints", "kinds-ep",
          subsets=[{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 8080}]}]),
    _case("configmaps", "CoreV1Api", "config_map", "kinds-cm", data={"k": "v"}),
    _case("secrets", "CoreV1Api", "secret", "kinds-secret", type="Opaque", data={"k": "dg=="}),
    _case("serviceaccounts", "CoreV1Api", "service_account", "kinds-sa"),
    _case("events", "CoreV1Api", "event", "kinds-ev",
          involvedObject={"kind": "Pod", "namespace": NS, "name": "kinds-pod"}, reason="Tested",
          message="by the official clients", type="Normal"),
    _case("deployments", "AppsV1Api", "deployment", "kinds-deploy",
          spec={"replicas": 1, "selector": SELECTOR, "template": TEMPLATE}),
    _case("replicasets", "AppsV1Api", "replica_set", "kinds-rs",
          spec={"replicas": 1, "selector": SELECTOR, "template": TEMPLATE}),
    _case("daemonsets", "AppsV1Api", "daemon_set", "kinds-ds", spec={"selector": SELECTOR, "template": TEMPLATE}),
    _case("endpointslices", "DiscoveryV1Api", "endpoint_slice", "kinds-slice", addressType="IPv4",
          endpoints=[{"addresses": ["10.244.0.9"], "conditions": {"ready": True}}],
          ports=[{"name": "", "port": 8080, "protocol": "TCP"}]),
    _case("networkpolicies", "NetworkingV1Api", "network_policy", "kinds-netpol",
          spec={"podSelector": {}, "policyTypes": ["Ingress"]}),
    _case("poddisruptionbudgets", "PolicyV1Api", "pod_disruption_budget", "kinds-pdb",
          spec={"minAvailable": 1, "selector": SELECTOR}),
    _case("clusterroles", "RbacAuthorizationV1Api", "cluster_role", "kinds-cr", rules=RULES),
    _case("clusterrolebindings", "RbacAuthorizationV1Api", "cluster_role_binding", "kinds-crb",
          roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kinds-cr"},
          subjects=SUBJECTS),
    _case("roles", "RbacAuthorizationV1Api", "role", "kinds-role", rules=RULES),
    _case("rolebindings", "RbacAuthorizationV1Api", "role_binding", "kinds-rb",
          roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kinds-role"},
          subjects=SUBJECTS),
    _case("adminnetworkpolicies", "", "", "kinds-anp", spec=ANP_SPEC),
    _case("baselineadminnetworkpolicies", "", "", "default",
          spec={k: v for k, v in ANP_SPEC.items() if k != "priority"}),
]


def test_every_served_kind_has_a_case():
    assert sorted(c.values[0].plural for c in CASES) == sorted(KINDS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_pki(d, ["127.0.0.1"])
    return d


@pytest.fixture
async def secured(pki):
    async with LabApiServer(authenticator=TokenAuthenticator({ADMIN: User("kubernetes-admin", "admin",
                                                                           ("system:masters",))}),
                            tls=(pki / "apiserver.crt", pki / "apiserver.key"), bookmark_interval=0.2) as api:
        yield api


def _configure(cfg: Any, url: str, pki) -> Any:
    cfg.host = url
    cfg.ssl_ca_cert = str(pki / "ca.crt")
    # kubernetes reads the key named "authorization", kubernetes-asyncio the one named "BearerToken".
    cfg.api_key = {"authorization": ADMIN, "BearerToken": ADMIN}
    cfg.api_key_prefix = {"authorization": "Bearer", "BearerToken": "Bearer"}
    return cfg


def _merge_patch(method: Any) -> dict[str, str]:
    """The keyword that makes ``CustomObjectsApi.patch_cluster_custom_object`` send a merge patch, where the
    client takes one: kubernetes 31 always sends a merge patch and accepts no ``_content_type``; later
    kubernetes and kubernetes-asyncio offer JSON patch first and would send the dict body as one."""
    if "_content_type" in inspect.signature(method).parameters:
        return {"_content_type": "application/merge-patch+json"}
    generated = inspect.getsource(getattr(method.__self__, method.__name__ + "_with_http_info"))
    return {"_content_type": "application/merge-patch+json"} if "'_content_type'" in generated else {}


class Verbs:
    """The calls of one case (create, read, its status where the kind has that subresource, list in its
    namespace and across all, patch, delete), bound to one client module (``kubernetes.client`` or
    ``kubernetes_asyncio.client``): typed methods, or CustomObjectsApi's cluster-scoped ones."""

    def __init__(self, client_module: Any, api_client: Any, case: Case) -> None:
        self.case = case
        kind = KINDS[case.plural]
        self.has_status = kind.has_status
        if case.api:
            api = getattr(client_module, case.api)(api_client)
            scope = "namespaced_" if case.namespaced else ""
            ns = (NS,) if case.namespaced else ()
            self.create = lambda body: getattr(api, f"create_{scope}{case.suffix}")(*ns, body)
            self.read = lambda: getattr(api, f"read_{scope}{case.suffix}")(case.name, *ns)
            self.list = getattr(api, f"list_{scope}{case.suffix}")
            self.list_args = ns
            self.patch = lambda body: getattr(api, f"patch_{scope}{case.suffix}")(case.name, *ns, body)
            self.delete = lambda: getattr(api, f"delete_{scope}{case.suffix}")(case.name, *ns)
            self.read_status = lambda: getattr(api, f"read_{scope}{case.suffix}_status")(case.name, *ns)
            self.list_everywhere = (getattr(api, f"list_{case.suffix}_for_all_namespaces") if case.namespaced
                                    else self.list)
        else:
            api = client_module.CustomObjectsApi(api_client)
            group, version = kind.api_path.split("/")[2:4]
            gvp = (group, version, case.plural)
            self.create = lambda body: api.create_cluster_custom_object(*gvp, body)
            self.read = lambda: api.get_cluster_custom_object(*gvp, case.name)
            self.list = api.list_cluster_custom_object
            self.list_args = gvp
            merge = _merge_patch(api.patch_cluster_custom_object)
            self.patch = lambda body: api.patch_cluster_custom_object(*gvp, case.name, body, **merge)
            self.delete = lambda: api.delete_cluster_custom_object(*gvp, case.name)
            self.read_status = lambda: api.get_cluster_custom_object_status(*gvp, case.name)
            self.list_everywhere = lambda: api.list_cluster_custom_object(*gvp)


def _meta(obj: Any) -> tuple[str, dict[str, str]]:
    """(name, labels) of a typed model or a custom object's dict."""
    if isinstance(obj, dict):
        m = obj["metadata"]
        return m.get("name", ""), m.get("labels") or {}  # a BOOKMARK's object has no name
    return obj.metadata.name, obj.metadata.labels or {}


def _names(listed: Any) -> set[str]:
    items = listed["items"] if isinstance(listed, dict) else listed.items
    return {_meta(i)[0] for i in items}


def _rv(listed: Any) -> str:
    return listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version


def _check_events(events: list[tuple[str, str]]) -> None:
    """ADDED first, a MODIFIED that carries the patched label, DELETED last; the controllers may add
    MODIFIED events of their own in between."""
    types = [t for t, _ in events]
    assert types[0] == "ADDED", events
    assert ("MODIFIED", "yes") in events, events
    assert types[-1] == "DELETED", events
    assert types.index("DELETED") == len(types) - 1, events


def _check_results(case: Case, created: Any, read: Any, listed: Any, patched: Any) -> None:
    assert _meta(created)[0] == case.name
    assert _meta(read)[0] == case.name
    assert case.name in _names(listed)
    assert _meta(patched)[1].get("patched") == "yes"


PATCH = {"metadata": {"labels": {"patched": "yes"}}}


@pytest.mark.parametrize("case", CASES)
async def test_kubernetes_client(secured, pki, case: Case):
    api_client = kc.ApiClient(_configure(kc.Configuration(), secured.url, pki))
    verbs = Verbs(kc, api_client, case)
    events: list[tuple[str, str]] = []
    failures: list[BaseException] = []

    def watch(rv: str) -> None:
        w = kw.Watch()
        try:
            for ev in w.stream(verbs.list, *verbs.list_args, resource_version=rv, timeout_seconds=WATCH_SECONDS,
                               field_selector=f"metadata.name={case.name}", allow_watch_bookmarks=True):
                name, labels = _meta(ev["object"])
                if name != case.name:
                    continue
                events.append((ev["type"], labels.get("patched", "")))
                if ev["type"] == "DELETED":
                    w.stop()
        except BaseException as e:  # re-raised by the test, not lost in the thread
            failures.append(e)

    def run() -> tuple[Any, ...]:
        before = verbs.list(*verbs.list_args)
        # The watch starts at the list's resourceVersion, so it sees every event after it however late it connects.
        t = threading.Thread(target=watch, args=(_rv(before),))
        t.start()
        created = verbs.create(case.manifest())
        read = verbs.read()
        if verbs.has_status:
            assert _meta(verbs.read_status())[0] == case.name
        listed = verbs.list(*verbs.list_args)
        assert case.name in _names(verbs.list_everywhere())
        patched = verbs.patch(PATCH)
        verbs.delete()
        t.join(WATCH_SECONDS + 5)
        return created, read, listed, patched

    try:
        created, read, listed, patched = await asyncio.to_thread(run)
    finally:
        api_client.close()
    if failures:
        raise failures[0]
    _check_results(case, created, read, listed, patched)
    _check_events(events)


@pytest.mark.parametrize("case", CASES)
async def test_kubernetes_asyncio_client(secured, pki, case: Case):
    ac = pytest.importorskip("kubernetes_asyncio.client")
    aw = pytest.importorskip("kubernetes_asyncio.watch")
    async with ac.ApiClient(_configure(ac.Configuration(), secured.url, pki)) as api_client:
        verbs = Verbs(ac, api_client, case)
        before = await verbs.list(*verbs.list_args)
        events: list[tuple[str, str]] = []

        async def watch() -> None:
            w = aw.Watch()
            async for ev in w.stream(verbs.list, *verbs.list_args, resource_version=_rv(before),
                                     timeout_seconds=WATCH_SECONDS, field_selector=f"metadata.name={case.name}"):
                name, labels = _meta(ev["object"])
                if name != case.name:
                    continue
                events.append((ev["type"], labels.get("patched", "")))
                if ev["type"] == "DELETED":
                    w.stop()

        task = asyncio.create_task(watch())
        created = await verbs.create(case.manifest())
        read = await verbs.read()
        if verbs.has_status:
            assert _meta(await verbs.read_status())[0] == case.name
        listed = await verbs.list(*verbs.list_args)
        assert case.name in _names(await verbs.list_everywhere())
        patched = await verbs.patch(PATCH)
        await verbs.delete()
        await asyncio.wait_for(task, WATCH_SECONDS + 5)
    _check_results(case, created, read, listed, patched)
    _check_events(events)


async def test_typed_patch_is_a_strategic_merge(secured, pki):
    """The typed client sends a dict body as a strategic merge patch: containers merge by name, so the
    patched image leaves the container's ports in place, where a merge patch would replace the list."""
    def run() -> Any:
        with kc.ApiClient(_configure(kc.Configuration(), secured.url, pki)) as api_client:
            apps = kc.AppsV1Api(api_client)
            apps.create_namespaced_deployment(NS, {"metadata": {"name": "smp"},
                                                   "spec": {"replicas": 0, "selector": SELECTOR,
                                                            "template": TEMPLATE}})
            return apps.patch_namespaced_deployment("smp", NS, {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "nginx:1.27"}]}}}})

    patched = await asyncio.to_thread(run)
    (c,) = patched.spec.template.spec.containers
    assert c.image == "nginx:1.27"
    assert [p.container_port for p in c.ports] == [80]


@pytest.mark.parametrize("suffix", [pytest.param("deployment", id="deployments"),
                                    pytest.param("replica_set", id="replicasets")])
async def test_scale_subresource(secured, pki, suffix):
    """The typed client reads the autoscaling/v1 Scale of a scalable kind and patches its replicas."""
    def run() -> tuple[Any, Any, Any]:
        with kc.ApiClient(_configure(kc.Configuration(), secured.url, pki)) as api_client:
            apps = kc.AppsV1Api(api_client)
            getattr(apps, f"create_namespaced_{suffix}")(NS, {"metadata": {"name": "scaled"}, "spec": {
                "replicas": 0, "selector": SELECTOR, "template": TEMPLATE}})
            before = getattr(apps, f"read_namespaced_{suffix}_scale")("scaled", NS)
            after = getattr(apps, f"patch_namespaced_{suffix}_scale")("scaled", NS, {"spec": {"replicas": 2}})
            return before, after, getattr(apps, f"read_namespaced_{suffix}")("scaled", NS)

    before, after, obj = await asyncio.to_thread(run)
    assert before.kind == "Scale" and before.spec.replicas == 0 and before.status.selector == "app=kinds"
    assert after.spec.replicas == 2 and obj.spec.replicas == 2


@pytest.mark.parametrize("case", CASES)
async def test_dynamic_client(secured, pki, case: Case):
    """``kubernetes.dynamic`` finds every kind through discovery, then creates, reads, lists, patches,
    applies server-side and deletes it while its watch sees the object's events."""
    from kubernetes.dynamic import DynamicClient

    body = case.manifest()
    ns = NS if case.namespaced else None
    events: list[tuple[str, str]] = []
    failures: list[BaseException] = []

    def run() -> tuple[Any, ...]:
        with kc.ApiClient(_configure(kc.Configuration(), secured.url, pki)) as api_client:
            dc = DynamicClient(api_client)
            res = dc.resources.get(api_version=body["apiVersion"], kind=body["kind"])
            assert res.namespaced == case.namespaced

            def watch(rv: str) -> None:
                try:
                    for ev in dc.watch(res, namespace=ns, field_selector=f"metadata.name={case.name}",
                                       resource_version=rv, timeout=WATCH_SECONDS):
                        if ev["object"].metadata.name == case.name:
                            events.append((ev["type"], (ev["object"].metadata.labels or {}).get("patched", "")))
                            if ev["type"] == "DELETED":
                                return
                except BaseException as e:  # re-raised by the test, not lost in the thread
                    failures.append(e)

            t = threading.Thread(target=watch, args=(res.get(namespace=ns).metadata.resourceVersion,))
            t.start()
            created = res.create(body=body, namespace=ns)
            read = res.get(name=case.name, namespace=ns)
            listed = res.get(namespace=ns)
            patch_type = {} if case.api else {"content_type": "application/merge-patch+json"}
            patched = res.patch(body=PATCH, name=case.name, namespace=ns, **patch_type)
            applied = res.server_side_apply(body={
                "apiVersion": body["apiVersion"], "kind": body["kind"],
                "metadata": {k: v for k, v in body["metadata"].items() if k != "labels"} | {
                    "labels": {"applied": "yes"}}}, field_manager="official-clients")
            res.delete(name=case.name, namespace=ns)
            t.join(WATCH_SECONDS + 5)
            return created, read, listed, patched, applied

    created, read, listed, patched, applied = await asyncio.to_thread(run)
    if failures:
        raise failures[0]
    assert created.metadata.name == read.metadata.name == case.name
    assert case.name in {i.metadata.name for i in listed.items}
    assert patched.metadata.labels["patched"] == "yes"
    assert applied.metadata.labels["applied"] == "yes" and applied.metadata.labels["patched"] == "yes"
    _check_events(events)


SMP = "application/strategic-merge-patch+json"
CR_ACCEPTS = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
BUILTIN_ACCEPTS = ("application/json-patch+json, application/merge-patch+json, "
                   "application/strategic-merge-patch+json, application/apply-patch+yaml")


@pytest.mark.parametrize("plural,ctype,code,accepts", [
    pytest.param("configmaps", SMP, 200, None, id="builtin-strategic-merge"),
    pytest.param("adminnetworkpolicies", SMP, 415, CR_ACCEPTS, id="custom-resource-strategic-merge"),
    pytest.param("adminnetworkpolicies", "application/merge-patch+json", 200, None, id="custom-resource-merge"),
    pytest.param("configmaps", "text/plain", 415, BUILTIN_ACCEPTS, id="builtin-unknown-type"),
])
async def test_patch_media_types(lab_api, plural, ctype, code, accepts):
    """Custom resources (the policy.networking.k8s.io kinds) take no strategic merge patch, as
    apiextensions-apiserver answers: 415 naming the media types that are accepted."""
    import aiohttp

    case = next(c.values[0] for c in CASES if c.values[0].plural == plural)
    kind = KINDS[plural]
    collection = lab_api.url + kind.api_path + (f"/namespaces/{NS}" if kind.namespaced else "") + "/" + plural
    async with aiohttp.ClientSession() as s:
        async with s.post(collection, json=case.manifest()) as resp:
            assert resp.status == 201, await resp.text()
        async with s.patch(f"{collection}/{case.name}", data=b'{"metadata":{"labels":{"patched":"yes"}}}',
                           headers={"Content-Type": ctype}) as resp:
            got = await resp.json()
            assert resp.status == code, got
    if accepts is None:
        assert got["metadata"]["labels"] == {"patched": "yes"}
    else:
        assert got["reason"] == "UnsupportedMediaType" and got["code"] == 415
        assert got["message"] == ("the body of the request was in an unknown format - "
                                  f"accepted media types include: {accepts}")


async def test_watch_from_an_unknown_version_is_gone(secured, pki):
    """A watch from a resourceVersion the server cannot serve ends in an ERROR event with a 410 Status,
    which both clients raise as ApiException(410), the signal that they must list again."""
    ac = pytest.importorskip("kubernetes_asyncio.client")
    aw = pytest.importorskip("kubernetes_asyncio.watch")
    from kubernetes.client.rest import ApiException

    def sync_watch() -> None:
        with kc.ApiClient(_configure(kc.Configuration(), secured.url, pki)) as api_client:
            core = kc.CoreV1Api(api_client)
            for _ in kw.Watch().stream(core.list_namespaced_config_map, NS, resource_version="999999",
                                       timeout_seconds=WATCH_SECONDS):
                pass

    with pytest.raises(ApiException) as e:
        await asyncio.to_thread(sync_watch)
    assert e.value.status == 410

    async with ac.ApiClient(_configure(ac.Configuration(), secured.url, pki)) as api_client:
        core = ac.CoreV1Api(api_client)
        with pytest.raises(ac.ApiException) as ae:
            async for _ in aw.Watch().stream(core.list_namespaced_config_map, NS, resource_version="999999",
                                             timeout_seconds=WATCH_SECONDS):
                pass
        assert ae.value.status == 410


@pytest.mark.parametrize("case", CASES)
async def test_lightkube(secured, pki, case: Case):
    """lightkube (typed models; generic resources for the policy.networking.k8s.io kinds) creates,
    reads, lists, watches, patches and deletes every kind."""
    import base64

    lk = pytest.importorskip("lightkube")
    from lightkube import codecs
    from lightkube.generic_resource import create_global_resource
    from lightkube.resources.core_v1 import Namespace
    from lightkube.types import PatchType

    kind = KINDS[case.plural]
    if not case.api:
        group, version = kind.api_path.split("/")[2:4]
        create_global_resource(group, version, kind.kind, case.plural)
    obj = codecs.from_dict(case.manifest())
    res = type(obj)
    ns = {"namespace": NS} if case.namespaced else {}
    cfg = lk.KubeConfig.from_dict({
        "clusters": [{"name": "l", "cluster": {
            "server": secured.url,
            "certificate-authority-data": base64.b64encode((pki / "ca.crt").read_bytes()).decode()}}],
        "users": [{"name": "l", "user": {"token": ADMIN}}],
        "contexts": [{"name": "l", "context": {"cluster": "l", "user": "l", "namespace": NS}}],
        "current-context": "l"})
    api = lk.AsyncClient(config=cfg)
    events: list[tuple[str, str]] = []

    async def watch(rv: str) -> None:
        async for typ, o in api.watch(res, fields={"metadata.name": case.name}, resource_version=rv,
                                      server_timeout=WATCH_SECONDS, **ns):
            if o.metadata.name == case.name:
                events.append((typ, (o.metadata.labels or {}).get("patched", "")))
                if typ == "DELETED":
                    return

    try:
        before = [o async for o in api.list(res, **ns)]
        assert case.name not in {o.metadata.name for o in before}
        # lightkube's list hides the list's resourceVersion: the watch starts from the namespace's,
        # which is older than any object created here.
        start = (await api.get(Namespace, NS)).metadata.resourceVersion
        task = asyncio.create_task(watch(start))
        created = await api.create(obj, **ns)
        read = await api.get(res, case.name, **ns)
        listed = [o.metadata.name async for o in api.list(res, **ns)]
        patch_type = PatchType.STRATEGIC if case.api else PatchType.MERGE
        patched = await api.patch(res, case.name, PATCH, patch_type=patch_type, **ns)
        await api.delete(res, case.name, **ns)
        await asyncio.wait_for(task, WATCH_SECONDS + 5)
    finally:
        await api.close()
    assert created.metadata.name == read.metadata.name == case.name
    assert case.name in listed
    assert patched.metadata.labels["patched"] == "yes"
    _check_events(events)
