"""A lab pod's volumes: where each one lives on the node, and the files it holds.

Where volumes live (``<pod dir>`` is ``<run-dir>/pods/<node>/<pod uid>``):

- ``hostPath``: under the lab node's own root, ``<run-dir>/nodes/<node>/root/<path>``, so two lab
  nodes never share a "host" directory (each has its own /opt/cni/bin, /etc/cni/net.d,
  /var/lib/podnet ...) and nothing is written to the machine's real paths. A few paths are the
  kernel's, which every lab node shares, and map to the real host path (:data:`KERNEL_SHARED`):
  ``/lib/modules`` (the running kernel's modules, for modprobe), ``/run/xtables.lock`` (the lock
  every iptables writer on the machine takes, the lab kubelet's portmap plugin included, so a
  container's iptables-restore serialises with them) and ``/var/run/netns`` (= ``/run/netns``:
  the pods' network namespace handles, which the kubelet creates there and a CNI daemon must
  enter); where the machine lacks one, the node's own (empty) directory stands in. ``type`` is
  checked as kubelet checks it: DirectoryOrCreate and FileOrCreate create,
  Directory, File, Socket, CharDevice and BlockDevice must exist as that, "" checks nothing;
- ``emptyDir``: ``<pod dir>/volumes/<name>`` (disk; ``medium: Memory`` alike);
- ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` (serviceAccountToken, configMap,
  secret, downwardAPI sources): files written once, when the pod starts, under
  ``<pod dir>/volumes/<name>`` -- every key, or the ``items`` (key -> path) -- mode 0644 (0600 for
  secrets and tokens). They are not refreshed when the object changes (kubelet refreshes them
  within a minute; the lab does not, tokens apart);
- tokens (projected serviceAccountToken sources and the service-account volume's) are
  rewritten every 80 % of their lifetime while the pod runs (:func:`refresh_tokens`), as kubelet
  renews them;
- the service-account volume: unless ``automountServiceAccountToken: false`` or a container
  already mounts ``/var/run/secrets/kubernetes.io/serviceaccount``, every container gets there
  ``token`` (from the TokenRequest API, bound to the pod), ``ca.crt`` (the lab CA) and
  ``namespace`` -- what the ServiceAccount admission plugin's ``kube-api-access-*`` projected
  volume gives on a real cluster.

:func:`container_mounts` is pure (spec + volume dirs -> mount list for
:mod:`podnet.netlab.node.launch`); :func:`materialise` is the one side-effect step.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from podnet.netlab.node.podspec import ConfigError, Container, PodSpec

__all__ = ["KERNEL_SHARED", "SA_MOUNT", "SA_VOLUME", "host_path", "container_mounts", "materialise", "Sources",
           "token_sources", "refresh_period", "refresh_tokens", "decode_secret"]

KERNEL_SHARED = ("/lib/modules", "/run/xtables.lock", "/var/run/netns", "/run/netns")
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_VOLUME = "kube-api-access-podnet-lab"
"""The name of the service-account volume the lab adds (see the module docstring)."""


def host_path(node_root: Path, path: str, exists=os.path.lexists) -> Path:
    """Where a hostPath volume's ``path`` is on the machine (see the module docstring); a
    kernel-shared path this machine lacks (a kernel without loadable modules has no
    /lib/modules) is the node's own, like any other path."""
    norm = os.path.normpath("/" + path.lstrip("/"))
    for shared in KERNEL_SHARED:
        if (norm == shared or norm.startswith(shared + "/")) and exists(shared):
            return Path(norm)
    return node_root / norm.lstrip("/")


def wants_sa_volume(spec: PodSpec) -> bool:
    mounted = any(m.mount_path.rstrip("/") == SA_MOUNT for c in spec.containers + spec.init_containers
                  for m in c.mounts)
    return spec.automount_token and not mounted


