"""SPDY/3.1 frames as kubectl's port-forward sends them (moby/spdystream's framer), pure.

A frame is an 8-byte header and a payload. A control frame starts with the control bit, version 3
and a 16-bit type, then 8 bits of flags and a 24-bit length; a data frame starts with a 31-bit
stream id, then flags (``FIN``) and length. The header blocks of SYN_STREAM, SYN_REPLY and HEADERS
are ``uint32`` pair counts and length-prefixed names and values (several values of one name joined
by NUL), compressed with one zlib stream per direction that starts from :data:`DICTIONARY` and is
sync-flushed after every block: :class:`HeaderCodec` keeps both streams for one session, so its
blocks must be encoded in the order they are sent and decoded in the order they arrive.

:class:`FrameReader` cuts frames out of a byte stream that arrives in arbitrary pieces (kubectl's
websocket tunnel puts whatever its SPDY writer wrote into each binary message).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["DICTIONARY", "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "SETTINGS", "PING", "GOAWAY", "HEADERS",
           "WINDOW_UPDATE", "FLAG_FIN", "PROTOCOL_ERROR", "CANCEL", "DataFrame", "ControlFrame", "SynStream",
           "FrameReader", "HeaderCodec", "FrameError", "data_frame", "control_frame", "syn_stream",
           "syn_reply", "rst_stream", "goaway", "parse_syn_stream"]

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
PROTOCOL_ERROR, CANCEL = 1, 5
"""RST_STREAM status codes used here."""
MAX_LENGTH = (1 << 24) - 1

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK"] + "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
"""The SPDY/3 header compression dictionary (1423 bytes)."""


class FrameError(ValueError):
    """The peer sent something that is not SPDY/3 (the session ends with GOAWAY)."""


class _Flags:
    flags: int

    @property
    def fin(self) -> bool:
        """The sender's half of the stream ends with this frame."""
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class DataFrame(_Flags):
    stream_id: int
    flags: int
    data: bytes


@dataclass(frozen=True)
class ControlFrame(_Flags):
    type: int
    flags: int
    payload: bytes

    def word(self, index: int) -> int:
        """The payload's ``index``-th 32-bit word (stream ids with the reserved bit cleared)."""
        if len(self.payload) < 4 * (index + 1):
            raise FrameError(f"control frame type {self.type} too short")
        return struct.unpack_from("!I", self.payload, 4 * index)[0]


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    fin: bool
    headers: dict[str, str]


class FrameReader:
    """Frames out of a byte stream fed in pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[DataFrame | ControlFrame]:
        self._buf += data
        frames: list[DataFrame | ControlFrame] = []
        while len(self._buf) >= 8:
            first, flags_length = struct.unpack_from("!II", self._buf)
            length = flags_length & MAX_LENGTH
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            flags = flags_length >> 24
            if first & 0x80000000:
                if (first >> 16) & 0x7FFF != VERSION:
                    raise FrameError(f"unsupported SPDY version {(first >> 16) & 0x7FFF}")
                frames.append(ControlFrame(first & 0xFFFF, flags, payload))
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, flags, payload))
        return frames


class HeaderCodec:
    """The two header compression streams of one session."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(9, zdict=DICTIONARY)
        self._in = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, str]) -> bytes:
        block = [struct.pack("!I", len(headers))]
        for name, value in headers.items():
            for part in (name.lower().encode(), value.encode()):
                block.append(struct.pack("!I", len(part)) + part)
        return self._out.compress(b"".join(block)) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, compressed: bytes) -> dict[str, str]:
        """Names lowercased; a name's values joined with NUL stay as sent."""
        try:
            block = self._in.decompress(compressed)
        except zlib.error as e:
            raise FrameError(f"header block: {e}") from None
        try:
            (count,), pos = struct.unpack_from("!I", block), 4
            headers: dict[str, str] = {}
            for _ in range(count):
                parts = []
                for _ in range(2):
                    (n,) = struct.unpack_from("!I", block, pos)
                    if pos + 4 + n > len(block):
                        raise FrameError("header block truncated")
                    parts.append(block[pos + 4:pos + 4 + n].decode("utf-8", "replace"))
                    pos += 4 + n
                headers[parts[0].lower()] = parts[1]
        except struct.error:
            raise FrameError("header block truncated") from None
        return headers


def data_frame(stream_id: int, data: bytes = b"", fin: bool = False) -> bytes:
    return struct.pack("!II", stream_id & 0x7FFFFFFF, (FLAG_FIN if fin else 0) << 24 | len(data)) + data


def control_frame(type_: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack("!HHI", 0x8000 | VERSION, type_, flags << 24 | len(payload)) + payload


def syn_stream(codec: HeaderCodec, stream_id: int, headers: dict[str, str], fin: bool = False) -> bytes:
    """A SYN_STREAM (what a client sends; tests speak as kubectl with it)."""
    return control_frame(SYN_STREAM, struct.pack("!IIBB", stream_id, 0, 0, 0) + codec.encode(headers),
                         FLAG_FIN if fin else 0)


def syn_reply(codec: HeaderCodec, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
    return control_frame(SYN_REPLY, struct.pack("!I", stream_id) + codec.encode(headers or {}))


def rst_stream(stream_id: int, status: int) -> bytes:
    return control_frame(RST_STREAM, struct.pack("!II", stream_id, status))


def goaway(last_stream_id: int, status: int = 0) -> bytes:
    return control_frame(GOAWAY, struct.pack("!II", last_stream_id, status))


def parse_syn_stream(codec: HeaderCodec, frame: ControlFrame) -> SynStream:
    if len(frame.payload) < 10:
        raise FrameError("SYN_STREAM too short")
    return SynStream(frame.word(0) & 0x7FFFFFFF, frame.fin, codec.decode(frame.payload[10:]))
