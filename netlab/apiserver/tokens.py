"""Service-account tokens: the TokenRequest API and the authenticator that accepts what it issues.

``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` with an authentication.k8s.io/v1
TokenRequest answers 201 with the request, its ``status.token`` and ``status.expirationTimestamp``, as
kube-apiserver's pkg/registry/core/serviceaccount/storage/token.go does:

- the ServiceAccount must exist (404 ``serviceaccounts "<name>" not found``);
- ``spec.expirationSeconds`` defaults to 3600 and must lie in [600, 2^32] (422 Invalid otherwise);
- ``spec.audiences`` defaults to the server's audiences;
- ``spec.boundObjectRef`` may name a Pod (``v1``; other kinds answer 400): the pod must exist (404),
  have the given uid when one is given (409 Conflict), and run as this service account (400).

The token is a JWT signed with HS256 (HMAC-SHA256, the Python standard library) under a key only the
API server holds (random per process unless given, as ``--service-account-signing-key-file``), with the
claims kube-apiserver puts in a bound token (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``nbf``,
``jti`` and ``kubernetes.io``: namespace, serviceaccount name/uid, pod name/uid). Upstream signs with
RS256/ES256 so others can verify against its JWKS; the lab has no token review or OIDC discovery, so a
shared-key MAC is enough and needs no new dependency.

:meth:`ServiceAccountTokens.authenticate` accepts a token whose signature, issuer, audience (one of the
server's), ``nbf`` and ``exp`` hold, whose ServiceAccount still exists with the same uid, and whose
bound Pod (if any) still exists with the same uid: deleting the pod (or the service account) revokes
the token at once. The user is ``system:serviceaccount:<ns>:<name>`` in ``system:serviceaccounts``,
``system:serviceaccounts:<ns>`` and ``system:authenticated``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any, Callable, Mapping

from podnet.netlab.apiserver.apistore import StatusError, Store, rfc3339
from podnet.netlab.apiserver.authn import User

__all__ = ["ServiceAccountTokens", "ISSUER", "MIN_EXPIRATION", "DEFAULT_EXPIRATION"]

ISSUER = "https://kubernetes.default.svc.cluster.local"
"""kubeadm's --service-account-issuer (also the default --api-audiences)."""
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _invalid(name: str, field: str, value: Any, detail: str) -> StatusError:
    msg = f"Invalid value: {json.dumps(value)}: {detail}"
    return StatusError(422, "Invalid", f'TokenRequest.authentication.k8s.io "{name}" is invalid: {field}: {msg}',
                       kind="TokenRequest", name=name, group="authentication.k8s.io",
                       causes=[{"reason": "FieldValueInvalid", "message": msg, "field": field}])


