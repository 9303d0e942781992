"""TokenRequest (serviceaccounts/NAME/token): tokens the lab API server accepts as the service account
until they expire or their bound pod goes, and kube-apiserver's refusals."""

from __future__ import annotations

import json

import aiohttp
import pytest

from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_documents
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.apiserver.tokens import ISSUER, ServiceAccountTokens

NS = "/api/v1/namespaces/default"
TOKENS = {"admin": User("kubernetes-admin", "a", ("system:masters",))}
RG = "rbac.authorization.k8s.io"


async def call(api, method, path, token, body=None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with aiohttp.ClientSession() as s:
        async with s.request(method, api.url + path, headers=headers,
                             data=json.dumps(body) if body is not None else None) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def api():
    async with LabApiServer(authenticator=TokenAuthenticator(TOKENS), policy=policy_from_documents([]),
                            controllers=False) as api:
        for path, body in [
            (f"{NS}/serviceaccounts", {"metadata": {"name": "app"}}),
            (f"{NS}/serviceaccounts", {"metadata": {"name": "other"}}),
            (f"{NS}/pods", {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "serviceAccountName": "app",
                                                                 "containers": [{"name": "c", "image": "x"}]}}),
        ]:
            code, got = await call(api, "POST", path, "admin", body)
            assert code == 201, got
        yield api


def _pod_uid(api):
    return api.store.get("pods", "default", "p")["metadata"]["uid"]


def _request(**spec):
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


async def _token(api, **spec) -> str:
    code, tr = await call(api, "POST", f"{NS}/serviceaccounts/app/token", "admin", _request(**spec))
    assert code == 201, tr
    return tr["status"]["token"]


async def test_token_request_answer(api):
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": _pod_uid(api)}
    code, tr = await call(api, "POST", f"{NS}/serviceaccounts/app/token", "admin",
                          _request(expirationSeconds=3607, boundObjectRef=ref))
    assert code == 201
    assert tr["kind"] == "TokenRequest" and tr["apiVersion"] == "authentication.k8s.io/v1"
    assert tr["metadata"]["name"] == "app" and tr["metadata"]["namespace"] == "default"
    assert tr["spec"]["expirationSeconds"] == 3607 and tr["spec"]["audiences"] == [ISSUER]
    assert tr["spec"]["boundObjectRef"] == ref
    assert set(tr["status"]) == {"token", "expirationTimestamp"}
    assert tr["status"]["token"].count(".") == 2  # a JWT


