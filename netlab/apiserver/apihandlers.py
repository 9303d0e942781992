"""HTTP handlers of the lab API server: kube-apiserver's REST wire protocol.

Every answer is JSON: objects, lists (``<Kind>List`` with
metadata.resourceVersion and, when paged with ``limit``, ``continue``),
or a Kubernetes ``Status`` for errors (400/404/405/409/410/415/422, and 500
for a bug — logged, never a traceback on the wire). Watches are
newline-delimited JSON events (see :mod:`podnet.netlab.apiserver.apiwatch`).
With an authenticator (:mod:`podnet.netlab.apiserver.authn`) every request but the
public-info paths needs a valid bearer token, else 401; with an authorizer as well
(:mod:`podnet.netlab.apiserver.authz`, :mod:`podnet.netlab.apiserver.nodeauthz`) every such request
must then be authorised, else 403, and every write admitted (:mod:`podnet.netlab.apiserver.admission`);
allowed requests are recorded for ``GET /debug/podnet/rbac-usage`` (:mod:`podnet.netlab.apiserver.rbacusage`).
``serviceaccounts/NAME/token`` is the TokenRequest API (:mod:`podnet.netlab.apiserver.tokens`);
``application/apply-patch+yaml`` PATCHes are server-side apply (:mod:`podnet.netlab.apiserver.apply`),
and other writes record their field manager in ``managedFields``; ``/openapi/v3`` comes from
:mod:`podnet.netlab.apiserver.openapi`.
``pods/NAME/log`` answers text/plain from the lab kubelet's log files
(:mod:`podnet.netlab.apiserver.podlogs`); exec runs the command in the container over websocket
(:mod:`podnet.netlab.apiserver.podexec`), portforward tunnels SPDY in a websocket into the pod's network
namespace (:mod:`podnet.netlab.apiserver.portforward`); attach (and exec and portforward on a server without
lab kubelets) answers a Status naming the pod's network namespace and the command to use instead
(:mod:`podnet.netlab.apiserver.streaming`).

Deployments and ReplicaSets serve the ``scale`` subresource (:mod:`podnet.netlab.apiserver.scale`);
deleting a Deployment, ReplicaSet or DaemonSet with ``propagationPolicy: Orphan`` releases its
dependents first (:func:`podnet.netlab.apiserver.appcontrollers.orphan_dependents`).

Requests asking for ``as=Table`` (kubectl get) get ``meta.k8s.io/v1`` Tables
(:mod:`podnet.netlab.apiserver.tables`) for lists, single objects and watch events.

Writes honour ``?fieldValidation=Strict|Warn|Ignore`` (default Warn) for
unknown and repeated fields (:mod:`podnet.netlab.apiserver.fieldvalidation`): Strict
refuses them, Warn drops unknown fields and answers ``Warning`` headers,
Ignore drops them silently.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import random
import time
from typing import Any, Callable

from aiohttp import web

from podnet.netlab.apiserver import accessreview, apikinds, authz, fieldvalidation, openapi, rbacusage, scale
from podnet.netlab.apiserver.admission import AdmissionRequest
from podnet.netlab.apiserver.apikinds import BY_API_PATH, Kind
from podnet.netlab.apiserver.apistore import StatusError, Store, Watcher
from podnet.netlab.apiserver.appcontrollers import orphan_dependents
from podnet.netlab.apiserver.workloads import WORKLOAD_PLURALS
from podnet.netlab.apiserver.apiwatch import open_watcher, stream_watch
from podnet.netlab.apiserver.apply import record_update, update_manager
from podnet.netlab.apiserver.authn import UNAUTHORIZED, TokenAuthenticator, User, is_public
from podnet.netlab.apiserver.kproto import ProtobufError, decode_object
from podnet.netlab.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from podnet.netlab.apiserver.podlogs import PodLogs
from podnet.netlab.apiserver.streaming import STREAMING, no_streaming
from podnet.netlab.apiserver.registry import Registry, finish_graceful_delete
from podnet.netlab.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from podnet.netlab.apiserver.tables import table, wants_table

__all__ = ["ApiHandlers"]

log = logging.getLogger("podnet.netlab.apiserver.server")

_JSON = "application/json"
DUPLICATES = web.RequestKey("podnet_duplicates", list)
"""Paths of keys repeated in the request's JSON body (for fieldValidation)."""
USER = web.RequestKey("podnet_user", object)
"""The authenticated user (:class:`User`), None without an authenticator."""
OPENAPI_V2_EMPTY_PB = b"\n\x032.0"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type=_JSON)


