"""Shared by the proxy benchmarks: synthetic services, namespaces, timing helpers."""

from __future__ import annotations

import ipaddress
import os
import statistics
import subprocess
import sys
import time

from podnet.host.netns import NetnsPool
from podnet.proxy.testing import ep, slice_, svc

BASE_SVC = ipaddress.ip_address("10.96.0.0")
BASE_EP = ipaddress.ip_address("10.128.0.0")


def objects(n_services: int, n_endpoints: int = 5):
    """n services (random-ish cluster IPs in 10.96/12, like an allocator) x n endpoints."""
    import random

    rnd = random.Random(42)
    offsets = rnd.sample(range(1, 1 << 20), n_services)
    services, slices = [], []
    for i, off in enumerate(offsets):
        services.append(svc(name=f"svc-{i:05d}", cluster_ip=str(BASE_SVC + off), ports=((80, "TCP", "http"),)))
        slices.append(slice_(service=f"svc-{i:05d}", name=f"svc-{i:05d}-x", ports=((8080, "TCP", "http"),),
                             endpoints=[ep(str(BASE_EP + i * n_endpoints + j)) for j in range(n_endpoints)]))
    return services, slices


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def restore_seconds(ns, text: str, binary: str = "iptables-legacy-restore") -> float:
    t = time.perf_counter()
    p = subprocess.run(["ip", "netns", "exec", ns.name, binary, "--noflush", "--wait"], input=text, text=True, capture_output=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr[:500])
    return dt


def median(xs):
    return statistics.median(xs)


def require_root():
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (network namespaces)")


def pool() -> NetnsPool:
    return NetnsPool("pnt-px-bench-")
