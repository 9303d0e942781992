"""The lab API server's storage: objects, resourceVersions, event history, watchers.

Guarantees:

- one global, strictly increasing resourceVersion (an integer, sent as a
  string); every create/update/delete takes the next one, and the event it
  produces carries it (a DELETED event's object has the deletion's version);
- every mutation appends exactly one event to a bounded history (``history``
  events) and offers it to every live watcher *before* the mutating call
  returns, so a watch started from version N sees every change after N, in
  order, exactly once; a version older than the history window is compacted:
  :meth:`Store.subscribe` raises :class:`Gone` (the server answers 410);
- post-commit hooks (the lab controllers) run after the event is published,
  synchronously, and may mutate the store themselves;
- stored dicts are never mutated after they are stored: readers may keep
  references (the server serializes them as they are);
- :meth:`Store.dump`/:meth:`Store.load` round-trip objects and the version
  counter; after a load the history is empty and everything older than the
  loaded version is compacted, so resuming watchers get 410 and relist.

Not thread-safe: one asyncio loop owns a Store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from podnet.netlab.apiserver.selectors import FieldSelector, LabelSelector

__all__ = ["Store", "Event", "Watcher", "StatusError", "Gone", "Persister", "rfc3339"]

log = logging.getLogger("podnet.netlab.apiserver.apistore")

Key = tuple[str, str]  # (namespace or "", name)


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class StatusError(Exception):
    """An API error with the fields of a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, *, kind: str = "", name: str = "",
                 causes: list[dict[str, str]] | None = None, group: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.kind, self.name, self.causes, self.group = kind, name, causes or [], group

    def status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            out["details"] = details
        return out


class Gone(StatusError):
    def __init__(self, message: str) -> None:
        super().__init__(410, "Expired", message)


@dataclass(frozen=True, slots=True)
class Event:
    rv: int
    plural: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


def _ns_name(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


@dataclass(eq=False)
class Watcher:
    """One watch stream's subscription. Events arrive as (type, object) on :attr:`queue`."""

    plural: str
    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: bool = False
    max_pending: int = 100_000
    """A watcher this far behind is cut off (as kube-apiserver does); its client resumes or relists."""
    overflowed: bool = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, ev: Event) -> None:
        """Queue what this watcher should see of ``ev`` (selector transitions included)."""
        if self.closed or ev.plural != self.plural:
            return
        if self.queue.qsize() >= self.max_pending:
            self.overflowed = True
            self.close()
            return
        now = self.matches(ev.obj)
        if ev.type == "MODIFIED":
            before = self.matches(ev.old)
            if now and before:
                self.queue.put_nowait(("MODIFIED", ev.obj))
            elif now:
                self.queue.put_nowait(("ADDED", ev.obj))
            elif before:
                self.queue.put_nowait(("DELETED", ev.obj))
        elif now:
            self.queue.put_nowait((ev.type, ev.obj))

    def close(self) -> None:
        """End the stream (server shutdown)."""
        self.closed = True
        self.queue.put_nowait(None)


