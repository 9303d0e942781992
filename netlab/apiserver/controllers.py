"""Lab controllers running inside the API server process (kube-controller-manager's part).

Both are post-commit hooks on the :class:`~podnet.netlab.apiserver.apistore.Store`:
they run right after a write is published, synchronously, so every effect
of a write is visible as further watch events (a Node ADDED, then MODIFIED
with its podCIDR; a Pod becoming ready, then its EndpointSlice MODIFIED).
Both are idempotent: :meth:`resync` at startup converges whatever state was
loaded, and a reconcile that finds nothing to change writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from podnet.kube.objects import format_rfc3339_nano
from podnet.netlab.apiserver.allocators import AllocationError, CIDRAllocator
from podnet.netlab.apiserver.apistore import Event, Store
from podnet.netlab.apiserver.endpointslices import (
    CONTROLLER_NAME, HEADLESS_LABEL, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION, ZONE_LABEL,
    DesiredSlice, TriggerTimeTracker, desired_slices, selector_matches,
)

__all__ = ["NodeCIDRController", "EndpointSliceController"]

log = logging.getLogger("podnet.netlab.apiserver.controllers")


class NodeCIDRController:
    """Gives every Node a pod CIDR (``--allocate-node-cidrs``); frees it when the Node goes."""

    def __init__(self, store: Store, allocator: CIDRAllocator) -> None:
        self.store, self.allocator = store, allocator

    def resync(self) -> None:
        for node in list(self.store.items("nodes")):
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                self.allocator.reserve(cidr)
        for node in list(self.store.items("nodes")):
            self._ensure(node)

    def hook(self, ev: Event) -> None:
        if ev.plural != "nodes":
            return
        if ev.type == "DELETED":
            for cidr in (ev.obj.get("spec") or {}).get("podCIDRs") or ():
                self.allocator.release(cidr)
            return
        if ev.type == "ADDED":
            cidr = (ev.obj.get("spec") or {}).get("podCIDR")
            if cidr:
                self.allocator.reserve(cidr)
        self._ensure(ev.obj)

    def _ensure(self, node: dict[str, Any]) -> None:
        spec = node.get("spec") or {}
        if spec.get("podCIDR") or node["metadata"].get("deletionTimestamp"):
            return
        try:
            cidr = self.allocator.allocate()
        except AllocationError as e:
            log.warning("node %s: %s", node["metadata"]["name"], e)
            return
        self.store.update("nodes", {**node, "spec": {**spec, "podCIDR": cidr, "podCIDRs": [cidr]}})
        log.info("node %s: podCIDR %s", node["metadata"]["name"], cidr)


class EndpointSliceController:
    """Keeps the EndpointSlices of every Service with a selector equal to :func:`desired_slices`."""

    def __init__(self, store: Store, max_per_slice: int = 100) -> None:
        self.store = store
        self.max_per_slice = max_per_slice
        self._reconciling = False
        self.writes = 0
        self._index: dict[tuple[str, str], set[str]] = {}
        """(namespace, service) -> names of the slices this controller manages for it"""
        self.trigger_times = TriggerTimeTracker()

    def _track(self, ev: Event) -> None:
        for obj, present in ((ev.old, False), (ev.obj, ev.type != "DELETED")):
            labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != CONTROLLER_NAME or not labels.get(SERVICE_NAME_LABEL):
                continue
            key = (obj["metadata"].get("namespace", ""), labels[SERVICE_NAME_LABEL])
            names = self._index.setdefault(key, set())
            if present:
                names.add(obj["metadata"]["name"])
            else:
                names.discard(obj["metadata"]["name"])
                if not names:
                    del self._index[key]

    def resync(self) -> None:
        self._index.clear()
        for sl in list(self.store.items("endpointslices")):
            self._track(Event(0, "endpointslices", "ADDED", sl))
        for svc in list(self.store.items("services")):
            self.reconcile(svc["metadata"]["namespace"], svc["metadata"]["name"])
        for sl in list(self.store.items("endpointslices")):  # orphans of deleted services
            labels = sl["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME:
                ns = sl["metadata"]["namespace"]
                if self.store.get("services", ns, labels.get(SERVICE_NAME_LABEL, "")) is None:
                    self.reconcile(ns, labels.get(SERVICE_NAME_LABEL, ""))

    def hook(self, ev: Event) -> None:
        if ev.plural == "services":
            self.reconcile(ev.obj["metadata"]["namespace"], ev.obj["metadata"]["name"])
        elif ev.plural == "pods":
            ns = ev.obj["metadata"]["namespace"]
            labels_now = (ev.obj.get("metadata") or {}).get("labels")
            labels_before = ((ev.old or {}).get("metadata") or {}).get("labels")
            for svc in list(self.store.items("services", ns)):
                sel = (svc.get("spec") or {}).get("selector")
                if selector_matches(sel, labels_now) or selector_matches(sel, labels_before):
                    self.reconcile(ns, svc["metadata"]["name"])
        elif ev.plural == "endpointslices":
            self._track(ev)
            if self._reconciling:
                return
            labels = (ev.obj.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME and labels.get(SERVICE_NAME_LABEL):
                # Someone else touched a slice we own: put it back.
                self.reconcile(ev.obj["metadata"]["namespace"], labels[SERVICE_NAME_LABEL])
        elif ev.plural == "nodes" and _zone(None if ev.type == "DELETED" else ev.obj) != _zone(
            None if ev.type == "ADDED" else ev.old
        ):  # a zone appeared, changed or went away: endpoint zones follow
            for svc in list(self.store.items("services")):
                self.reconcile(svc["metadata"]["namespace"], svc["metadata"]["name"])

    def _owned(self, ns: str, name: str) -> list[dict[str, Any]]:
        found = (self.store.get("endpointslices", ns, n) for n in sorted(self._index.get((ns, name), ())))
        return [s for s in found if s is not None]

    def reconcile(self, ns: str, name: str) -> None:
        if self._reconciling:
            return
        self._reconciling = True
        try:
            self._reconcile(ns, name)
        finally:
            self._reconciling = False

    def _reconcile(self, ns: str, name: str) -> None:
        svc = self.store.get("services", ns, name)
        existing = self._owned(ns, name)
        spec = (svc or {}).get("spec") or {}
        if svc is None or not spec.get("selector") or spec.get("type") == "ExternalName":
            self.trigger_times.forget(ns, name)
            for s in existing:
                self.store.delete("endpointslices", ns, s["metadata"]["name"])
                self.writes += 1
            return
        zones = {n["metadata"]["name"]: _zone(n) for n in self.store.items("nodes") if _zone(n)}
        pods = list(self.store.items("pods", ns))
        selected = [p for p in pods if selector_matches(spec["selector"], (p.get("metadata") or {}).get("labels"))]
        trigger = self.trigger_times.compute(svc, selected)
        desired = desired_slices(svc, pods, zones, self.max_per_slice)
        by_group: dict[tuple, list[dict[str, Any]]] = {}
        for s in existing:
            ports = tuple(tuple(sorted(p.items())) for p in s.get("ports") or ())
            by_group.setdefault((s.get("addressType"), ports), []).append(s)
        labels = self._labels(svc)
        unmatched: list[DesiredSlice] = []
        for want in desired:  # first pass: slices whose ports already match are updated in place
            pool = by_group.get(want.group) or []
            if pool:
                self._write(svc, want, labels, pool.pop(0), trigger)
            else:
                unmatched.append(want)
        spare = [s for pool in by_group.values() for s in pool]
        for want in unmatched:  # second pass: reuse any spare slice of the family, else create
            current = next((s for s in spare if s.get("addressType") == want.address_type), None)
            if current is not None:
                spare.remove(current)
            self._write(svc, want, labels, current, trigger)
        for leftover in spare:
            self.store.delete("endpointslices", ns, leftover["metadata"]["name"])
            self.writes += 1

    @staticmethod
    def _labels(svc: dict[str, Any]) -> dict[str, str]:
        labels = {k: v for k, v in (svc["metadata"].get("labels") or {}).items()
                  if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)}
        labels[SERVICE_NAME_LABEL] = svc["metadata"]["name"]
        labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS_LABEL] = ""
        return labels

    def _write(self, svc: dict[str, Any], want: DesiredSlice, labels: dict[str, str], current: dict[str, Any] | None,
               trigger: int = 0) -> None:
        """Create or update one slice; a written slice carries the trigger time (removed when 0)."""
        meta = svc["metadata"]
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "addressType": want.address_type,
            "endpoints": list(want.endpoints),
            "ports": want.ports_json(),
        }
        owner = [{"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta.get("uid", ""),
                  "controller": True, "blockOwnerDeletion": True}]
        annotations = {k: v for k, v in ((current or {}).get("metadata", {}).get("annotations") or {}).items()
                       if k != TRIGGER_TIME_ANNOTATION}
        if trigger:
            annotations[TRIGGER_TIME_ANNOTATION] = format_rfc3339_nano(trigger)
        if current is None:
            body["metadata"] = {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                                "labels": labels, "ownerReferences": owner}
            if annotations:
                body["metadata"]["annotations"] = annotations
            body["metadata"]["name"] = self._free_name(meta["namespace"], meta["name"])
            del body["metadata"]["generateName"]
            self.store.create("endpointslices", body)
            self.writes += 1
            return
        same = (current.get("endpoints") or []) == body["endpoints"] and current.get("ports") == body["ports"] and (
            current["metadata"].get("labels") == labels
        )
        if same:
            return
        new_meta = {**current["metadata"], "labels": labels, "ownerReferences": owner, "annotations": annotations}
        if not annotations:
            del new_meta["annotations"]
        self.store.update("endpointslices", {**current, **body, "metadata": new_meta})
        self.writes += 1

    def _free_name(self, ns: str, svc_name: str) -> str:
        import secrets

        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        prefix = svc_name[:57]
        while True:
            name = f"{prefix}-" + "".join(secrets.choice(alphabet) for _ in range(5))
            if self.store.get("endpointslices", ns, name) is None:
                return name


def _zone(node: dict[str, Any] | None) -> str:
    return ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL, "")
