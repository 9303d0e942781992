"""Enter a network namespace from Python (setns(2) on CLONE_NEWNET only).

Only the *network* namespace changes: the mount namespace stays the root one,
so a process that entered a lab netns this way can still create and see
``/var/run/netns`` entries (``ip netns exec`` would give it a private mount
namespace where new netns mounts do not propagate back).

setns acts on the calling thread. :func:`enter` is meant for a process's main
thread before it starts threads (the lab's runner); :func:`listening_socket`
switches, binds and switches back in one call, so sockets of several
namespaces can be held by one process (each socket keeps its own namespace);
:func:`made_inside` does the same for any socket-owning object (a netlink
socket opened in a pod's namespace by a worker thread), and if the thread
cannot return to its own namespace the process exits at once (status 70)
rather than run on in the wrong one. :func:`exec_argv` is the ``ip netns exec``
command line every package builds a child process in a named namespace with.
"""

from __future__ import annotations

import ctypes
import os
import socket
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

__all__ = ["enter", "inside", "listening_socket", "netns_path", "setns", "made_inside", "exec_argv", "CLONE_NEWNET"]

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    return name if name.startswith("/") else f"/var/run/netns/{name}"


def exec_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the named namespace (``ip netns exec NAME ...``); None: as it is."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")



def made_inside(ns_fd: int, make: Callable[[], T]) -> T:
    """``make()`` called with the calling thread in the namespace ``ns_fd``; the thread then
    returns to its own namespace (if it cannot, the process exits with status 70)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(ns_fd)
        try:
            return make()
        finally:
            try:
                setns(own)
            except OSError:  # never run on in the wrong namespace
                os._exit(70)
    finally:
        os.close(own)


def enter(name: str) -> None:
    """Move the calling thread into netns ``name`` (a name under /var/run/netns or a path)."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block in netns ``name``, then return to the original one (same thread)."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            setns(orig)
    finally:
        os.close(orig)


def listening_socket(netns: str | None, host: str, port: int, backlog: int = 512) -> socket.socket:
    """A TCP socket bound and listening on host:port inside ``netns`` (None: the current one)."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
        return s

    if netns is None:
        return make()
    with inside(netns):
        return make()