class ServiceAccountTokens:
    def __init__(self, store: Store, key: bytes | None = None, *, issuer: str = ISSUER,
                 audiences: tuple[str, ...] = (ISSUER,), clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._key = key or secrets.token_bytes(32)
        self.issuer, self.audiences, self._clock = issuer, audiences, clock

    # ------------------------------------------------------------------ signing

    def _sign(self, claims: Mapping[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"

    def _verify(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            mac = _unb64(parts[2])
            head = json.loads(_unb64(parts[0]))
            if head.get("alg") != "HS256":
                return None
            want = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(mac, want):
                return None
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, TypeError, AttributeError):
            return None
        return claims if isinstance(claims, dict) else None

    # ------------------------------------------------------------------ TokenRequest

    def request(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """The answered TokenRequest for ``body`` (StatusError for a refused one)."""
        if body is not None and not isinstance(body, Mapping):
            raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
        body = body or {}
        if body.get("kind") not in (None, "", "TokenRequest") or body.get("apiVersion") not in (
                None, "", "authentication.k8s.io/v1"):
            raise StatusError(400, "BadRequest", "the body must be an authentication.k8s.io/v1 TokenRequest")
        sa = self.store.get("serviceaccounts", namespace, name)
        if sa is None:
            raise StatusError(404, "NotFound", f'serviceaccounts "{name}" not found', kind="serviceaccounts",
                              name=name)
        spec = dict(body.get("spec") or {})
        exp = spec.get("expirationSeconds")
        exp = DEFAULT_EXPIRATION if exp is None else exp
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise _invalid(name, "spec.expirationSeconds", exp, "must be an integer")
        if exp < MIN_EXPIRATION:
            raise _invalid(name, "spec.expirationSeconds", exp, "may not specify a duration less than 10 minutes")
        if exp > MAX_EXPIRATION:
            raise _invalid(name, "spec.expirationSeconds", exp, "may not specify a duration larger than 2^32 seconds")
        auds = spec.get("audiences") or list(self.audiences)
        if not isinstance(auds, list) or not all(isinstance(a, str) and a for a in auds):
            raise _invalid(name, "spec.audiences", auds, "must be a list of non-empty strings")
        now = int(self._clock())
        k8s: dict[str, Any] = {"namespace": namespace,
                               "serviceaccount": {"name": name, "uid": sa["metadata"].get("uid", "")}}
        ref = spec.get("boundObjectRef")
        if ref:
            k8s["pod"] = self._bound_pod(namespace, name, ref)
        claims = {"aud": auds, "exp": now + exp, "iat": now, "iss": self.issuer, "jti": str(uuid.uuid4()),
                  "kubernetes.io": k8s, "nbf": now, "sub": f"system:serviceaccount:{namespace}:{name}"}
        spec.update(expirationSeconds=exp, audiences=auds)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": rfc3339(now)},
                "spec": spec,
                "status": {"token": self._sign(claims), "expirationTimestamp": rfc3339(now + exp)}}

    def _bound_pod(self, namespace: str, sa: str, ref: Any) -> dict[str, str]:
        if not isinstance(ref, Mapping) or ref.get("kind") != "Pod" or ref.get("apiVersion", "v1") != "v1":
            kind = ref.get("kind") if isinstance(ref, Mapping) else ref
            raise StatusError(400, "BadRequest", f"cannot bind token for serviceaccount {json.dumps(sa)} to object "
                                                 f"of type {kind} (the lab binds tokens to Pods only)")
        pod = self.store.get("pods", namespace, str(ref.get("name", "")))
        if pod is None:
            raise StatusError(404, "NotFound", f'pods "{ref.get("name", "")}" not found', kind="pods",
                              name=str(ref.get("name", "")))
        uid = pod["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise StatusError(409, "Conflict", f'Operation cannot be fulfilled on Pod "{ref["name"]}": the UID in '
                              f"the bound object reference ({ref['uid']}) does not match the UID in record. The "
                              f"object might have been deleted and then recreated", kind="Pod", name=ref["name"])
        spec = pod.get("spec") or {}
        if (spec.get("serviceAccountName") or spec.get("serviceAccount") or "default") != sa:
            raise StatusError(400, "BadRequest", f"cannot bind token for serviceaccount {json.dumps(sa)} to pod "
                                                 f"running with different serviceaccount name.")
        return {"name": pod["metadata"]["name"], "uid": uid}

    # ------------------------------------------------------------------ authentication

    def authenticate(self, authorization: str | None) -> User | None:
        if not authorization:
            return None
        parts = authorization.strip().split(" ", 2)
        if len(parts) < 2 or parts[0].lower() != "bearer" or parts[1].count(".") != 2:
            return None
        c = self._verify(parts[1])
        if c is None:
            return None
        now = self._clock()
        aud = c.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        k8s = c.get("kubernetes.io")
        if (c.get("iss") != self.issuer or not set(auds) & set(self.audiences) or not isinstance(k8s, dict)
                or not isinstance(c.get("exp"), int) or c["exp"] <= now
                or not isinstance(c.get("nbf"), int) or c["nbf"] > now + 60):
            return None
        ns, sa_ref, pod_ref = k8s.get("namespace"), k8s.get("serviceaccount") or {}, k8s.get("pod")
        sa = self.store.get("serviceaccounts", str(ns), str(sa_ref.get("name")))
        if sa is None or sa["metadata"].get("uid") != sa_ref.get("uid"):
            return None
        if pod_ref is not None:
            pod = self.store.get("pods", str(ns), str(pod_ref.get("name")))
            if pod is None or pod["metadata"].get("uid") != pod_ref.get("uid"):
                return None
        name = sa["metadata"]["name"]
        return User(f"system:serviceaccount:{ns}:{name}", sa["metadata"].get("uid", ""),
                    ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"))
