"""What kube-apiserver's registry does on write: defaulting, allocation, validation.

:class:`Registry` turns a client's create/update/delete into store writes:

- create: namespace from the URL (a different one in the body is 400),
  ``generateName``, the namespace must exist (404), defaults (Service type,
  port protocol and targetPort, ipFamilies, traffic policies; Pod phase;
  Namespace phase), then Service allocation (:mod:`podnet.netlab.apiserver.services`),
  then validation with podnet.kube.objects (422 Invalid with the failing
  field). Writes are two-phase (:class:`Prepared`, then commit): a write
  that fails at any step releases whatever it allocated.
- update (PUT or PATCH result): clusterIP is immutable (an omitted one is
  carried over, as kubectl apply expects), nodePorts omitted for an unchanged
  (port, protocol) keep their value, values no longer used are released.
  Changes to ``status`` through the main resource are ignored, and changes
  to anything but ``status`` through ``/status`` are ignored (as in Kubernetes).
  Status given at *create* is kept: a lab convenience so tests can create a
  ready Pod with an IP in one request (a real API server drops it).
- delete: objects with finalizers (or Pods deleted with gracePeriodSeconds > 0)
  get ``deletionTimestamp`` and stay until the finalizers are removed or the
  grace period ends; deleting a Namespace deletes everything in it.

The kinds of :mod:`.storedkinds` are stored as given (a Secret's ``stringData`` folded into
``data``), apps/v1 workloads with kube-apiserver's defaults (:func:`.workloads.defaults`); the
workload controllers (:mod:`.appcontrollers`) act on them after the write.
"""

from __future__ import annotations

import copy
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from podnet.kube.objects import InvalidObject
from podnet.netlab.apiserver.apikinds import KINDS, Kind
from podnet.netlab.apiserver.apistore import Store, StatusError, rfc3339
from podnet.netlab.apiserver.serviceaccounts import admit_pod
from podnet.netlab.apiserver.services import ServiceAllocator, invalid, quoted, service_allocations, validate_service_extra
from podnet.netlab.apiserver.storedkinds import secret_from_string_data
from podnet.netlab.apiserver.workloads import WORKLOAD_PLURALS, defaults as workload_defaults

__all__ = ["Registry", "Prepared", "invalid", "finish_graceful_delete"]

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Prepared:
    """A validated object ready to be written, and what was allocated for it."""

    obj: dict[str, Any]
    allocated: list[tuple[str, Any]] = field(default_factory=list)


