"""One pod sandbox on a lab node: its netns, its CNI attachment, its containers' processes.

The runtime half of the lab kubelet (what containerd + runc + libcni do for a real one);
:mod:`podnet.netlab.node.kubelet` decides *when*, this module does it. Steps, each recorded in
the sandbox so :meth:`Sandbox.destroy` undoes exactly what was done, in reverse, best effort,
and is idempotent:

1. :meth:`create`: ``ip netns add pnl-<node>-p<k>``, lo up, the pod's resolv.conf in
   /etc/netns/<name>/ -- skipped for a ``hostNetwork`` pod (``netns`` None), which runs in the
   node's network namespace, the one the kubelet itself runs in;
2. :meth:`attach`: CNI ADD through the conflist's chain (:mod:`podnet.netlab.node.cniexec`),
   with the pod's hostPorts as the ``portMappings`` capability (runtimeConfig), as kubelet
   passes them to the runtime; never for a hostNetwork pod;
3. :meth:`start_container`: one container instance: ``[ip netns exec <netns>] python -P -m
   podnet.netlab.node.launch <plan>`` in its own session, stdout and stderr to its log file
   (:mod:`podnet.netlab.node.launch` builds its file system view and execs the command, so the
   pid returned is the container's);
4. :meth:`destroy`: every container process (SIGTERM to its process group, SIGKILL after the
   grace period), CNI DEL, the netns and its files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from podnet.host.netns import NETNS_ETC, run
from podnet.host.nsenter import exec_argv
from podnet.netlab.node import cniexec

__all__ = ["Sandbox", "stop_process"]


async def stop_process(proc: Any, grace: float = 2.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds; wait for it."""
    if proc is None or proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    except ProcessLookupError:
        await proc.wait()


@dataclass
class Sandbox:
    key: str                 # namespace/name
    uid: str
    netns: str | None        # None: a hostNetwork pod (the node's netns)
    container_id: str
    ips: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    procs: dict[str, Any] = field(default_factory=dict)      # container name -> its running process
    cni: tuple[str, Path, dict[str, Any], tuple[str, ...]] | None = None
    """(CNI_PATH, conf dir, runtimeConfig, exec prefix) once ADD ran."""
    pod_dir: Path | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    container_pids: dict[str, int] = field(default_factory=dict)
    """container name -> its process where that is not the process started (a runtime's client, such as
    ``podman run``, starts it): what the record publishes for ``kubectl exec``."""

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    @property
    def namespace_name(self) -> tuple[str, str]:
        ns, name = self.key.split("/", 1)
        return ns, name

    def record(self) -> dict[str, Any]:
        """What ``lab down`` and ``lab check`` read back (JSON-ready)."""
        pids = {n: self.container_pids.get(n, p.pid) for n, p in self.procs.items() if p is not None and p.pid > 0}
        return {"pod": self.key, "uid": self.uid, "netns": self.netns, "container_id": self.container_id,
                "ips": self.ips, "pid": next(iter(pids.values()), None), "pids": pids, "result": self.result}

    @property
    def resolv_conf(self) -> Path | None:
        return NETNS_ETC / self.netns / "resolv.conf" if self.netns else None

    def create(self, resolv_conf: str) -> None:
        if self.netns is None:
            return
        run(["ip", "netns", "add", self.netns])
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        d = NETNS_ETC / self.netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(resolv_conf)

    async def attach(self, cni_path: str, conf_dir: Path, runtime_config: dict[str, Any] | None = None,
                     prefix: tuple[str, ...] = ()) -> list[str]:
        ns, name = self.namespace_name
        net = cniexec.load_network(conf_dir)
        rc = dict(runtime_config or {})
        self.cni = (cni_path, conf_dir, rc, prefix)
        self.result = await cniexec.add(net, node_netns=None, cni_path=cni_path, container_id=self.container_id,
                                        netns_path=self.netns_path, pod_namespace=ns, pod_name=name,
                                        runtime_config=rc, prefix=prefix)
        self.ips = cniexec.result_ips(self.result)
        return self.ips

    async def start_container(self, name: str, plan: dict[str, Any], plan_path: Path, log_path: Path,
                              python: str = sys.executable) -> Any:
        """Start one container instance from its launch plan; returns its process."""
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        Path(plan["scratch"]).mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(plan))
        plan_path.chmod(0o600)
        argv = exec_argv(self.netns, [python, "-P", "-m", "podnet.netlab.node.launch", str(plan_path)])
        return await self.start_process(name, argv, log_path)

    async def start_process(self, name: str, argv: list[str], log_path: Path,
                            cleanup: Callable[[], Awaitable[None]] | None = None) -> Any:
        """Run ``argv`` as container ``name``'s process in its own session, stdout and stderr appended to
        ``log_path``; ``cleanup`` runs in :meth:`destroy` after the processes are stopped (a runtime's
        leftovers, such as a killed ``podman run``'s container)."""
        if cleanup is not None:
            self.cleanups.append(cleanup)
        with open(log_path, "ab") as logf:
            spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True))
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                # cancelled while forking: keep the process on record, so destroy() stops it
                self.procs[name] = await spawn
                raise
        self.procs[name] = proc
        return proc

    async def destroy(self, grace: float = 2.0) -> list[str]:
        """Stop the processes, CNI DEL, remove the netns and its files. Returns the problems met (best effort)."""
        problems = []
        await asyncio.gather(*(stop_process(p, grace) for p in self.procs.values()), return_exceptions=True)
        cleanups, self.cleanups = self.cleanups, []
        for result in await asyncio.gather(*(c() for c in cleanups), return_exceptions=True):
            if isinstance(result, Exception):
                problems.append(f"container cleanup: {result}")
        if self.cni is not None:
            ns, name = self.namespace_name
            try:
                net = cniexec.load_network(self.cni[1])
                await cniexec.delete(net, node_netns=None, cni_path=self.cni[0], container_id=self.container_id,
                                     netns_path=self.netns_path, pod_namespace=ns, pod_name=name,
                                     prev_result=self.result, runtime_config=self.cni[2], prefix=self.cni[3])
            except (cniexec.CniError, OSError) as e:
                problems.append(f"CNI DEL: {e}")
            self.cni = None
        if self.netns is not None:
            run(["ip", "netns", "del", self.netns], check=False)
            shutil.rmtree(NETNS_ETC / self.netns, ignore_errors=True)
        if self.pod_dir is not None:
            shutil.rmtree(self.pod_dir, ignore_errors=True)
        return problems
