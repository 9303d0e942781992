"""What kube-apiserver's registry does on write: defaulting, allocation, validation.

:class:`Registry` turns a client's create/update/delete into store writes:

- create: namespace from the URL (a different one in the body is 400),
  ``generateName``, the namespace must exist (404), defaults (Service type,
  port protocol and targetPort, ipFamilies, traffic policies; Pod phase;
  Namespace phase), then Service allocation (ClusterIP from the service
  range, NodePorts, healthCheckNodePort for LoadBalancer with
  externalTrafficPolicy=Local), then validation with podnet.kube.objects
  (422 Invalid with the failing field). A failed create releases whatever it
  allocated.
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
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from podnet.kube.objects import InvalidObject
from podnet.netlab.allocators import AllocationError, IPAllocator, PortAllocator
from podnet.netlab.apikinds import Kind
from podnet.netlab.apistore import Store, StatusError, rfc3339

__all__ = ["Registry", "invalid"]

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def invalid(kind: str, name: str, field: str, message: str) -> StatusError:
    return StatusError(
        422, "Invalid", f'{kind} "{name}" is invalid: {field}: {message}', kind=kind, name=name,
        causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}],
    )


class Registry:
    def __init__(self, store: Store, *, service_cidrs: list[str], node_ports: tuple[int, int] = (30000, 32767),
                 clock=None) -> None:
        import time

        self.store = store
        self.ip_allocators = {a.family: a for a in (IPAllocator(c) for c in service_cidrs)}
        self.node_ports = PortAllocator(*node_ports)
        self._clock = clock or time.time

    # ------------------------------------------------------------------ startup

    def reserve_existing(self) -> None:
        """Mark every allocated IP/port of stored Services as used (after a restart)."""
        for svc in self.store.items("services"):
            spec = svc.get("spec") or {}
            for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
                for alloc in self.ip_allocators.values():
                    alloc.reserve(ip)
            for p in spec.get("ports") or ():
                if p.get("nodePort"):
                    self.node_ports.reserve(p["nodePort"])
            if spec.get("healthCheckNodePort"):
                self.node_ports.reserve(spec["healthCheckNodePort"])

    # ------------------------------------------------------------------ create

    def prepare_create(self, kind: Kind, body: Any, namespace: str | None) -> dict[str, Any]:
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
        allocated: list[tuple[str, Any]] = []
        try:
            if kind.plural == "services":
                self._allocate_service(obj, None, allocated)
            self.validate(kind, obj)
        except Exception:
            self._release(allocated)
            raise
        obj["__allocated__"] = allocated  # handed to commit_create/abort
        return obj

    def commit_create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        allocated = obj.pop("__allocated__", [])
        try:
            return self.store.create(kind.plural, obj)
        except Exception:
            self._release(allocated)
            raise

    # ------------------------------------------------------------------ update

    def prepare_update(self, kind: Kind, old: dict[str, Any], body: Any, *, subresource: str = "") -> dict[str, Any]:
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
                self._allocate_service(new, old, allocated)
            self.validate(kind, new)
        except Exception:
            self._release(allocated)
            raise
        new["__allocated__"] = allocated
        return new

    def commit_update(self, kind: Kind, old: dict[str, Any], new: dict[str, Any], expect_rv: str | None) -> dict[str, Any]:
        allocated = new.pop("__allocated__", [])
        try:
            stored = self.store.update(kind.plural, new, expect_rv=expect_rv)
        except Exception:
            self._release(allocated)
            raise
        if kind.plural == "services":
            keep = _service_allocations(stored)
            self._release([a for a in _service_allocations(old) if a not in keep])
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers") and (
            kind.plural != "pods" or not stored["metadata"].get("deletionGracePeriodSeconds")
        ):
            # The last finalizer is gone: the pending delete completes now.
            self.store.delete(kind.plural, stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
            self.after_delete(kind, stored)
        return stored

    def after_delete(self, kind: Kind, old: dict[str, Any]) -> None:
        if kind.plural == "services":
            self._release(_service_allocations(old))

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
            for k in ("pods", "endpointslices", "services"):
                for obj in list(self.store.items(k, name)):
                    self.store.delete(k, name, obj["metadata"]["name"])
                    if k == "services":
                        self._release(_service_allocations(obj))
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
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            for p in spec.get("ports") or ():
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    if spec["type"] != "ExternalName" and not p.get("targetPort"):
                        p["targetPort"] = p.get("port")
            if spec["type"] in ("NodePort", "LoadBalancer"):
                spec.setdefault("externalTrafficPolicy", "Cluster")
            if spec["type"] != "ExternalName":
                spec.setdefault("internalTrafficPolicy", "Cluster")
        elif kind.plural == "pods":
            status = obj.setdefault("status", {})
            if isinstance(status, dict):
                status.setdefault("phase", "Pending")
        elif kind.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})

    def validate(self, kind: Kind, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind.plural == "services":
            _validate_service_extra(obj)
        try:
            kind.validate(obj)
        except InvalidObject as e:
            raise StatusError(
                422, "Invalid", f'{kind.kind} "{name}" is invalid: {e.reason}', kind=kind.kind, name=str(name)[:253],
                causes=[{"reason": "FieldValueInvalid", "message": e.reason, "field": e.reason.split(":", 1)[0]}],
            ) from None

    def _release(self, allocated: list[tuple[str, Any]]) -> None:
        for what, value in allocated:
            if what == "ip":
                for alloc in self.ip_allocators.values():
                    alloc.release(value)
            else:
                self.node_ports.release(value)

    # ------------------------------------------------------------------ services

    def _allocate_service(self, obj: dict[str, Any], old: dict[str, Any] | None, allocated: list[tuple[str, Any]]) -> None:
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        stype = spec.get("type")
        if stype == "ExternalName":
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(k, None)
        else:
            self._allocate_cluster_ips(name, spec, old_spec, allocated)
        wants_node_ports = stype == "NodePort" or (stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or ()
                     if isinstance(p, dict)}
        for i, p in enumerate(spec.get("ports") or ()):
            if not isinstance(p, dict):
                continue
            want = p.get("nodePort")
            if stype in ("ClusterIP", "ExternalName"):
                if want and old is None:
                    raise invalid("Service", name, f"spec.ports[{i}].nodePort",
                                  f"Forbidden: may not be used when `type` is '{stype}'")
                p.pop("nodePort", None)
                continue
            previous = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if not want and previous:
                p["nodePort"] = previous
                continue
            if want and want == previous:
                continue
            if not want and not wants_node_ports:
                continue
            try:
                port = self.node_ports.allocate(want if isinstance(want, int) and not isinstance(want, bool) else None)
            except AllocationError as e:
                raise invalid("Service", name, f"spec.ports[{i}].nodePort", f"Invalid value: {want}: {e}") from None
            allocated.append(("port", port))
            p["nodePort"] = port
        needs_hc = stype == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
        if needs_hc:
            want = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
            if not want or want != old_spec.get("healthCheckNodePort"):
                try:
                    port = self.node_ports.allocate(want or None)
                except AllocationError as e:
                    raise invalid("Service", name, "spec.healthCheckNodePort", f"Invalid value: {want}: {e}") from None
                allocated.append(("port", port))
                want = port
            spec["healthCheckNodePort"] = want
        else:
            spec.pop("healthCheckNodePort", None)

    def _allocate_cluster_ips(self, name: str, spec: dict[str, Any], old_spec: dict[str, Any],
                              allocated: list[tuple[str, Any]]) -> None:
        old_ips = old_spec.get("clusterIPs") or ([old_spec["clusterIP"]] if old_spec.get("clusterIP") else [])
        want = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if old_ips:
            if want and want[: len(old_ips)] != old_ips[: len(want)]:
                raise invalid("Service", name, "spec.clusterIPs[0]", f"Invalid value: {want!r}: may not change once set")
            if not want or len(want) <= len(old_ips):
                spec["clusterIPs"], spec["clusterIP"] = list(old_ips), old_ips[0]
                spec.setdefault("ipFamilies", old_spec.get("ipFamilies") or [])
                spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy", "SingleStack"))
                return
        if want and want[0] == "None":
            spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            return
        if spec.get("clusterIP") and spec.get("clusterIPs") and spec["clusterIP"] != spec["clusterIPs"][0]:
            raise invalid("Service", name, "spec.clusterIPs[0]", "Invalid value: must match clusterIP")
        families = list(spec.get("ipFamilies") or [])
        for ip in want:
            fam = "IPv6" if ":" in str(ip) else "IPv4"
            if len(families) < len(want) and fam not in families:
                families.append(fam)
        policy = spec.get("ipFamilyPolicy") or ("SingleStack" if len(want) <= 1 else "RequireDualStack")
        if not families:
            families = [next(iter(self.ip_allocators))]
        if policy in ("PreferDualStack", "RequireDualStack") and len(families) == 1:
            other = "IPv6" if families[0] == "IPv4" else "IPv4"
            if other in self.ip_allocators:
                families.append(other)
            elif policy == "RequireDualStack":
                raise invalid("Service", name, "spec.ipFamilyPolicy",
                              "Invalid value: RequireDualStack: this cluster is not configured for dual-stack services")
        ips = []
        for i, fam in enumerate(families):
            alloc = self.ip_allocators.get(fam)
            if alloc is None:
                raise invalid("Service", name, f"spec.ipFamilies[{i}]", f"Unsupported value: {fam}: not configured")
            explicit = want[i] if i < len(want) else None
            try:
                ip = alloc.allocate(explicit)
            except AllocationError as e:
                raise invalid("Service", name, f"spec.clusterIPs[{i}]", f"Invalid value: {explicit!r}: {e}") from None
            allocated.append(("ip", ip))
            ips.append(ip)
        spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
        spec["ipFamilies"], spec["ipFamilyPolicy"] = families, policy


def _service_allocations(svc: dict[str, Any]) -> list[tuple[str, Any]]:
    spec = svc.get("spec") or {}
    out: list[tuple[str, Any]] = [("ip", ip) for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    out += [("port", p["nodePort"]) for p in spec.get("ports") or () if isinstance(p, dict) and p.get("nodePort")]
    if spec.get("healthCheckNodePort"):
        out.append(("port", spec["healthCheckNodePort"]))
    return out


def _validate_service_extra(obj: dict[str, Any]) -> None:
    """Rules of the real API server that the parser (a consumer) does not enforce."""
    name = obj["metadata"]["name"]
    if isinstance(name, str) and name and not name[0].isalpha():
        raise invalid("Service", name, "metadata.name",
                      f"Invalid value: {name!r}: a DNS-1035 label must start with an alphabetic character")
    spec = obj.get("spec") or {}
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if spec.get("type") != "ExternalName" and not headless and not ports:
        raise invalid("Service", name, "spec.ports", "Required value")
    if len(ports) > 1:
        for i, p in enumerate(ports):
            if isinstance(p, dict) and not p.get("name"):
                raise invalid("Service", name, f"spec.ports[{i}].name", "Required value")


def finish_graceful_delete(registry: Registry, kind: Kind, namespace: str, name: str, uid: str) -> None:
    """The grace period of a deleted Pod ended (the lab plays kubelet): remove it unless finalizers hold it."""
    obj = registry.store.get(kind.plural, namespace, name)
    if obj is None or obj["metadata"].get("uid") != uid or obj["metadata"].get("finalizers"):
        return
    registry.store.delete(kind.plural, namespace, name)
    registry.after_delete(kind, obj)
