"""A minimal rtnetlink client: the few messages an ADD needs, encoded by hand and sent in batches.

Why not pyroute2 on this path: each pyroute2 request costs 0.2-1 ms of Python
(message objects, NLA name tables, request filters) and creating an ``IPRoute``
costs ~1 ms, against a few microseconds for ``struct.pack`` and one ``send``
(bench/results/cni_profile.md). The kernel runs every message of one ``send``
in order, in the sender's context, and answers each with its own ack
(``netlink_rcv_skb`` keeps going after an error), so independent requests go
out together and cost one round trip.

Guarantees: :meth:`Rtnl.batch` returns one result per message, in order: 0
(acked), a positive errno, or for a ``GET`` the answer's body; it never returns
before every message of the batch has been answered. Messages are built with
the kernel's alignment (``NLA_ALIGN``, 4 bytes) and native byte order.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
from dataclasses import dataclass

from podnet.host import nsenter

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 5, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 8, 15
RTAX_MTU = 2
IFF_UP = 0x1
NLA_F_NESTED = 0x8000
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 254, 1, 0, 253

_HDR = struct.Struct("=IHHII")  # struct nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
_seq = itertools.count(1)
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def _ip(ip: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return family, socket.inet_pton(family, ip)


@dataclass(frozen=True, slots=True)
class Msg:
    """One request: type, flags, body (the fixed header and attributes, without nlmsghdr)."""

    kind: int
    flags: int
    body: bytes


def new_veth(name: str, mtu: int, mac: str, peer: str, peer_ns_fd: int, peer_mac: str) -> Msg:
    """Create a veth pair, this end up, the peer (still down: asking for it up here fails with
    ENOTCONN) moved straight into the netns ``peer_ns_fd``."""
    peer_info = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(peer)) + \
        attr(IFLA_NET_NS_FD, struct.pack("=I", peer_ns_fd)) + attr(IFLA_MTU, struct.pack("=I", mtu)) + \
        attr(IFLA_ADDRESS, _mac(peer_mac))
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(name)) + \
        attr(IFLA_MTU, struct.pack("=I", mtu)) + attr(IFLA_ADDRESS, _mac(mac)) + \
        nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"),
               nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info)))
    return Msg(RTM_NEWLINK, _CREATE, body)


def get_link(name: str) -> Msg:
    return Msg(RTM_GETLINK, NLM_F_REQUEST, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(name)))


def del_link(name: str) -> Msg:
    return Msg(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK,
               _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(name)))


def link_up(index: int) -> Msg:
    return Msg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP))


def add_addr(index: int, ip: str, prefixlen: int, flags: int) -> Msg:
    family, raw = _ip(ip)
    body = _IFADDR.pack(family, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index) + attr(IFA_LOCAL, raw) + \
        attr(IFA_ADDRESS, raw) + attr(IFA_FLAGS, struct.pack("=I", flags))
    return Msg(RTM_NEWADDR, _CREATE, body)


def add_route(dst: str, prefixlen: int, oif: int, proto: int, scope: int, gateway: str = "") -> Msg:
    family, raw = _ip(dst)
    body = _RTMSG.pack(family, prefixlen, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, 0) + \
        attr(RTA_OIF, struct.pack("=I", oif))
    if prefixlen:
        body += attr(RTA_DST, raw)
    if gateway:
        body += attr(RTA_GATEWAY, _ip(gateway)[1])
    return Msg(RTM_NEWROUTE, _CREATE, body)


def all_links() -> Msg:
    """A GETLINK for :meth:`Rtnl.dump`: every link of the netns."""
    return Msg(RTM_GETLINK, NLM_F_REQUEST, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def all_addrs() -> Msg:
    """A GETADDR for :meth:`Rtnl.dump`: every address of every family."""
    return Msg(RTM_GETADDR, NLM_F_REQUEST, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def all_routes(family: int) -> Msg:
    """A GETROUTE for :meth:`Rtnl.dump`: every route of ``family``, all tables."""
    return Msg(RTM_GETROUTE, NLM_F_REQUEST, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))


def get_route(dst: str) -> Msg:
    """A GETROUTE for one destination (``ip route get``): the answer carries the route the kernel would
    use, with a path MTU it learned for that destination (a route exception) as its RTAX_MTU metric."""
    family, raw = _ip(dst)
    return Msg(RTM_GETROUTE, NLM_F_REQUEST,
               _RTMSG.pack(family, len(raw) * 8, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, raw))


def attrs(body: bytes, off: int) -> dict[int, bytes]:
    """Top-level attributes from ``off`` on: type (without NLA_F_NESTED) -> payload; the last one wins."""
    out = {}
    while off + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, off)
        if length < 4:
            break
        out[kind & ~NLA_F_NESTED] = body[off + 4:off + length]
        off += length + (-length % 4)
    return out


def _u32(raw: bytes | None) -> int:
    return struct.unpack("=I", raw[:4])[0] if raw and len(raw) >= 4 else 0


def _addr_text(raw: bytes | None) -> str:
    """An IPv4 or IPv6 address as text; "" for anything else (absent, or another family's)."""
    if raw is None or len(raw) not in (4, 16):
        return ""
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


@dataclass(frozen=True, slots=True)
class Link:
    """What a GETLINK answer says about a link: index, IFLA_LINK (a veth's peer index), name, flags, MTU."""

    index: int
    link: int
    name: str = ""
    flags: int = 0
    mtu: int = 0


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
    a = attrs(body, _IFINFO.size)
    peer = struct.unpack("=i", a[IFLA_LINK][:4])[0] if len(a.get(IFLA_LINK, b"")) >= 4 else 0
    name = a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return Link(index, peer, name, flags, _u32(a.get(IFLA_MTU)))


@dataclass(frozen=True, slots=True)
class Addr:
    index: int
    family: int
    prefixlen: int
    scope: int
    address: str
    """IFA_ADDRESS (on a point-to-point link, the peer's; else the address itself)."""


def parse_addr(body: bytes) -> Addr:
    family, prefixlen, _flags, scope, index = _IFADDR.unpack_from(body)
    return Addr(index, family, prefixlen, scope, _addr_text(attrs(body, _IFADDR.size).get(IFA_ADDRESS)))


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    dst_len: int
    table: int
    proto: int
    type: int
    flags: int
    dst: str
    gateway: str
    oif: int
    mtu: int = 0
    """The RTAX_MTU metric (a route's own ``mtu``, or a learned path MTU in a GETROUTE answer); 0 if none."""


def route_proto(body: bytes) -> int:
    """The protocol of a route answer, read without decoding the rest."""
    return body[5]


def parse_route(body: bytes) -> Route:
    family, dst_len, _src_len, _tos, table, proto, _scope, kind, flags = _RTMSG.unpack_from(body)
    a = attrs(body, _RTMSG.size)
    return Route(family, dst_len, _u32(a.get(RTA_TABLE)) or table, proto, kind, flags,
                 _addr_text(a.get(RTA_DST)), _addr_text(a.get(RTA_GATEWAY)), _u32(a.get(RTA_OIF)),
                 _u32(attrs(a[RTA_METRICS], 0).get(RTAX_MTU)) if RTA_METRICS in a else 0)


class Rtnl:
    """A raw NETLINK_ROUTE socket, bound in the network namespace of the thread that made it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batch(self, msgs: list[Msg]) -> list[int | bytes]:
        """Send ``msgs`` in one datagram; one result per message (see the module docstring)."""
        first = next(_seq) & 0x7FFFFFFF
        out = bytearray()
        for i, m in enumerate(msgs):
            out += _HDR.pack(_HDR.size + len(m.body), m.kind, m.flags, first + i, 0) + m.body
        self.sock.send(out)
        results: list[int | bytes | None] = [None] * len(msgs)
        left = len(msgs)
        while left:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
                i = seq - first
                if 0 <= i < len(msgs) and results[i] is None:
                    if kind == NLMSG_ERROR:
                        results[i] = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        left -= 1
                    elif kind != NLMSG_DONE:
                        results[i] = bytes(data[off + _HDR.size:off + length])
                        left -= 1
                off += max(length + (-length % 4), _HDR.size)  # anything else: an abandoned request's answer
        return results  # type: ignore[return-value]

    def request(self, msg: Msg) -> int | bytes:
        return self.batch([msg])[0]

    def dump(self, msg: Msg) -> list[bytes]:
        """Every answer body of a dump request (``msg`` gets NLM_F_DUMP); OSError if the kernel refuses it."""
        seq = next(_seq) & 0x7FFFFFFF
        self.sock.send(_HDR.pack(_HDR.size + len(msg.body), msg.kind, msg.flags | NLM_F_DUMP, seq, 0) + msg.body)
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, kind, _flags, got, _pid = _HDR.unpack_from(data, off)
                if got == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        raise OSError(err, os.strerror(err))
                    out.append(bytes(data[off + _HDR.size:off + length]))
                off += max(length + (-length % 4), _HDR.size)


def in_netns(ns_fd: int) -> Rtnl:
    """An :class:`Rtnl` whose socket lives in the netns ``ns_fd``; the calling thread returns to its
    own netns (if it cannot, the process exits at once rather than run on in the wrong one)."""
    return nsenter.made_inside(ns_fd, Rtnl)
