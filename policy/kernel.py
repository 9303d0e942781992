"""The kernel side effect of the policy engine: ipsets and our filter chains. Nothing else.

:class:`Kernel` is everything the programmer asks of a node; :class:`KernelRunner`
execs the real tools (``ipset``, and the node's iptables backend, legacy or nft,
as the proxy detects it), optionally under a prefix such as
``ip netns exec NS``; :class:`podnet.policy.testing.FakeKernel` implements the
same protocol in memory. A restore is all-or-nothing per tool invocation:
a failed ``ipset restore`` or ``iptables-restore`` raises :class:`KernelError`
and the previous state stays in force. Member changes of existing sets
(:meth:`Kernel.ipset_update`) go over netfilter netlink (:mod:`.ipsetnl`), no exec:
deletions first, so an address leaves a set before any other enters it.
"""

from __future__ import annotations

import shlex
import os
from typing import Any, Protocol, Sequence

from podnet.host.nsenter import made_inside, netns_path
from podnet.host.tools import run_tool

__all__ = ["Kernel", "KernelRunner", "KernelError"]


class KernelError(RuntimeError):
    """A tool failed; the message has its exit status and stderr."""


class Kernel(Protocol):
    family: int

    async def ipset_restore(self, text: str) -> None: ...
    async def ipset_update(self, dels: Sequence[tuple[str, str]], adds: Sequence[tuple[str, str]]) -> None: ...
    async def ipset_destroy(self, name: str) -> None: ...
    async def ipset_names(self) -> set[str]: ...
    async def iptables_restore(self, text: str) -> None: ...
    async def filter_chains(self) -> set[str]: ...
    async def filter_counters(self) -> str: ...
    async def ensure_first(self, table: str, chain: str, rule: str) -> bool: ...
    async def delete_rule(self, table: str, chain: str, rule: str) -> None: ...


class KernelRunner:
    """Real tools for one family and iptables backend (``mode``: 'legacy' or 'nft'), in the named
    network namespace ``netns`` (None: the process's own), each tool exec'd under ``prefix``."""

    def __init__(self, family: int = 4, mode: str = "legacy", prefix: Sequence[str] = (),
                 netns: str | None = None) -> None:
        self.family = family
        self.netns = netns
        self.prefix = (["ip", "netns", "exec", netns] if netns else []) + list(prefix)
        self._netlink: Any = None
        base = "iptables" if family == 4 else "ip6tables"
        self._iptables = f"{base}-{mode}"
        self._restore = f"{base}-{mode}-restore"
        self._save = f"{base}-{mode}-save"

    async def _run(self, argv: list[str], stdin: str | None = None) -> str:
        rc, out, err = await run_tool([*self.prefix, *argv], stdin)
        if rc != 0:
            raise KernelError(f"{argv[0]} {' '.join(argv[1:3])}: exit {rc}: {err.strip()[:500]}")
        return out

    async def ipset_restore(self, text: str) -> None:
        await self._run(["ipset", "restore"], text)

    async def ipset_update(self, dels: Sequence[tuple[str, str]], adds: Sequence[tuple[str, str]]) -> None:
        """Over netlink in ``netns``; a runner with only a ``prefix`` (its namespace unknown to this
        process) sends the same changes through ``ipset restore``."""
        if not dels and not adds:
            return
        if self.prefix and self.netns is None:
            lines = [f"del {n} {m} -exist" for n, m in dels] + [f"add {n} {m} -exist" for n, m in adds]
            await self.ipset_restore("\n".join(lines) + "\n")
            return
        if self._netlink is None:
            from podnet.policy.ipsetnl import IpsetSocket

            if self.netns is None:
                self._netlink = IpsetSocket()
            else:
                fd = os.open(netns_path(self.netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    self._netlink = made_inside(fd, IpsetSocket)
                finally:
                    os.close(fd)
        self._netlink.update(dels, adds)

    async def ipset_destroy(self, name: str) -> None:
        await self._run(["ipset", "destroy", name])

    async def ipset_names(self) -> set[str]:
        return set((await self._run(["ipset", "list", "-n"])).split())

    async def iptables_restore(self, text: str) -> None:
        await self._run([self._restore, "--noflush", "--wait"], text)

    async def filter_chains(self) -> set[str]:
        out = await self._run([self._save, "-t", "filter"])
        return {ln[1:].split()[0] for ln in out.splitlines() if ln.startswith(":")}

    async def filter_counters(self) -> str:
        """``iptables-save -c -t filter``: every rule with its [packets:bytes]."""
        return await self._run([self._save, "-c", "-t", "filter"])

    async def ensure_first(self, table: str, chain: str, rule: str) -> bool:
        args = shlex.split(rule)
        rc, _, _ = await run_tool([*self.prefix, self._iptables, "--wait", "-t", table, "-C", chain, *args])
        if rc == 0:
            return False
        await self._run([self._iptables, "--wait", "-t", table, "-I", chain, "1", *args])
        return True

    async def delete_rule(self, table: str, chain: str, rule: str) -> None:
        args = shlex.split(rule)
        for _ in range(100):
            rc, _, _ = await run_tool([*self.prefix, self._iptables, "--wait", "-t", table, "-D", chain, *args])
            if rc != 0:
                return
