"""``podnet lab up``: build a lab cluster from flags or a topology file (see bringup)."""

from __future__ import annotations

import argparse
import sys

from podnet.netlab.lab.topology import LabSpec, TopologyError, load_topology_file, validate

__all__ = ["add_arguments", "run", "spec_from_args", "add_topology_arguments"]


def add_topology_arguments(p: argparse.ArgumentParser) -> None:
    d = LabSpec()
    p.add_argument("--name", default=None, help=f"lab name: 1-10 lower-case letters/digits (default {d.name})")
    p.add_argument("--topology", metavar="FILE", help="TOML or JSON file with the keys below (flags override it)")
    p.add_argument("--nodes", type=int, default=None, help=f"number of nodes (default {d.nodes})")
    p.add_argument("--pods-per-node", type=int, default=None, help=f"echo pods per node (default {d.pods_per_node})")
    p.add_argument("--cluster-cidr", default=None, help=f"pod network (default {d.cluster_cidr})")
    p.add_argument("--service-cidr", default=None, help=f"ClusterIP range (default {d.service_cidr})")
    p.add_argument("--underlay", default=None, help=f"node network segment (default {d.underlay})")
    p.add_argument("--node-cidr-mask", type=int, default=None,
                   help=f"prefix length of each node's pod CIDR (default {d.node_cidr_mask})")


def spec_from_args(a: argparse.Namespace) -> LabSpec:
    """File values, then flags on top; raises TopologyError listing every problem."""
    spec = LabSpec()
    if a.topology:
        spec = LabSpec.from_mapping(load_topology_file(a.topology), spec)
    flags = {k: getattr(a, k) for k in ("name", "nodes", "pods_per_node", "cluster_cidr", "service_cidr",
                                         "underlay", "node_cidr_mask")}
    spec = LabSpec.from_mapping({k: v for k, v in flags.items() if v is not None}, spec)
    problems = validate(spec)
    if problems:
        raise TopologyError(problems)
    return spec


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology_arguments(p)
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for all pods to be Ready")
    p.add_argument("--cni", choices=("podnet", "reference"), default="podnet",
                   help="pod network: podnet-cni (default) or the reference bridge plugin (a comparison anchor)")
    p.add_argument("--proxy-min-sync-period", default="100ms",
                   help="the proxies' --iptables-min-sync-period (kube-proxy's default is 1s; the lab's 100ms)")


def report_topology_error(e: TopologyError, out=None) -> int:
    out = out or sys.stderr
    out.write("podnet lab: this topology cannot work; nothing was created:\n")
    for problem in e.problems:
        out.write(f"  - {problem}\n")
    return 2


def run(a: argparse.Namespace) -> int:
    from podnet.netlab.lab.bringup import LabExists, up
    try:
        spec = spec_from_args(a)
    except TopologyError as e:
        return report_topology_error(e)
    try:
        up(spec, sys.stdout, ready_timeout=a.ready_timeout, cni=a.cni, proxy_min_sync=a.proxy_min_sync_period)
    except LabExists as e:
        print(f"podnet lab up: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\npodnet lab up: interrupted; clean up with: podnet lab down --name {spec.name}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user gets one line and where to look
        print(f"\npodnet lab up: FAILED: {type(e).__name__}: {e}\n"
              f"  logs: /run/podnet/{spec.name}/logs/   clean up: podnet lab down --name {spec.name}",
              file=sys.stderr)
        return 1
    return 0
