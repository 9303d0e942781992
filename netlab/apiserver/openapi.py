"""OpenAPI v3 documents for the served kinds, enough for ``kubectl explain`` (kubectl 1.32 reads v3).

``/openapi/v3`` lists one document per group-version (kube-openapi's ``handler3``: ``paths`` of
``serverRelativeURL`` with a ``hash`` query); ``/openapi/v3/api/v1`` and
``/openapi/v3/apis/<group>/<version>`` hold, per kind, a ``components.schemas`` entry named as
upstream (``io.k8s.api.core.v1.Pod``) carrying ``x-kubernetes-group-version-kind``, which is how
``kubectl explain`` finds a kind's schema, and the PATCH and POST operations of its paths with the
``fieldValidation`` query parameter, which is how kubectl (1.27+) decides that the server validates
fields (``--validate=strict`` then becomes server-side field validation).

The patch operations carry no ``requestBody``: kubectl computes strategic merge patches from OpenAPI
v3 only for operations that accept ``application/strategic-merge-patch+json``, so it keeps using its
compiled-in types (with their merge keys), which these schemas do not describe.

Schemas are built from :mod:`.fieldschema` (the fields the server validates for Service,
EndpointSlice, Node, Namespace, Pod) plus the apps/v1 workloads (their pod template is the Pod's
spec), ConfigMap, Secret, ServiceAccount and the RBAC kinds written here; other kinds get ``apiVersion``, ``kind``
and ``metadata`` only. A leaf's type comes from :data:`LEAF_TYPES` by field name (``string`` when
not listed); descriptions are short, written for the lab (upstream's are the Go doc comments).
"""

from __future__ import annotations

from typing import Any, Mapping

from podnet.netlab.apiserver import fieldschema as fs
from podnet.netlab.apiserver.apikinds import BY_API_PATH, Kind

__all__ = ["root", "group_version", "SCHEMAS", "schema_name"]

HASH = "podnet-lab-2"

LABEL_SELECTOR = fs.fields("matchLabels", matchExpressions=fs.ListOf(fs.fields("key", "operator", "values")))
POD_TEMPLATE = fs.fields(metadata=fs.OBJECT_META, spec=fs.POD["spec"])


_STRING_LIST = fs.ListOf(fs.ANY)
RULE = fs.fields(apiGroups=_STRING_LIST, resources=_STRING_LIST, verbs=_STRING_LIST, resourceNames=_STRING_LIST,
                 nonResourceURLs=_STRING_LIST)
ROLE_REF = fs.fields("apiGroup", "kind", "name")
SUBJECT = fs.fields("kind", "apiGroup", "name", "namespace")


def _workload(*leaves: str, **spec: Any) -> dict[str, Any]:
    return fs.top(spec=fs.fields("minReadySeconds", "revisionHistoryLimit", *leaves, selector=LABEL_SELECTOR,
                                 template=POD_TEMPLATE, **spec),
                  status=fs.fields("observedGeneration", "replicas", "readyReplicas", "availableReplicas",
                                   "updatedReplicas", "unavailableReplicas", "currentNumberScheduled",
                                   "desiredNumberScheduled", "numberReady", "numberAvailable",
                                   "updatedNumberScheduled", "numberMisscheduled", "fullyLabeledReplicas",
                                   "collisionCount", conditions=fs.ListOf(fs.CONDITION)))


SCHEMAS: Mapping[str, Any] = {
    **fs.SCHEMAS,
    "deployments": _workload("replicas", "paused", "progressDeadlineSeconds",
                             strategy=fs.fields("type", rollingUpdate=fs.fields("maxUnavailable", "maxSurge"))),
    "replicasets": _workload("replicas"),
    "daemonsets": _workload(updateStrategy=fs.fields("type", rollingUpdate=fs.fields("maxUnavailable", "maxSurge"))),
    "configmaps": fs.top(data=fs.ANY, binaryData=fs.ANY, immutable=fs.ANY),
    "secrets": fs.top(data=fs.ANY, stringData=fs.ANY, type=fs.ANY, immutable=fs.ANY),
    "serviceaccounts": fs.top(secrets=fs.ListOf(fs.fields("name", "namespace")),
                              imagePullSecrets=fs.ListOf(fs.fields("name")),
                              automountServiceAccountToken=fs.ANY),
    "clusterroles": fs.top(rules=fs.ListOf(RULE), aggregationRule=fs.ANY),
    "roles": fs.top(rules=fs.ListOf(RULE)),
    "clusterrolebindings": fs.top(roleRef=ROLE_REF, subjects=fs.ListOf(SUBJECT)),
    "rolebindings": fs.top(roleRef=ROLE_REF, subjects=fs.ListOf(SUBJECT)),
}
"""Field schema per plural (see :mod:`.fieldschema` for the notation)."""

