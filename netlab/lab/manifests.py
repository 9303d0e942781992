"""API objects the lab creates: the echo pods, and pods and Services for checks and the demo.

Pure functions returning plain JSON dicts, shaped as a user would write them
for a real cluster (pods are bound to a node with ``spec.nodeName``). podnet's
own objects (the kube-dns Service, podnet-dns, the node DaemonSet) come from
deploy/podnet.yaml (:mod:`.install`); :func:`dns_pod` and :func:`dns_service`
are a single podnet-dns pod and a kube-dns Service as plain objects, for API
tests.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["pod", "service", "dns_pod", "dns_service", "ECHO_PORT", "HTTP_PORT", "base_pod_name", "LAB_LABEL"]

ECHO_PORT = 9000   # pod server TCP and UDP echo
HTTP_PORT = 8080   # pod server HTTP
LAB_LABEL = "lab.podnet.io/part"


def base_pod_name(node_index: int, k: int) -> str:
    return f"echo-n{node_index}-{k}"


def pod(
    name: str, node: str, labels: dict[str, str], *, namespace: str = "default",
    command: list[str] | None = None, hostname: str = "", subdomain: str = "",
    readiness: dict[str, Any] | None = None, ports: Iterable[tuple[str, int, str]] = (),
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "podnet/podserver:lab"}
    if command:
        container["command"] = command
    container["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports] or [
        {"name": "echo", "containerPort": ECHO_PORT, "protocol": "TCP"},
        {"name": "echo-udp", "containerPort": ECHO_PORT, "protocol": "UDP"},
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
    ]
    if readiness:
        container["readinessProbe"] = readiness
    spec: dict[str, Any] = {"nodeName": node, "containers": [container]}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "spec": spec}


def service(
    name: str, selector: dict[str, str] | None, ports: Iterable[tuple[str, str, int, int]], *,
    namespace: str = "default", type: str = "ClusterIP", cluster_ip: str | None = None,
    external_traffic_policy: str | None = None, session_affinity: str | None = None,
    labels: dict[str, str] | None = None, publish_not_ready: bool = False, external_ips: list[str] | None = None,
) -> dict[str, Any]:
    """``ports``: (name, protocol, port, targetPort)."""
    spec: dict[str, Any] = {
        "type": type,
        "ports": [{"name": n, "protocol": proto, "port": port, "targetPort": target} for n, proto, port, target in ports],
    }
    if selector is not None:
        spec["selector"] = dict(selector)
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if external_traffic_policy:
        spec["externalTrafficPolicy"] = external_traffic_policy
    if session_affinity:
        spec["sessionAffinity"] = session_affinity
        if session_affinity == "ClientIP":
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 600}}
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})}, "spec": spec}


def dns_service(ip: str) -> dict[str, Any]:
    return service(
        "kube-dns", {"k8s-app": "kube-dns"},
        [("dns", "UDP", 53, 53), ("dns-tcp", "TCP", 53, 53), ("metrics", "TCP", 9153, 9153)],
        namespace="kube-system", cluster_ip=ip, labels={"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
    )


def dns_pod(node: str, command: list[str], name: str = "podnet-dns") -> dict[str, Any]:
    return pod(
        name, node, {"k8s-app": "kube-dns", LAB_LABEL: "dns"}, namespace="kube-system", command=command,
        readiness={"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
        ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")],
    )
