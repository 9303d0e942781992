"""Benchmark: memory the informers' stores hold for N Services + N EndpointSlices.

Builds N Service and N EndpointSlice raw objects shaped like the lab API
server's (defaults, allocated cluster IPs, the EndpointSlice controller's
labels, ownerReferences, targetRefs and trigger-time annotation), encodes each
to JSON once, then -- like an informer's list -- decodes every object
(``json.loads``: fresh strings, as the aiohttp client's decoder makes them),
converts it with :func:`podnet.kube.resources.convert`, keeps the value in a
``{key: value}`` store and drops the raw dict.

Two measurements, each in its own child process so neither disturbs the other:

- ``trace``: tracemalloc started before the decoding; after the stores are
  filled and the raw dicts are gone, the traced memory still allocated is
  what the stores hold (values, the strings they kept from the decoder, the
  dicts and their keys). Also counts strings and tuples reachable from the
  values that are equal but not the same object (what interning could still share).
- ``rss``: no tracing; VmRSS before decoding, after filling the stores, and
  the process peak (VmHWM).

Usage: .venv/bin/python -P bench/kube_memory.py [--services 10000] [--namespaces 100] [--endpoints 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
import uuid
from dataclasses import fields, is_dataclass
from typing import Any

from podnet.kube import resources as r

MiB = 1024 * 1024


def service(i: int, ns: str) -> dict[str, Any]:
    app = f"app-{i % 50}"
    ip = f"10.96.{(i >> 8) & 255}.{i & 255}"
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": f"svc-{i:05d}",
            "namespace": ns,
            "uid": str(uuid.UUID(int=i)),
            "resourceVersion": str(1000 + 2 * i),
            "creationTimestamp": "2026-11-22T03:12:00Z",
            "labels": {"app": app, "tier": "web"},
        },
        "spec": {
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "selector": {"app": app},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443},
            ],
        },
        "status": {"loadBalancer": {}},
    }


def endpoint_slice(i: int, ns: str, endpoints: int) -> dict[str, Any]:
    svc = f"svc-{i:05d}"
    eps = []
    for j in range(endpoints):
        pod = f"{svc}-deploy-{j}"
        k = i * endpoints + j + 2
        node = f"node-{(i + j) % 10}"
        eps.append({
            "addresses": [f"10.{244 + (k >> 16)}.{(k >> 8) & 255}.{k & 255}"],  # one pod per endpoint
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": node,
            "zone": f"zone-{(i + j) % 3}",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": str(uuid.UUID(int=(i << 8) + j))},
        })
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": f"{svc}-x7k2q",
            "namespace": ns,
            "uid": str(uuid.UUID(int=(1 << 64) + i)),
            "resourceVersion": str(1001 + 2 * i),
            "creationTimestamp": "2026-11-22T03:12:00Z",
            "labels": {
                "app": f"app-{i % 50}",
                "tier": "web",
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-22T03:12:00.123456789Z"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": str(uuid.UUID(int=i)),
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 8080},
            {"name": "https", "protocol": "TCP", "port": 8443},
        ],
    }


def encoded(args: argparse.Namespace) -> tuple[list[bytes], list[bytes]]:
    nss = [f"ns-{k:03d}" for k in range(args.namespaces)]
    svcs = [json.dumps(service(i, nss[i % len(nss)])).encode() for i in range(args.services)]
    slices = [json.dumps(endpoint_slice(i, nss[i % len(nss)], args.endpoints)).encode() for i in range(args.services)]
    return svcs, slices


def fill(texts: list[bytes], resource: r.Resource) -> dict[str, Any]:
    store: dict[str, Any] = {}
    for text in texts:
        obj = r.convert(resource, json.loads(text))  # the raw dict dies here, as in Informer.replace
        if obj is None:
            raise SystemExit(f"bench object rejected by {resource.plural}")
        store[obj.key] = obj
    return store


def walk(obj: Any, seen: set[int], out: dict[str, list[Any]]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        out["str"].append(obj)
    elif isinstance(obj, tuple):
        out["tuple"].append(obj)
        for x in obj:
            walk(x, seen, out)
    elif is_dataclass(obj):
        out["object"].append(obj)
        for f in fields(obj):
            walk(getattr(obj, f.name), seen, out)


def duplicates(stores: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """Per kind: (distinct objects, distinct values, bytes of the redundant copies)."""
    out: dict[str, list[Any]] = {"str": [], "tuple": [], "object": []}
    seen: set[int] = set()
    for store in stores:
        for value in store.values():
            walk(value, seen, out)
    res = {}
    for kind, objs in out.items():
        by_value: dict[Any, int] = {}
        waste = 0
        for x in objs:
            try:
                if x in by_value:
                    waste += sys.getsizeof(x)
                else:
                    by_value[x] = 1
            except TypeError:
                continue
        res[kind] = (len(objs), len(by_value), waste)
    return res


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    svcs, slices = encoded(args)
    gc.collect()
    if args.mode == "trace":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        s_store = fill(svcs, r.SERVICES)
        gc.collect()
        mid = tracemalloc.get_traced_memory()[0]
        e_store = fill(slices, r.ENDPOINT_SLICES)
        gc.collect()
        secs = time.perf_counter() - t0
        end = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        dup = duplicates([s_store, e_store])
        print(json.dumps({"services": mid - base, "slices": end - mid, "total": end - base, "seconds": secs,
                          "dup": dup}))
    else:
        before = rss_kib("VmRSS")
        t0 = time.perf_counter()
        stores = [fill(svcs, r.SERVICES), fill(slices, r.ENDPOINT_SLICES)]
        secs = time.perf_counter() - t0
        gc.collect()
        print(json.dumps({"rss_before": before, "rss_after": rss_kib("VmRSS"), "hwm": rss_kib("VmHWM"),
                          "seconds": secs, "n": sum(map(len, stores))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=10000, help="Services, and as many EndpointSlices")
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=3, help="endpoints per slice")
    ap.add_argument("--mode", choices=("trace", "rss"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        child(args)
        return
    passthrough = ["--services", str(args.services), "--namespaces", str(args.namespaces),
                   "--endpoints", str(args.endpoints)]
    res = {}
    for mode in ("trace", "rss"):
        out = subprocess.run([sys.executable, "-P", __file__, *passthrough, "--mode", mode],
                             check=True, capture_output=True, text=True).stdout
        res[mode] = json.loads(out)
    t, m = res["trace"], res["rss"]
    n = args.services
    print(f"{n} Services + {n} EndpointSlices ({args.endpoints} endpoints each), {args.namespaces} namespaces")
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| held by Service store (tracemalloc) | {t['services'] / MiB:.2f} MiB ({t['services'] / n:.0f} B/object) |")
    print(f"| held by EndpointSlice store (tracemalloc) | {t['slices'] / MiB:.2f} MiB ({t['slices'] / n:.0f} B/object) |")
    print(f"| held by both stores (tracemalloc) | {t['total'] / MiB:.2f} MiB |")
    for kind, (objs, distinct, waste) in t["dup"].items():
        print(f"| {kind}s reachable: objects / distinct values / bytes in duplicates | "
              f"{objs} / {distinct} / {waste / MiB:.2f} MiB |")
    print(f"| RSS growth while filling the stores (no tracing) | {(m['rss_after'] - m['rss_before']) / 1024:.1f} MiB |")
    print(f"| process peak RSS (VmHWM, includes the {2 * n} encoded objects) | {m['hwm'] / 1024:.1f} MiB |")
    print(f"| decode + convert, both stores (no tracing) | {m['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
