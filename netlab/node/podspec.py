"""What a Pod's spec asks the lab kubelet to run, as pure data: containers, env, probes, volumes.

:func:`parse` turns a raw Pod into a frozen :class:`PodSpec` (fields the kubelet acts on,
defaults applied as the API server's defaulting would: restartPolicy Always, probe period 10 s,
timeout 1 s, success 1, failure 3, TCP containerPorts). Nothing here reads a file or the API:
:func:`resolve_env` computes a container's environment from the spec, the pod's facts (the
downward API values) and the ConfigMaps/Secrets the caller fetched, and :func:`expand` is
Kubernetes' ``$(VAR)`` expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
``$(NAME)`` becomes NAME's value when NAME is defined, else stays as written; ``$$`` is one
``$``; an unterminated ``$(`` stays. Env values expand against the variables defined before
them (and the service variables), envFrom values never; command and args expand against the
final environment.

Errors a kubelet reports as ``CreateContainerConfigError`` (a missing ConfigMap, Secret or key
that is not optional, an unsupported fieldPath) raise :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["ConfigError", "Probe", "Port", "VolumeMount", "EnvVar", "EnvFrom", "Container", "SecurityContext", "PodSpec", "parse",
           "expand", "resolve_env", "pod_facts", "FIELD_PATHS"]


class ConfigError(ValueError):
    """A container cannot be configured from its spec (kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class Probe:
    kind: str                      # "http" | "tcp" | "exec"
    port: int | str | None = None  # a number or a container port's name
    path: str = "/"
    host: str = ""                 # "": the pod's IP
    scheme: str = "HTTP"
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class Port:
    name: str
    container_port: int
    host_port: int = 0
    protocol: str = "TCP"
    host_ip: str = ""


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""
    source: str = ""               # "" (value), "field", "configMap", "secret", "resource"
    ref_name: str = ""             # ConfigMap/Secret name, or the fieldPath
    key: str = ""
    optional: bool = False


@dataclass(frozen=True)
class EnvFrom:
    source: str                    # "configMap" | "secret"
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class SecurityContext:
    """The container's securityContext fields a runtime applies (the in-process launcher runs
    everything as root with every capability; the podman runtime applies these)."""
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    allow_privilege_escalation: bool | None = None
    read_only_root: bool = False
    run_as_user: int | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    ports: tuple[Port, ...] = ()
    mounts: tuple[VolumeMount, ...] = ()
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None
    security: SecurityContext = SecurityContext()

    def port_number(self, port: int | str | None) -> int | None:
        """A probe's port: a number, or the containerPort of the port with that name."""
        if isinstance(port, int) or port is None:
            return port
        if port.isdigit():
            return int(port)
        return next((p.container_port for p in self.ports if p.name == port), None)


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    uid: str
    node_name: str = ""
    host_network: bool = False
    restart_policy: str = "Always"
    service_account: str = "default"
    automount_token: bool = True
    dns_policy: str = "ClusterFirst"
    grace_period: float = 30.0
    """``terminationGracePeriodSeconds``: SIGTERM to SIGKILL when the pod is deleted."""
    init_containers: tuple[Container, ...] = ()
    containers: tuple[Container, ...] = ()
    volumes: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), compare=False)
    """(name, the raw volume source) in spec order; :mod:`podnet.netlab.node.volumes` reads them."""
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def host_ports(self) -> list[Port]:
        """Every declared hostPort of the pod's containers (the CNI portMappings)."""
        return [p for c in self.containers for p in c.ports if p.host_port]


