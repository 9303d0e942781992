"""The ServiceAccount controller (``default`` in every namespace, ``kube-root-ca.crt``) and the ServiceAccount
admission plugin (serviceAccountName default, the ``kube-api-access-*`` projected volume)."""

from __future__ import annotations

import copy
import json

import aiohttp
import pytest

from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.serviceaccounts import SA_MOUNT_PATH, admit_pod, token_volume

CA = "-----BEGIN CERTIFICATE-----\nMIIBlab\n-----END CERTIFICATE-----\n"
NS = "/api/v1/namespaces"


async def call(api, method, path, body=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers={"Content-Type": "application/json"},
                             data=json.dumps(body) if body is not None else None) as resp:
            return resp.status, await resp.json(content_type=None)


def pod(**spec) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


MOUNT = {"name": "kube-api-access-abcde", "readOnly": True, "mountPath": SA_MOUNT_PATH}
SA = {"metadata": {"name": "default"}}


@pytest.mark.parametrize("spec, sa, want_sa, want_volume", [
    pytest.param({}, SA, "default", True, id="defaults-to-default"),
    pytest.param({"serviceAccountName": "app"}, {"metadata": {"name": "app"}}, "app", True, id="named"),
    pytest.param({"serviceAccount": "old"}, {"metadata": {"name": "old"}}, "old", True, id="deprecated-alias"),
    pytest.param({"automountServiceAccountToken": False}, SA, "default", False, id="pod-opts-out"),
    pytest.param({}, {"automountServiceAccountToken": False}, "default", False, id="sa-opts-out"),
    pytest.param({"automountServiceAccountToken": True}, {"automountServiceAccountToken": False}, "default", True,
                 id="pod-overrides-sa"),
    pytest.param({"volumes": [{"name": "kube-api-access-own", "emptyDir": {}}]}, SA, "default", False,
                 id="has-one-already"),
])
def test_admit_pod(spec, sa, want_sa, want_volume):
    p = pod(**spec)
    admit_pod(p, sa, add_volume=True, suffix="abcde")
    assert p["spec"]["serviceAccountName"] == p["spec"]["serviceAccount"] == want_sa
    added = [v for v in p["spec"].get("volumes") or () if v["name"] == "kube-api-access-abcde"]
    assert added == ([token_volume("kube-api-access-abcde")] if want_volume else [])
    assert (MOUNT in p["spec"]["containers"][0].get("volumeMounts", [])) is want_volume


def test_admit_pod_mounts_every_container_not_already_mounting_the_path():
    own = {"name": "mine", "mountPath": SA_MOUNT_PATH + "/"}
    p = pod(initContainers=[{"name": "i", "image": "x"}],
            containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "x", "volumeMounts": [own]}])
    admit_pod(p, SA, add_volume=True, suffix="abcde")
    assert p["spec"]["initContainers"][0]["volumeMounts"] == [MOUNT]
    assert p["spec"]["containers"][0]["volumeMounts"] == [MOUNT]
    assert p["spec"]["containers"][1]["volumeMounts"] == [own]


def test_admit_pod_without_volume_only_names_the_account():
    p = pod()
    before = copy.deepcopy(p)
    admit_pod(p, SA, add_volume=False)
    before["spec"].update(serviceAccountName="default", serviceAccount="default")
    assert p == before


@pytest.mark.parametrize("spec, add_volume, want", [
    pytest.param({"serviceAccountName": "ghost"}, True,
                 'pods "p" is forbidden: error looking up service account ns/ghost: serviceaccount "ghost" not found',
                 id="named-account-missing"),
    pytest.param({}, False,
                 'pods "p" is forbidden: error looking up service account ns/default: serviceaccount "default" '
                 'not found', id="default-missing-without-token-volume"),
    pytest.param({"serviceAccount": "old"}, True,
                 'pods "p" is forbidden: error looking up service account ns/old: serviceaccount "old" not found',
                 id="deprecated-alias-missing"),
])
def test_admit_pod_refuses_a_missing_account(spec, add_volume, want):
    p = pod(**spec)
    with pytest.raises(StatusError) as e:
        admit_pod(p, None, add_volume=add_volume, suffix="abcde")
    assert (e.value.code, e.value.reason, e.value.message) == (403, "Forbidden", want)
    assert e.value.status()["details"] == {"name": "p", "kind": "pods"}


def test_refusal_names_the_generate_name_as_kube_apiserver_does():
    p = pod(serviceAccountName="ghost")
    p["metadata"]["generateName"] = "web-7d4b9c-"
    del p["metadata"]["name"]
    with pytest.raises(StatusError) as e:
        admit_pod(p, None, add_volume=True)
    assert e.value.message == ('pods "web-7d4b9c-" is forbidden: error looking up service account ns/ghost: '
                               'serviceaccount "ghost" not found')


