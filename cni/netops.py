"""Kernel plumbing for one pod: a point-to-point veth, addresses and routes.

Design: **routed point-to-point, no bridge** (the reference ``ptp`` plugin's and
Calico's model). Each pod gets a veth pair: ``eth0`` in the pod holds the pod IP
as a host route (/32, /128), with ``<gw>/32 dev eth0 scope link`` and a default
route via ``<gw>``; the node end ``pnc<hash>`` holds ``<gw>`` (the pod CIDR's first
address) and the node has ``<podIP>/32 dev pnc<hash>``. Why not a bridge:

* host-gw needs nothing else: every packet leaves the pod through the node's
  routing table, so pod-to-pod traffic (same node or not) is routed without
  NAT, and one route per remote node CIDR is all the cross-node state;
* no L2 between pods, so no bridge-nf-call-iptables, no stale bridge address
  after a pod CIDR change (flannel#1850), no ARP flooding;
* hairpin needs no special mode: a pod reaching itself via a Service VIP goes
  up its veth, is DNAT'ed in the node, and is routed back down the same veth.

Namespaces: the daemon never moves its own threads into a pod netns for long.
:func:`podnet.cni.rtnl.in_netns` opens a netlink socket inside the pod netns
from a worker thread with ``setns(2)`` and switches straight back (sockets stay
bound to the netns they were created in), through the one namespace switch
every package uses, :func:`podnet.host.nsenter.made_inside`: if switching back
ever failed the process exits at once rather than run on in the wrong namespace. This costs
~40 us, against ~1 ms for a pyroute2 ``IPRoute`` made the same way and ~9-30 ms
for pyroute2's ``IPRoute(netns=...)``, which forks a helper.

ADD and DEL speak rtnetlink through :mod:`podnet.cni.rtnl` (hand-encoded
messages, independent requests batched into one ``send``), not pyroute2, whose
per-request Python cost was most of an ADD (bench/results/cni_profile.md).
pyroute2 is kept for what is not on the per-pod path: CHECK, the link listing
of reconcile and GC, the rare repeated ADD that finds its own interface.

DEL is one ``RTM_DELLINK`` by name (:func:`_delete_link`). Its answer comes only after the kernel
has unregistered and freed the pair (``rtnl_unlock`` runs the netdev todo list,
with an ``rcu_barrier``, before the ack is sent): that wait, ~14 ms here for any
veth, is the floor of a DEL for podnet and the reference plugins alike, and
podnet does not answer before it (bench/results/cni.md). The route to the pod,
the gateway address and the pod end all go with the node end, so DEL makes no
other netlink request.

Every function here is synchronous and is run in a worker thread (each keeps
its own long-lived node-netns sockets, a raw one and a pyroute2 one; pod-netns
sockets are per call, since every pod netns is new). Host-side
changes of a failed ADD are rolled back by deleting the veth (which takes its
routes and the peer with it).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import re
import socket
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.cni import rtnl
from podnet.cni.types import INTERNAL, INVALID_ENV, UNKNOWN_CONTAINER, CniError, IPConfig
from podnet.host import nsenter

CLONE_NEWNET = nsenter.CLONE_NEWNET
NS_GET_NSTYPE = 0xB703
IFA_F_NODAD = 0x02
RTPROT_PODNET = 149
HOST_PREFIX = "pnc"
HOST_NAME = re.compile(r"pnc[0-9a-f]{11}")  # always used with fullmatch


def host_ifname(container_id: str, ifname: str) -> str:
    """Deterministic node-side veth name, so DEL finds it even when the netns is gone."""
    return HOST_PREFIX + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:11]


# Namespaces a pod must never be plumbed into, with what the error calls them. The daemon's own
# netns is the node's (or, in a lab, the node namespace); /proc/1's is the host's initial one
# where the daemon may read it. Since Linux 6.18 the initial netns also has a fixed inode number
# (NET_NS_INIT_INO, include/uapi/linux/nsfs.h), which no other namespace gets, so it is known
# without /proc/1 access; earlier kernels number it like any other.
OWN_NETNS = "the podnet-cni daemon's own network namespace (the node's)"
HOST_NETNS = "the host's initial network namespace"
NOT_A_POD_NETNS = (("/proc/self/ns/net", OWN_NETNS), ("/proc/1/ns/net", HOST_NETNS))
NET_NS_INIT_INO = 0xEFFFFFF9


def open_netns(path: str) -> int:
    """An fd on a pod's network namespace file; error 3 if missing, 4 if not a netns or if it is
    one of :data:`NOT_A_POD_NETNS` or the initial netns (compared by the namespace's (st_dev,
    st_ino), so every path to it is caught: a bind mount, /proc/<pid>/ns/net, a symlink).
    Code 4 because CNI_NETNS is an environment variable with an unusable value (spec: "invalid
    necessary environment variables", message naming the variable); 7 is for the config on stdin.

    The path is first opened with O_PATH, which opens nothing: only a file on nsfs (the file
    system of every namespace file) is then opened for reading, so a FIFO (whose open would block
    the daemon), a device (whose open can have effects) or a directory never gets that far."""
    try:
        where = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {path} does not exist") from None
    except OSError as e:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(where)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs_dev():
            raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
        fd = os.open(f"/proc/self/fd/{where}", os.O_RDONLY | os.O_CLOEXEC)  # the same file, not the path again
    except OSError as e:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} cannot be opened: {e.strerror}") from None
    finally:
        os.close(where)
    try:
        if not is_netns_fd(fd):
            raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
        st = os.fstat(fd)
        for other, what in NOT_A_POD_NETNS:
            if (st.st_dev, st.st_ino) == _ns_id(other):
                raise CniError(INVALID_ENV, f"CNI_NETNS {path} is {what}, not a pod's; refusing to plumb it")
        if st.st_ino == NET_NS_INIT_INO:
            raise CniError(INVALID_ENV, f"CNI_NETNS {path} is {HOST_NETNS}, not a pod's; refusing to plumb it")
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.cache
def _nsfs_dev() -> int:
    """st_dev of nsfs, the one file system every namespace file lives on."""
    return os.stat("/proc/self/ns/net").st_dev


@functools.cache
def _ns_id(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a namespace file, or None if it cannot be read (no /proc/1 access).
    Cached: only used for /proc/self's and /proc/1's netns, which never change while the daemon runs."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def is_netns_fd(fd: int) -> bool:
    """True if ``fd`` is a network namespace (ioctl NS_GET_NSTYPE; works for bind mounts and /proc/<pid>/ns/net)."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def netlink_in(ns_fd: int) -> IPRoute:
    """An IPRoute whose socket lives in the netns ``ns_fd``; the calling thread returns to its own netns."""
    return nsenter.made_inside(ns_fd, IPRoute)


_local = threading.local()


def node_netlink() -> IPRoute:
    """This worker thread's own long-lived socket in the node netns (saves ~0.7 ms per call)."""
    ipr = getattr(_local, "node", None)
    if ipr is None:
        ipr = _local.node = IPRoute()
    return ipr


@contextmanager
def pod_and_node(netns_path: str) -> Iterator[tuple[int, IPRoute, IPRoute]]:
    fd = open_netns(netns_path)
    try:
        with netlink_in(fd) as pod:
            yield fd, pod, node_netlink()
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Plumbed:
    host_ifname: str
    host_mac: str
    pod_mac: str


def _family(ip: IPConfig) -> int:
    return socket.AF_INET6 if ":" in ip.ip else socket.AF_INET


def _plen(ip: IPConfig) -> int:
    return 128 if ":" in ip.ip else 32


def _default(ip: IPConfig) -> str:
    return "::/0" if ":" in ip.ip else "0.0.0.0/0"


def pod_routes(ips: list[IPConfig]) -> list[dict[str, str]]:
    return [{"dst": _default(ip), "gw": ip.gateway} for ip in ips]


def macs_for(host_name: str) -> tuple[str, str]:
    """Deterministic locally-administered unicast MACs (node end, pod end); no read-back needed."""
    h = hashlib.sha256(host_name.encode()).digest()
    tail = ":".join(f"{b:02x}" for b in h[:5])
    return "0e:" + tail, "0a:" + tail


def add_pod(netns_path: str, ifname: str, host_name: str, ips: list[IPConfig], mtu: int, mac: str = "") -> Plumbed:
    """Create and configure the veth; all or nothing (the veth is deleted on failure).
    ``mac``: the pod end's address if the runtime asked for one, else a deterministic one.

    An existing ``ifname`` in the pod that is the pod end of ``host_name`` (an earlier ADD of this
    attachment, finished or cut short by a crash) is deleted with its pair and built again; any
    other interface of that name is error 4 and nothing is changed. Either way, when this raises,
    ``host_name`` exists only if it existed before and was not touched.

    Five netlink round trips on raw sockets (:mod:`podnet.cni.rtnl`), six with a second interface
    in the same pod: is ``ifname`` free in the pod; create the pair (the node end up, the peer straight
    into the pod) and read back the node end's index and its peer's; the pod end and lo up,
    its addresses and on-link gateway routes; the node end's gateway addresses and routes to the pod; the
    default routes."""
    host_mac, pod_mac = macs_for(host_name)
    pod_mac = mac or pod_mac
    fd = open_netns(netns_path)
    try:
        with rtnl.in_netns(fd) as pod:
            node = node_rtnl()
            found = pod.request(rtnl.get_link(ifname))
            if isinstance(found, bytes):
                with _pyroute2_in(fd) as pod_ipr:  # rare: a repeated ADD
                    if not _is_pod_end_of(pod_ipr, rtnl.parse_link(found).index, node_netlink(), host_name):
                        raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname} already exists in netns {netns_path}")
                _delete_link(host_name)  # an earlier ADD of this attachment: built again from scratch
            elif found not in (errno.ENODEV, errno.ENOENT):
                raise CniError(INTERNAL, f"looking up {ifname} in {netns_path}: {os.strerror(found)}")
            create = [rtnl.new_veth(host_name, mtu, host_mac, ifname, fd, pod_mac), rtnl.get_link(host_name)]
            err, got = node.batch(create)
            if err == errno.EEXIST:
                _delete_link(host_name)  # a leftover from an ADD that died half-way
                err, got = node.batch(create)
            if err:
                raise _netlink_error(ifname, netns_path, "creating the veth", err)
            try:
                if not isinstance(got, bytes):
                    raise _netlink_error(ifname, netns_path, "reading the veth back", got)
                link = rtnl.parse_link(got)
                h, p = link.index, link.link
                node_msgs, pod_msgs = [], [rtnl.link_up(p), rtnl.link_up(1)]  # lo is always index 1
                for ip in ips:
                    plen = _plen(ip)
                    node_msgs.append(rtnl.add_addr(h, ip.gateway, plen, IFA_F_NODAD))
                    node_msgs.append(rtnl.add_route(ip.ip, plen, h, RTPROT_PODNET, rtnl.RT_SCOPE_LINK))
                    pod_msgs.append(rtnl.add_addr(p, ip.ip, plen, IFA_F_NODAD))
                    pod_msgs.append(rtnl.add_route(ip.gateway, plen, p, RTPROT_STATIC, rtnl.RT_SCOPE_LINK))
                # The pod end is up with its addresses before the node routes to it: a packet routed
                # to the pod never waits on an ARP request nobody can answer yet.
                got_pod = pod.batch(pod_msgs)
                gw_routes = got_pod[3::2]
                _check(got_pod[:2] + got_pod[2::2], ifname, netns_path, "pod link and addresses")
                _check(node.batch(node_msgs), ifname, netns_path, "node-side addresses and routes")
                # A second interface in the same pod keeps the first one's default route.
                defaults = []
                for i, ip in enumerate(ips):
                    gw = gw_routes[i]
                    if gw and gw != errno.EEXIST:
                        raise _netlink_error(ifname, netns_path, f"route to {ip.gateway}", gw)
                    if not gw:
                        defaults.append(rtnl.add_route(_default(ip).split("/")[0], 0, p, RTPROT_STATIC,
                                                       rtnl.RT_SCOPE_UNIVERSE, ip.gateway))
                if defaults:
                    _check(pod.batch(defaults), ifname, netns_path, "default routes", tolerate=errno.EEXIST)
                return Plumbed(host_name, host_mac, pod_mac)
            except BaseException:
                _delete_link(host_name)
                raise
    finally:
        os.close(fd)


