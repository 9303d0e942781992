"""``podnet watch RESOURCE``: list+watch one resource and print each change.

One line per change, flushed at once::

    ADDED     default/web  ClusterIP 10.96.1.0 80/TCP->8080
    MODIFIED  default/web  ClusterIP 10.96.1.0 81/TCP->8080
    DELETED   default/web

It runs an :class:`~podnet.kube.informer.Informer`, so it shows what every
podnet daemon sees: validated objects, no-op updates dropped, relists after
410 reported as differences. ``--count N`` exits after N lines (scripts, tests).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from podnet.host import loop as hostloop
from podnet.kube import objects as o
from podnet.kube import resources
from podnet.kube.client import ApiClient
from podnet.kube.informer import Informer

__all__ = ["add_arguments", "run", "describe"]

ALIASES = {"svc": "services", "service": "services", "ep": "endpointslices", "endpointslice": "endpointslices",
           "no": "nodes", "node": "nodes", "ns": "namespaces", "namespace": "namespaces", "po": "pods", "pod": "pods"}


def describe(obj: Any) -> str:
    """A short one-line summary of a frozen object."""
    if isinstance(obj, o.Service):
        ports = ",".join(
            f"{p.port}/{p.protocol}->{p.target_port}" + (f"(node {p.node_port})" if p.node_port else "") for p in obj.ports
        )
        where = obj.external_name if obj.type == "ExternalName" else ("None" if obj.headless else ",".join(obj.cluster_ips))
        return f"{obj.type} {where or '-'} {ports or '-'}"
    if isinstance(obj, o.EndpointSlice):
        eps = ",".join(
            a + ("" if e.conditions.ready else "(not ready)") for e in obj.endpoints for a in e.addresses
        )
        ports = ",".join(f"{p.port}/{p.protocol}" for p in obj.ports)
        return f"service={obj.service_name} {obj.address_type} [{eps}] {ports or '-'}"
    if isinstance(obj, o.Node):
        return f"{','.join(obj.ips()) or '-'} podCIDRs={','.join(obj.pod_cidrs) or '-'}"
    if isinstance(obj, o.Pod):
        return f"{obj.phase} {','.join(obj.ips) or '-'} node={obj.node_name or '-'} ready={obj.ready}"
    return ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource", help="services (svc), endpointslices, nodes, namespaces or pods")
    p.add_argument("--master", help="API server URL (overrides the kubeconfig's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config, then in-cluster)")
    p.add_argument("-n", "--namespace", help="only this namespace")
    p.add_argument("-l", "--selector", help="label selector")
    p.add_argument("--count", type=int, default=0, help="exit after this many lines")


async def watch(args: argparse.Namespace, out: TextIO) -> int:
    plural = ALIASES.get(args.resource, args.resource)
    res = resources.BY_PLURAL.get(plural)
    if res is None:
        print(f"podnet watch: unknown resource {args.resource!r}", file=sys.stderr)
        return 2
    done = asyncio.Event()
    lines = 0

    def emit(verb: str, obj: Any) -> None:
        nonlocal lines
        out.write(f"{verb:<9} {obj.key}  {describe(obj) if verb != 'DELETED' else ''}".rstrip() + "\n")
        out.flush()
        lines += 1
        if args.count and lines >= args.count:
            done.set()

    async with ApiClient.from_flags(master=args.master, kubeconfig=args.kubeconfig) as client:
        inf = Informer(client, res, namespace=args.namespace, label_selector=args.selector)
        inf.add_handler(on_add=lambda obj: emit("ADDED", obj), on_update=lambda _, new: emit("MODIFIED", new),
                        on_delete=lambda obj: emit("DELETED", obj))
        task = asyncio.create_task(inf.run())
        hostloop.stop_on_signals(done.set)
        await done.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(watch(args, sys.stdout))
    except Exception as e:  # configuration problems: one line, no traceback
        print(f"podnet watch: {e}", file=sys.stderr)
        return 1
