"""The fields the lab API server knows, per kind (for fieldValidation).

A schema is one of:

- :data:`ANY`: a leaf or a subtree whose inside is not checked (scalars,
  maps with free keys such as labels, and a few deep Pod subtrees: volumes,
  probes' handlers, security contexts, affinity, resources);
- a ``dict`` of field name to schema: an object with exactly these fields;
- :class:`ListOf`: a list whose items have the given schema.

The field lists follow the Kubernetes v1 API types (core/v1 Service, Pod,
Node, Namespace; discovery/v1 EndpointSlice; meta/v1 ObjectMeta) as of
v1.32. Subtrees marked :data:`ANY` are never reported nor pruned, so the
checker errs on the side of accepting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ANY", "ListOf", "SCHEMAS", "Schema"]

ANY = None


@dataclass(frozen=True)
class ListOf:
    item: Any


Schema = Any


def fields(*names: str, **nested: Schema) -> dict[str, Schema]:
    """An object schema: plain ``names`` are leaves, ``nested`` carry their own schema."""
    out: dict[str, Schema] = {n: ANY for n in names}
    out.update(nested)
    return out


OWNER_REFERENCE = fields("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")
MANAGED_FIELDS = fields("manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource")
OBJECT_META = fields(
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "finalizers",
    ownerReferences=ListOf(OWNER_REFERENCE), managedFields=ListOf(MANAGED_FIELDS),
)
CONDITION = fields("type", "status", "observedGeneration", "lastTransitionTime", "lastProbeTime",
                   "lastHeartbeatTime", "reason", "message")


def top(**rest: Schema) -> dict[str, Schema]:
    return fields("apiVersion", "kind", metadata=OBJECT_META, **rest)


SERVICE_PORT = fields("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")
SERVICE = top(
    spec=fields(
        "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity", "loadBalancerIP",
        "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy", "healthCheckNodePort",
        "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts",
        "loadBalancerClass", "internalTrafficPolicy", "trafficDistribution",
        ports=ListOf(SERVICE_PORT),
        sessionAffinityConfig=fields(clientIP=fields("timeoutSeconds")),
    ),
    status=fields(
        loadBalancer=fields(ingress=ListOf(fields("ip", "hostname", "ipMode",
                                                  ports=ListOf(fields("port", "protocol", "error"))))),
        conditions=ListOf(CONDITION),
    ),
)

ENDPOINT_SLICE = top(
    addressType=ANY,
    endpoints=ListOf(fields(
        "addresses", "hostname", "nodeName", "zone", "deprecatedTopology",
        conditions=fields("ready", "serving", "terminating"),
        targetRef=fields("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"),
        hints=fields(forZones=ListOf(fields("name")), forNodes=ListOf(fields("name"))),
    )),
    ports=ListOf(fields("name", "protocol", "port", "appProtocol")),
)

NODE = top(
    spec=fields("podCIDR", "podCIDRs", "providerID", "unschedulable", "configSource", "externalID",
                taints=ListOf(fields("key", "value", "effect", "timeAdded"))),
    status=fields(
        "capacity", "allocatable", "phase", "daemonEndpoints", "images", "volumesInUse", "volumesAttached", "config",
        "runtimeHandlers", "features",
        conditions=ListOf(CONDITION),
        addresses=ListOf(fields("type", "address")),
        nodeInfo=fields("machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
                        "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture", "swap"),
    ),
)

NAMESPACE = top(spec=fields("finalizers"), status=fields("phase", "conditions"))

PROBE = fields("exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "timeoutSeconds", "periodSeconds",
               "successThreshold", "failureThreshold", "terminationGracePeriodSeconds")
CONTAINER = fields(
    "name", "image", "command", "args", "workingDir", "envFrom", "resources", "resizePolicy", "restartPolicy",
    "volumeMounts", "volumeDevices", "lifecycle", "terminationMessagePath", "terminationMessagePolicy",
    "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty", "targetContainerName",
    ports=ListOf(fields("name", "hostPort", "containerPort", "protocol", "hostIP")),
    env=ListOf(fields("name", "value", "valueFrom")),
    livenessProbe=PROBE, readinessProbe=PROBE, startupProbe=PROBE,
)
POD = top(
    spec=fields(
        "volumes", "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy",
        "nodeSelector", "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName",
        "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets",
        "hostname", "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
        "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks", "preemptionPolicy",
        "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates",
        "resourceClaims", "resources",
        containers=ListOf(CONTAINER), initContainers=ListOf(CONTAINER), ephemeralContainers=ListOf(CONTAINER),
    ),
    status=fields(
        "phase", "message", "reason", "nominatedNodeName", "hostIP", "podIP", "startTime", "initContainerStatuses",
        "containerStatuses", "qosClass", "ephemeralContainerStatuses", "resize", "resourceClaimStatuses",
        "observedGeneration",
        conditions=ListOf(CONDITION),
        hostIPs=ListOf(fields("ip")), podIPs=ListOf(fields("ip")),
    ),
)

SCHEMAS: Mapping[str, Schema] = {
    "services": SERVICE,
    "endpointslices": ENDPOINT_SLICE,
    "nodes": NODE,
    "namespaces": NAMESPACE,
    "pods": POD,
}
"""Schema of each kind, by plural."""
