"""One watch stream: ``?watch=1`` from a resourceVersion, decoded into events.

:func:`watch_events` opens a single stream and yields :class:`WatchEvent`
values until the server ends it (its ``timeoutSeconds``) or the client's
inactivity timeout fires. It ends in one of three ways:

- normal return: the stream ended; resume from the last resourceVersion seen;
- :class:`WatchExpired`: the resourceVersion was compacted (HTTP 410, or an
  ERROR event whose Status has code 410); the caller must relist;
- :class:`~podnet.kube.client.ApiError` / transport errors: back off and retry.

BOOKMARK events are yielded too (they carry only a resourceVersion), so the
caller can advance its resume point without touching its store. Lines that
are not JSON are skipped with a log line; the stream goes on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from podnet.kube.client import ApiClient, ApiError
from podnet.kube.resources import Resource

__all__ = ["WatchEvent", "WatchExpired", "watch_events", "watch_timeout_seconds", "MIN_WATCH_TIMEOUT"]

log = logging.getLogger("podnet.kube.watch")

MIN_WATCH_TIMEOUT = 300
"""client-go's minWatchTimeout: each stream asks for 5-10 minutes (randomized)."""

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")


class WatchExpired(Exception):
    """The resourceVersion we resumed from is too old (410 Gone): relist."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        meta = self.object.get("metadata")
        return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


def watch_timeout_seconds(rand: float, minimum: int = MIN_WATCH_TIMEOUT) -> int:
    """``timeoutSeconds`` for one stream: uniformly in [minimum, 2*minimum)."""
    return int(minimum * (1.0 + min(max(rand, 0.0), 0.999)))


def decode_event(line: bytes) -> WatchEvent | None:
    """One line of a watch stream, or None if it is not a well-formed event."""
    try:
        raw = json.loads(line)
    except ValueError:
        log.warning("watch: skipping a line that is not JSON (%d bytes)", len(line))
        return None
    if not isinstance(raw, dict) or raw.get("type") not in EVENT_TYPES or not isinstance(raw.get("object"), dict):
        log.warning("watch: skipping a malformed event")
        return None
    return WatchEvent(raw["type"], raw["object"])


async def watch_events(
    client: ApiClient,
    res: Resource,
    *,
    resource_version: str,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    timeout_seconds: int = MIN_WATCH_TIMEOUT,
    inactivity_timeout: float | None = None,
    allow_bookmarks: bool = True,
) -> AsyncIterator[WatchEvent]:
    params = {"watch": "1", "timeoutSeconds": str(int(timeout_seconds))}
    if resource_version:
        params["resourceVersion"] = resource_version
    if allow_bookmarks:
        params["allowWatchBookmarks"] = "true"
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    path = res.path(namespace if res.namespaced else None)
    try:
        async for line in client.stream_lines(path, params, inactivity_timeout=inactivity_timeout):
            event = decode_event(line)
            if event is None:
                continue
            if event.type == "ERROR":
                code = event.object.get("code")
                if code == 410:
                    raise WatchExpired(str(event.object.get("message") or "resourceVersion too old"))
                raise ApiError(int(code) if isinstance(code, int) else 500, event.object)
            yield event
    except ApiError as e:
        if e.is_gone:
            raise WatchExpired(e.message) from None
        raise