def test_admit_pod_leaves_mirror_pods_alone():
    p = pod(serviceAccountName="ghost")
    p["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    before = copy.deepcopy(p)
    admit_pod(p, None, add_volume=True, suffix="abcde")
    assert p == before


def test_token_volume_is_upstreams_shape():
    v = token_volume("kube-api-access-x")["projected"]
    assert v["defaultMode"] == 420
    assert v["sources"][0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert v["sources"][1]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert v["sources"][2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"


async def test_every_namespace_gets_default_sa_and_root_ca():
    async with LabApiServer(root_ca=CA) as api:
        for ns in ("default", "kube-system"):
            code, sa = await call(api, "GET", f"{NS}/{ns}/serviceaccounts/default")
            assert code == 200, sa
            code, cm = await call(api, "GET", f"{NS}/{ns}/configmaps/kube-root-ca.crt")
            assert code == 200 and cm["data"] == {"ca.crt": CA}, cm
        assert (await call(api, "POST", NS, {"metadata": {"name": "team"}}))[0] == 201
        assert (await call(api, "GET", f"{NS}/team/serviceaccounts/default"))[0] == 200
        # deleted or changed: put back
        assert (await call(api, "DELETE", f"{NS}/team/serviceaccounts/default"))[0] == 200
        assert (await call(api, "GET", f"{NS}/team/serviceaccounts/default"))[0] == 200
        code, cm = await call(api, "GET", f"{NS}/team/configmaps/kube-root-ca.crt")
        cm["data"] = {"ca.crt": "tampered"}
        assert (await call(api, "PUT", f"{NS}/team/configmaps/kube-root-ca.crt", cm))[0] == 200
        assert (await call(api, "GET", f"{NS}/team/configmaps/kube-root-ca.crt"))[1]["data"] == {"ca.crt": CA}
        # a deleted namespace keeps nothing
        assert (await call(api, "DELETE", f"{NS}/team"))[0] == 200
        assert api.store.get("serviceaccounts", "team", "default") is None
        assert api.store.get("configmaps", "team", "kube-root-ca.crt") is None


async def test_pods_created_by_users_and_controllers_get_the_token_volume():
    async with LabApiServer(root_ca=CA) as api:
        code, p = await call(api, "POST", f"{NS}/default/pods",
                             {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
        assert code == 201, p
        assert p["spec"]["serviceAccountName"] == "default"
        (vol,) = [v for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
        assert p["spec"]["containers"][0]["volumeMounts"] == [
            {"name": vol["name"], "readOnly": True, "mountPath": SA_MOUNT_PATH}]
        rs = {"metadata": {"name": "rs"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
        assert (await call(api, "POST", "/apis/apps/v1/namespaces/default/replicasets", rs))[0] == 201
        (made,) = [q for q in api.store.items("pods", "default") if q["metadata"]["name"].startswith("rs-")]
        assert made["spec"]["serviceAccountName"] == "default"
        assert any(v["name"].startswith("kube-api-access-") for v in made["spec"]["volumes"])
        stored_rs = api.store.get("replicasets", "default", "rs")
        assert "volumes" not in stored_rs["spec"]["template"]["spec"]  # the template itself is untouched


async def test_without_root_ca_pods_only_get_the_account_name():
    async with LabApiServer() as api:
        assert api.store.get("configmaps", "default", "kube-root-ca.crt") is None
        code, p = await call(api, "POST", f"{NS}/default/pods",
                             {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
        assert code == 201, p
        assert p["spec"]["serviceAccountName"] == "default" and "volumes" not in p["spec"]


async def test_pod_of_a_missing_account_is_refused_and_a_controller_retries_once_it_exists():
    async with LabApiServer(root_ca=CA) as api:
        body = {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "app",
                                                   "containers": [{"name": "c", "image": "x"}]}}
        code, status = await call(api, "POST", f"{NS}/default/pods", body)
        assert code == 403, status
        assert status["message"] == ('pods "p" is forbidden: error looking up service account default/app: '
                                     'serviceaccount "app" not found')
        assert (status["reason"], status["details"]) == ("Forbidden", {"name": "p", "kind": "pods"})
        assert api.store.get("pods", "default", "p") is None
        rs = {"metadata": {"name": "rs"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "x"}]}}}}
        assert (await call(api, "POST", "/apis/apps/v1/namespaces/default/replicasets", rs))[0] == 201
        assert list(api.store.items("pods", "default")) == []
        failed = [e for e in api.store.items("events", "default") if e["reason"] == "FailedCreate"]
        assert failed and all(e["type"] == "Warning" and e["involvedObject"]["name"] == "rs" for e in failed)
        assert failed[0]["message"] == ('Error creating: pods "rs-" is forbidden: error looking up service account '
                                        'default/app: serviceaccount "app" not found')
        assert (await call(api, "POST", f"{NS}/default/serviceaccounts", {"metadata": {"name": "app"}}))[0] == 201
        made = list(api.store.items("pods", "default"))
        assert len(made) == 2 and all(q["spec"]["serviceAccountName"] == "app" for q in made)
        assert (await call(api, "POST", f"{NS}/default/pods", body))[0] == 201