_INT = {"type": "integer", "format": "int32"}
_INT64 = {"type": "integer", "format": "int64"}
_BOOL = {"type": "boolean"}
_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_FREE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_INT_OR_STRING = {"type": "string", "format": "int-or-string"}
LEAF_TYPES: Mapping[str, Mapping[str, Any]] = {
    **{n: _INT for n in ("replicas", "port", "containerPort", "hostPort", "nodePort", "targetPortNumber",
                         "minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds", "readyReplicas",
                         "availableReplicas", "updatedReplicas", "unavailableReplicas", "fullyLabeledReplicas",
                         "currentNumberScheduled", "desiredNumberScheduled", "numberReady", "numberAvailable",
                         "updatedNumberScheduled", "numberMisscheduled", "collisionCount", "healthCheckNodePort",
                         "initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                         "failureThreshold", "priority")},
    **{n: _INT64 for n in ("generation", "observedGeneration", "deletionGracePeriodSeconds",
                           "terminationGracePeriodSeconds", "activeDeadlineSeconds")},
    **{n: _BOOL for n in ("paused", "immutable", "hostNetwork", "hostPID", "hostIPC", "stdin", "stdinOnce", "tty",
                          "unschedulable", "publishNotReadyAddresses", "automountServiceAccountToken",
                          "enableServiceLinks", "shareProcessNamespace", "setHostnameAsFQDN", "hostUsers",
                          "allocateLoadBalancerNodePorts", "controller", "blockOwnerDeletion", "ready", "serving",
                          "terminating")},
    **{n: _MAP for n in ("labels", "annotations", "selector", "nodeSelector", "matchLabels", "data", "stringData",
                         "capacity", "allocatable")},
    **{n: _STRINGS for n in ("finalizers", "command", "args", "clusterIPs", "externalIPs", "ipFamilies",
                             "podCIDRs", "addresses", "values", "loadBalancerSourceRanges")},
    **{n: _INT_OR_STRING for n in ("targetPort", "maxUnavailable", "maxSurge")},
    **{n: {"type": "array", "items": _FREE} for n in (
        "envFrom", "resizePolicy", "volumeDevices", "volumeMounts", "volumes", "tolerations", "imagePullSecrets",
        "hostAliases", "topologySpreadConstraints", "readinessGates", "schedulingGates", "resourceClaims",
        "containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses", "images", "ingress", "egress")},
    "binaryData": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
}
DESCRIPTIONS: Mapping[str, str] = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object.",
    "kind": "Kind is a string value representing the REST resource this object represents.",
    "metadata": "Standard object's metadata.",
    "spec": "The desired state of the object.",
    "status": "The most recently observed state of the object (read-only; written by the system).",
    "containers": "List of containers belonging to the pod. In the lab, a container whose image the lab knows "
                  "runs its command; any other runs the lab's echo server on its declared ports.",
    "initContainers": "Containers run in order, each to completion, before the app containers start.",
    "image": "Container image name.",
    "command": "Entrypoint array. Not executed within a shell.",
    "args": "Arguments to the entrypoint.",
    "ports": "List of ports.",
    "env": "List of environment variables to set in the container.",
    "replicas": "Number of desired pods.",
    "selector": "Label query over pods (a label selector).",
    "template": "The pod template: the pods created will satisfy the selector.",
    "strategy": "The deployment strategy used to replace existing pods with new ones.",
    "nodeName": "The node the pod is bound to (set by the scheduler, or by the client to bypass it).",
    "labels": "Map of string keys and values that can be used to organize and categorize objects.",
    "annotations": "Unstructured key value map stored with a resource.",
    "name": "The name of the object, or of this item of a list.",
    "namespace": "The namespace the object lives in.",
    "data": "The data: string values (a Secret's: base64).",
    "type": "The type (a Service's: ClusterIP, NodePort, LoadBalancer or ExternalName).",
    "clusterIP": "The IP address of the service, allocated by the API server from the service CIDR.",
    "volumes": "List of volumes that can be mounted by containers belonging to the pod.",
    "serviceAccountName": "The name of the ServiceAccount the pod runs as.",
    "hostNetwork": "Run the pod in the node's network namespace.",
}
KIND_DESCRIPTIONS: Mapping[str, str] = {
    "Pod": "Pod is a collection of containers that can run on a host.",
    "Service": "Service is a named abstraction of software service (for example, mysql) consisting of local port "
               "(for example 3306) that the proxy listens on, and the selector that determines which pods will "
               "answer requests sent through the proxy.",
    "Deployment": "Deployment enables declarative updates for Pods and ReplicaSets.",
    "ReplicaSet": "ReplicaSet ensures that a specified number of pod replicas are running at any given time.",
    "DaemonSet": "DaemonSet represents the configuration of a daemon set.",
    "Node": "Node is a worker node in Kubernetes.",
    "Namespace": "Namespace provides a scope for Names.",
    "EndpointSlice": "EndpointSlice represents a subset of the endpoints that implement a service.",
    "ConfigMap": "ConfigMap holds configuration data for pods to consume.",
    "Secret": "Secret holds secret data of a certain type.",
    "ClusterRole": "ClusterRole is a cluster level, logical grouping of PolicyRules that can be referenced as a "
                   "unit by a RoleBinding or ClusterRoleBinding.",
    "Role": "Role is a namespaced, logical grouping of PolicyRules that can be referenced as a unit by a "
            "RoleBinding.",
    "ClusterRoleBinding": "ClusterRoleBinding references a ClusterRole, but not contain it. It adds who information "
                          "via Subjects.",
    "RoleBinding": "RoleBinding references a role, but does not contain it. It adds who information via Subjects.",
    "ServiceAccount": "ServiceAccount binds together a name, understood by users and perhaps by peripheral systems, "
                      "for an identity, and a set of secrets.",
}

_PACKAGES = {"": "io.k8s.api.core", "apps": "io.k8s.api.apps", "discovery.k8s.io": "io.k8s.api.discovery",
             "networking.k8s.io": "io.k8s.api.networking", "rbac.authorization.k8s.io": "io.k8s.api.rbac",
             "policy": "io.k8s.api.policy"}


def _group_version(k: Kind) -> tuple[str, str]:
    group, _, version = k.api_version.rpartition("/")
    return group, version


def schema_name(k: Kind) -> str:
    """Upstream's component name, e.g. ``io.k8s.api.apps.v1.Deployment``."""
    group, version = _group_version(k)
    pkg = _PACKAGES.get(group) or ".".join(reversed(group.split(".")))
    return f"{pkg}.{version}.{k.kind}"


def _schema(name: str, s: Any) -> dict[str, Any]:
    """The OpenAPI schema of field ``name`` with :mod:`.fieldschema` schema ``s``."""
    out: dict[str, Any]
    if isinstance(s, fs.ListOf):
        out = {"type": "array", "items": _schema("", s.item) | ({"type": "object"} if isinstance(s.item, dict)
                                                                 else {})}
    elif isinstance(s, dict):
        out = {"type": "object", "properties": {k: _schema(k, v) for k, v in sorted(s.items())}}
    elif name in LEAF_TYPES:
        out = dict(LEAF_TYPES[name])
    elif name in ("resources", "securityContext", "affinity", "exec", "httpGet", "tcpSocket", "grpc",
                  "lifecycle", "valueFrom", "dnsConfig", "nodeInfo", "daemonEndpoints", "roleRef",
                  "podSelector", "policyTypes", "spec", "status", "template"):
        out = dict(_FREE)
    else:
        out = {"type": "string"}
    if name in DESCRIPTIONS:
        out["description"] = DESCRIPTIONS[name]
    return out


def kind_schema(k: Kind) -> dict[str, Any]:
    group, version = _group_version(k)
    body = SCHEMAS.get(k.plural) or fs.top()
    out = _schema("", body)
    out["description"] = KIND_DESCRIPTIONS.get(k.kind, f"{k.kind} ({k.api_version}), as the lab API server serves it.")
    out["x-kubernetes-group-version-kind"] = [{"group": group, "kind": k.kind, "version": version}]
    return out


def root() -> dict[str, Any]:
    return {"paths": {path.lstrip("/"): {"serverRelativeURL": f"/openapi/v3{path}?hash={HASH}"}
                      for path in BY_API_PATH}}


def group_version(api_path: str) -> dict[str, Any] | None:
    kinds = BY_API_PATH.get(api_path)
    if kinds is None:
        return None
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for k in kinds.values():
        group, version = _group_version(k)
        gvk = {"group": group, "version": version, "kind": k.kind}
        ref = {"$ref": f"#/components/schemas/{schema_name(k)}"}
        ok = {"description": "OK", "content": {"application/json": {"schema": ref}}}
        item = (f"{api_path}/namespaces/{{namespace}}/{k.plural}/{{name}}" if k.namespaced
                else f"{api_path}/{k.plural}/{{name}}")
        paths[item] = {
            "get": {"operationId": f"read{k.kind}", "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk, "responses": {"200": ok}},
            "patch": {"operationId": f"patch{k.kind}", "x-kubernetes-action": "patch",
                      "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation],
                      "responses": {"200": ok}}}
        created = {"description": "Created", "content": {"application/json": {"schema": ref}}}
        paths[item.rsplit("/", 1)[0]] = {
            "post": {"operationId": f"create{k.kind}", "x-kubernetes-action": "post",
                     "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation],
                     "responses": {"201": created}}}
        schemas[schema_name(k)] = kind_schema(k)
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (podnet lab)", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": schemas}}
