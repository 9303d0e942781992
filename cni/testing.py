"""The CNI package's fakes, shared by its tests and benchmarks (product code never imports this).

:class:`FakeNetOps` implements :class:`podnet.cni.plugin.NetOps`, :class:`FakeOverlayOps`
:class:`podnet.cni.overlay.OverlayOps`, :class:`MemoryStore` :class:`podnet.cni.ipam.Store` and
:class:`FakeRawTables` :class:`podnet.cni.antispoof.Tables`, all in
memory; the real kernel implementations are tested in network namespaces.
"""

from __future__ import annotations

import dataclasses
import errno

from podnet.cni import netops, overlay
from podnet.cni.ipam import Reservation
from podnet.cni.types import INTERNAL, INVALID_ENV, UNKNOWN_CONTAINER, CniError


class FakeNetOps:
    """In-memory :class:`podnet.cni.plugin.NetOps`: dicts of netns and node-side veths, no kernel."""

    def __init__(self) -> None:
        self.netns: dict[str, set[str]] = {}  # path -> ifnames inside; "notns" paths are files
        self.links: set[str] = set()  # host ifnames
        self.pod_of: dict[str, tuple[str, str]] = {}  # host ifname -> (netns, ifname)
        self.fail_add: Exception | None = None

    def make_netns(self, path: str) -> None:
        self.netns[path] = set()

    def validate_netns(self, path: str) -> None:
        if path.endswith("notns"):
            raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
        if path not in self.netns:
            raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {path} does not exist")

    def add_pod(self, netns, ifname, host, ips, mtu, mac=""):
        self.validate_netns(netns)
        if ifname in self.netns[netns]:
            raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname} already exists in netns {netns}")
        if self.fail_add:
            raise self.fail_add
        self.netns[netns].add(ifname)
        self.links.add(host)
        self.pod_of[host] = (netns, ifname)
        return netops.Plumbed(host, "aa:aa:aa:aa:aa:aa", mac or "bb:bb:bb:bb:bb:bb")

    def del_pod(self, netns, ifname, host):
        self.delete_host_link(host)

    def check_pod(self, netns, ifname, host, ips):
        if host not in self.links or ifname not in self.netns.get(netns, ()):
            raise CniError(INTERNAL, f"interface {ifname} is missing in {netns}")

    def podnet_links(self):
        return set(self.links)

    def delete_host_link(self, name):
        if name not in self.links:
            return False
        self.links.discard(name)
        ns, ifname = self.pod_of.pop(name)
        self.netns.get(ns, set()).discard(ifname)
        return True


class FakeOverlayOps:
    """In-memory :class:`podnet.cni.overlay.OverlayOps`: VXLAN devices, neighbours and FDB entries as
    dicts; ``busy_ports`` makes bringing a device up on that port fail with EADDRINUSE, as the kernel does;
    ``learned_mtus`` holds the path MTU the node learned toward an underlay address (ICMP from a router)."""

    def __init__(self, host=None) -> None:
        self.host_state = host or overlay.Host()
        self.links: dict = {}  # name -> overlay.LinkState
        self.neigh: set = set()
        self.fdb: set = set()
        self.addr: set = set()
        self.busy_ports: set[int] = set()
        self.learned_mtus: dict[str, int] = {}
        self._macs = iter(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1, 65536))

    def host(self):
        return self.host_state

    def vxlan_links(self):
        return dict(self.links)

    def _need(self, name):
        if name not in self.links:
            raise OSError(errno.ENODEV, f"{name}: no such device")

    def create_vxlan(self, dev):
        if dev.name in self.links:
            raise OSError(errno.EEXIST, "exists")
        self.links[dev.name] = overlay.LinkState(dev.vni, dev.port, dev.local, False, dev.mtu, False,
                                                 next(self._macs), dev.df)

    def set_mtu(self, name, mtu):
        self._need(name)
        self.links[name] = dataclasses.replace(self.links[name], mtu=mtu)

    def set_up(self, name):
        self._need(name)
        if self.links[name].port in self.busy_ports:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.links[name] = dataclasses.replace(self.links[name], up=True)

    def delete_link(self, name):
        self._need(name)
        del self.links[name]
        self.neigh = {n for n in self.neigh if n.dev != name}
        self.fdb = {f for f in self.fdb if f.dev != name}
        self.addr = {a for a in self.addr if a.dev != name}

    def addrs(self, dev):
        self._need(dev)
        return {a for a in self.addr if a.dev == dev}

    def addr_add(self, a):
        self._need(a.dev)
        self.addr.add(a)

    def addr_del(self, a):
        self.addr.discard(a)

    def neighs(self, dev):
        self._need(dev)
        return {n for n in self.neigh if n.dev == dev}

    def neigh_replace(self, n):
        self._need(n.dev)
        self.neigh = {x for x in self.neigh if (x.dev, x.ip) != (n.dev, n.ip)} | {n}

    def neigh_del(self, n):
        self.neigh.discard(n)

    def fdbs(self, dev):
        self._need(dev)
        return {f for f in self.fdb if f.dev == dev}

    def fdb_replace(self, f):
        self._need(f.dev)
        self.fdb = {x for x in self.fdb if (x.dev, x.mac) != (f.dev, f.mac)} | {f}

    def fdb_del(self, f):
        self.fdb.discard(f)

    def path_mtus(self, ips):
        return {ip: self.learned_mtus.get(ip, 0) for ip in ips}


