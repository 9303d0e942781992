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
  secret, downwardAPI sources): files under ``<pod dir>/volumes/<name>`` -- every key, or the
  ``items`` (key -> path) -- mode 0644 (0600 for secrets and tokens), written as kubelet's
  AtomicWriter writes them (:func:`write_atomic`: a ``..data`` symlink swapped in one rename, each
  name a symlink into it), when the pod starts and again by :func:`refresh` while it runs (the
  kubelet's periodic volume sync), so a changed ConfigMap or Secret reaches a running pod and a
  reader never sees half an update;
- tokens (projected serviceAccountToken sources and the service-account volume's) are kept by
  :func:`refresh` and requested anew once 80 % of their lifetime has passed (:func:`refresh_period`),
  as kubelet renews them;
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
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from podnet.netlab.node.podspec import ConfigError, Container, PodSpec

__all__ = ["KERNEL_SHARED", "SA_MOUNT", "SA_VOLUME", "host_path", "container_mounts", "materialise", "Sources",
           "token_sources", "refresh_period", "refresh", "write_atomic", "decode_secret"]

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


Files = dict[str, tuple[bytes, int]]
"""A volume's content: relative path -> (bytes, mode)."""


def _write(d: Files, rel: str, data: bytes, mode: int) -> None:
    rel = os.path.normpath(rel)
    if rel.startswith("..") or os.path.isabs(rel) or rel == ".":
        raise ConfigError(f"volume item path {rel!r} leaves the volume")
    d[rel] = (data, mode)


def _items(d: Files, data: Mapping[str, bytes], items: Any, mode: int, what: str, optional: bool) -> None:
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


async def _downward(d: Files, items: Any, facts: Mapping[str, str]) -> None:
    for it in items or ():
        fp = str((it.get("fieldRef") or {}).get("fieldPath", ""))
        if fp not in facts:
            raise ConfigError(f"downwardAPI: unsupported fieldPath {fp!r}")
        _write(d, str(it.get("path", "")), facts[fp].encode(), 0o644)


DATA_DIR = "..data"


def _current(d: Path) -> Files | None:
    """What the volume at ``d`` holds now (None when it was never written atomically)."""
    link = d / DATA_DIR
    if not link.is_symlink():
        return None
    root = d / os.readlink(link)
    out: Files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            f = Path(dirpath) / n
            out[str(f.relative_to(root))] = (f.read_bytes(), f.stat().st_mode & 0o777)
    return out


def write_atomic(d: Path, files: Files) -> bool:
    """Make ``d`` hold exactly ``files``, as kubelet's AtomicWriter does: the content goes into a new
    hidden directory ``..<time>``, the symlink ``..data_tmp`` pointing at it is renamed over ``..data``
    (one atomic step: a reader sees the old set of files or the new one, never a mix), each top-level
    name is a symlink ``name -> ..data/name``, and names no longer present and the old directory go.
    Returns False (and touches nothing) when ``d`` already holds ``files``."""
    d.mkdir(parents=True, exist_ok=True)
    if _current(d) == files:
        return False
    old = d / os.readlink(d / DATA_DIR) if (d / DATA_DIR).is_symlink() else None
    ts = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=d))
    for rel, (data, mode) in files.items():
        f = ts / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(mode)
    ts.chmod(0o755)
    tmp_link = d / "..data_tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(ts.name, tmp_link)
    os.replace(tmp_link, d / DATA_DIR)
    top = {rel.split("/", 1)[0] for rel in files}
    for name in top:
        link = d / name
        if not link.is_symlink():
            if link.is_dir():
                shutil.rmtree(link)
            elif link.exists():
                link.unlink()
            os.symlink(f"{DATA_DIR}/{name}", link)
    for entry in d.iterdir():
        if not entry.name.startswith("..") and entry.name not in top:
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry)
    if old is not None and old.resolve() != ts.resolve():
        shutil.rmtree(old, ignore_errors=True)
    return True


def _content_volume(v: Mapping[str, Any]) -> bool:
    return any(isinstance(v.get(k), Mapping) for k in ("configMap", "secret", "downwardAPI", "projected"))


async def _object_files(d: Files, spec: PodSpec, src: Sources, kind: str, ref: Mapping[str, Any],
                        name_key: str) -> None:
    """The files of one ConfigMap (0644) or Secret (0600) reference: a volume's or a projected source's
    (they name the object under ``name_key``); an optional one that is missing gives none."""
    opt = bool(ref.get("optional", False))
    name = str(ref.get(name_key, ""))
    fetch, mode = (src.config_map, 0o644) if kind == "configmap" else (src.secret, 0o600)
    data = await _object(fetch, spec.namespace, name, opt, kind)
    if data is not None:
        _items(d, data, ref.get("items"), mode, f"{kind} {name}", opt)