async def test_token_authenticates_as_the_service_account(api):
    token = await _token(api, boundObjectRef={"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": _pod_uid(api)})
    code, status = await call(api, "GET", f"{NS}/services", token)
    assert code == 403  # authenticated, not authorised
    assert 'User "system:serviceaccount:default:app" cannot list resource "services"' in status["message"]
    # the groups: bind a role to system:serviceaccounts:default
    await call(api, "POST", f"/apis/{RG}/v1/namespaces/default/roles", "admin",
               {"metadata": {"name": "svc"}, "rules": [{"apiGroups": [""], "resources": ["services"],
                                                         "verbs": ["list"]}]})
    await call(api, "POST", f"/apis/{RG}/v1/namespaces/default/rolebindings", "admin",
               {"metadata": {"name": "svc"}, "roleRef": {"apiGroup": RG, "kind": "Role", "name": "svc"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:default"}]})
    assert (await call(api, "GET", f"{NS}/services", token))[0] == 200


async def test_deleting_the_bound_pod_revokes_the_token(api):
    token = await _token(api, boundObjectRef={"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": _pod_uid(api)})
    assert (await call(api, "GET", "/api", token))[0] == 200
    assert (await call(api, "DELETE", f"{NS}/pods/p", "admin"))[0] == 200
    code, status = await call(api, "GET", "/api", token)
    assert code == 401 and status["reason"] == "Unauthorized"


async def test_deleting_the_service_account_revokes_the_token(api):
    token = await _token(api)
    assert (await call(api, "GET", "/api", token))[0] == 200
    await call(api, "DELETE", f"{NS}/serviceaccounts/app", "admin")
    assert (await call(api, "GET", "/api", token))[0] == 401


async def test_tampered_and_foreign_tokens_are_refused(api):
    token = await _token(api)
    head, body, sig = token.split(".")
    assert (await call(api, "GET", "/api", f"{head}.{body}.{sig[:-2]}AA"))[0] == 401
    code, tr = await call(api, "POST", f"{NS}/serviceaccounts/app/token", "admin",
                          _request(audiences=["https://vault.example"]))
    assert code == 201
    assert (await call(api, "GET", "/api", tr["status"]["token"]))[0] == 401  # not for this API server
    other = ServiceAccountTokens(api.store)  # another key
    forged = other.request("default", "app", _request())["status"]["token"]
    assert (await call(api, "GET", "/api", forged))[0] == 401


def test_token_expires():
    from podnet.netlab.apiserver.apistore import Store

    store = Store()
    store.create("serviceaccounts", {"metadata": {"name": "app", "namespace": "default"}})
    now = [1_000_000.0]
    tokens = ServiceAccountTokens(store, b"k" * 32, clock=lambda: now[0])
    tok = tokens.request("default", "app", _request(expirationSeconds=600))["status"]["token"]
    assert tokens.authenticate(f"Bearer {tok}").name == "system:serviceaccount:default:app"
    now[0] += 599
    assert tokens.authenticate(f"Bearer {tok}") is not None
    now[0] += 1
    assert tokens.authenticate(f"Bearer {tok}") is None


@pytest.mark.parametrize("sa,spec,code,reason,words", [
    pytest.param("ghost", {}, 404, "NotFound", 'serviceaccounts "ghost" not found', id="no-service-account"),
    pytest.param("app", {"expirationSeconds": 599}, 422, "Invalid",
                 'TokenRequest.authentication.k8s.io "app" is invalid: spec.expirationSeconds: Invalid value: 599: '
                 "may not specify a duration less than 10 minutes", id="too-short"),
    pytest.param("app", {"expirationSeconds": (1 << 32) + 1}, 422, "Invalid",
                 "may not specify a duration larger than 2^32 seconds", id="too-long"),
    pytest.param("app", {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "ghost"}}, 404, "NotFound",
                 'pods "ghost" not found', id="no-pod"),
    pytest.param("app", {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "x"}}, 409,
                 "Conflict", "the UID in the bound object reference (x) does not match the UID in record",
                 id="stale-uid"),
    pytest.param("other", {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}, 400, "BadRequest",
                 'cannot bind token for serviceaccount "other" to pod running with different serviceaccount name.',
                 id="pod-of-another-service-account"),
])
async def test_refusals(api, sa, spec, code, reason, words):
    got, status = await call(api, "POST", f"{NS}/serviceaccounts/{sa}/token", "admin", _request(**spec))
    assert got == code, status
    assert status["reason"] == reason
    assert words in status["message"]


async def test_other_methods_refused(api):
    assert (await call(api, "GET", f"{NS}/serviceaccounts/app/token", "admin"))[0] == 405


async def test_anonymous_gets_401(api):
    assert (await call(api, "POST", f"{NS}/serviceaccounts/app/token", None, _request()))[0] == 401


def test_signing_key_file_makes_tokens_survive_a_restart(tmp_path):
    import argparse

    from podnet.netlab.apiserver.apistore import Store
    from podnet.netlab.apiserver.server import add_arguments, server_from_args

    key = tmp_path / "sa.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    p = argparse.ArgumentParser()
    add_arguments(p)
    first = server_from_args(p.parse_args(["--service-account-signing-key-file", str(key)]))
    second = server_from_args(p.parse_args(["--service-account-signing-key-file", str(key)]))
    store = Store()
    store.create("serviceaccounts", {"metadata": {"name": "app", "namespace": "default"}})
    first.tokens.store = second.tokens.store = store
    tok = first.tokens.request("default", "app", _request())["status"]["token"]
    assert second.tokens.authenticate(f"Bearer {tok}").name == "system:serviceaccount:default:app"
    key.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        server_from_args(p.parse_args(["--service-account-signing-key-file", str(key)]))