class MemoryStore:
    """In-memory :class:`podnet.cni.ipam.Store`; ``fail_next`` simulates an I/O error."""

    def __init__(self) -> None:
        self.rows: dict[str, Reservation] = {}
        self.cursors: dict[str, str] = {}
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next:
            e, self.fail_next = self.fail_next, None
            raise e

    def load(self) -> tuple[list[Reservation], dict[str, str]]:
        return list(self.rows.values()), dict(self.cursors)

    def reserve(self, reservations: list[Reservation], cursors: dict[str, str]) -> None:
        self._maybe_fail()
        if any(r.ip in self.rows for r in reservations):
            raise AssertionError("duplicate reservation reached the store")
        self.rows.update((r.ip, r) for r in reservations)
        self.cursors.update(cursors)

    def release(self, ips: list[str]) -> None:
        self._maybe_fail()
        for ip in ips:
            self.rows.pop(ip, None)

    def close(self) -> None:
        pass


class FakeRawTables:
    """In-memory :class:`podnet.cni.antispoof.Tables`: the raw table of each family as ``[packets, rule]``
    lists per chain, written by the subset of restore input the anti-spoofing check uses (a chain
    declaration flushes it; ``-A``, ``-I <chain> 1``, ``-D``); ``fail_next`` makes the next restore raise."""

    def __init__(self) -> None:
        self.chains: dict[int, dict[str, list[list]]] = {4: {"PREROUTING": []}, 6: {"PREROUTING": []}}
        self.restores = 0
        self.fail_next: Exception | None = None

    def save(self, family: int) -> str:
        out = ["*raw"] + [f":{c} - [0:0]" for c in self.chains[family]]
        out += [f"[{n}:{n * 100}] {rule}" for rules in self.chains[family].values() for n, rule in rules]
        return "\n".join(out + ["COMMIT"]) + "\n"

    def restore(self, family: int, text: str) -> None:
        if self.fail_next:
            e, self.fail_next = self.fail_next, None
            raise e
        self.restores += 1
        chains = self.chains[family]
        for line in text.splitlines():
            if line.startswith(":"):
                chains[line[1:].split()[0]] = []
            elif line.startswith(("-A ", "-I ", "-D ")):
                verb, chain, *rest = line.split()
                if verb == "-I":
                    rest = rest[1:]  # the position: always 1 here
                rule = " ".join(["-A", chain, *rest])
                if verb == "-A":
                    chains[chain].append([0, rule])
                elif verb == "-I":
                    chains[chain].insert(0, [0, rule])
                else:
                    chains[chain].remove(next(r for r in chains[chain] if r[1] == rule))

    def count(self, family: int, rule: str, packets: int) -> None:
        """The kernel counted ``packets`` more on ``rule``."""
        for r in (r for rules in self.chains[family].values() for r in rules if r[1] == rule):
            r[0] += packets
