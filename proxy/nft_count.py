"""Rule counts of a few nftables chains, straight from the kernel (one netlink dump per chain).

``nft list chain`` builds its cache from every rule of the table (about a
second at 10k services); the kernel can dump the rules of one chain alone
(NFT_MSG_GETRULE with NFTA_RULE_TABLE and NFTA_RULE_CHAIN set), which costs
microseconds. :func:`count_rules` does exactly that with the standard
library. Run as ``python -m podnet.proxy.nft_count FAMILY TABLE CHAIN...``
(so a command prefix such as ``ip netns exec NS`` applies) it prints one JSON
object ``{chain: count or null}``; null means the table or chain is missing.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETRULE = 7
NFT_MSG_NEWRULE = 6
NLM_F_REQUEST = 1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFPROTO = {4: 2, 6: 10}


def _attr(kind: int, value: str) -> bytes:
    data = value.encode() + b"\0"
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _dump_count(sock: socket.socket, family: int, table: str, chain: str, seq: int) -> int | None:
    body = struct.pack("=BBH", NFPROTO[family], 0, 0) + _attr(NFTA_RULE_TABLE, table) + _attr(NFTA_RULE_CHAIN, chain)
    mtype = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE
    sock.send(struct.pack("=IHHII", 16 + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    count = 0
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                raise OSError("short netlink message")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return count
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    if err == 0:
                        return count
                    if -err == errno.ENOENT:
                        return None
                    raise OSError(-err, os.strerror(-err))
                if mtype & 0xFF == NFT_MSG_NEWRULE:
                    count += 1
            off += (length + 3) & ~3


def count_rules(family: int, table: str, chains: list[str]) -> dict[str, int | None]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        return {c: _dump_count(sock, family, table, c, i + 1) for i, c in enumerate(chains)}


def main(argv: list[str]) -> int:
    family, table, *chains = argv
    print(json.dumps(count_rules(int(family), table, chains)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
