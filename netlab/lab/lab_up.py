"""``podnet lab up``: build a lab cluster from flags or a topology file (see bringup)."""

from __future__ import annotations

import argparse
import sys

from podnet.host.podman import Store
from podnet.netlab.lab.progress import quiet_api_discovery
from podnet.netlab.lab.topology import (BACKENDS, LAYOUTS, LabSpec, TopologyError, layout_of, load_topology_file,
                                        validate)

__all__ = ["add_arguments", "run", "spec_from_args", "add_topology_arguments"]


def add_topology_arguments(p: argparse.ArgumentParser) -> None:
    d = LabSpec()
    p.add_argument("--name", default=None, help=f"lab name: 1-10 lower-case letters/digits (default {d.name})")
    p.add_argument("--topology", metavar="FILE", help="TOML or JSON file with the keys below (flags override it)")
    p.add_argument("--nodes", type=int, default=None, help=f"number of nodes (default {d.nodes})")
    p.add_argument("--pods-per-node", type=int, default=None, help=f"echo pods per node (default {d.pods_per_node})")
    p.add_argument("--cluster-cidr", default=None, help=f"pod network (default {d.cluster_cidr})")
    p.add_argument("--service-cidr", default=None, help=f"ClusterIP range (default {d.service_cidr})")
    p.add_argument("--underlay", default=None, metavar="LAYOUT|CIDR",
                   help=f"node network: a layout, {'|'.join(LAYOUTS)} (default {d.layout}: one segment; routed: a "
                   "subnet per node behind a router that knows no pod CIDR; mixed: n1+n2 on one subnet, the rest "
                   f"on another), or its CIDR (default {d.underlay})")
    p.add_argument("--underlay-cidr", default=None, metavar="CIDR", help=f"the underlay's range (default {d.underlay})")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help=f"the CNI daemons' --backend (default {d.backend}: host-gw on one subnet, VXLAN across)")
    p.add_argument("--node-cidr-mask", type=int, default=None,
                   help=f"prefix length of each node's pod CIDR (default {d.node_cidr_mask})")


def spec_from_args(a: argparse.Namespace) -> LabSpec:
    """File values, then flags on top; raises TopologyError listing every problem."""
    spec = LabSpec()
    if a.topology:
        spec = LabSpec.from_mapping(load_topology_file(a.topology), spec)
    flags = {k: getattr(a, k, None) for k in ("name", "nodes", "pods_per_node", "cluster_cidr", "service_cidr",
                                               "node_cidr_mask", "backend")}
    if getattr(a, "underlay", None):
        key, value = layout_of(a.underlay)
        flags[key] = value
    if getattr(a, "underlay_cidr", None):
        flags["underlay"] = a.underlay_cidr
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
                   help="iptables.minSyncPeriod of the installed podnet-proxy ConfigMap (kube-proxy's default "
                        "is 1s; the lab's 100ms)")
    p.add_argument("--runtime", choices=("lab", "podman"), default="lab",
                   help="lab (default): containers run over the host's files; podman: the containers of podnet's "
                        "image (the node DaemonSet, podnet-dns) run with podman from that image, which must be "
                        "built first (bash dev.sh image)")
    p.add_argument("--podman-root", default=None, help="podman's --root holding the image (default podman's own)")
    p.add_argument("--podman-runroot", default=None, help="podman's --runroot (default podman's own)")
    p.add_argument("--retain", action="store_true",
                   help="keep what was built when up fails or is interrupted (Ctrl-C, SIGTERM); by default it is "
                        "removed, as kind deletes a failed cluster")


def podman_store(a: argparse.Namespace) -> Store | None:
    """The store ``--runtime podman`` runs podnet's image from (None for the lab runtime)."""
    if getattr(a, "runtime", "lab") != "podman":
        return None
    return Store(a.podman_root, a.podman_runroot)


def report_topology_error(e: TopologyError, out=None) -> int:
    out = out or sys.stderr
    out.write("podnet lab: this topology cannot work; nothing was created:\n")
    for problem in e.problems:
        out.write(f"  - {problem}\n")
    return 2


def rollback(name: str, why: str, out=None) -> None:
    """Remove what a failed or interrupted ``up`` built (signals ignored meanwhile); one line says so."""
    from podnet.netlab.lab.interrupt import shielded
    from podnet.netlab.lab.teardown import down, leftovers
    out = out or sys.stderr
    with shielded():
        out.write(f"podnet lab up: {why}; rolling back (use --retain to keep a failed lab) ...\n")
        out.flush()
        gone = down(name)
        left = leftovers(name)
    out.write(f"podnet lab up: removed {gone.summary()}" + (f"; STILL PRESENT: {', '.join(left)}" if left else "")
              + "\n")


def save_logs(name: str) -> str:
    """Copy a failed lab's logs out of its run dir (which the rollback removes); return where."""
    import shutil
    import tempfile
    from podnet.netlab.lab.topology import RUN_ROOT
    src = RUN_ROOT / name / "logs"
    if not src.is_dir():
        return ""
    dst = tempfile.mkdtemp(prefix=f"podnet-lab-{name}-logs-")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def run(a: argparse.Namespace) -> int:
    from podnet.netlab.lab.bringup import LabExists, up
    from podnet.netlab.lab.interrupt import Interrupted, signals_raise
    try:
        spec = spec_from_args(a)
    except TopologyError as e:
        return report_topology_error(e)
    quiet_api_discovery(a)
    retain = getattr(a, "retain", False)
    ours = []  # non-empty once up() has claimed the name: only then is there anything of ours to remove
    with signals_raise():
        try:
            up(spec, sys.stdout, ready_timeout=a.ready_timeout, cni=a.cni, proxy_min_sync=a.proxy_min_sync_period,
               claimed=lambda: ours.append(True), podman_store=podman_store(a))
        except LabExists as e:
            print(f"podnet lab up: {e}", file=sys.stderr)
            return 1
        except (Interrupted, KeyboardInterrupt) as e:
            signum = e.signum if isinstance(e, Interrupted) else 2
            why = f"interrupted ({'SIGINT' if signum == 2 else 'SIGTERM' if signum == 15 else signum})"
            if ours and not retain:
                rollback(spec.name, why)
            elif ours:
                print(f"\npodnet lab up: {why}; kept (--retain): remove with: podnet lab down --name {spec.name}",
                      file=sys.stderr)
            return 128 + signum
        except Exception as e:  # noqa: BLE001 - the user gets one line and where to look
            print(f"\npodnet lab up: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            if ours and not retain:
                logs = save_logs(spec.name)
                if logs:
                    print(f"  logs copied to {logs}", file=sys.stderr)
                rollback(spec.name, "failed")
            elif ours:
                print(f"  logs: /run/podnet/{spec.name}/logs/   clean up: podnet lab down --name {spec.name}",
                      file=sys.stderr)
            return 1
    return 0
