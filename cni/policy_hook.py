"""The CNI side of the policy handshake: tell the node's policy engine a pod's addresses before it is plumbed.

:class:`PolicyHook` speaks the protocol of :mod:`podnet.policy.handshake` (one
JSON line each way over a unix socket; the CNI package imports nothing of
``podnet.policy``, so the two request/reply shapes are kept in step by
tests that run this client against that server).

Guarantees, for ADD (:meth:`PolicyHook.added`), called after IPAM and before
the veth exists:

* the engine answered ``ok``: the pod's isolation and its membership in peer
  sets are in the kernel, so the pod is never reachable without them;
* no socket, no answer within ``timeout`` seconds, ``unknown`` or ``error``:
  with ``required`` the ADD fails with code 11 (try again later: the runtime
  retries the sandbox, nothing stays reserved); without, the ADD proceeds and
  the pod is protected from the engine's next sync on (the behaviour without
  a policy engine);
* a request without ``K8S_POD_NAME`` (not a Kubernetes pod) skips the
  handshake: no NetworkPolicy can select it.

DEL (:meth:`PolicyHook.deleted`) is best effort: it never raises and waits at
most ``del_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Sequence

from podnet.cni.types import TRY_AGAIN_LATER, CniError

__all__ = ["PolicyHook", "HandshakeFailed"]

log = logging.getLogger("podnet.cni.policy")

MAX_REPLY = 4096


class HandshakeFailed(Exception):
    """The engine did not confirm: no socket, no answer in time, or a reply other than ok."""


class PolicyHook:
    def __init__(self, path: str, required: bool = False, timeout: float = 2.0, del_timeout: float = 0.5) -> None:
        self.path = path
        self.required = required
        self.timeout = timeout
        self.del_timeout = del_timeout

    async def _ask(self, op: str, pod: str, ips: Sequence[str], timeout: float) -> None:
        ns, _, name = pod.partition("/")
        line = json.dumps({"op": op, "namespace": ns, "name": name, "ips": list(ips)}).encode() + b"\n"

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_REPLY + 1)
            try:
                writer.write(line)
                await writer.drain()
                return await reader.readuntil(b"\n")
            finally:
                writer.close()

        try:
            raw = await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise HandshakeFailed(f"no answer from the policy engine at {self.path} within {timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            raise HandshakeFailed(f"policy engine at {self.path}: {e}") from None
        try:
            reply = json.loads(raw)
            status, message = reply["status"], str(reply.get("message", ""))
        except (ValueError, KeyError, TypeError):
            raise HandshakeFailed(f"policy engine at {self.path}: malformed reply {raw[:100]!r}") from None
        if status != "ok":
            raise HandshakeFailed(f"policy engine: {status}: {message}")

    async def added(self, pod: str, ips: Sequence[str]) -> None:
        """Return once the engine has this pod's state for ``ips``; CniError(11) when required and it has not."""
        if not pod or not ips:
            return
        try:
            await self._ask("add", pod, ips, self.timeout)
        except HandshakeFailed as e:
            if self.required:
                raise CniError(TRY_AGAIN_LATER, f"{e}; try again later") from None
            log.warning("pod %s starts without confirmed policy state: %s", pod, e)

    async def deleted(self, pod: str, ips: Sequence[str]) -> None:
        if not pod or not ips:
            return
        try:
            await self._ask("del", pod, ips, self.del_timeout)
        except HandshakeFailed as e:
            log.info("pod %s: withdrawing its addresses from the policy engine: %s", pod, e)