def container_mounts(spec: PodSpec, c: Container, dirs: Mapping[str, Path], resolv_conf: Path | None
                     ) -> list[dict[str, Any]]:
    """The launcher's mount list for one container: its volumeMounts (subPath joined), the
    service-account volume when the pod gets one, and the pod's resolv.conf."""
    out = []
    for m in c.mounts:
        if m.name not in dirs:
            raise ConfigError(f"volumeMount {m.name!r}: no volume of that name")
        src = dirs[m.name]
        if m.sub_path:
            sub = os.path.normpath(m.sub_path)
            if sub.startswith("..") or os.path.isabs(sub):
                raise ConfigError(f"volumeMount {m.name!r}: subPath {m.sub_path!r} leaves the volume")
            src = src / sub
        out.append({"source": str(src), "target": m.mount_path, "readOnly": m.read_only})
    if SA_VOLUME in dirs and wants_sa_volume(spec):
        out.append({"source": str(dirs[SA_VOLUME]), "target": SA_MOUNT, "readOnly": True})
    if resolv_conf is not None:
        out.append({"source": str(resolv_conf), "target": "/etc/resolv.conf", "readOnly": True})
    return out


class Sources:
    """What volumes read from the cluster; the kubelet gives API-backed callables, tests give dicts."""

    def __init__(self, config_map: Callable[[str, str], Awaitable[Mapping[str, str] | None]],
                 secret: Callable[[str, str], Awaitable[Mapping[str, str] | None]],
                 token: Callable[[PodSpec, str, int], Awaitable[str]], ca_file: Path | None) -> None:
        self.config_map, self.secret, self.token, self.ca_file = config_map, secret, token, ca_file


def _check_type(p: Path, kind: str) -> None:
    if kind == "DirectoryOrCreate":
        p.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(exist_ok=True)
    elif kind:
        test = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
                "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}.get(kind)
        try:
            ok = test is None or test(p.stat().st_mode)
        except OSError:
            ok = False
        if not ok:
            raise ConfigError(f"hostPath type check failed: {p} is not a {kind}")


def _write(d: Path, rel: str, data: bytes, mode: int) -> None:
    rel = os.path.normpath(rel)
    if rel.startswith("..") or os.path.isabs(rel):
        raise ConfigError(f"volume item path {rel!r} leaves the volume")
    f = d / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, f)  # a reader sees the old file or the new one, never half of one


def _items(d: Path, data: Mapping[str, bytes], items: Any, mode: int, what: str, optional: bool) -> None:
    if items:
        for it in items:
            key, path = str(it.get("key", "")), str(it.get("path") or it.get("key", ""))
            if key not in data:
                if optional:
                    continue
                raise ConfigError(f"{what}: no key {key!r}")
            _write(d, path, data[key], mode)
    else:
        for key, value in data.items():
            _write(d, key, value, mode)


async def _object(fetch: Callable[[str, str], Awaitable[Mapping[str, str] | None]], ns: str, name: str,
                  optional: bool, what: str) -> dict[str, bytes] | None:
    data = await fetch(ns, name)
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{what} "{name}" not found')
    return {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in data.items()}


async def _downward(d: Path, items: Any, facts: Mapping[str, str]) -> None:
    for it in items or ():
        fp = str((it.get("fieldRef") or {}).get("fieldPath", ""))
        if fp not in facts:
            raise ConfigError(f"downwardAPI: unsupported fieldPath {fp!r}")
        _write(d, str(it.get("path", "")), facts[fp].encode(), 0o644)


