"""Invoke CNI plugins exactly as a container runtime (libcni) does.

The network config comes from the first ``*.conflist`` (or ``*.conf``) in the
conf dir in lexical order, as kubelet/libcni pick it. For ADD, each plugin of
the list runs in order with ``name`` and ``cniVersion`` injected into its
JSON and the previous plugin's result as ``prevResult``; DEL runs them in
reverse with the cached ADD result as ``prevResult`` (libcni keeps that cache
too). Plugins are found by their ``type`` in ``CNI_PATH`` and exec'd in the
node's network namespace (``ip netns exec <node-ns>``), with the ``CNI_*``
environment and the config on stdin.

Pure helpers (:func:`load_network`, :func:`plugin_config`, :func:`cni_env`,
:func:`result_ips`) are separate from the one side-effecting call
(:func:`invoke`), so the protocol is tested without exec'ing anything.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from podnet.host.nsenter import exec_argv

__all__ = ["CniError", "Network", "load_network", "plugin_config", "cni_env", "result_ips", "add", "delete"]


class CniError(RuntimeError):
    """A plugin failed: ``code``/``msg``/``details`` are from its error JSON when it printed one."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"CNI {command} {plugin}: code {code}: {msg}{(': ' + details) if details else ''}")
        self.code, self.msg, self.details = code, msg, details


@dataclass(frozen=True)
class Network:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: Path


def load_network(conf_dir: Path) -> Network:
    """The network config a runtime would use from ``conf_dir``."""
    files = sorted(p for p in Path(conf_dir).iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    if not files:
        raise FileNotFoundError(f"no CNI network config in {conf_dir}")
    f = files[0]
    raw = json.loads(f.read_text())
    if f.suffix == ".conflist" or "plugins" in raw:
        plugins = tuple(raw["plugins"])
    else:  # a single-plugin .conf is a list of one
        plugins = (raw,)
    return Network(raw["name"], raw.get("cniVersion", "0.4.0"), plugins, f)


def plugin_config(net: Network, plugin: dict[str, Any], prev_result: dict[str, Any] | None,
                  runtime_config: dict[str, Any] | None = None) -> bytes:
    """The JSON a plugin reads on stdin: its own config plus name, cniVersion, prevResult, and
    ``runtimeConfig`` holding each capability the plugin declares (``"capabilities":
    {"portMappings": true}``) that the runtime has a value for, as libcni injects them."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    caps = plugin.get("capabilities") or {}
    injected = {k: v for k, v in (runtime_config or {}).items() if caps.get(k) is True}
    if injected:
        conf["runtimeConfig"] = injected
    return json.dumps(conf).encode()


def cni_env(
    command: str, container_id: str, netns_path: str, ifname: str, cni_path: str, pod_namespace: str, pod_name: str
) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod_name};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}"
        ),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }


def result_ips(result: dict[str, Any]) -> list[str]:
    """Addresses (without prefix length) from a CNI result (0.3.x .. 1.x ``ips``; 0.2 ``ip4``)."""
    out = []
    for ip in result.get("ips") or ():
        addr = ip.get("address") or ""
        if addr:
            out.append(addr.split("/")[0])
    if not out and isinstance(result.get("ip4"), dict):
        out.append(result["ip4"]["ip"].split("/")[0])
    return out


async def _exec(node_netns: str | None, binary: str, env: dict[str, str], stdin: bytes,
                timeout: float, prefix: Sequence[str] = ()) -> tuple[int, bytes, bytes]:
    argv = exec_argv(node_netns, [*prefix, binary])
    p = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(p.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise
    return p.returncode or 0, out, err


def _find(cni_path: str, plugin_type: str) -> str:
    for d in cni_path.split(":"):
        cand = Path(d) / plugin_type
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise CniError(plugin_type, "FIND", 0, f"plugin {plugin_type!r} not found in CNI_PATH {cni_path}")


def _error(plugin: str, command: str, rc: int, out: bytes, err: bytes) -> CniError:
    try:
        e = json.loads(out)
        return CniError(plugin, command, int(e.get("code", rc)), str(e.get("msg", "")), str(e.get("details", "")))
    except (ValueError, AttributeError):
        return CniError(plugin, command, rc, (err or out).decode(errors="replace").strip()[-500:])


async def add(
    net: Network, *, node_netns: str | None, cni_path: str, container_id: str, netns_path: str,
    pod_namespace: str, pod_name: str, ifname: str = "eth0", timeout: float = 30.0,
    runtime_config: dict[str, Any] | None = None, prefix: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ADD through the chain; return the final result. ``prefix``: argv every plugin is
    exec'd through (the lab kubelet's node file-system view)."""
    env = cni_env("ADD", container_id, netns_path, ifname, cni_path, pod_namespace, pod_name)
    prev: dict[str, Any] | None = None
    for plugin in net.plugins:
        t = plugin["type"]
        stdin = plugin_config(net, plugin, prev, runtime_config)
        rc, out, err = await _exec(node_netns, _find(cni_path, t), env, stdin, timeout, prefix)
        if rc != 0:
            raise _error(t, "ADD", rc, out, err)
        try:
            prev = json.loads(out)
        except ValueError:
            raise CniError(t, "ADD", rc, f"result is not JSON: {out[:200]!r}") from None
    return prev or {}


async def delete(
    net: Network, *, node_netns: str | None, cni_path: str, container_id: str, netns_path: str,
    pod_namespace: str, pod_name: str, prev_result: dict[str, Any] | None, ifname: str = "eth0",
    timeout: float = 30.0, runtime_config: dict[str, Any] | None = None, prefix: Sequence[str] = (),
) -> None:
    """Run DEL through the chain in reverse (best effort: every plugin runs; the first error is raised)."""
    env = cni_env("DEL", container_id, netns_path, ifname, cni_path, pod_namespace, pod_name)
    first: CniError | None = None
    for plugin in reversed(net.plugins):
        t = plugin["type"]
        try:
            stdin = plugin_config(net, plugin, prev_result, runtime_config)
            rc, out, err = await _exec(node_netns, _find(cni_path, t), env, stdin, timeout, prefix)
            if rc != 0:
                raise _error(t, "DEL", rc, out, err)
        except CniError as e:
            first = first or e
    if first:
        raise first
