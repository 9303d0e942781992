"""The resources the lab API server serves, and its discovery documents.

One :class:`Kind` per resource: a :class:`podnet.kube.resources.Resource` (kube owns the
vocabulary: URL placement, kind name, parser; the five kinds podnet watches are taken from
podnet.kube as they are declared there) extended with short names, the singular name and
whether it has a status subresource. Its parser is the validator the server writes with
(:mod:`podnet.kube.objects` for the kinds the lab acts on, :mod:`.storedkinds` for those it
only stores). The discovery documents are the legacy (non-aggregated) ones,
which both kubectl 1.20 and 1.32 understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from podnet.kube import resources as r
from podnet.kube.resources import Resource
from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
from podnet.kube.netpol import parse_network_policy
from podnet.netlab.apiserver.storedkinds import validator

__all__ = ["Kind", "KINDS", "BY_API_PATH", "CORE", "DISCOVERY_V1", "version_doc", "api_versions", "api_group_list",
           "api_group", "resource_list"]

CORE = "/api/v1"
DISCOVERY_V1 = "/apis/discovery.k8s.io/v1"
APPS = "/apis/apps/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
POLICY = "/apis/policy/v1"
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True, slots=True)
class Kind(Resource):
    """A :class:`podnet.kube.resources.Resource` (where it lives, its kind, its parser, which here is the
    validator the server writes with) plus what only a server needs: short names, a status subresource
    and the singular name for discovery."""

    short_names: tuple[str, ...] = ()
    has_status: bool = False
    singular: str = ""
    custom_resource: bool = False
    """A CustomResourceDefinition's kind on a real cluster: its PATCH takes JSON, merge and apply
    patches but no strategic merge patch, as apiextensions-apiserver serves custom resources."""

    @classmethod
    def of(cls, r: Resource, short_names: tuple[str, ...] = (), has_status: bool = False,
           singular: str = "") -> "Kind":
        """The served form of a resource podnet.kube already declares."""
        return cls(r.api_path, r.plural, r.kind, r.namespaced, r.parse, short_names, has_status, singular)

    @property
    def validate(self) -> Callable[[Mapping[str, Any]], Any]:
        return self.parse

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


KINDS: dict[str, Kind] = {
    k.plural: k
    for k in (
        Kind.of(r.NAMESPACES, ("ns",), True, "namespace"),
        Kind.of(r.NODES, ("no",), True, "node"),
        Kind.of(r.PODS, ("po",), True, "pod"),
        Kind.of(r.SERVICES, ("svc",), True, "service"),
        Kind.of(r.ENDPOINT_SLICES, (), False, "endpointslice"),
        Kind("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, parse_network_policy, ("netpol",),
             False, "networkpolicy"),
        # The network-policy-api CRDs, cluster-scoped, validated as their OpenAPI schema and CEL rules.
        Kind("/apis/policy.networking.k8s.io/v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False,
             parse_admin_network_policy, ("anp",), True, "adminnetworkpolicy", custom_resource=True),
        Kind("/apis/policy.networking.k8s.io/v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy",
             False, parse_baseline_admin_network_policy, ("banp",), True, "baselineadminnetworkpolicy",
             custom_resource=True),
        # Validated by storedkinds; Endpoints and the apps/v1 kinds are kept by appcontrollers.
        Kind(CORE, "configmaps", "ConfigMap", True, validator("ConfigMap"), ("cm",), False, "configmap"),
        Kind(CORE, "secrets", "Secret", True, validator("Secret"), (), False, "secret"),
        Kind(CORE, "serviceaccounts", "ServiceAccount", True, validator("ServiceAccount"), ("sa",), False,
             "serviceaccount"),
        Kind(CORE, "events", "Event", True, validator("Event"), ("ev",), False, "event"),
        Kind(CORE, "endpoints", "Endpoints", True, validator("Endpoints"), ("ep",), False, "endpoints"),
        Kind(APPS, "daemonsets", "DaemonSet", True, validator("DaemonSet"), ("ds",), True, "daemonset"),
        Kind(APPS, "deployments", "Deployment", True, validator("Deployment"), ("deploy",), True, "deployment"),
        Kind(APPS, "replicasets", "ReplicaSet", True, validator("ReplicaSet"), ("rs",), True, "replicaset"),
        Kind(RBAC, "clusterroles", "ClusterRole", False, validator("ClusterRole"), (), False, "clusterrole"),
        Kind(RBAC, "clusterrolebindings", "ClusterRoleBinding", False, validator("ClusterRoleBinding"), (), False,
             "clusterrolebinding"),
        Kind(RBAC, "roles", "Role", True, validator("Role"), (), False, "role"),
        Kind(RBAC, "rolebindings", "RoleBinding", True, validator("RoleBinding"), (), False, "rolebinding"),
        Kind(POLICY, "poddisruptionbudgets", "PodDisruptionBudget", True, validator("PodDisruptionBudget"),
             ("pdb",), True, "poddisruptionbudget"),
    )
}
SCALABLE = frozenset({"deployments", "replicasets"})
"""The kinds with a ``scale`` subresource (autoscaling/v1 Scale)."""
ALL_CATEGORY = frozenset({"pods", "services", "daemonsets", "deployments", "replicasets"})
"""The resources in the ``all`` category (kubectl get all), as kube-apiserver lists them."""
BY_API_PATH: dict[str, dict[str, Kind]] = {}
for _k in KINDS.values():
    BY_API_PATH.setdefault(_k.api_path, {})[_k.plural] = _k


def version_doc() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-podnet-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "python",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_version(group: str) -> dict[str, Any]:
    version = next((k.api_path.split("/")[3] for k in KINDS.values() if k.api_path.startswith(f"/apis/{group}/")), "v1")
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(group: str) -> dict[str, Any]:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [_group_version(group)],
        "preferredVersion": _group_version(group),
    }


def api_group_list() -> dict[str, Any]:
    groups = sorted({k.api_path.split("/")[2] for k in KINDS.values() if k.api_path.startswith("/apis/")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in groups]}


def resource_list(api_path: str) -> dict[str, Any] | None:
    kinds = BY_API_PATH.get(api_path)
    if kinds is None:
        return None
    resources: list[dict[str, Any]] = []
    for k in sorted(kinds.values(), key=lambda k: k.plural):
        entry = {
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.plural in ALL_CATEGORY:
            entry["categories"] = ["all"]  # kubectl get all
        resources.append(entry)
        if k.has_status:
            resources.append(
                {"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced, "kind": k.kind,
                 "verbs": ["get", "patch", "update"]}
            )
        if k.plural in SCALABLE:  # served by apihandlers with podnet.netlab.apiserver.scale
            resources.append({"name": f"{k.plural}/scale", "singularName": "", "namespaced": True,
                              "group": "autoscaling", "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
        if k.plural == "pods":  # served by podlogs, as kube-apiserver lists it
            resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                              "verbs": ["get"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_path.split("/", 2)[2], "resources": resources}
