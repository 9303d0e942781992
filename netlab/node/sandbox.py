"""One pod sandbox on a lab node: its netns, its CNI attachment, its container process.

The runtime half of the lab kubelet (what containerd + runc + libcni do for a
real one); :mod:`podnet.netlab.node.kubelet` decides *when*, this module does it.
Steps, each recorded in the sandbox so :meth:`Sandbox.destroy` undoes exactly
what was done, in reverse, best effort, and is idempotent:

1. :meth:`create`: ``ip netns add pnl-<node>-p<k>``, lo up, the pod's
   resolv.conf in /etc/netns/<name>/ (bound by ``ip netns exec``);
2. :meth:`attach`: CNI ADD through the conflist's chain (:mod:`podnet.netlab.node.cniexec`);
3. :meth:`start`: the container's command in the netns, in its own session,
   output to a log file;
4. :meth:`wait_ready`: the readiness probe, from the node (TCP connect or HTTP GET
   to the pod IP), as kubelet probes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.host.netns import NETNS_ETC, run
from podnet.netlab.node import cniexec

__all__ = ["Sandbox"]


@dataclass
class Sandbox:
    key: str                 # namespace/name
    uid: str
    netns: str
    container_id: str
    ips: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    monitor: asyncio.Task | None = None
    cni: tuple[str, Path] | None = None   # (CNI_PATH, conf dir) once ADD ran
    restart_count: int = 0                # container restarts in this sandbox (kubelet's restartCount)
    backoff: float = 0.0                  # the last crash-loop back-off delay (0: none yet)
    started_at: float = 0.0               # clock() when the current container started
    last_terminated: dict[str, Any] | None = None   # lastState.terminated of the previous container

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    @property
    def namespace_name(self) -> tuple[str, str]:
        ns, name = self.key.split("/", 1)
        return ns, name

    def record(self) -> dict[str, Any]:
        """What ``lab down`` and ``lab check`` read back (JSON-ready)."""
        return {"pod": self.key, "uid": self.uid, "netns": self.netns, "container_id": self.container_id,
                "ips": self.ips, "pid": self.proc.pid if self.proc else None, "result": self.result,
                "restart_count": self.restart_count}

    def create(self, resolv_conf: str) -> None:
        run(["ip", "netns", "add", self.netns])
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        d = NETNS_ETC / self.netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(resolv_conf)

    async def attach(self, cni_path: str, conf_dir: Path) -> list[str]:
        ns, name = self.namespace_name
        net = cniexec.load_network(conf_dir)
        self.cni = (cni_path, conf_dir)
        self.result = await cniexec.add(net, node_netns=None, cni_path=cni_path, container_id=self.container_id,
                                        netns_path=self.netns_path, pod_namespace=ns, pod_name=name)
        self.ips = cniexec.result_ips(self.result)
        return self.ips

    async def start(self, cmd: list[str], log_path: Path) -> None:
        with open(log_path, "ab") as logf:
            self.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns, *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=logf,
                stderr=logf, start_new_session=True,
            )

    async def wait_ready(self, target: tuple[str, int, str] | None, timeout: float = 60.0) -> None:
        """Return once the probe passes (at once without a probe); raise if the container exits or time runs out."""
        if target is None or not self.ips:
            return
        kind, port, path = target
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc and self.proc.returncode is not None:
                raise RuntimeError(f"container exited with {self.proc.returncode}")
            if await _probe_once(self.ips[0], kind, port, path):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not ready after {timeout:.0f} s")

    async def destroy(self) -> list[str]:
        """Stop the process, CNI DEL, remove the netns and its files. Returns the problems met (best effort)."""
        problems = []
        if self.proc and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), 2)
                except asyncio.TimeoutError:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    await self.proc.wait()
            except ProcessLookupError:
                pass
        if self.cni is not None:
            ns, name = self.namespace_name
            try:
                net = cniexec.load_network(self.cni[1])
                await cniexec.delete(net, node_netns=None, cni_path=self.cni[0], container_id=self.container_id,
                                     netns_path=self.netns_path, pod_namespace=ns, pod_name=name,
                                     prev_result=self.result)
            except (cniexec.CniError, OSError) as e:
                problems.append(f"CNI DEL: {e}")
            self.cni = None
        run(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(NETNS_ETC / self.netns, ignore_errors=True)
        return problems


async def _probe_once(ip: str, kind: str, port: int, path: str) -> bool:
    try:
        rd, wr = await asyncio.wait_for(asyncio.open_connection(ip, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        if kind != "http":
            return True
        wr.write(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        line = await asyncio.wait_for(rd.readline(), 1.0)
        fields = line.split()
        return len(fields) >= 2 and fields[1][:1] in (b"2", b"3")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        wr.close()