async def materialise(spec: PodSpec, pod_dir: Path, node_root: Path, src: Sources, facts: Mapping[str, str]
                      ) -> dict[str, Path]:
    """Create every volume of the pod (see the module docstring); returns name -> directory or file."""
    dirs: dict[str, Path] = {}
    vroot = pod_dir / "volumes"
    for name, v in spec.volumes:
        d = vroot / name
        if isinstance(v.get("hostPath"), Mapping):
            hp = v["hostPath"]
            p = host_path(node_root, str(hp.get("path", "/")))
            kind = str(hp.get("type") or "")
            if kind == "Directory" and p.is_relative_to(node_root) and any(
                    p == node_root / s.lstrip("/") for s in KERNEL_SHARED):
                p.mkdir(parents=True, exist_ok=True)  # the node's stand-in for a kernel path it lacks
            _check_type(p, kind)
            dirs[name] = p
            continue
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        dirs[name] = d
        if "emptyDir" in v:
            continue
        if isinstance(v.get("configMap"), Mapping):
            cm = v["configMap"]
            opt = bool(cm.get("optional", False))
            data = await _object(src.config_map, spec.namespace, str(cm.get("name", "")), opt, "configmap")
            if data is not None:
                _items(d, data, cm.get("items"), 0o644, f"configmap {cm.get('name')}", opt)
        elif isinstance(v.get("secret"), Mapping):
            s = v["secret"]
            opt = bool(s.get("optional", False))
            data = await _object(src.secret, spec.namespace, str(s.get("secretName", "")), opt, "secret")
            if data is not None:
                _items(d, data, s.get("items"), 0o600, f"secret {s.get('secretName')}", opt)
        elif isinstance(v.get("downwardAPI"), Mapping):
            await _downward(d, v["downwardAPI"].get("items"), facts)
        elif isinstance(v.get("projected"), Mapping):
            for source in v["projected"].get("sources") or ():
                await _projected(d, spec, source, src, facts)
        else:
            raise ConfigError(f"volume {name!r}: unsupported volume type ({', '.join(k for k in v if k != 'name')})")
    if wants_sa_volume(spec):
        d = vroot / SA_VOLUME
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        await _projected(d, spec, {"serviceAccountToken": DEFAULT_TOKEN}, src, facts)
        if src.ca_file is not None:
            _write(d, "ca.crt", src.ca_file.read_bytes(), 0o644)
        _write(d, "namespace", spec.namespace.encode(), 0o644)
        dirs[SA_VOLUME] = d
    return dirs


async def _projected(d: Path, spec: PodSpec, source: Mapping[str, Any], src: Sources, facts: Mapping[str, str]
                     ) -> None:
    if isinstance(source.get("serviceAccountToken"), Mapping):
        t = source["serviceAccountToken"]
        token = await src.token(spec, str(t.get("audience") or ""), int(t.get("expirationSeconds") or 3607))
        _write(d, str(t.get("path", "token")), token.encode(), 0o600)
    elif isinstance(source.get("configMap"), Mapping):
        cm = source["configMap"]
        opt = bool(cm.get("optional", False))
        data = await _object(src.config_map, spec.namespace, str(cm.get("name", "")), opt, "configmap")
        if data is not None:
            _items(d, data, cm.get("items"), 0o644, f"configmap {cm.get('name')}", opt)
    elif isinstance(source.get("secret"), Mapping):
        s = source["secret"]
        opt = bool(s.get("optional", False))
        data = await _object(src.secret, spec.namespace, str(s.get("name", "")), opt, "secret")
        if data is not None:
            _items(d, data, s.get("items"), 0o600, f"secret {s.get('name')}", opt)
    elif isinstance(source.get("downwardAPI"), Mapping):
        await _downward(d, source["downwardAPI"].get("items"), facts)


DEFAULT_TOKEN = {"path": "token", "expirationSeconds": 3607}


def token_sources(spec: PodSpec) -> list[tuple[str, Mapping[str, Any]]]:
    """(volume name, serviceAccountToken source) of every token the pod's volumes hold."""
    out = []
    for name, v in spec.volumes:
        projected = v.get("projected") if isinstance(v.get("projected"), Mapping) else {}
        for source in projected.get("sources") or ():
            if isinstance(source.get("serviceAccountToken"), Mapping):
                out.append((name, source["serviceAccountToken"]))
    if wants_sa_volume(spec):
        out.append((SA_VOLUME, DEFAULT_TOKEN))
    return out


def refresh_period(spec: PodSpec) -> float | None:
    """Seconds between token rewrites: 80 % of the shortest token lifetime, as kubelet renews
    a projected token once 80 % of its life has passed; None without tokens."""
    lives = [int(t.get("expirationSeconds") or 3607) for _, t in token_sources(spec)]
    return 0.8 * min(lives) if lives else None


async def refresh_tokens(spec: PodSpec, dirs: Mapping[str, Path], src: Sources) -> None:
    """Write a fresh token into every token file of the pod (atomically: rename over the old)."""
    for name, t in token_sources(spec):
        if name in dirs:
            token = await src.token(spec, str(t.get("audience") or ""), int(t.get("expirationSeconds") or 3607))
            _write(dirs[name], str(t.get("path", "token")), token.encode(), 0o600)


def decode_secret(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` (base64) and ``stringData`` as text."""
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return out
