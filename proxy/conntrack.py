"""Stale UDP conntrack cleanup, as kube-proxy's reconciler (plus its later fixes).

UDP has no connection to reset: a conntrack entry that maps a client to a
dead endpoint (or to nothing, when packets hit the service before it had
endpoints) keeps black-holing that client for as long as it keeps sending.
After every sync in which a UDP service or its endpoints changed, the
reconciler lists the family's UDP flows and deletes each one whose original
destination is a UDP service address (cluster IP, external IP, LB IP) and
port, or a UDP NodePort, and whose reply source is not a serving endpoint of
that service. Flows to addresses that *were* UDP services and are no longer
(deleted services) are deleted too; so are flows of services scaled to zero.

:func:`stale_flows` is pure; :class:`ConntrackTool` runs the ``conntrack``
binary (its in-memory fake is ``podnet.proxy.testing.FakeConntrack``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence

from podnet.kube.objects import EndpointSlice, Service
from podnet.proxy.model import endpoints_by_port, service_ports

log = logging.getLogger("podnet.proxy")


@dataclass(frozen=True, slots=True)
class Flow:
    orig_src: str
    orig_dst: str
    orig_sport: int
    orig_dport: int
    reply_src: str


@dataclass(frozen=True, slots=True)
class UdpService:
    ips: tuple[str, ...]
    port: int
    node_port: int | None
    serving: frozenset[str]


def udp_services(
    services: Iterable[Service], by_service: Mapping[str, Mapping[str, EndpointSlice]], family: int, node_name: str = ""
) -> list[UdpService]:
    out = []
    for svc in services:
        for sp in service_ports(svc, family):
            if sp.protocol != "UDP":
                continue
            eps = endpoints_by_port(by_service.get(svc.key, {}).values(), family, node_name).get((sp.name.port, "UDP"), ())
            out.append(
                UdpService(
                    ips=(sp.cluster_ip, *sp.external_ips, *sp.lb_ips),
                    port=sp.port,
                    node_port=sp.node_port,
                    serving=frozenset(e.ip for e in eps if e.serving),
                )
            )
    return out


def stale_flows(flows: Iterable[Flow], now: Sequence[UdpService], gone_ips: Iterable[str] = ()) -> list[Flow]:
    by_dst = {(ip, s.port): s for s in now for ip in s.ips}
    by_np = {s.node_port: s for s in now if s.node_port}
    gone = set(gone_ips) - {ip for s in now for ip in s.ips}
    out = []
    for f in flows:
        svc = by_dst.get((f.orig_dst, f.orig_dport)) or by_np.get(f.orig_dport)
        if svc is not None:
            if f.reply_src not in svc.serving:
                out.append(f)
        elif f.orig_dst in gone:
            out.append(f)
    return out


def parse_conntrack(text: str) -> list[Flow]:
    """``conntrack -L -p udp`` lines -> flows (orig tuple first, reply second)."""
    flows = []
    for line in text.splitlines():
        kv: dict[str, list[str]] = {}
        for tok in line.split():
            k, eq, v = tok.partition("=")
            if eq:
                kv.setdefault(k, []).append(v)
        try:
            flows.append(Flow(kv["src"][0], kv["dst"][0], int(kv["sport"][0]), int(kv["dport"][0]), kv["src"][1]))
        except (KeyError, IndexError, ValueError):
            continue
    return flows


class Conntrack(Protocol):
    async def list_udp(self, family: int) -> list[Flow]: ...
    async def delete(self, family: int, flows: Sequence[Flow]) -> int: ...


class ConntrackTool:
    """The ``conntrack`` CLI; ``prefix`` e.g. ['ip', 'netns', 'exec', NS]."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)

    async def _run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, "conntrack", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def list_udp(self, family: int) -> list[Flow]:
        _, out = await self._run("-L", "-p", "udp", "-f", f"ipv{family}")
        return parse_conntrack(out)

    async def delete(self, family: int, flows: Sequence[Flow]) -> int:
        deleted = 0
        groups: dict[tuple[str, int, str], int] = {}
        for f in flows:
            k = (f.orig_dst, f.orig_dport, f.reply_src)
            groups[k] = groups.get(k, 0) + 1
        for (dst, dport, reply_src), count in sorted(groups.items()):
            rc, _ = await self._run(
                "-D", "-p", "udp", "-f", f"ipv{family}", "--orig-dst", dst, "--dport", str(dport), "--reply-src", reply_src
            )
            deleted += count if rc == 0 else 0
        return deleted


class Reconciler:
    """Runs the cleanup for one family and remembers which IPs were UDP services."""

    def __init__(self, ct: Conntrack, family: int) -> None:
        self.ct = ct
        self.family = family
        self.known_ips: set[str] = set()

    async def run(self, services: Iterable[Service], by_service: Mapping[str, Mapping[str, EndpointSlice]]) -> int:
        from podnet.proxy import metrics as m

        now = udp_services(services, by_service, self.family)
        gone, self.known_ips = self.known_ips, {ip for s in now for ip in s.ips}
        with m.CONNTRACK_DURATION.labels(f"IPv{self.family}").time():
            stale = stale_flows(await self.ct.list_udp(self.family), now, gone)
            deleted = await self.ct.delete(self.family, stale) if stale else 0
        if deleted:
            m.CONNTRACK_DELETED.labels(f"IPv{self.family}").inc(deleted)
            log.info("IPv%d: deleted %d stale UDP conntrack entries", self.family, deleted)
        return deleted