async def _volume_files(spec: PodSpec, v: Mapping[str, Any], src: Sources, facts: Mapping[str, str],
                        tokens: Mapping[str, bytes] | None) -> Files:
    """The files of a configMap, secret, downwardAPI or projected volume. ``tokens``: token bytes to
    reuse by path (a token is requested only for paths not in it)."""
    d: Files = {}
    if isinstance(v.get("configMap"), Mapping):
        await _object_files(d, spec, src, "configmap", v["configMap"], "name")
    elif isinstance(v.get("secret"), Mapping):
        await _object_files(d, spec, src, "secret", v["secret"], "secretName")
    elif isinstance(v.get("downwardAPI"), Mapping):
        await _downward(d, v["downwardAPI"].get("items"), facts)
    elif isinstance(v.get("projected"), Mapping):
        for source in v["projected"].get("sources") or ():
            await _projected(d, spec, source, src, facts, tokens)
    return d


async def _sa_files(spec: PodSpec, src: Sources, facts: Mapping[str, str], tokens: Mapping[str, bytes] | None
                    ) -> Files:
    d: Files = {}
    await _projected(d, spec, {"serviceAccountToken": DEFAULT_TOKEN}, src, facts, tokens)
    if src.ca_file is not None:
        _write(d, "ca.crt", src.ca_file.read_bytes(), 0o644)
    _write(d, "namespace", spec.namespace.encode(), 0o644)
    return d


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
        if not _content_volume(v):
            raise ConfigError(f"volume {name!r}: unsupported volume type ({', '.join(k for k in v if k != 'name')})")
        write_atomic(d, await _volume_files(spec, v, src, facts, None))
    if wants_sa_volume(spec):
        d = vroot / SA_VOLUME
        shutil.rmtree(d, ignore_errors=True)
        write_atomic(d, await _sa_files(spec, src, facts, None))
        dirs[SA_VOLUME] = d
    return dirs


async def refresh(spec: PodSpec, dirs: Mapping[str, Path], src: Sources, facts: Mapping[str, str], *,
                  renew_tokens: bool) -> list[str]:
    """Rewrite every configMap, secret, downwardAPI and projected volume (and the service-account
    volume) of a running pod from the objects as they are now, with :func:`write_atomic` -- kubelet's
    periodic volume sync. Tokens are kept unless ``renew_tokens`` (then every token is requested
    anew). Returns the names of the volumes whose content changed."""
    changed = []
    wanted = [(n, v) for n, v in spec.volumes if _content_volume(v)]
    if wants_sa_volume(spec):
        wanted.append((SA_VOLUME, None))
    for name, v in wanted:
        if name not in dirs:
            continue
        kept = None if renew_tokens else {k: b for k, (b, _) in (_current(dirs[name]) or {}).items()}
        files = await (_sa_files(spec, src, facts, kept) if v is None else _volume_files(spec, v, src, facts, kept))
        if write_atomic(dirs[name], files):
            changed.append(name)
    return changed


async def _projected(d: Files, spec: PodSpec, source: Mapping[str, Any], src: Sources, facts: Mapping[str, str],
                     tokens: Mapping[str, bytes] | None = None) -> None:
    if isinstance(source.get("serviceAccountToken"), Mapping):
        t = source["serviceAccountToken"]
        path = str(t.get("path", "token"))
        rel = os.path.normpath(path)
        if tokens is not None and rel in tokens:
            _write(d, path, tokens[rel], 0o600)
            return
        token = await src.token(spec, str(t.get("audience") or ""), int(t.get("expirationSeconds") or 3607))
        _write(d, path, token.encode(), 0o600)
    elif isinstance(source.get("configMap"), Mapping):
        await _object_files(d, spec, src, "configmap", source["configMap"], "name")
    elif isinstance(source.get("secret"), Mapping):
        await _object_files(d, spec, src, "secret", source["secret"], "name")
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
    """Seconds between token renewals: 80 % of the shortest token lifetime, as kubelet renews
    a projected token once 80 % of its life has passed; None without tokens."""
    lives = [int(t.get("expirationSeconds") or 3607) for _, t in token_sources(spec)]
    return 0.8 * min(lives) if lives else None


def decode_secret(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` (base64) and ``stringData`` as text."""
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return out