def status_response(e: StatusError) -> web.Response:
    return _json(e.status(), e.code)


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


class ApiHandlers:
    def __init__(self, store: Store, registry: Registry, *, bookmark_interval: float = 60.0,
                 watch_timeout: tuple[float, float] = (1800.0, 3600.0), rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.registry = registry
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self._rand = rand
        self.watchers: set[Watcher] = set()
        self.requests = 0
        self.pod_logs: PodLogs | None = None
        self.pod_exec: Any = None
        """``serve(request, pod)`` for pods/exec (:class:`.podexec.PodExec`); None: a Status naming the netns."""
        self.pod_port_forward: Any = None
        """``serve(request, pod)`` for pods/portforward (:class:`.portforward.PortForward`); None: a Status."""
        self.authenticator: TokenAuthenticator | None = None
        """None: every request is served (a server without ``--token-auth-file``)."""
        self.policy: Any = None
        """With an authenticator: the authorizer (``authorize(Attributes) -> Decision``, an
        :class:`authz.Policy` or a chain) every authenticated request is authorised against."""
        self.admission: Any = None
        """With an authenticator: ``admit(AdmissionRequest)`` for every write (:mod:`.admission`)."""
        self.token_requests: Any = None
        """``request(ns, name, body) -> TokenRequest`` for serviceaccounts/NAME/token (:mod:`.tokens`)."""
        self.apply: Any = None
        """``apply(handlers, request, kind, ns, name, sub)`` for application/apply-patch+yaml (:mod:`.apply`)."""
        self.rbac_usage: Any = None
        """With RBAC: ``record(Attributes, Decision)`` for every allowed request and ``document()`` for
        ``GET`` :data:`.rbacusage.PATH` (:mod:`.rbacusage`)."""

    # ------------------------------------------------------------------ routing

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        try:
            return await self._dispatch(request)
        except _Forbidden as e:
            body = authz.forbidden_status(e.attributes, e.reason)
            log.warning("RBAC denied: %s", body["message"])
            return _json(body, 403)
        except StatusError as e:
            return status_response(e)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            return status_response(StatusError(500, "InternalError", "an internal error occurred; see the server log"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        user: User | None = None
        if self.authenticator is not None and not is_public(path):
            user = self.authenticator.authenticate(request.headers.get("Authorization"))
            if user is None:
                return _json(UNAUTHORIZED, 401)
        request[USER] = user
        if user is not None and self.policy is not None and not _is_resource_path(path):
            self._authorize(authz.Attributes(user.name, user.groups, request.method.lower(), path=path))
        if path == rbacusage.PATH and request.method == "GET" and self.rbac_usage is not None:
            return _json(self.rbac_usage.document())
        if path == accessreview.PATH and request.method == "POST":
            return _json(accessreview.review(self.policy, user, await self._body(request)), 201)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/openapi/v2" and "protobuf" in request.headers.get("Accept", ""):
            # An OpenAPI v2 document with no definitions (protobuf: swagger="2.0"). kubectl 1.20 needs one to
            # validate and apply; it skips validation for kinds the document does not describe, and computes
            # strategic merge patches from its built-in types.
            return web.Response(body=OPENAPI_V2_EMPTY_PB,
                                content_type="application/octet-stream")
        static = self._discovery(request, path)
        if static is not None:
            if request.method != "GET":
                raise StatusError(405, "MethodNotAllowed", f"{request.method} is not allowed on {path}")
            return _json(static)
        kind, ns, name, sub = self._parse(path)
        m = request.method
        if user is not None and self.policy is not None:
            self._authorize(self._resource_attributes(request, user, kind, ns, name, sub))
        if name is None:
            if m == "GET":
                if _truthy(request.query.get("watch")):
                    return await self.watch(request, kind, ns)
                return self.list(request, kind, ns)
            if m == "POST":
                return await self.create(request, kind, ns)
            if m == "DELETE":
                return await self.delete_collection(request, kind, ns)
        else:
            if sub == "log" and kind.plural == "pods" and self.pod_logs is not None:
                if m != "GET":
                    raise StatusError(405, "MethodNotAllowed", f"{m} is not allowed on {path}")
                return await self.pod_logs.serve(request, self._get(kind, ns, name))
            if sub == "token" and kind.plural == "serviceaccounts" and self.token_requests is not None:
                if m != "POST":
                    raise StatusError(405, "MethodNotAllowed", f"{m} is not allowed on {path}")
                return await self.token_request(request, ns or "", name)
            if sub in STREAMING and kind.plural == "pods":
                if m == "GET" and user is not None and self.policy is not None:
                    # a websocket upgrade arrives as a GET: kube-apiserver (AuthorizePodWebsocketUpgrade-
                    # CreatePermission) also requires create, the verb of the SPDY POST
                    self._authorize(dataclasses.replace(
                        self._resource_attributes(request, user, kind, ns, name, sub), verb="create"))
                if sub == "exec" and self.pod_exec is not None:
                    return await self.pod_exec.serve(request, self._get(kind, ns, name))
                if sub == "portforward" and self.pod_port_forward is not None:
                    return await self.pod_port_forward.serve(request, self._get(kind, ns, name))
                raise no_streaming(self._get(kind, ns, name), sub, request.query.getall("command", []))
            if sub == "scale" and kind.plural in apikinds.SCALABLE:
                return await self.scale_subresource(request, kind, ns, name)
            if sub not in (None, "status"):
                raise StatusError(404, "NotFound", f"the server could not find the requested resource ({path})")
            if m == "GET":
                obj = self._get(kind, ns, name)
                if wants_table(request.headers.get("Accept", "")) and sub is None:
                    return _json(table(kind.plural, [obj], time.time(), {"resourceVersion": str(self.store.rv)}))
                return _json(obj)
            if m == "PUT":
                return await self.replace(request, kind, ns, name, sub)
            if m == "PATCH":
                return await self.patch(request, kind, ns, name, sub)
            if m == "DELETE" and sub is None:
                return await self.delete(request, kind, ns, name)
        raise StatusError(405, "MethodNotAllowed", f"{m} is not allowed on {path}")

    def _authorize(self, a: authz.Attributes) -> None:
        assert self.policy is not None
        decision = self.policy.authorize(a)
        if not decision.allowed:
            raise _Forbidden(a, decision.reason)
        if self.rbac_usage is not None:
            self.rbac_usage.record(a, decision)

    def admit(self, request: web.Request, kind: Kind, operation: str, ns: str | None, name: str, sub: str | None,
              obj: Any, old: Any) -> None:
        """Admission (NodeRestriction, RBAC escalation) of one write by the request's user."""
        user = request.get(USER)
        if self.admission is None or user is None:
            return
        group = "" if kind.api_path.startswith("/api/") else kind.api_path.split("/")[2]
        self.admission.admit(AdmissionRequest(user.name, user.groups, operation, group, kind.plural, ns or "", name,
                                              sub or "", obj, old))

    @staticmethod
    def _record_fields(request: web.Request, kind: Kind, sub: str | None, obj: Any, old: Any) -> None:
        """managedFields of a non-apply write (:func:`.apply.record_update`)."""
        manager = update_manager(request, old)
        if manager is not None and isinstance(obj, dict):
            record_update(obj, old, manager, sub=sub or "", has_status=kind.has_status)

    async def token_request(self, request: web.Request, ns: str, name: str) -> web.Response:
        body = await self._body(request)
        self.admit(request, apikinds.KINDS["serviceaccounts"], "CREATE", ns, name, "token", body, None)
        return _json(self.token_requests.request(ns, name, body), 201)

    @staticmethod
    def _resource_attributes(request: web.Request, user: User, kind: Kind, ns: str | None, name: str | None,
                             sub: str | None) -> authz.Attributes:
        """kube-apiserver's RequestInfo: the verb from the method, a list's or watch's name from a
        ``metadata.name`` field selector."""
        verb = authz.resource_verb(request.method, named=name is not None, watch=_truthy(request.query.get("watch")))
        if name is None and verb in ("list", "watch", "deletecollection"):
            for term in (request.query.get("fieldSelector") or "").split(","):
                key, sep, value = term.partition("=")
                if key.strip() == "metadata.name" and sep:
                    name = value.lstrip("=").strip()
        group = "" if kind.api_path.startswith("/api/") else kind.api_path.split("/")[2]
        return authz.Attributes(user.name, user.groups, verb, group, kind.plural, sub or "", ns or "", name or "")

    def _discovery(self, request: web.Request, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return apikinds.version_doc()
        if path == "/api":
            return apikinds.api_versions(request.host)
        if path == "/apis":
            return apikinds.api_group_list()
        if path == "/openapi/v3":
            return openapi.root()
        if path.startswith("/openapi/v3/"):
            doc = openapi.group_version(path.removeprefix("/openapi/v3"))
            if doc is None:
                raise StatusError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return doc
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.split("/")[2]
            if any(k.api_path.startswith(f"/apis/{group}/") for k in apikinds.KINDS.values()):
                return apikinds.api_group(group)
            return None
        return apikinds.resource_list(path)

    @staticmethod
    def _parse(path: str) -> tuple[Kind, str | None, str | None, str | None]:
        not_found = StatusError(404, "NotFound", f"the server could not find the requested resource ({path})")
        for api_path, kinds in BY_API_PATH.items():
            if not path.startswith(api_path + "/"):
                continue
            rest = path[len(api_path) + 1 :].split("/")
            ns = None
            if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in kinds and kinds[rest[2]].namespaced:
                ns, rest = rest[1], rest[2:]
            kind = kinds.get(rest[0])
            if kind is None or len(rest) > 3 or (ns is not None and not kind.namespaced) or not all(rest):
                raise not_found
            return kind, ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        raise not_found

    # ------------------------------------------------------------------ reads

    def _get(self, kind: Kind, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(kind.plural, ns or "", name)
        if obj is None:
            raise StatusError(404, "NotFound", f'{kind.plural} "{name}" not found', kind=kind.plural, name=name)
        return obj

    def _selectors(self, request: web.Request, kind: Kind):
        try:
            return (parse_label_selector(request.query.get("labelSelector")),
                    parse_field_selector(request.query.get("fieldSelector"), kind.plural))
        except SelectorError as e:
            raise StatusError(400, "BadRequest", f"unable to parse requirement: {e}") from None

    def list(self, request: web.Request, kind: Kind, ns: str | None) -> web.Response:
        labels, fields = self._selectors(request, kind)
        limit = _int_param(request, "limit") or 0
        rv, start = self.store.rv, None
        cont = request.query.get("continue")
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                rv, start = int(token["rv"]), tuple(token["start"])
            except (ValueError, KeyError, TypeError):
                raise StatusError(400, "BadRequest", "continue key is not valid") from None
            if not self.store.compacted_rv <= rv <= self.store.rv:
                raise StatusError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                                  "list result. You can start a new list without the continue parameter.")
        items: list[dict[str, Any]] = []
        next_token = None
        for obj in self.store.items(kind.plural, ns):
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if start is not None and key <= start:
                continue
            if not (labels.matches(meta.get("labels")) and fields.matches(obj)):
                continue
            if limit and len(items) >= limit:
                last = items[-1]["metadata"]
                next_token = base64.urlsafe_b64encode(
                    _dumps({"rv": rv, "start": [last.get("namespace", ""), last["name"]]})).decode()
                break
            items.append(obj)
        meta_out: dict[str, Any] = {"resourceVersion": str(rv)}
        if next_token:
            meta_out["continue"] = next_token
        if wants_table(request.headers.get("Accept", "")):
            return _json(table(kind.plural, items, time.time(), meta_out))
        return _json({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": meta_out, "items": items})

    # ------------------------------------------------------------------ watch

    async def watch(self, request: web.Request, kind: Kind, ns: str | None) -> web.StreamResponse:
        labels, fields = self._selectors(request, kind)
        timeout = _int_param(request, "timeoutSeconds")
        if timeout is None:
            lo, hi = self.watch_timeout
            timeout = lo + (hi - lo) * self._rand()
        bookmarks = _truthy(request.query.get("allowWatchBookmarks"))
        initial_end = kind if bookmarks and _truthy(request.query.get("sendInitialEvents")) else None
        w, gone = open_watcher(self.store, Watcher(kind.plural, ns, labels, fields),
                               request.query.get("resourceVersion", ""), initial_events_end=initial_end)
        self.watchers.add(w)
        try:
            return await stream_watch(
                request, self.store, kind, w, gone, timeout=timeout,
                bookmark_interval=self.bookmark_interval if bookmarks else None,
                as_table=wants_table(request.headers.get("Accept", "")),
            )
        finally:
            self.store.unsubscribe(w)
            self.watchers.discard(w)

    def close_watchers(self) -> None:
        for w in list(self.watchers):
            w.close()

    # ------------------------------------------------------------------ writes

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        if "protobuf" in request.headers.get("Content-Type", ""):
            try:
                return decode_object(raw)
            except ProtobufError as e:
                raise StatusError(415, "UnsupportedMediaType",
                                  f"{e}; accepted media types include: application/json, application/yaml") from None
        try:
            body, request[DUPLICATES] = fieldvalidation.loads_noting_duplicates(raw)
            return body
        except ValueError:
            ctype = request.headers.get("Content-Type", "")
            if "yaml" in ctype:
                try:
                    import yaml

                    return yaml.safe_load(raw)
                except Exception:  # noqa: BLE001
                    pass
            raise StatusError(400, "BadRequest", "the request body is not valid JSON") from None

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return bool(request.query.getall("dryRun", []))

    @staticmethod
    def _field_directive(request: web.Request, options_kind: str) -> str:
        return fieldvalidation.directive(request.query.get("fieldValidation"), options_kind)

    @staticmethod
    def _fields(request: web.Request, kind: Kind, obj: Any, how: str, verb: str, *, patch_type: str = "",
                patch: Any = None) -> tuple[Any, list[str]]:
        """(object to write, warnings) after field validation; StatusError under Strict."""
        if not isinstance(obj, dict):
            return obj, []
        return fieldvalidation.check(kind.plural, kind.kind, kind.api_version.rpartition("/")[2], obj, how,
                                     duplicates=request.get(DUPLICATES) or [], verb=verb,
                                     patch_type=patch_type, patch=patch)

    @staticmethod
    def _warn(resp: web.Response, warnings: list[str]) -> web.Response:
        for w in warnings:
            resp.headers.add("Warning", fieldvalidation.warning_header(w))
        return resp

    async def create(self, request: web.Request, kind: Kind, ns: str | None) -> web.Response:
        how = self._field_directive(request, "CreateOptions")
        body, warnings = self._fields(request, kind, await self._body(request), how, "create")
        prepared = self.registry.prepare_create(kind, body, ns)
        try:
            self.admit(request, kind, "CREATE", ns, prepared.obj["metadata"]["name"], None, prepared.obj, None)
            self._record_fields(request, kind, None, prepared.obj, None)
        except StatusError:
            self.registry.release_allocations(prepared)
            raise
        if self._dry_run(request):
            self.registry.release_allocations(prepared)
            return self._warn(_json(prepared.obj, 201), warnings)
        return self._warn(_json(self.registry.commit_create(kind, prepared), 201), warnings)

    async def replace(self, request: web.Request, kind: Kind, ns: str | None, name: str, sub: str | None) -> web.Response:
        how = self._field_directive(request, "UpdateOptions")
        old = self._get(kind, ns, name)
        body, warnings = self._fields(request, kind, await self._body(request), how, "update")
        expect = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        return self._warn(self._update(request, kind, old, body, sub, expect), warnings)

    def _update(self, request: web.Request, kind: Kind, old: dict[str, Any], body: Any, sub: str | None,
                expect: str | None) -> web.Response:
        prepared = self.registry.prepare_update(kind, old, body, subresource=sub or "")
        try:
            self.admit(request, kind, "UPDATE", old["metadata"].get("namespace"), old["metadata"]["name"], sub,
                       prepared.obj, old)
            self._record_fields(request, kind, sub, prepared.obj, old)
        except StatusError:
            self.registry.release_allocations(prepared)
            raise
        if self._dry_run(request):
            self.registry.release_allocations(prepared)
            return _json(prepared.obj)
        return _json(self.registry.commit_update(kind, old, prepared, expect))

    async def patch(self, request: web.Request, kind: Kind, ns: str | None, name: str, sub: str | None) -> web.Response:
        how = self._field_directive(request, "PatchOptions")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml" and self.apply is not None:
            return await self.apply(self, request, kind, ns, name, sub)
        old = self._get(kind, ns, name)
        body = await self._body(request)
        try:
            if ctype == "application/merge-patch+json":
                new = merge_patch(old, body)
            elif ctype == "application/strategic-merge-patch+json" and not kind.custom_resource:
                new = strategic_merge_patch(old, body)
            elif ctype == "application/json-patch+json":
                new = json_patch(old, body)
            else:
                accepted = ["application/json-patch+json", "application/merge-patch+json"]
                accepted += [] if kind.custom_resource else ["application/strategic-merge-patch+json"]
                accepted += ["application/apply-patch+yaml"] if self.apply is not None else []
                raise StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                  "accepted media types include: " + ", ".join(accepted))
        except PatchError as e:
            raise StatusError(422, "Invalid", f"the patch could not be applied: {e}") from None
        if not isinstance(new, dict):
            raise StatusError(422, "Invalid", "the patch did not produce an object")
        new, warnings = self._fields(request, kind, new, how, "patch", patch_type=ctype, patch=body)
        meta = new.get("metadata")
        new_rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        expect = new_rv if new_rv != old["metadata"].get("resourceVersion") else None
        return self._warn(self._update(request, kind, old, new, sub, expect), warnings)

    async def scale_subresource(self, request: web.Request, kind: Kind, ns: str | None, name: str) -> web.Response:
        """The ``scale`` subresource (:mod:`podnet.netlab.apiserver.scale`)."""
        old = self._get(kind, ns, name)
        m = request.method
        if m == "GET":
            return _json(scale.scale_of(old))
        body = await self._body(request)
        if m == "PUT":
            expect = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        elif m == "PATCH":
            body, expect = scale.patched_scale(old, request.headers.get("Content-Type", "").split(";")[0].strip(),
                                               body), None
        else:
            raise StatusError(405, "MethodNotAllowed", f"{m} is not allowed on {request.path}")
        prepared = self.registry.prepare_update(kind, old, scale.with_replicas(old, body))
        if self._dry_run(request):
            return _json(scale.scale_of(prepared.obj))
        return _json(scale.scale_of(self.registry.commit_update(kind, old, prepared, expect or None)))

    async def delete(self, request: web.Request, kind: Kind, ns: str | None, name: str) -> web.Response:
        grace = _int_param(request, "gracePeriodSeconds")
        body = await self._body(request) if request.can_read_body else None
        if isinstance(body, dict) and isinstance(body.get("gracePeriodSeconds"), int):
            grace = body["gracePeriodSeconds"]
        self.admit(request, kind, "DELETE", ns, name, None, None, self._get(kind, ns, name))
        if self._dry_run(request):
            return _json(self._get(kind, ns, name))
        if kind.plural in WORKLOAD_PLURALS and _orphans(request, body):
            orphan_dependents(self.store, kind.plural, self._get(kind, ns, name))
        obj, finished = self.registry.delete(kind, ns or "", name, grace)
        if not finished and grace and kind.plural == "pods" and obj["metadata"].get("deletionGracePeriodSeconds"):
            uid = obj["metadata"].get("uid", "")
            asyncio.get_running_loop().call_later(
                grace, finish_graceful_delete, self.registry, kind, ns or "", name, uid)
        return _json(obj)

    async def delete_collection(self, request: web.Request, kind: Kind, ns: str | None) -> web.Response:
        labels, fields = self._selectors(request, kind)
        gone = []
        for obj in list(self.store.items(kind.plural, ns)):
            meta = obj["metadata"]
            if labels.matches(meta.get("labels")) and fields.matches(obj):
                deleted, _ = self.registry.delete(kind, meta.get("namespace", ""), meta["name"], None)
                gone.append(deleted)
        return _json({"kind": kind.list_kind, "apiVersion": kind.api_version,
                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": gone})


class _Forbidden(Exception):
    def __init__(self, attributes: authz.Attributes, reason: str = "") -> None:
        super().__init__(attributes.verb)
        self.attributes, self.reason = attributes, reason


def _orphans(request: web.Request, body: Any) -> bool:
    """DeleteOptions asking for ``propagationPolicy: Orphan`` (or the older ``orphanDependents``)."""
    policy = request.query.get("propagationPolicy")
    if isinstance(body, dict):
        policy = body.get("propagationPolicy") or policy
        if body.get("orphanDependents") is True:
            return True
    return policy == "Orphan"


def _is_resource_path(path: str) -> bool:
    """A path naming a resource (``/api/v1/<resource>...``, ``/apis/<group>/<version>/<resource>...``)."""
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)


def _int_param(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise StatusError(400, "BadRequest", f"{name}: not an integer: {v!r}") from None