RTPROT_STATIC = 4


def _netlink_error(ifname: str, netns_path: str, what: str, err: int) -> CniError:
    return CniError(INTERNAL, f"setting up {ifname} in {netns_path}: {what}: {os.strerror(err)}")


def _check(results: list, ifname: str, netns_path: str, what: str, tolerate: int = 0) -> None:
    """The first failure among netlink results as error 999 (``tolerate``: an errno that is fine)."""
    for r in results:
        if not r or r == tolerate:
            continue
        raise _netlink_error(ifname, netns_path, what, r if isinstance(r, int) else errno.EPROTO)


@contextmanager
def _pyroute2_in(fd: int) -> Iterator[IPRoute]:
    ipr = netlink_in(fd)
    try:
        yield ipr
    finally:
        ipr.close()


def node_rtnl() -> rtnl.Rtnl:
    """This worker thread's long-lived raw rtnetlink socket in the node netns."""
    r = getattr(_local, "node_rtnl", None)
    if r is None:
        r = _local.node_rtnl = rtnl.Rtnl()
    return r


def _is_pod_end_of(pod: IPRoute, index: int, node: IPRoute, host_name: str) -> bool:
    """True if the pod's link ``index`` is the peer of the node-side veth ``host_name``: each end's
    IFLA_LINK names the other's index (an interface of the same name made by anyone else does not)."""
    hosts = node.link_lookup(ifname=host_name)
    if not hosts:
        return False
    try:
        (h,), (p,) = node.get_links(hosts[0]), pod.get_links(index)
    except NetlinkError:  # gone meanwhile
        return False
    return h.get_attr("IFLA_LINK") == index and p.get_attr("IFLA_LINK") == hosts[0]


