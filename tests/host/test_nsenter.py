"""The one namespace switch and the one ``ip netns exec`` command line."""

from __future__ import annotations

import os

import pytest

from podnet.host.netns import NetnsPool
from podnet.host.nsenter import exec_argv, made_inside


@pytest.mark.parametrize(("netns", "argv", "want"), [
    pytest.param("pnt-a", ["iptables-save"], ["ip", "netns", "exec", "pnt-a", "iptables-save"], id="named"),
    pytest.param(None, ("nft", "-f", "-"), ["nft", "-f", "-"], id="none-runs-as-is"),
    pytest.param("", ["true"], ["true"], id="empty-runs-as-is"),
])
def test_exec_argv(netns, argv, want):
    assert exec_argv(netns, argv) == want


def _ino() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_made_inside_makes_in_the_namespace_and_returns():
    pool = NetnsPool("pnt-host-")
    try:
        ns = pool.netns()
        own = _ino()
        fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert made_inside(fd, _ino) == os.stat(ns.path).st_ino != own
            assert _ino() == own
            with pytest.raises(ZeroDivisionError):
                made_inside(fd, lambda: 1 // 0)
            assert _ino() == own  # back home after an error too
        finally:
            os.close(fd)
    finally:
        pool.close()
