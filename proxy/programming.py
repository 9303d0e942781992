"""Network programming latency as kube-proxy measures it.

``kubeproxy_network_programming_duration_seconds`` is observed from the
EndpointSlice annotation ``endpoints.kubernetes.io/last-change-trigger-time``
(the time of the Pod/Service change that made the EndpointSlice controller
write the slice), the way kube-proxy's EndpointsChangeTracker does it:

* every slice add or update that changes the slice queues its trigger time
  for the slice's Service and address family, unless the annotation is
  absent or invalid, or the time is not after this proxy's start (older
  triggers say nothing about this proxy);
* deleting a slice drops the Service's queued times (a deleted slice's
  annotation dates from its last update, not from the deletion);
* a sync checks out everything queued when it starts; after a family's
  rules were written successfully, it observes ``now - t`` for every queued
  time of that family (label ``ip_family``). A failed sync observes nothing
  and the checked-out times are dropped, as in kube-proxy;
* Service changes and slices without the service-name label queue nothing.

Pure apart from the histogram, with injected clocks. Bounded: at most
``max_per_service`` queued times per Service and family between two syncs.
"""

from __future__ import annotations

from podnet.kube.objects import EndpointSlice
from podnet.proxy import metrics as m

FAMILY_LABELS = {"IPv4": "IPv4", "IPv6": "IPv6"}
"""EndpointSlice addressType -> the ip_family label of the family that programs it (FQDN: none)."""

Queued = dict[str, dict[str, list[float]]]
"""ip_family label -> Service key -> trigger times (POSIX seconds)."""


class TriggerTimes:
    def __init__(self, started_at: float, max_per_service: int = 100) -> None:
        self.started_at = started_at
        self.max_per_service = max_per_service
        self._queued: Queued = {}

    def slice_changed(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        """One informer event for a slice (add: old None; delete: new None)."""
        sl = new or old
        if sl is None or not sl.service_name or (old is not None and new is not None and old == new):
            return
        family = FAMILY_LABELS.get(sl.address_type)
        if family is None:
            return
        by_service = self._queued.setdefault(family, {})
        if new is None:
            by_service.pop(sl.service_key, None)
            return
        t = new.last_change_trigger_time
        if t is None or t <= self.started_at:
            return
        times = by_service.setdefault(sl.service_key, [])
        if len(times) < self.max_per_service:
            times.append(t)

    def pending(self) -> int:
        return sum(len(ts) for by in self._queued.values() for ts in by.values())

    def checkout(self) -> Queued:
        """Everything queued so far; the queue starts empty again."""
        out, self._queued = self._queued, {}
        return out


def observe(checked_out: Queued, family: str, now: float) -> int:
    """Observe ``now - t`` for the family's checked-out times; returns how many."""
    n = 0
    hist = m.NETWORK_PROGRAMMING.labels(family)
    for times in checked_out.get(family, {}).values():
        for t in times:
            hist.observe(now - t)
            n += 1
    return n
