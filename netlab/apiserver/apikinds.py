"""The resources the lab API server serves, and its discovery documents.

One :class:`Kind` per resource: URL placement, kind name, short names, the
validator (:mod:`podnet.kube.objects` for the kinds the lab acts on,
:mod:`.storedkinds` for those it only stores), and whether it has a status
subresource. The discovery documents are the legacy (non-aggregated) ones,
which both kubectl 1.20 and 1.32 understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from podnet.kube import objects as o
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
class Kind:
    api_path: str
    plural: str
    kind: str
    namespaced: bool
    validate: Callable[[Mapping[str, Any]], Any]
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    singular: str = ""

    @property
    def api_version(self) -> str:
        return self.api_path.removeprefix("/api/").removeprefix("/apis/")

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


KINDS: dict[str, Kind] = {
    k.plural: k
    for k in (
        Kind(CORE, "namespaces", "Namespace", False, o.parse_namespace, ("ns",), True, "namespace"),
        Kind(CORE, "nodes", "Node", False, o.parse_node, ("no",), True, "node"),
        Kind(CORE, "pods", "Pod", True, o.parse_pod, ("po",), True, "pod"),
        Kind(CORE, "services", "Service", True, o.parse_service, ("svc",), True, "service"),
        Kind(DISCOVERY_V1, "endpointslices", "EndpointSlice", True, o.parse_endpoint_slice, (), False, "endpointslice"),
        Kind("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, parse_network_policy, ("netpol",),
             False, "networkpolicy"),
        # Stored as given, validated by storedkinds; no controller acts on them.
        Kind(CORE, "configmaps", "ConfigMap", True, validator("ConfigMap"), ("cm",), False, "configmap"),
        Kind(CORE, "secrets", "Secret", True, validator("Secret"), (), False, "secret"),
        Kind(CORE, "serviceaccounts", "ServiceAccount", True, validator("ServiceAccount"), ("sa",), False,
             "serviceaccount"),
        Kind(CORE, "events", "Event", True, validator("Event"), ("ev",), False, "event"),
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
    return {"groupVersion": f"{group}/v1", "version": "v1"}


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
        if k.plural == "pods":  # served by podlogs, as kube-apiserver lists it
            resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                              "verbs": ["get"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_path.split("/", 2)[2], "resources": resources}


# --------------------------------------------------------------------------- OpenAPI v3 (just enough for kubectl)
# kubectl apply (1.27+) validates through the server when the group-version's
# OpenAPI v3 document lists a ``fieldValidation`` query parameter on the kind's
# PATCH operation; it then needs no schemas and computes strategic merge
# patches from its built-in types.


def openapi_v3_root() -> dict[str, Any]:
    return {"paths": {path.lstrip("/"): {"serverRelativeURL": f"/openapi/v3{path}?hash=podnet-lab-1"}
                      for path in BY_API_PATH}}


def openapi_v3_group_version(api_path: str) -> dict[str, Any] | None:
    kinds = BY_API_PATH.get(api_path)
    if kinds is None:
        return None
    group_version = api_path.split("/", 2)[2]
    group, _, version = group_version.rpartition("/")
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths: dict[str, Any] = {}
    for k in kinds.values():
        gvk = {"group": group, "version": version, "kind": k.kind}
        item = f"{api_path}/namespaces/{{namespace}}/{k.plural}/{{name}}" if k.namespaced else f"{api_path}/{k.plural}/{{name}}"
        collection = item.rsplit("/", 1)[0]
        paths[item] = {"patch": {"operationId": f"patch{k.kind}", "x-kubernetes-action": "patch",
                                 "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation],
                                 "responses": {"200": {"description": "OK"}}}}
        paths[collection] = {"post": {"operationId": f"create{k.kind}", "x-kubernetes-action": "post",
                                      "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation],
                                      "responses": {"201": {"description": "Created"}}}}
    return {"openapi": "3.0.0", "info": {"title": "podnet lab", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": {}}}
