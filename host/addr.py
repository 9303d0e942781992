"""Host:port text, as Go's ``net.SplitHostPort``/``net.JoinHostPort`` read and write it.

Every listen and upstream address a podnet binary takes goes through :func:`split_hostport`
(or :func:`listen_address`, which adds "empty host means every IPv4 address"), so one rule holds
everywhere:

* ``HOST:PORT``; an IPv6 host in brackets (``[::1]:53``); an empty host (``:8080``) is allowed;
* the port is 1-5 decimal digits within 0..65535 (0: an ephemeral port, for tests);
* an unbracketed host holding ``:`` is refused, as Go refuses "too many colons";
* a zone (``%eth0``) is refused: Kubernetes' address parsers accept none;
* with ``default_port``, a bare host (``10.0.0.1``, ``[::1]``, ``::1``) takes that port
  (kube-proxy's AppendPortIfNeeded, CoreDNS's upstream addresses).

The host is not resolved here: callers that need an IP literal check it themselves
(``podnet.kube.goip``). Pure functions; ValueError names the text and what is wrong.
"""

from __future__ import annotations

import re

__all__ = ["split_hostport", "join_hostport", "listen_address"]

_PORT = re.compile(r"[0-9]{1,5}")


def _port(text: str, port: str) -> int:
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"address {text!r}: invalid port {port!r}")
    return int(port)


def _host(text: str, host: str) -> str:
    if "%" in host:
        raise ValueError(f"address {text!r}: zones are not accepted")
    return host


def split_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` -> (host without brackets, port); ValueError when the text is not one.

    With ``default_port`` a text without a port (``HOST``, ``[V6]`` or a bare IPv6 address)
    is accepted and gets it."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if "[" in host or "]" in rest or "[" in rest:
            raise ValueError(f"address {text!r}: unexpected bracket")
        if not rest and default_port is not None:
            return _host(text, host), default_port
        if not rest.startswith(":"):
            raise ValueError(f"address {text!r}: missing port" if not rest else f"address {text!r}: junk after ']'")
        return _host(text, host), _port(text, rest[1:])
    if "[" in text or "]" in text:
        raise ValueError(f"address {text!r}: unexpected bracket")
    colons = text.count(":")
    if colons == 0 or (colons > 1 and default_port is not None):
        if default_port is None:
            raise ValueError(f"address {text!r}: missing port")
        return _host(text, text), default_port
    if colons > 1:
        raise ValueError(f"address {text!r}: too many colons (put an IPv6 address in brackets)")
    host, _, port = text.partition(":")
    return _host(text, host), _port(text, port)


def join_hostport(host: str, port: int) -> str:
    """(host, port) -> ``host:port``, ``[v6]:port`` when the host holds a colon."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """A listen address: :func:`split_hostport`, with an empty host meaning ``0.0.0.0``."""
    host, port = split_hostport(text, default_port)
    return host or "0.0.0.0", port
