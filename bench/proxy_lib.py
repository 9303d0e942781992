"""Shared by the proxy benchmarks: synthetic services, namespaces, timing helpers."""

from __future__ import annotations

import ipaddress
import os
import re
import resource
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


_DNAT = re.compile(r"^(-A PODNET-SEP-\S+ -p (tcp|udp|sctp)) (?!-m \2 )", re.M)


def kube_proxy_shape(flat_text: str) -> str:
    """podnet's text with a flat services chain (``dispatch_leaf`` = infinity) in kube-proxy's own
    per-rule form: kube-proxy writes ``-m PROTO -p PROTO -j DNAT`` in every endpoint chain
    (pkg/proxy/iptables/proxier.go, syncProxyRules), where podnet writes only ``-p PROTO``.
    Declarations stay sorted by name (kube-proxy writes them in Go map order, which restores slower
    on iptables-legacy), so this anchor is the lighter of the two."""
    return _DNAT.sub(r"\1 -m \2 ", flat_text)


def text_shape(text: str) -> dict[str, int]:
    """Lines, bytes, chain declarations, rules and ``-m`` matches of a restore text."""
    lines = text.splitlines()
    rules = [ln for ln in lines if ln.startswith(("-A ", "-I "))]
    return {"lines": len(lines), "bytes": len(text.encode()), "chains": sum(1 for ln in lines if ln.startswith(":")),
            "rules": len(rules), "matches": sum(ln.count(" -m ") for ln in rules),
            "comments": sum(1 for ln in rules if "--comment" in ln)}


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


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children so far: a cost that, unlike wall
    time, does not grow when other work shares the cores (a busy machine still inflates it a little
    through caches)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def median(xs):
    return statistics.median(xs)


def require_root():
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (network namespaces)")


def pool() -> NetnsPool:
    return NetnsPool("pnt-px-bench-")