class Store:
    def __init__(self, *, history: int = 10_000, clock: Callable[[], float] = time.time,
                 new_uid: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.rv = 0
        self.compacted_rv = 0
        """Watches must start at or after this version (older ones were dropped)."""
        self.objects: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        """plural -> namespace ("" when cluster-scoped) -> name -> object"""
        self.history: deque[Event] = deque()
        self.history_size = max(1, history)
        self.watchers: set[Watcher] = set()
        self.hooks: list[Callable[[Event], None]] = []
        self.on_change: Callable[[], None] | None = None
        self._clock = clock
        self._new_uid = new_uid

    # ------------------------------------------------------------------ reads

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(plural, {}).get(namespace or "", {}).get(name)

    def items(self, plural: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Objects sorted by (namespace, name); a snapshot, safe to iterate while writing."""
        by_ns = self.objects.get(plural, {})
        for ns in sorted(by_ns) if namespace is None else [namespace or ""]:
            table = by_ns.get(ns, {})
            yield from [table[name] for name in sorted(table)]

    def count(self, plural: str) -> int:
        return sum(len(t) for t in self.objects.get(plural, {}).values())

    # ------------------------------------------------------------------ writes

    def _publish(self, ev: Event) -> None:
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        for w in list(self.watchers):
            w.offer(ev)
        if self.on_change:
            self.on_change()
        for hook in list(self.hooks):
            try:
                hook(ev)
            except Exception:  # a controller bug must not break the write that triggered it
                log.exception("post-commit hook %r failed on %s %s", hook, ev.type, ev.plural)

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (metadata.name set by the caller); fills uid, versions, timestamps."""
        key = _ns_name(obj)
        table = self.objects.setdefault(plural, {}).setdefault(key[0], {})
        if key[1] in table:
            raise StatusError(409, "AlreadyExists", f'{plural} "{key[1]}" already exists', kind=plural, name=key[1])
        self.rv += 1
        meta = dict(obj["metadata"])
        meta["uid"] = self._new_uid()
        meta["resourceVersion"] = str(self.rv)
        meta["creationTimestamp"] = rfc3339(self._clock())
        meta["generation"] = 1
        stored = {**obj, "metadata": meta}
        table[key[1]] = stored
        self._publish(Event(self.rv, plural, "ADDED", stored))
        return stored

    def update(self, plural: str, obj: dict[str, Any], *, expect_rv: str | None = None) -> dict[str, Any]:
        """Replace an existing object; 409 Conflict when ``expect_rv`` is stale.

        A write that changes nothing is not a change: no new version, no event.
        """
        key = _ns_name(obj)
        old = self.get(plural, *key)
        if old is None:
            raise StatusError(404, "NotFound", f'{plural} "{key[1]}" not found', kind=plural, name=key[1])
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise StatusError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {plural} "{key[1]}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                kind=plural, name=key[1],
            )
        meta = dict(obj["metadata"])
        for fixed in ("uid", "creationTimestamp", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        candidate = {**obj, "metadata": meta}
        if candidate == old:
            return old
        if obj.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        stored = {**obj, "metadata": meta}
        self.objects[plural][key[0]][key[1]] = stored
        self._publish(Event(self.rv, plural, "MODIFIED", stored, old))
        return stored

    def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        table = self.objects.get(plural, {}).get(namespace or "", {})
        old = table.pop(name, None)
        if old is None:
            raise StatusError(404, "NotFound", f'{plural} "{name}" not found', kind=plural, name=name)
        self.rv += 1
        gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
        self._publish(Event(self.rv, plural, "DELETED", gone, old))
        return gone

    # ------------------------------------------------------------------ watch

    def subscribe(self, watcher: Watcher, since: int) -> None:
        """Register ``watcher`` and queue every matching event after version ``since``."""
        if since < self.compacted_rv:
            raise Gone(f"too old resource version: {since} ({self.compacted_rv})")
        if since > self.rv:
            # Only possible across a restart that lost writes: the client must relist.
            raise Gone(f"resource version {since} is newer than the server's ({self.rv})")
        for ev in self.history:
            if ev.rv > since:
                watcher.offer(ev)
        self.watchers.add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    # ------------------------------------------------------------------ persistence

    def dump(self) -> dict[str, Any]:
        return {
            "resourceVersion": self.rv,
            "objects": {plural: list(self.items(plural)) for plural in self.objects},
        }

    def load(self, doc: dict[str, Any]) -> None:
        self.objects = {}
        for plural, objs in (doc.get("objects") or {}).items():
            by_ns = self.objects.setdefault(plural, {})
            for o in objs:
                ns, name = _ns_name(o)
                by_ns.setdefault(ns, {})[name] = o
        self.rv = int(doc.get("resourceVersion") or 0)
        self.compacted_rv = self.rv
        self.history.clear()


class Persister:
    """Writes the store to ``path`` atomically, at most once per ``delay`` seconds.

    :meth:`mark` is called on every change and schedules one write; :meth:`flush`
    writes now (on shutdown). A crash loses at most the last ``delay`` seconds.
    """

    def __init__(self, store: Store, path: str | Path, delay: float = 0.05) -> None:
        self.store, self.path, self.delay = store, Path(path), delay
        self._handle: asyncio.TimerHandle | None = None

    def load(self) -> bool:
        if not self.path.exists():
            return False
        self.store.load(json.loads(self.path.read_text()))
        log.info("loaded %s at resourceVersion %d", self.path, self.store.rv)
        return True

    def mark(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.store.dump(), f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
