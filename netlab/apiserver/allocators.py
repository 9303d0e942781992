"""Pure allocators for the lab control plane: service IPs, node ports, pod CIDRs.

Each allocator hands out free values from a fixed range, honours an explicit
request when the value is free and inside the range, and refuses otherwise
with :class:`AllocationError` (the API server turns it into 422 Invalid).
``reserve`` marks values found in stored objects after a restart. Dynamic
service IPs come from above the static band at the bottom of the range (as
Kubernetes' ServiceIPStaticSubrange does), so well-known addresses such as
10.96.0.10 for DNS stay free for explicit requests.
"""

from __future__ import annotations

import ipaddress
from typing import Iterator

__all__ = ["AllocationError", "IPAllocator", "PortAllocator", "CIDRAllocator"]


class AllocationError(ValueError):
    pass


class _IntPool:
    """Free integers in [low, high], handed out round-robin from a cursor."""

    def __init__(self, low: int, high: int, start: int | None = None) -> None:
        self.low, self.high = low, high
        self.used: set[int] = set()
        self._cursor = low if start is None else start

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def take(self, value: int | None = None) -> int:
        if value is not None:
            if not self.low <= value <= self.high:
                raise AllocationError("out of range")
            if value in self.used:
                raise AllocationError("already allocated")
            self.used.add(value)
            return value
        if len(self.used) >= self.size:
            raise AllocationError("range is full")
        v = self._cursor
        for _ in range(self.size):
            if v > self.high:
                v = self.low
            if v not in self.used:
                self.used.add(v)
                self._cursor = v + 1
                return v
            v += 1
        raise AllocationError("range is full")

    def release(self, value: int) -> None:
        self.used.discard(value)


class IPAllocator:
    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=True)
        base = int(self.network.network_address)
        last = int(self.network.broadcast_address)
        size = last - base + 1
        low, high = (base + 1, last - 1) if self.network.version == 4 else (base + 1, last)
        static_band = min(max(16, size // 16), 256)
        self._pool = _IntPool(low, high, start=min(base + static_band, high))
        self.family = "IPv4" if self.network.version == 4 else "IPv6"

    def __contains__(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def allocate(self, ip: str | None = None) -> str:
        if ip is None:
            return str(ipaddress.ip_address(self._pool.take()))
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError(f"{ip!r} is not an IP address") from None
        if addr not in self.network:
            raise AllocationError(f"the provided IP ({ip}) is not in the valid range ({self.network})")
        try:
            self._pool.take(int(addr))
        except AllocationError as e:
            raise AllocationError(f"the provided IP ({ip}) is {e}") from None
        return str(addr)

    def reserve(self, ip: str) -> None:
        if ip in self:
            self._pool.used.add(int(ipaddress.ip_address(ip)))

    def release(self, ip: str) -> None:
        if ip in self:
            self._pool.release(int(ipaddress.ip_address(ip)))


class PortAllocator:
    def __init__(self, low: int = 30000, high: int = 32767) -> None:
        self._pool = _IntPool(low, high)
        self.low, self.high = low, high

    def allocate(self, port: int | None = None) -> int:
        try:
            return self._pool.take(port)
        except AllocationError as e:
            if port is None:
                raise AllocationError(f"no free node port in {self.low}-{self.high}") from None
            raise AllocationError(f"provided port {e}" if "allocated" in str(e) else
                                  f"provided port is not in the valid range. The range of valid ports is {self.low}-{self.high}") from None

    def reserve(self, port: int) -> None:
        if self.low <= port <= self.high:
            self._pool.used.add(port)

    def release(self, port: int) -> None:
        self._pool.release(port)

    def in_use(self, port: int) -> bool:
        return port in self._pool.used


class CIDRAllocator:
    """Per-node pod CIDRs of ``mask`` bits carved from ``cluster_cidr`` (kube-controller-manager --allocate-node-cidrs)."""

    def __init__(self, cluster_cidr: str, mask: int = 24) -> None:
        self.network = ipaddress.ip_network(cluster_cidr, strict=True)
        if mask < self.network.prefixlen or mask > self.network.max_prefixlen:
            raise ValueError(f"node CIDR mask /{mask} does not fit in {cluster_cidr}")
        if mask - self.network.prefixlen > 24:
            raise ValueError("too many node CIDRs (more than 2^24)")
        self.mask = mask
        self._pool = _IntPool(0, (1 << (mask - self.network.prefixlen)) - 1)

    def _subnet(self, index: int) -> str:
        size = 1 << (self.network.max_prefixlen - self.mask)
        addr = ipaddress.ip_address(int(self.network.network_address) + index * size)
        return f"{addr}/{self.mask}"

    def _index(self, cidr: str) -> int | None:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if net.version != self.network.version or net.prefixlen != self.mask or not net.subnet_of(self.network):  # type: ignore[arg-type]
            return None
        size = 1 << (self.network.max_prefixlen - self.mask)
        return (int(net.network_address) - int(self.network.network_address)) // size

    def allocate(self) -> str:
        try:
            return self._subnet(self._pool.take())
        except AllocationError:
            raise AllocationError(f"no free /{self.mask} left in {self.network}") from None

    def reserve(self, cidr: str) -> bool:
        idx = self._index(cidr)
        if idx is None:
            return False
        self._pool.used.add(idx)
        return True

    def release(self, cidr: str) -> None:
        idx = self._index(cidr)
        if idx is not None:
            self._pool.release(idx)

    def allocated(self) -> Iterator[str]:
        return (self._subnet(i) for i in sorted(self._pool.used))
