"""In-tree fake of :class:`podnet.cni.plugin.NetOps`: dicts of netns and node-side veths, no kernel.

Used by the fast tests; the real :class:`podnet.cni.plugin.KernelNetOps` is tested in netns."""

from __future__ import annotations

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
