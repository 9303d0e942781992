"""The side-effect layer of the nftables mode: one ``nft -f`` per sync.

:class:`Nft` is the protocol the nftables proxier needs; :class:`NftRunner`
runs the real ``nft`` binary (optionally behind a prefix such as
``ip netns exec NS``), :class:`podnet.proxy.testing.FakeNft` is the
in-memory fake. A failed transaction raises :class:`NftError` with nft's
message; nft applies a transaction entirely or not at all.
:meth:`NftRunner.apply_stream` writes the text while it is still being
produced (nft parses a file other than stdin as it reads it, and commits
only after the end of it), so computing and parsing overlap on two cores,
as the iptables mode's restore_stream does.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Sequence, runtime_checkable

from podnet.proxy.feeder import stream_to_child
from podnet.proxy.nft_count import DIGEST_PREFIX


STREAM_INPUT = "/dev/fd/0"
"""The file a streamed transaction is read from: nft (1.0.x) reads all of ``-`` or ``/dev/stdin``
into memory before it parses a byte, while any other path is parsed as it arrives, so only this
name lets nft parse one block while the proxy computes the next (measured at 10k services: the
time nft needs after end-of-file halves)."""


class NftError(RuntimeError):
    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class Census:
    """What the kernel holds of one table (see nft_count.census)."""

    gen: int
    """The ruleset generation, read before the counts."""
    chains: dict[str, int] | None = None
    """Rules per chain; None when ``gen`` was the caller's known generation (nothing was dumped)."""
    elements: dict[str, int | None] | None = None
    """Elements per named set or map (None: missing)."""
    digests: dict[str, str] | None = None
    """Content digest per chain asked to be digested ('' when missing); see nft_count._dump."""


@runtime_checkable
class Nft(Protocol):
    family: int

    async def apply(self, text: str) -> None:
        """Run ``text`` as one nft transaction; raises NftError when nft refuses it."""

    async def apply_stream(self, chunks: AsyncIterator[str]) -> None:
        """Like :meth:`apply` for the concatenated chunks, written while they are produced; if the
        producer raises, nothing is applied."""

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        """(chains, sets) that exist in ``table`` of this family; empty when the table does not."""

    async def census(self, table: str, known_gen: int | None, sets: list[str], chains: list[str],
                     digest: frozenset[str] = frozenset()) -> Census:
        """The generation, and unless it is ``known_gen`` the rule counts of ``chains``, the element
        counts of ``sets`` in ``table``, and a content digest of each chain in ``digest`` (one of
        ``chains``): equal digests of one chain mean equal rules."""


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

    async def apply_stream(self, chunks: AsyncIterator[str]) -> None:
        """One ``nft -f /dev/fd/0`` fed through an enlarged pipe (:func:`~podnet.proxy.feeder.stream_to_child`) while
        ``chunks`` is produced (see :data:`STREAM_INPUT`). nft commits only after reading end-of-file, so
        when the producer raises, nft is killed before that and nothing is applied."""
        rc, err, sent = await stream_to_child([*self.prefix, self.binary, "-f", STREAM_INPUT], chunks, "nft")
        if rc != 0:
            raise NftError(f"nft -f {STREAM_INPUT} exited {rc}: {err[:2000]}", sent.decode(errors="replace"))

    async def names(self, table: str) -> tuple[set[str], set[str]]:
        fam = "ip" if self.family == 4 else "ip6"
        found = []
        for what in ("chains", "sets"):
            # -t (terse): no set elements; at 10k services ``list sets`` without it costs 0.36 s of CPU, with it 0.01 s.
            rc, out, err = await self._run(["-t", "list", what, fam], None)
            if rc != 0:
                raise NftError(f"nft list {what} {fam} exited {rc}: {err.decode(errors='replace')[:500]}")
            found.append(parse_names(out.decode(), table, what[:-1]))
        return found[0], found[1]

    async def census(self, table: str, known_gen: int | None, sets: list[str], chains: list[str],
                     digest: frozenset[str] = frozenset()) -> Census:
        """One short process (behind the same prefix): see nft_count.census."""
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, "-P", "-m", "podnet.proxy.nft_count", "census", str(self.family), table,
            "-" if known_gen is None else str(known_gen), *sets,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate("".join(f"{DIGEST_PREFIX if c in digest else ''}{c}\n" for c in chains).encode())
        if proc.returncode != 0:
            raise NftError(f"nft census failed: {err.decode(errors='replace')[:500]}")
        raw = json.loads(out)
        return Census(int(raw["gen"]), raw.get("chains"), raw.get("elements"), raw.get("digests"))


def parse_names(listing: str, table: str, kind: str) -> set[str]:
    """Names of ``kind`` ('chain' or 'set') declared in ``table`` in an ``nft list chains|sets`` output."""
    out, inside = set(), False
    for line in listing.splitlines():
        if line.startswith("table "):
            inside = line.split()[2:3] == [table]
        elif inside and line.startswith(f"\t{kind} ") and line.endswith("{"):
            out.add(line.split()[1])
    return out