class Registry:
    def __init__(self, store: Store, *, service_cidrs: list[str], node_ports: tuple[int, int] = (30000, 32767),
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.services = ServiceAllocator(service_cidrs, node_ports)
        self._clock = clock or time.time
        self.token_volumes = False
        """Whether Pod creates get the ``kube-api-access-*`` volume (the server publishes ``kube-root-ca.crt``)."""

    def admit_pod(self, pod: dict[str, Any]) -> None:
        """The ServiceAccount admission plugin on a Pod about to be created (:func:`.serviceaccounts.admit_pod`)."""
        spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        ns = (pod.get("metadata") or {}).get("namespace", "")
        admit_pod(pod, self.store.get("serviceaccounts", ns, str(sa)), add_volume=self.token_volumes)

    # ------------------------------------------------------------------ startup

    def reserve_existing(self) -> None:
        """Mark every allocated IP/port of stored Services as used (after a restart)."""
        self.services.reserve_existing(self.store.items("services"))

    # ------------------------------------------------------------------ create

    def prepare_create(self, kind: Kind, body: Any, namespace: str | None) -> Prepared:
        if not isinstance(body, dict):
            raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
        obj = copy.deepcopy(body)
        self._check_type(kind, obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if kind.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise StatusError(400, "BadRequest",
                                  "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
            if self.store.get("namespaces", "", ns) is None:
                raise StatusError(404, "NotFound", f'namespaces "{ns}" not found', kind="namespaces", name=ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            gen = meta.get("generateName")
            if not gen or not isinstance(gen, str):
                raise invalid(kind.kind, "", "metadata.name", "Required value: name or generateName is required")
            for _ in range(16):
                name = gen + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
                if self.store.get(kind.plural, meta.get("namespace", ""), name) is None:
                    break
            meta["name"] = name
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(k, None)
        self._default(kind, obj)
        if kind.plural == "pods":
            self.admit_pod(obj)
        allocated: list[tuple[str, Any]] = []
        try:
            if kind.plural == "services":
                self.validate(kind, obj)  # shape first: allocation reads the ports and IPs
                self.services.allocate(obj, None, allocated)
            self.validate(kind, obj)
        except Exception:
            self.services.release(allocated)
            raise
        return Prepared(obj, allocated)

    def commit_create(self, kind: Kind, prepared: Prepared) -> dict[str, Any]:
        try:
            return self.store.create(kind.plural, prepared.obj)
        except Exception:
            self.services.release(prepared.allocated)
            raise

    # ------------------------------------------------------------------ update

    def prepare_update(self, kind: Kind, old: dict[str, Any], body: Any, *, subresource: str = "") -> Prepared:
        if not isinstance(body, dict):
            raise StatusError(400, "BadRequest", "the body of the request was not a JSON object")
        new = copy.deepcopy(body)
        self._check_type(kind, new)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        name, ns = old["metadata"]["name"], old["metadata"].get("namespace")
        if meta.get("name") and meta["name"] != name:
            raise StatusError(400, "BadRequest", "the name of the object does not match the name on the URL")
        if ns and meta.get("namespace") and meta["namespace"] != ns:
            raise StatusError(400, "BadRequest", "the namespace of the object does not match the namespace on the URL")
        meta["name"] = name
        if ns:
            meta["namespace"] = ns
        for fixed in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        if subresource == "status":
            new = {**old, "status": new.get("status", {})}
            if "status" not in body:
                new.pop("status", None)
        elif kind.has_status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = old["status"]
        self._default(kind, new)
        allocated: list[tuple[str, Any]] = []
        try:
            if kind.plural == "services" and subresource != "status":
                self.validate(kind, new)
                self.services.allocate(new, old, allocated)
            self.validate(kind, new)
        except Exception:
            self.services.release(allocated)
            raise
        return Prepared(new, allocated)

    def commit_update(self, kind: Kind, old: dict[str, Any], prepared: Prepared, expect_rv: str | None) -> dict[str, Any]:
        try:
            stored = self.store.update(kind.plural, prepared.obj, expect_rv=expect_rv)
        except Exception:
            self.services.release(prepared.allocated)
            raise
        if kind.plural == "services":
            keep = service_allocations(stored)
            self.services.release([a for a in service_allocations(old) if a not in keep])
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers") and (
            kind.plural != "pods" or not stored["metadata"].get("deletionGracePeriodSeconds")
        ):
            # The last finalizer is gone: the pending delete completes now.
            self.store.delete(kind.plural, stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
            self.after_delete(kind, stored)
        return stored

    def after_delete(self, kind: Kind, old: dict[str, Any]) -> None:
        if kind.plural == "services":
            self.services.release(service_allocations(old))

    # ------------------------------------------------------------------ delete

    def delete(self, kind: Kind, namespace: str, name: str, grace_seconds: int | None) -> tuple[dict[str, Any], bool]:
        """Delete or start deleting; returns (object, finished)."""
        old = self.store.get(kind.plural, namespace, name)
        if old is None:
            raise StatusError(404, "NotFound", f'{kind.plural} "{name}" not found', kind=kind.plural, name=name)
        graceful = kind.plural == "pods" and grace_seconds is not None and grace_seconds > 0
        if old["metadata"].get("finalizers") or graceful:
            if old["metadata"].get("deletionTimestamp"):
                return old, False
            meta = {**old["metadata"], "deletionTimestamp": rfc3339(self._clock())}
            if graceful:
                meta["deletionGracePeriodSeconds"] = grace_seconds
            return self.store.update(kind.plural, {**old, "metadata": meta}), False
        if kind.plural == "namespaces":
            for k in ("pods", "endpointslices", "services",
                      *(p for p, kk in KINDS.items() if kk.namespaced and p not in ("pods", "endpointslices", "services"))):
                for obj in list(self.store.items(k, name)):
                    self.store.delete(k, name, obj["metadata"]["name"])
                    if k == "services":
                        self.services.release(service_allocations(obj))
        gone = self.store.delete(kind.plural, namespace, name)
        self.after_delete(kind, old)
        return gone, True

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_type(kind: Kind, obj: dict[str, Any]) -> None:
        if obj.get("kind") not in (None, "", kind.kind):
            raise StatusError(400, "BadRequest", f"the kind {obj['kind']!r} does not match {kind.kind!r}")
        if obj.get("apiVersion") not in (None, "", kind.api_version):
            raise StatusError(400, "BadRequest",
                              f"the API version {obj['apiVersion']!r} does not match the expected {kind.api_version!r}")
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version

    def _default(self, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.plural == "services":
            spec = obj.setdefault("spec", {})
            if not isinstance(spec, dict):
                raise invalid(kind.kind, obj["metadata"]["name"], "spec", "not an object")
            if not spec.get("type"):
                spec["type"] = "ClusterIP"
            if not spec.get("sessionAffinity"):
                spec["sessionAffinity"] = "None"
            ports = spec.get("ports")
            for p in ports if isinstance(ports, list) else ():
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    if spec["type"] != "ExternalName" and not p.get("targetPort"):
                        p["targetPort"] = p.get("port")
            if spec["type"] in ("NodePort", "LoadBalancer"):
                spec.setdefault("externalTrafficPolicy", "Cluster")
            if spec["type"] != "ExternalName":
                spec.setdefault("internalTrafficPolicy", "Cluster")
        elif kind.plural == "pods":
            obj.setdefault("spec", {})
            status = obj.setdefault("status", {})
            if isinstance(status, dict):
                status.setdefault("phase", "Pending")
        elif kind.plural == "nodes":
            obj.setdefault("spec", {})
        elif kind.plural == "secrets":
            secret_from_string_data(obj)
        elif kind.plural in WORKLOAD_PLURALS:
            workload_defaults(kind.plural, obj)
        elif kind.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})

    def release_allocations(self, prepared: Prepared) -> None:
        """Give back what a prepared-but-not-committed write allocated (dry runs)."""
        self.services.release(prepared.allocated)

    def validate(self, kind: Kind, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        try:
            kind.validate(obj)
        except InvalidObject as e:
            raise StatusError(
                422, "Invalid", f'{kind.kind} {quoted(name)} is invalid: {e.reason}', kind=kind.kind,
                name=str(name)[:253],
                causes=[{"reason": "FieldValueInvalid", "message": e.reason, "field": e.reason.split(":", 1)[0]}],
            ) from None
        if kind.plural == "services":  # after the parser: the shape is known to be sane here
            validate_service_extra(obj)

def finish_graceful_delete(registry: Registry, kind: Kind, namespace: str, name: str, uid: str) -> None:
    """The grace period of a deleted Pod ended (the lab plays kubelet): remove it unless finalizers hold it."""
    obj = registry.store.get(kind.plural, namespace, name)
    if obj is None or obj["metadata"].get("uid") != uid or obj["metadata"].get("finalizers"):
        return
    registry.store.delete(kind.plural, namespace, name)
    registry.after_delete(kind, obj)
