"""The side-effect layer of the nftables mode: one ``nft -f -`` per sync.

:class:`Nft` is the protocol the nftables proxier needs; :class:`NftRunner`
runs the real ``nft`` binary (optionally behind a prefix such as
``ip netns exec NS``), :class:`podnet.proxy.testing.FakeNft` is the
in-memory fake. A failed transaction raises :class:`NftError` with nft's
message; nft applies a transaction entirely or not at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Protocol, Sequence, runtime_checkable


class NftError(RuntimeError):
    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.text = text


@runtime_checkable
class Nft(Protocol):
    family: int

    async def apply(self, text: str) -> None:
        """Run ``text`` as one nft transaction; raises NftError when nft refuses it."""

    async def count_rules(self, table: str, chains: list[str]) -> dict[str, int]:
        """Rules per chain as the kernel holds them (0 for a missing table or chain)."""

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        """(chains, sets) that exist in ``table`` of this family; empty when the table does not."""


class NftRunner:
    def __init__(self, family: int, prefix: Sequence[str] = (), binary: str = "nft") -> None:
        self.family = family
        self.prefix = list(prefix)
        self.binary = binary

    async def _run(self, args: list[str], stdin: bytes | None) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, self.binary, *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out, err

    async def apply(self, text: str) -> None:
        rc, _, err = await self._run(["-f", "-"], text.encode())
        if rc != 0:
            raise NftError(f"nft -f - exited {rc}: {err.decode(errors='replace')[:2000]}", text)

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        fam = "ip" if self.family == 4 else "ip6"
        found = []
        for what in ("chains", "sets"):
            rc, out, err = await self._run(["list", what, fam], None)
            if rc != 0:
                raise NftError(f"nft list {what} {fam} exited {rc}: {err.decode(errors='replace')[:500]}")
            found.append(parse_names(out.decode(), table, what[:-1]))
        return found[0], found[1]

    async def count_rules(self, table: str, chains: list[str]) -> dict[str, int]:
        """One short process (behind the same prefix) dumping only these chains: see nft_count."""
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, "-P", "-m", "podnet.proxy.nft_count", str(self.family), table, *chains,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise NftError(f"rule count failed: {err.decode(errors='replace')[:500]}")
        return {k: int(v or 0) for k, v in json.loads(out).items()}


def parse_names(listing: str, table: str, kind: str) -> set[str]:
    """Names of ``kind`` ('chain' or 'set') declared in ``table`` in an ``nft list chains|sets`` output."""
    out, inside = set(), False
    for line in listing.splitlines():
        if line.startswith("table "):
            inside = line.split()[2:3] == [table]
        elif inside and line.startswith(f"\t{kind} ") and line.endswith("{"):
            out.add(line.split()[1])
    return out
