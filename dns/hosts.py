"""The ``hosts`` plugin: names from a hosts file and inline entries, as CoreDNS's *hosts* answers them.

* A name listed (any address family) answers A/AAAA with its addresses (none of the asked family:
  NOERROR with no records), authoritative, TTL ``ttl`` (default 3600); other types get NOERROR and
  no records.
* PTR for a listed address answers its names (unless ``no_reverse``), in any zone.
* A name not listed: the next plugin when ``fallthrough`` covers it, SERVFAIL otherwise (CoreDNS: "we
  want to send an NXDOMAIN, but ... we don't have a SOA"). Names outside the plugin's zones always
  go to the next plugin, as do PTR questions for addresses not listed.

The file is parsed as /etc/hosts (``#`` comments, ``ADDRESS NAME [ALIASES...]``, zone ids such as
``fe80::1%eth0`` skipped); inline entries come first. The file is read again when its modification
time or size changed, checked at most every ``reload`` seconds (0 = never again).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from podnet.dns import names
from podnet.dns.coreconfig import HostsConfig, in_zone
from podnet.dns.wire import AAAA, PTR, RR, A

__all__ = ["HostsTable", "Hosts", "parse_hosts", "Decision"]

log = logging.getLogger("podnet.dns.hosts")


@dataclass
class HostsTable:
    v4: dict[str, list[str]] = field(default_factory=dict)
    v6: dict[str, list[str]] = field(default_factory=dict)
    by_addr: dict[str, list[str]] = field(default_factory=dict)

    def add(self, ip: str, hostnames: Iterable[str]) -> None:
        fam = self.v6 if ":" in ip else self.v4
        for h in hostnames:
            ips = fam.setdefault(h, [])
            if ip not in ips:
                ips.append(ip)
            hs = self.by_addr.setdefault(ip, [])
            if h not in hs:
                hs.append(h)


def parse_hosts(text: str, table: HostsTable | None = None) -> HostsTable:
    """Add the entries of a hosts file to ``table`` (a new one by default); bad lines are skipped."""
    table = table if table is not None else HostsTable()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        fields = line.split()
        if len(fields) < 2 or "%" in fields[0]:
            continue
        try:
            ip = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        hostnames = []
        for h in fields[1:]:
            h = h.lower().rstrip(".")
            try:
                names.to_wire(h)
            except ValueError:
                continue
            if h:
                hostnames.append(h)
        table.add(ip, hostnames)
    return table


@dataclass(frozen=True)
class Decision:
    """``kind``: "answer" (``records``, possibly empty = NODATA), "next" or "servfail"."""

    kind: str
    records: tuple[RR, ...] = ()


NEXT = Decision("next")
SERVFAIL = Decision("servfail")


class Hosts:
    def __init__(self, cfg: HostsConfig, clock: Callable[[], float] = time.monotonic,
                 read: Callable[[str], str] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self._read = read or _read_text
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self.table = HostsTable()
        self._load(force=True)

    def _load(self, force: bool = False) -> None:
        path = self.cfg.path
        table = HostsTable()
        for ip, hostnames in self.cfg.inline:
            table.add(ip, hostnames)
        if path:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size)
                if not force and stamp == self._stamp:
                    return
                parse_hosts(self._read(path), table)
                self._stamp = stamp
            except OSError as e:
                if force or self._stamp is not None:
                    log.warning("plugin/hosts: cannot read %s: %s", path, e)
                self._stamp = None
        self.table = table

    def _maybe_reload(self) -> None:
        if not self.cfg.path or self.cfg.reload <= 0:
            return
        now = self.clock()
        if now - self._checked >= self.cfg.reload:
            self._checked = now
            self._load()

    def decide(self, qname: str, qtype: int) -> Decision:
        """What the plugin does for ``qname`` (lower-case, no trailing dot) and ``qtype``."""
        cfg = self.cfg
        in_zones = any(in_zone(qname, z) for z in cfg.zones)
        if not in_zones and qtype != PTR:
            return NEXT
        self._maybe_reload()
        t = self.table
        if qtype == PTR:
            ip = _reverse_to_ip(qname)
            hostnames = t.by_addr.get(ip) if ip is not None and not cfg.no_reverse else None
            if not hostnames:
                return NEXT
            return Decision("answer", tuple(RR(qname, PTR, cfg.ttl, h) for h in hostnames))
        v4, v6 = t.v4.get(qname, ()), t.v6.get(qname, ())
        if not v4 and not v6:
            if cfg.fallthrough is not None and (not cfg.fallthrough or any(in_zone(qname, z) for z in cfg.fallthrough)):
                return NEXT
            return SERVFAIL
        if qtype == A:
            return Decision("answer", tuple(RR(qname, A, cfg.ttl, ip) for ip in v4))
        if qtype == AAAA:
            return Decision("answer", tuple(RR(qname, AAAA, cfg.ttl, ip) for ip in v6))
        return Decision("answer")


def _reverse_to_ip(qname: str) -> str | None:
    """'5.0.0.10.in-addr.arpa' -> '10.0.0.5'; full nibble ip6.arpa names -> the IPv6 address."""
    if qname.endswith(".in-addr.arpa"):
        parts = qname[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4:
            try:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
            except ValueError:
                return None
    elif qname.endswith(".ip6.arpa"):
        nibbles = qname[: -len(".ip6.arpa")].split(".")
        if len(nibbles) == 32 and all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            h = "".join(reversed(nibbles))
            return str(ipaddress.IPv6Address(int(h, 16)))
    return None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
