"""Rule and element counts of podnet's nftables table, straight from the kernel, with the standard library.

``nft list chain`` builds its cache from every rule of the table (about a
second at 10k services); the kernel can dump the rules of one chain alone
(NFT_MSG_GETRULE with NFTA_RULE_TABLE and NFTA_RULE_CHAIN set), which costs
microseconds.

:func:`census` is the check of the whole table each sync period: it reads the
ruleset generation (NFT_MSG_GETGEN, one message; every committed nftables
transaction in the network namespace, of any table, increments it) and, only
when it differs from the generation last verified, counts the rules of every
given chain (one small dump per chain) and the elements of the named maps and
sets. The generation is read *before* the counts, so a change that lands
while counting makes the next check count again. Measured at 10k services
(10,013 chains, 60k rules): the generation read takes 0.1 ms; one dump of the
whole table counted per chain takes 0.8-2.0 s, because the kernel walks the
table again from its start for every 32 KiB a dump returns, while 10,013
per-chain dumps take 0.34-1.0 s (this 2-core machine, load 3-8); the element
counts of all maps 15-50 ms. (Several dumps cannot be in flight on one socket:
the kernel answers EBUSY.)

Run as ``python -m podnet.proxy.nft_count census FAMILY TABLE KNOWN_GEN SET...``
(so a command prefix such as ``ip netns exec NS`` applies) with
the chains to count on stdin (one per line; ``+chain`` to digest it too) it prints
``{"gen": g}`` when ``g`` equals KNOWN_GEN, else ``{"gen": g, "chains": {chain:
rules}, "elements": {set: count or null}, "digests": {chain: hex}}`` (a missing
chain counts 0 rules).

A chain's content digest (:func:`_dump`) hashes the kernel's encoding of its
rules' expressions in order: it changes when a rule is replaced by another,
even one of the same count; it cannot be computed from podnet's text, so the
proxier learns each chain's digest from the kernel after writing the chain and
compares later reads with it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETRULE = 7
NFT_MSG_NEWRULE = 6
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_RULE_USERDATA = 7
DIGEST_PREFIX = "+"
"""A chain line on the census's stdin starting with this is counted and digested (see :func:`census`)."""
NFPROTO = {4: 2, 6: 10}


def _attr(kind: int, value: str) -> bytes:
    data = value.encode() + b"\0"
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _attrs(data: bytes, off: int, end: int):
    """(type without flags, value bytes) of the netlink attributes in ``data[off:end]``."""
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            return
        yield atype & 0x3FFF, data[off + 4:off + alen]
        off += (alen + 3) & ~3


def _request(sock: socket.socket, msg: int, flags: int, seq: int, family: int, attrs: bytes):
    """Send one nftables request; yield (type, message bytes) of every answer up to DONE or the ack.
    Raises OSError on an error answer (ENOENT too)."""
    body = struct.pack("=BBH", NFPROTO.get(family, 0), 0, 0) + attrs
    sock.send(struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags, seq, 0) + body)
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                raise OSError("short netlink message")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                yield mtype & 0xFF, data[off:off + length]
                if not flags & NLM_F_DUMP:
                    return
            off += (length + 3) & ~3


def _dump(sock: socket.socket, family: int, table: str, chain: str, seq: int, digest) -> tuple[int, str] | None:
    """(rules, content digest) of one chain; None when it or the table is missing. With ``digest``
    (a hashlib object) every rule's expressions and user data, in rule order, are fed to it: the
    kernel's own encoding of what the rule does, without its handle or position, so two dumps of
    the same rules give the same digest and a rule replaced by any other gives another."""
    attrs = _attr(NFTA_RULE_TABLE, table) + _attr(NFTA_RULE_CHAIN, chain)
    count = 0
    try:
        for mtype, msg in _request(sock, NFT_MSG_GETRULE, NLM_F_DUMP, seq, family, attrs):
            if mtype != NFT_MSG_NEWRULE:
                continue
            count += 1
            if digest is not None:
                for atype, value in _attrs(msg, 20, len(msg)):
                    if atype in (NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA):
                        digest.update(struct.pack("=HI", atype, len(value)))
                        digest.update(value)
                digest.update(b"\n")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return count, digest.hexdigest() if digest is not None else ""


def generation(sock: socket.socket, seq: int = 1) -> int:
    for mtype, msg in _request(sock, NFT_MSG_GETGEN, 0, seq, 0, b""):
        if mtype == NFT_MSG_NEWGEN:
            for atype, value in _attrs(msg, 20, len(msg)):
                if atype == NFTA_GEN_ID:
                    return struct.unpack(">I", value[:4])[0]
    raise OSError("no nftables generation in the answer")


def element_count(sock: socket.socket, family: int, table: str, name: str, seq: int) -> int | None:
    """Elements of one named set or map (None when it or the table is missing)."""
    attrs = _attr(NFTA_SET_ELEM_LIST_TABLE, table) + _attr(NFTA_SET_ELEM_LIST_SET, name)
    count = 0
    try:
        for mtype, msg in _request(sock, NFT_MSG_GETSETELEM, NLM_F_DUMP, seq, family, attrs):
            if mtype != NFT_MSG_NEWSETELEM:
                continue
            for atype, value in _attrs(msg, 20, len(msg)):
                if atype == NFTA_SET_ELEM_LIST_ELEMENTS:
                    count += sum(1 for _ in _attrs(value, 0, len(value)))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return count


def census(family: int, table: str, known_gen: int | None, sets: list[str], chains: list[str],
           digest: frozenset[str] | set[str] = frozenset()) -> dict:
    """See the module docstring. Chains also in ``digest`` get a content digest (see :func:`_dump`)
    under ``"digests"`` ('' for a missing chain)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        gen = generation(sock)
        if gen == known_gen:
            return {"gen": gen}
        elements = {s: element_count(sock, family, table, s, 3 + i) for i, s in enumerate(sets)}
        seq = 3 + len(sets)
        counts: dict[str, int] = {}
        digests: dict[str, str] = {}
        for i, c in enumerate(chains):
            found = _dump(sock, family, table, c, seq + i, hashlib.blake2b(digest_size=16) if c in digest else None)
            counts[c] = found[0] if found else 0
            if c in digest:
                digests[c] = found[1] if found else ""
        return {"gen": gen, "chains": counts, "elements": elements, "digests": digests}


def main(argv: list[str]) -> int:
    if argv[:1] != ["census"] or len(argv) < 4:
        print("usage: python -m podnet.proxy.nft_count census FAMILY TABLE KNOWN_GEN|- SET... < chains", file=sys.stderr)
        return 2
    family, table, known, *sets = argv[1:]
    lines = [line for line in sys.stdin.read().split("\n") if line]
    chains = [line.removeprefix(DIGEST_PREFIX) for line in lines]
    digest = {line[len(DIGEST_PREFIX):] for line in lines if line.startswith(DIGEST_PREFIX)}
    print(json.dumps(census(int(family), table, int(known) if known.isdigit() else None, sets, chains, digest)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
