"""Per-node IP address management: ranges, and an allocator over a durable store.

Guarantees:

* **Never twice.** The in-memory index (ip -> reservation) is the first guard;
  the store's primary key on the IP is the second. All addresses of one ADD
  (one per range: IPv4, IPv6 or both) are committed in one transaction before
  any is handed out, so a crash leaves either all of them reserved or none.
* **Never leaked.** Every reservation records (network, container id, ifname,
  netns); DEL releases by attachment, GC releases everything not in the valid
  set, and :meth:`podnet.cni.plugin.Plugin.reconcile` (run at daemon start and
  periodically) releases, through :meth:`Allocator.release_where`, reservations
  whose node-side veth no longer exists.
* **Requested addresses** (static IPs, :mod:`podnet.cni.requested`) are handed out exactly
  or not at all: outside the node's ranges, a reserved address, or held by another
  attachment is an error and nothing is reserved.
* **O(1)-ish.** Allocation walks round-robin from the last address handed out
  (like host-local, so a just-freed IP is not reused at once) over an
  in-memory set; lookups by attachment are dict hits, never directory scans.
* **Concurrency.** The allocator is not thread-safe by design: the daemon calls it
  only from its event-loop thread, which serialises allocations without a lock;
  other processes are kept out by the store's per-node file lock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

from podnet.cni.types import INTERNAL, INVALID_CONFIG, TRY_AGAIN_LATER, CniError, IPConfig

if TYPE_CHECKING:
    from podnet.cni.requested import RequestedIP

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Reservation:
    ip: str
    network: str
    container_id: str
    ifname: str
    netns: str = ""
    pod: str = ""

    @property
    def attachment(self) -> tuple[str, str, str]:
        return (self.network, self.container_id, self.ifname)


@dataclass(frozen=True)
class Range:
    """One pod CIDR. The gateway (network+1) and, for IPv4, the network and broadcast
    addresses are never handed out."""

    cidr: IPNetwork

    @classmethod
    def parse(cls, text: str) -> "Range":
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise CniError(INVALID_CONFIG, f"pod CIDR {text!r}: {e}") from None
        if net.num_addresses < 4:
            raise CniError(INVALID_CONFIG, f"pod CIDR {text} is too small to allocate from")
        return cls(net)

    @property
    def key(self) -> str:
        return str(self.cidr)

    @property
    def gateway(self) -> str:
        return str(self.cidr.network_address + 1)

    @property
    def first(self) -> int:
        return int(self.cidr.network_address) + 2

    @property
    def last(self) -> int:
        end = int(self.cidr.broadcast_address)
        return end - 1 if self.cidr.version == 4 else end

    @property
    def host_prefix(self) -> int:
        return self.cidr.max_prefixlen

    def contains(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return a.version == self.cidr.version and self.first <= int(a) <= self.last

    def address(self, n: int) -> str:
        return str(ipaddress.ip_address(n) if self.cidr.version == 4 else ipaddress.IPv6Address(n))


class Store(Protocol):
    """Durable reservations. ``reserve`` and ``release`` are atomic."""

    def load(self) -> tuple[list[Reservation], dict[str, str]]: ...
    def reserve(self, reservations: list[Reservation], cursors: dict[str, str]) -> None: ...
    def release(self, ips: list[str]) -> None: ...
    def close(self) -> None: ...


class Allocator:
    """Allocates one address per range for each attachment."""

    def __init__(self, ranges: Iterable[Range], store: Store) -> None:
        self.ranges = list(ranges)
        self.store = store
        self.by_ip: dict[str, Reservation] = {}
        self.by_attachment: dict[tuple[str, str, str], list[Reservation]] = {}
        rows, self.cursors = store.load()
        for r in rows:
            self._index(r)

    def _index(self, r: Reservation) -> None:
        self.by_ip[r.ip] = r
        self.by_attachment.setdefault(r.attachment, []).append(r)

    def _unindex(self, r: Reservation) -> None:
        self.by_ip.pop(r.ip, None)
        lst = self.by_attachment.get(r.attachment, [])
        if r in lst:
            lst.remove(r)
        if not lst:
            self.by_attachment.pop(r.attachment, None)

    def set_ranges(self, ranges: Iterable[Range]) -> None:
        """Switch to new pod CIDRs; existing reservations stay until released."""
        self.ranges = list(ranges)

    def lookup(self, network: str, container_id: str, ifname: str) -> list[Reservation]:
        return list(self.by_attachment.get((network, container_id, ifname), []))

    def _pick(self, rng: Range) -> int:
        size = rng.last - rng.first + 1
        cursor = self.cursors.get(rng.key)
        start = rng.first
        if cursor and rng.contains(cursor):
            start = int(ipaddress.ip_address(cursor)) + 1
        for i in range(size):
            n = start + i
            if n > rng.last:
                n -= size
            if rng.address(n) not in self.by_ip:
                return n
        raise CniError(INTERNAL, f"no free address in pod CIDR {rng.key} ({size} of {size} in use)")

    def _place(self, requested: Sequence[RequestedIP], attachment: tuple[str, str, str]) -> dict[str, str]:
        """range key -> the requested address in it; errors (with the request's code) if one is
        outside every range, a reserved address, a second one for the same range, or held by someone else."""
        placed: dict[str, str] = {}
        for want in requested:
            rng = next((r for r in self.ranges if r.contains(want.ip)), None)
            if rng is None:
                inside = next((r for r in self.ranges if ipaddress.ip_address(want.ip) in r.cidr), None)
                if inside is not None:
                    raise want.error(f"is reserved in pod CIDR {inside.key} (network, gateway or broadcast address)")
                cidrs = ", ".join(r.key for r in self.ranges)
                raise want.error(f"is outside this node's pod CIDRs ({cidrs})")
            if rng.key in placed:
                raise want.error(f"is a second address in pod CIDR {rng.key} (one per range: "
                                 f"{placed[rng.key]} was requested too)")
            holder = self.by_ip.get(want.ip)
            if holder is not None and holder.attachment != attachment:
                raise CniError(TRY_AGAIN_LATER, f"requested IP {want.ip} ({want.source}) is in use by "
                                                f"{holder.container_id}/{holder.ifname}; try again once it is released")
            placed[rng.key] = want.ip
        return placed

    def allocate(self, network: str, container_id: str, ifname: str, netns: str = "", pod: str = "",
                 requested: Sequence[RequestedIP] = ()) -> list[IPConfig]:
        """Reserve one address per range, all or nothing: exactly the requested address in a range
        that has one, the next free one in the others. Re-ADD of a held attachment returns its
        addresses (an error if they are not the requested ones)."""
        if not self.ranges:
            raise CniError(INTERNAL, "this node has no pod CIDR yet")
        attachment = (network, container_id, ifname)
        held = self.lookup(*attachment)
        if held:
            have = {r.ip for r in held}
            for want in requested:
                if want.ip not in have:
                    raise want.error(f"differs from the address(es) this attachment already holds: "
                                     f"{', '.join(sorted(have))}")
            return [self.config_for(r) for r in held]
        placed = self._place(requested, attachment)
        new, cursors = [], {}
        for rng in self.ranges:
            if rng.key in placed:  # a static address does not move the round-robin cursor
                new.append(Reservation(placed[rng.key], network, container_id, ifname, netns, pod))
                continue
            n = self._pick(rng)
            ip = rng.address(n)
            new.append(Reservation(ip, network, container_id, ifname, netns, pod))
            cursors[rng.key] = ip
        self.store.reserve(new, cursors)
        self.cursors.update(cursors)
        for r in new:
            self._index(r)
        return [self.config_for(r) for r in new]

    def config_for(self, r: Reservation) -> IPConfig:
        for rng in self.ranges:
            if rng.contains(r.ip):
                return IPConfig(f"{r.ip}/{rng.host_prefix}", rng.gateway)
        a = ipaddress.ip_address(r.ip)
        return IPConfig(f"{r.ip}/{a.max_prefixlen}", "")

    def release(self, network: str, container_id: str, ifname: str) -> list[Reservation]:
        """Release an attachment's addresses; releasing nothing is fine (DEL is idempotent)."""
        return self.release_where(lambda r: r.attachment == (network, container_id, ifname),
                                  self.lookup(network, container_id, ifname))

    def release_where(self, keep_out: Callable[[Reservation], bool],
                      candidates: Iterable[Reservation] | None = None) -> list[Reservation]:
        gone = [r for r in (self.by_ip.values() if candidates is None else candidates) if keep_out(r)]
        if gone:
            self.store.release([r.ip for r in gone])
            for r in gone:
                self._unindex(r)
        return gone

    def reservations(self) -> list[Reservation]:
        return list(self.by_ip.values())
