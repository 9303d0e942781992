"""In-tree fake of :class:`podnet.cni.plugin.NetOps`: dicts of netns and node-side veths, no kernel.

Used by the fast tests; the real :class:`podnet.cni.plugin.KernelNetOps` is tested in netns."""

from __future__ import annotations

import dataclasses
import errno

from podnet.cni import netops
from podnet.cni.types import INTERNAL, INVALID_ENV, UNKNOWN_CONTAINER, CniError


class FakeNetOps:
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

    def add_pod(self, ns, ifname, host, ips, mtu, mac=""):
        self.validate_netns(ns)
        if ifname in self.netns[ns]:
            raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname} already exists in netns {ns}")
        if self.fail_add:
            raise self.fail_add
        self.netns[ns].add(ifname)
        self.links.add(host)
        self.pod_of[host] = (ns, ifname)
        return netops.Plumbed(host, "aa:aa:aa:aa:aa:aa", mac or "bb:bb:bb:bb:bb:bb")

    def del_pod(self, ns, ifname, host):
        self.delete_host_link(host)

    def check_pod(self, ns, ifname, host, ips):
        if host not in self.links or ifname not in self.netns.get(ns, ()):
            raise CniError(INTERNAL, f"interface {ifname} is missing in {ns}")

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
    """In-tree fake of :class:`podnet.cni.overlay.OverlayOps`: VXLAN devices, neighbours and FDB entries as
    dicts; ``busy_ports`` makes bringing a device up on that port fail with EADDRINUSE, as the kernel does."""

    def __init__(self, host=None) -> None:
        from podnet.cni import overlay

        self.host_state = host or overlay.Host()
        self.links: dict = {}  # name -> overlay.LinkState
        self.neigh: set = set()
        self.fdb: set = set()
        self.busy_ports: set[int] = set()
        self._macs = iter(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1, 65536))

    def host(self):
        return self.host_state

    def vxlan_links(self):
        return dict(self.links)

    def _need(self, name):
        if name not in self.links:
            raise OSError(errno.ENODEV, f"{name}: no such device")

    def create_vxlan(self, dev):
        from podnet.cni import overlay

        if dev.name in self.links:
            raise OSError(errno.EEXIST, "exists")
        self.links[dev.name] = overlay.LinkState(dev.vni, dev.port, dev.local, False, dev.mtu, False, next(self._macs))

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
