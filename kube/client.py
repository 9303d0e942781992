"""A small aiohttp client for the Kubernetes REST API.

One :class:`ApiClient` owns one aiohttp session (created lazily inside the
running loop) and speaks to a real kube-apiserver or to the lab API server the
same way; only :class:`~podnet.kube.kubeconfig.ClientConfig` differs. Methods
take a :class:`~podnet.kube.resources.Resource` and return raw JSON dicts:
conversion into frozen types happens in the informer, at the boundary.

Credentials come from an :class:`~podnet.kube.auth.Authenticator`: token
files are re-read periodically, exec plugins run on demand and their
credential is cached until it expires. A 401 answer refreshes the
credentials (token file re-read, exec plugin re-run) and, when that yields
different ones, the request is sent once more; a second 401 is returned to
the caller. A client certificate that changes (exec plugin) replaces the
connection pool, so no connection keeps using the old one.
``tls-server-name`` is honoured (certificate check and SNI), and each
distinct ``Warning`` header the server sends is logged once, as client-go
does.

Errors: every non-2xx answer raises :class:`ApiError` carrying the HTTP status
and the server's Status JSON (reason, message, code); transport failures raise
aiohttp/OS errors unchanged, and credentials that cannot be obtained raise
:class:`~podnet.kube.execauth.CredentialError` (all in
:data:`TRANSPORT_ERRORS`, so watchers back off and retry). Apart from the one
retry after a 401, nothing is retried here; retry policy lives in
:mod:`podnet.kube.backoff` and the watch loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

import aiohttp

from podnet.kube.auth import Authenticator, Credentials
from podnet.kube.errors import ConfigError
from podnet.kube.execauth import CredentialError
from podnet.kube.kubeconfig import ClientConfig, resolve
from podnet.kube.resources import Resource

__all__ = ["ApiClient", "ApiError", "ListPage", "list_pages", "TRANSPORT_ERRORS", "MERGE_PATCH", "STRATEGIC_MERGE_PATCH", "JSON_PATCH"]

log = logging.getLogger("podnet.kube.client")
discovery_log = logging.getLogger("podnet.kube.discovery")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, asyncio.TimeoutError,
                                                     CredentialError)
"""What a request raises when the server is unreachable, the connection breaks, or credentials are unavailable."""


class ApiError(Exception):
    """A non-2xx answer. ``status`` is the Status JSON the server sent (or a synthesized one)."""

    def __init__(self, code: int, status: Mapping[str, Any]) -> None:
        self.code = code
        self.status = dict(status)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(f"HTTP {code} {self.reason}: {self.message}".rstrip(": "))

    @classmethod
    def from_body(cls, code: int, body: bytes | str) -> "ApiError":
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        try:
            status = json.loads(text)
            if not isinstance(status, dict):
                raise ValueError
        except ValueError:
            status = {"kind": "Status", "status": "Failure", "code": code, "message": text[:500]}
        return cls(code, status)

    @property
    def is_gone(self) -> bool:
        return self.code == 410

    @property
    def is_not_found(self) -> bool:
        return self.code == 404

    @property
    def is_conflict(self) -> bool:
        return self.code == 409


def _ns(res: Resource, namespace: str | None) -> str | None:
    return namespace if res.namespaced else None


class ApiClient:
    """Async Kubernetes API client. Use as ``async with client:`` or call :meth:`close`.

    Concurrency: safe to share between tasks of one event loop (aiohttp pools
    connections); not thread-safe.
    """

    def __init__(self, config: ClientConfig, *, request_timeout: float = 30.0, user_agent: str = "podnet/0.1",
                 auth: Authenticator | None = None, environ: Mapping[str, str] | None = None) -> None:
        """``environ`` is the base environment of exec plugins (default: this process's environment)."""
        self.config = config
        self.request_timeout = request_timeout
        self.user_agent = user_agent
        self.auth = auth if auth is not None else Authenticator(config, environ=environ)
        self._closing: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._session_cert: tuple[str, str] | None = None
        self._old_sessions: list[aiohttp.ClientSession] = []
        self.warnings_seen: set[str] = set()
        """``Warning`` headers already logged (client-go logs each distinct warning once)."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_flags(
        cls,
        master: str | None = None,
        kubeconfig: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        root: str = "/",
        home: str | None = None,
        context: str | None = None,
        **kwargs: Any,
    ) -> "ApiClient":
        """--kubeconfig, --master, $KUBECONFIG or ~/.kube/config, in-cluster (see kubeconfig.resolve).

        The one way every podnet daemon finds the API: each discovery step is
        logged once here (``podnet.kube.discovery``), then the server chosen;
        nothing found raises :class:`~podnet.kube.errors.ConfigError`
        naming every step tried.

        ``environ`` (default: the process environment) is both where
        $KUBECONFIG/$HOME/KUBERNETES_SERVICE_* are read and the base
        environment of exec plugins.
        """
        env = os.environ if environ is None else environ
        cfg = resolve(master, kubeconfig, environ=env, root=root, home=home, context=context)
        for step in cfg.steps:
            discovery_log.info("API discovery: %s", step)
        discovery_log.info("API server %s (from %s)", cfg.server, cfg.source)
        kwargs.setdefault("environ", env)
        return cls(cfg, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "ApiClient":
        return cls(ClientConfig(server=url.rstrip("/")), **kwargs)

    @property
    def server(self) -> str:
        return self.config.server

    async def __aenter__(self) -> "ApiClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for old in self._old_sessions:
            await old.close()
        self._old_sessions.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self, client_cert: tuple[str, str] | None = None) -> aiohttp.ClientSession:
        """The session for requests carrying ``client_cert`` (a new pool when the certificate changed)."""
        if self._session is not None and not self._session.closed and client_cert != self._session_cert:
            # Rotated exec certificate: drop every pooled connection (client-go closes them too).
            old, self._session = self._session, None
            self._old_sessions.append(old)
            task = asyncio.get_running_loop().create_task(self._close_old(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if self._session is None or self._session.closed:
            try:
                ssl_ctx = self.config.ssl_context(client_cert)
            except ConfigError as e:
                raise CredentialError(f"TLS setup: {e}") from None
            connector = aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else False, limit=32)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.user_agent})
            self._session_cert = client_cert
        return self._session

    async def _close_old(self, old: aiohttp.ClientSession) -> None:
        await old.close()
        if old in self._old_sessions:
            self._old_sessions.remove(old)

    def _tls_kwargs(self) -> dict[str, Any]:
        """``tls-server-name``: the name the server certificate is checked against (and sent as SNI)."""
        if self.config.is_https and self.config.tls_server_name:
            return {"server_hostname": self.config.tls_server_name}
        return {}

    def _log_warnings(self, values: Any) -> None:
        for value in values:
            if value not in self.warnings_seen and len(self.warnings_seen) < 1024:
                self.warnings_seen.add(value)
                log.warning("API server warning: %s", value)

    @staticmethod
    def _headers(creds: Credentials, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if creds.token:
            h["Authorization"] = f"Bearer {creds.token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    # ------------------------------------------------------------------ raw requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or :class:`ApiError`."""
        data = None if body is None else json.dumps(body).encode()
        tmo = aiohttp.ClientTimeout(total=timeout or self.request_timeout)
        for attempt in (1, 2):
            creds = await self.auth.credentials()
            async with self._sess(creds.client_cert).request(
                method,
                self.config.server + path,
                params=params,
                data=data,
                headers=self._headers(creds, content_type if data is not None else None),
                timeout=tmo,
                **self._tls_kwargs(),
            ) as resp:
                raw = await resp.read()
                status = resp.status
                self._log_warnings(resp.headers.getall("Warning", ()))
            if status == 401 and attempt == 1 and await self.auth.unauthorized(creds):
                log.info("%s %s: 401 Unauthorized; retrying once with refreshed credentials", method, path)
                continue
            break
        if status >= 300:
            raise ApiError.from_body(status, raw)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(status, {"reason": "BadResponse", "message": "answer is not JSON"}) from None

    async def stream_lines(
        self, path: str, params: Mapping[str, str], *, inactivity_timeout: float | None
    ) -> AsyncIterator[bytes]:
        """GET a streaming answer and yield its lines (without the newline).

        Raises :class:`ApiError` for a non-2xx status and
        :class:`asyncio.TimeoutError` when no byte arrives within
        ``inactivity_timeout`` seconds. Lines may be arbitrarily long (no
        aiohttp line-length limit applies).
        """
        tmo = aiohttp.ClientTimeout(total=None, connect=self.request_timeout, sock_connect=self.request_timeout)
        for attempt in (1, 2):
            creds = await self.auth.credentials()
            async with self._sess(creds.client_cert).get(
                self.config.server + path, params=params, headers=self._headers(creds), timeout=tmo,
                **self._tls_kwargs(),
            ) as resp:
                if resp.status == 401 and attempt == 1:
                    raw = await resp.read()
                    if await self.auth.unauthorized(creds):
                        log.info("watch %s: 401 Unauthorized; retrying once with refreshed credentials", path)
                        continue
                    raise ApiError.from_body(401, raw)
                async for line in self._lines(resp, inactivity_timeout):
                    yield line
                return

    @staticmethod
    async def _lines(resp: aiohttp.ClientResponse, inactivity_timeout: float | None) -> AsyncIterator[bytes]:
        """The lines of one streaming answer (ApiError for a non-2xx status)."""
        if resp.status >= 300:
            raise ApiError.from_body(resp.status, await resp.read())
        buf = b""
        while True:
            async with asyncio.timeout(inactivity_timeout):
                chunk = await resp.content.readany()
            if not chunk:
                if buf.strip():
                    yield buf
                return
            buf += chunk
            if b"\n" in chunk:
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line

    # ------------------------------------------------------------------ verbs

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        limit: int | None = 500,
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects (following ``continue`` pages) and the list's resourceVersion.

        If a continue token expires mid-way (410), the list restarts without
        paging, so the result is always one consistent snapshot.
        """
        items: list[dict[str, Any]] = []
        async for page in list_pages(self, res, namespace, label_selector, field_selector, limit=limit):
            if page.restarted:
                items = []
            items.extend(page.items)
            if page.last:
                return items, page.resource_version
        raise AssertionError("list_pages ends with its last page")

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", res.path(_ns(res, namespace), name))

    async def create(self, res: Resource, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or (obj.get("metadata") or {}).get("namespace") or ("default" if res.namespaced else None)
        return await self.request("POST", res.path(_ns(res, ns)), body=_with_kind(res, obj))

    async def replace(
        self, res: Resource, obj: Mapping[str, Any], namespace: str | None = None, *, subresource: str | None = None
    ) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        ns = namespace or meta.get("namespace") or ("default" if res.namespaced else None)
        path = res.path(_ns(res, ns), meta["name"]) + (f"/{subresource}" if subresource else "")
        return await self.request("PUT", path, body=_with_kind(res, obj))

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Mapping[str, Any] | list[Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        """JSON merge-patch (RFC 7386) by default."""
        path = res.path(_ns(res, namespace), name) + (f"/{subresource}" if subresource else "")
        return await self.request("PATCH", path, body=patch, content_type=content_type)

    async def delete(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("DELETE", res.path(_ns(res, namespace), name))


@dataclass(frozen=True)
class ListPage:
    """One page of a list: its objects; ``restarted``: the pages before it are void (a continue token
    expired and the list began again without pages); ``last``: ``resource_version`` is the list's."""

    items: list[dict[str, Any]]
    restarted: bool
    last: bool
    resource_version: str


async def list_pages(client: Any, res: Resource, namespace: str | None = None, label_selector: str | None = None,
                     field_selector: str | None = None, *, limit: int | None = 500) -> AsyncIterator[ListPage]:
    """The pages of one list through ``client.request`` (``limit``/``continue``), one decoded page alive
    at a time. A continue token that expires mid-way (410) restarts the list without paging, so the
    pages from the last ``restarted`` one on form one consistent snapshot."""
    path = res.path(_ns(res, namespace))
    base: dict[str, str] = {}
    if label_selector:
        base["labelSelector"] = label_selector
    if field_selector:
        base["fieldSelector"] = field_selector
    cont, restarted = "", False
    while True:
        params = dict(base)
        if limit:
            params["limit"] = str(limit)
        if cont:
            params["continue"] = cont
        try:
            page = await client.request("GET", path, params=params)
        except ApiError as e:
            if e.is_gone and cont:
                log.info("list %s: continue token expired; listing without pages", res.plural)
                cont, limit, restarted = "", None, True
                continue
            raise
        meta = page.get("metadata") or {}
        cont = meta.get("continue") or ""
        items = [i for i in page.get("items") or () if isinstance(i, dict)]
        del page
        yield ListPage(items, restarted, not cont, "" if cont else str(meta.get("resourceVersion") or ""))
        del items
        restarted = False
        if not cont:
            return


def _with_kind(res: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out.setdefault("apiVersion", res.api_version)
    out.setdefault("kind", res.kind)
    return out