def _int(v: Any, default: int) -> int:
    try:
        return int(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def _probe(raw: Any) -> Probe | None:
    if not isinstance(raw, Mapping):
        return None
    common = dict(initial_delay=float(_int(raw.get("initialDelaySeconds"), 0)),
                  period=float(_int(raw.get("periodSeconds"), 10) or 10),
                  timeout=float(_int(raw.get("timeoutSeconds"), 1) or 1),
                  success_threshold=_int(raw.get("successThreshold"), 1) or 1,
                  failure_threshold=_int(raw.get("failureThreshold"), 3) or 3)
    if isinstance(raw.get("httpGet"), Mapping):
        h = raw["httpGet"]
        return Probe("http", h.get("port"), str(h.get("path") or "/"), str(h.get("host") or ""),
                     str(h.get("scheme") or "HTTP").upper(), **common)
    if isinstance(raw.get("tcpSocket"), Mapping):
        t = raw["tcpSocket"]
        return Probe("tcp", t.get("port"), host=str(t.get("host") or ""), **common)
    if isinstance(raw.get("exec"), Mapping):
        return Probe("exec", command=tuple(str(x) for x in raw["exec"].get("command") or ()), **common)
    return None


def _env(raw: Any) -> EnvVar:
    name = str(raw.get("name", ""))
    vf = raw.get("valueFrom")
    if not isinstance(vf, Mapping):
        return EnvVar(name, str(raw.get("value") or ""))
    if isinstance(vf.get("fieldRef"), Mapping):
        return EnvVar(name, source="field", ref_name=str(vf["fieldRef"].get("fieldPath", "")))
    for src, key in (("configMap", "configMapKeyRef"), ("secret", "secretKeyRef")):
        if isinstance(vf.get(key), Mapping):
            ref = vf[key]
            return EnvVar(name, source=src, ref_name=str(ref.get("name", "")), key=str(ref.get("key", "")),
                          optional=bool(ref.get("optional", False)))
    return EnvVar(name, source="resource")


def _env_from(raw: Any) -> EnvFrom | None:
    for src, key in (("configMap", "configMapRef"), ("secret", "secretRef")):
        if isinstance(raw.get(key), Mapping):
            ref = raw[key]
            return EnvFrom(src, str(ref.get("name", "")), str(raw.get("prefix") or ""),
                           bool(ref.get("optional", False)))
    return None


def _container(raw: Mapping[str, Any]) -> Container:
    ports = tuple(Port(str(p.get("name") or ""), _int(p.get("containerPort"), 0), _int(p.get("hostPort"), 0),
                       str(p.get("protocol") or "TCP"), str(p.get("hostIP") or ""))
                  for p in raw.get("ports") or () if isinstance(p, Mapping))
    mounts = tuple(VolumeMount(str(m.get("name", "")), str(m.get("mountPath", "")), bool(m.get("readOnly", False)),
                               str(m.get("subPath") or ""))
                   for m in raw.get("volumeMounts") or () if isinstance(m, Mapping))
    env_from = tuple(e for e in (_env_from(x) for x in raw.get("envFrom") or () if isinstance(x, Mapping)) if e)
    return Container(
        name=str(raw.get("name") or "main"), image=str(raw.get("image") or ""),
        command=tuple(str(x) for x in raw.get("command") or ()), args=tuple(str(x) for x in raw.get("args") or ()),
        working_dir=str(raw.get("workingDir") or ""),
        env=tuple(_env(e) for e in raw.get("env") or () if isinstance(e, Mapping)), env_from=env_from,
        ports=ports, mounts=mounts, liveness=_probe(raw.get("livenessProbe")),
        readiness=_probe(raw.get("readinessProbe")), startup=_probe(raw.get("startupProbe")),
        security=_security_context(raw.get("securityContext")))


def _security_context(raw: Any) -> SecurityContext:
    if not isinstance(raw, Mapping):
        return SecurityContext()
    caps = raw.get("capabilities") if isinstance(raw.get("capabilities"), Mapping) else {}
    escalation = raw.get("allowPrivilegeEscalation")
    user = raw.get("runAsUser")
    return SecurityContext(
        privileged=raw.get("privileged") is True,
        cap_add=tuple(str(c) for c in caps.get("add") or () if isinstance(c, str)),
        cap_drop=tuple(str(c) for c in caps.get("drop") or () if isinstance(c, str)),
        allow_privilege_escalation=escalation if isinstance(escalation, bool) else None,
        read_only_root=raw.get("readOnlyRootFilesystem") is True,
        run_as_user=user if isinstance(user, int) and not isinstance(user, bool) else None)


def parse(pod: Mapping[str, Any]) -> PodSpec:
    """The frozen spec of a raw Pod (see the module docstring)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    containers = tuple(_container(c) for c in spec.get("containers") or () if isinstance(c, Mapping))
    return PodSpec(
        namespace=str(meta.get("namespace") or "default"), name=str(meta.get("name", "")),
        uid=str(meta.get("uid") or ""), node_name=str(spec.get("nodeName") or ""),
        host_network=bool(spec.get("hostNetwork", False)),
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        automount_token=spec.get("automountServiceAccountToken") is not False,
        dns_policy=str(spec.get("dnsPolicy") or "ClusterFirst"),
        grace_period=float(_int(spec.get("terminationGracePeriodSeconds"), 30)),
        init_containers=tuple(_container(c) for c in spec.get("initContainers") or () if isinstance(c, Mapping)),
        containers=containers or (Container("main"),),
        volumes=tuple((str(v.get("name", "")), v) for v in spec.get("volumes") or () if isinstance(v, Mapping)),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        annotations=tuple(sorted((meta.get("annotations") or {}).items())),
    )


# ---------------------------------------------------------------- $(VAR) expansion


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of ``text``; ``lookup`` answers None for an undefined name."""
    out: list[str] = []
    checkpoint, cursor, n = 0, 0, len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close < 0:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2:close]
                    value = lookup(name)
                    out.append(value if value is not None else f"$({name})")
                    advance = close - cursor
            else:
                out.append("$" + nxt)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# ---------------------------------------------------------------- env


FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
               "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs")
"""The downward API's fieldRef paths (plus ``metadata.labels['k']`` and ``metadata.annotations['k']``)."""


def pod_facts(spec: PodSpec, host_ip: str, pod_ips: list[str]) -> dict[str, str]:
    """The downward API values of a running pod, by fieldPath."""
    facts = {"metadata.name": spec.name, "metadata.namespace": spec.namespace, "metadata.uid": spec.uid,
             "spec.nodeName": spec.node_name, "spec.serviceAccountName": spec.service_account,
             "status.hostIP": host_ip, "status.hostIPs": host_ip,
             "status.podIP": pod_ips[0] if pod_ips else "", "status.podIPs": ",".join(pod_ips)}
    for k, v in spec.labels:
        facts[f"metadata.labels['{k}']"] = str(v)
    for k, v in spec.annotations:
        facts[f"metadata.annotations['{k}']"] = str(v)
    return facts


def _from_object(kind: str, objects: Mapping[str, Mapping[str, str] | None], name: str, key: str | None,
                 optional: bool) -> str | Mapping[str, str] | None:
    data = objects.get(name)
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    if key is None:
        return data
    if key not in data:
        if optional:
            return None
        raise ConfigError(f'couldn\'t find key {key} in {kind} {name}')
    return data[key]


def resolve_env(c: Container, facts: Mapping[str, str], config_maps: Mapping[str, Mapping[str, str] | None],
                secrets: Mapping[str, Mapping[str, str] | None], service_env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment, in kubelet's order: service variables, then envFrom, then env
    (a later definition wins), env values expanded against what is defined before them."""
    env: dict[str, str] = {}
    for ef in c.env_from:
        objects, kind = (config_maps, "configmap") if ef.source == "configMap" else (secrets, "secret")
        data = _from_object(kind, objects, ef.name, None, ef.optional)
        for k, v in (data or {}).items():
            env[ef.prefix + k] = str(v)

    def lookup(name: str) -> str | None:
        return env.get(name, service_env.get(name))

    for e in c.env:
        if e.source == "":
            env[e.name] = expand(e.value, lookup)
        elif e.source == "field":
            if e.ref_name not in facts:
                raise ConfigError(f"unsupported fieldPath {e.ref_name!r}")
            env[e.name] = facts[e.ref_name]
        elif e.source in ("configMap", "secret"):
            objects, kind = (config_maps, "configmap") if e.source == "configMap" else (secrets, "secret")
            value = _from_object(kind, objects, e.ref_name, e.key, e.optional)
            if value is not None:
                env[e.name] = str(value)
        else:  # resourceFieldRef: the lab sets no limits
            env[e.name] = "0"
    return {**service_env, **env}


def command_line(c: Container, env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded against the container's environment."""
    def lookup(name: str) -> str | None:
        return env.get(name)
    return [expand(x, lookup) for x in c.command] + [expand(x, lookup) for x in c.args]
