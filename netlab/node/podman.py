"""Lab containers run by podman from podnet's image (``podnet lab up --runtime podman``).

Data flow: the kubelet's launch plan for one container instance (volume mounts already resolved to
host paths, argv, env, workingDir) and the container's :class:`~podnet.netlab.node.podspec.SecurityContext`
-> :func:`run_argv` (pure: the ``podman run`` command line), which the sandbox runs as the
container's process (its stdout and stderr are the container log) -> on the sandbox's teardown
:func:`remove` (``podman rm -f``), because a ``podman run`` that is killed leaves its container
behind.

What a container gets, as a CRI runtime gives it:

- the image's own file system and PATH (the plan's PATH, which points at the host's podnet
  scripts for the in-process launcher, is dropped); ``command`` + ``args`` as argv, no entrypoint;
- the pod's network namespace (``--network ns:/var/run/netns/<pod>``), or for a hostNetwork pod
  the node's, which is the namespace the kubelet and so ``podman`` run in (``--network host``);
- every volume bind-mounted with ``rslave`` propagation (mounts the host makes later, such as new
  network namespaces under a ``/var/run/netns`` volume, reach the container; nothing flows back:
  Kubernetes' HostToContainer), read-only where the spec says;
- securityContext: ``privileged``, ``capabilities`` add/drop, ``allowPrivilegeEscalation: false``
  (no-new-privileges), ``readOnlyRootFilesystem`` (with no tmpfs podman would add), ``runAsUser``;
- labels naming the lab and the pod, so ``lab down`` removes whatever is left
  (:func:`podnet.host.podman.remove_lab`).

Only podnet's image runs under podman: the lab pulls nothing, and the other images its pods name
(the echo server, ``nginx``) stand for programs the lab provides (:mod:`podnet.netlab.node.images`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Awaitable, Callable, Mapping

from podnet.host.podman import LAB_LABEL, POD_LABEL, Store
from podnet.kube.errors import ConfigError
from podnet.netlab.node.podspec import SecurityContext

__all__ = ["run_argv", "remove_argv", "container_name", "remove", "container_pid", "ULIMITS"]

ULIMITS = ("nofile=20000:20000", "nproc=4096:4096")
"""Explicit limits: this machine's podman defaults are lower than a node daemon needs."""

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(lab: str, pod_uid: str, container: str, restart: int) -> str:
    """A podman name unique per container instance: ``pnl-<lab>-<uid8>-<container>-<restart>``."""
    return _NAME_BAD.sub("-", f"pnl-{lab}-{pod_uid[:8]}-{container}-{restart}")


def _volume(mount: Mapping[str, Any]) -> str:
    src, dst = str(mount["source"]), str(mount["target"])
    for path in (src, dst):
        if ":" in path or "," in path or not path.startswith("/"):
            raise ConfigError(f"volume {src} -> {dst}: podman cannot bind a path with ':' or ',' or a relative one")
    opts = "ro,rslave" if mount.get("readOnly") else "rslave"
    return f"{src}:{dst}:{opts}"


def _security(sc: SecurityContext) -> list[str]:
    argv: list[str] = []
    if sc.privileged:
        argv.append("--privileged")
    for cap in sc.cap_drop:
        argv += ["--cap-drop", cap]
    for cap in sc.cap_add:
        argv += ["--cap-add", cap]
    if sc.allow_privilege_escalation is False:
        argv += ["--security-opt", "no-new-privileges"]
    if sc.read_only_root:
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if sc.run_as_user is not None:
        argv += ["--user", str(sc.run_as_user)]
    return argv


def run_argv(store: Store, plan: Mapping[str, Any], *, name: str, image: str, netns_path: str | None,
             hostname: str, security: SecurityContext, lab: str, pod: str) -> list[str]:
    """The ``podman run`` command line of one container instance (see the module docstring)."""
    argv = [*store.base(), "run", "--rm", "--name", name, "--pull", "never",
            "--label", f"{LAB_LABEL}={lab}", "--label", f"{POD_LABEL}={pod}",
            "--network", f"ns:{netns_path}" if netns_path else "host", "--hostname", hostname]
    for limit in ULIMITS:
        argv += ["--ulimit", limit]
    argv += _security(security)
    for mount in plan.get("mounts") or ():
        argv += ["-v", _volume(mount)]
    for key, value in (plan.get("env") or {}).items():
        if key != "PATH":
            argv += ["--env", f"{key}={value}"]
    if plan.get("workingDir"):
        argv += ["--workdir", str(plan["workingDir"])]
    command = list(plan.get("argv") or ())
    if not command:
        raise ConfigError(f"container {name}: image {image} has no command in the pod spec")
    return [*argv, image, *command]


def remove_argv(store: Store, name: str) -> list[str]:
    return [*store.base(), "rm", "--force", "--time", "0", "--ignore", name]


async def remove(store: Store, name: str) -> None:
    """Remove the container ``name`` if podman still has it (after ``podman run`` was killed)."""
    proc = await asyncio.create_subprocess_exec(*remove_argv(store, name), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


async def container_pid(store: Store, name: str, *, running: Callable[[], bool],
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, attempts: int = 100) -> int | None:
    """The pid of container ``name``'s first process once podman reports it (polled every 0.1 s, at most
    ``attempts`` times, while ``running()``); None when it never does."""
    for _ in range(attempts):
        if not running():
            return None
        proc = await asyncio.create_subprocess_exec(
            *store.base(), "inspect", "--type", "container", "--format", "{{.State.Pid}}", name,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if proc.returncode == 0 and text.isdigit() and int(text) > 0:
            return int(text)
        await sleep(0.1)
    return None