def _delete_link(name: str) -> bool:
    """Delete a node-side link by name: one RTM_DELLINK, answered once the kernel has released it
    (the ack comes after unregistering, which takes the peer and every route on the pair with it).
    True if deleted, False if there was no such link; CniError 999 for any other failure."""
    err = node_rtnl().request(rtnl.del_link(name))
    if not err:
        return True
    if err in (errno.ENODEV, errno.ENOENT):
        return False
    raise CniError(INTERNAL, f"deleting link {name}: {os.strerror(err) if isinstance(err, int) else err!r}")


def del_pod(netns_path: str, ifname: str, host_name: str) -> None:
    """Remove the veth pair by its node-side name (the pod end goes with it, and so do the host
    routes on it). The netns is never opened, so DEL succeeds when it is missing, empty or not a
    netns, and an ``ifname`` in the pod that podnet did not create (a failed ADD's DEL) is left alone."""
    _delete_link(host_name)


def check_pod(netns_path: str, ifname: str, host_name: str, ips: list[IPConfig]) -> None:
    """Error 999 naming the first thing ADD made that is missing."""
    with pod_and_node(netns_path) as (fd, pod, node):
        if not node.link_lookup(ifname=host_name):
            raise CniError(INTERNAL, f"node-side veth {host_name} is missing")
        idx = pod.link_lookup(ifname=ifname)
        if not idx:
            raise CniError(INTERNAL, f"interface {ifname} is missing in {netns_path}")
        have = {(a.get("address"), a["prefixlen"]) for a in pod.get_addr(index=idx[0])}
        for ip in ips:
            if (ip.ip, _plen(ip)) not in have:
                raise CniError(INTERNAL, f"address {ip.ip}/{_plen(ip)} is missing on {ifname}")
            fam = _family(ip)
            routes = pod.get_routes(family=fam, oif=idx[0])
            if not any(r.get("gateway") == ip.gateway and r["dst_len"] == 0 for r in routes):
                raise CniError(INTERNAL, f"default route via {ip.gateway} is missing in {netns_path}")


def podnet_links() -> set[str]:
    """Names of the node-side veths podnet made (``pnc`` + 11 hex digits)."""
    names = (rtnl.parse_link(body).name for body in node_rtnl().dump(rtnl.all_links()))
    return {n for n in names if HOST_NAME.fullmatch(n)}


def delete_host_link(name: str) -> bool:
    return _delete_link(name)


def write_sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


def read_sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()
