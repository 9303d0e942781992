"""``lab down``: remove everything a lab created, from its records or, after a crash, by its marks.

What a lab leaves, and how each is found without trusting any single record:

- processes: pid files in the run dir, then every process carrying the lab's
  ``PODNET_LAB`` environment marker, then anything still inside a lab netns;
- network namespaces: every ``pnl-<lab>-*`` name (links, routes, iptables rules
  and conntrack entries of the lab all live inside them and go with them);
- files: ``/etc/netns/pnl-<lab>-*``, the run dir and the data dir;
- podman containers (``--runtime podman``): every container labelled with the lab's name in the
  store the run dir names, whatever state its ``podman run`` was left in.

Idempotent: running it twice, or on a lab that never finished ``up``, is fine.
The root namespace is never modified (the lab never touched it).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from podnet.host import podman, procs
from podnet.host.netns import NETNS_ETC, list_netns, sweep
from podnet.netlab.lab.topology import DATA_ROOT, PREFIX, RUN_ROOT

__all__ = ["down", "Removed", "leftovers"]


@dataclass
class Removed:
    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        podman = f", {len(self.containers)} podman containers" if self.containers else ""
        return (f"{len(self.processes)} processes, {len(self.netns)} network namespaces, {len(self.paths)} "
                f"paths{podman}")


def down(lab: str, run_root: Path = RUN_ROOT, data_root: Path = DATA_ROOT) -> Removed:
    prefix = f"{PREFIX}{lab}-"
    run_dir, data_dir = run_root / lab, data_root / lab
    gone = Removed()
    store = podman.load(run_dir)
    gone.processes = procs.stop_all(run_dir, lab, grace=2.0)
    if store is not None:  # after the kubelets: none starts another container meanwhile
        gone.containers = podman.remove_lab(store, lab)
    gone.netns = sweep(prefix)  # kills whatever still runs inside, then deletes
    for d in sorted(NETNS_ETC.glob(f"{prefix}*")) if NETNS_ETC.is_dir() else []:
        shutil.rmtree(d, ignore_errors=True)
        gone.paths.append(str(d))
    # Processes started between the first sweep and now (a kubelet racing us) are gone with
    # their netns; a last pass catches any marked survivor outside lab namespaces.
    gone.processes += procs.stop(procs.find_lab_processes(lab), lab, grace=1.0)
    for d in (run_dir, data_dir):
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            gone.paths.append(str(d))
    for root in (run_root, data_root):  # the parents too, when no other lab (or part) uses them
        try:
            root.rmdir()
        except OSError:
            pass
    return gone


def leftovers(lab: str, run_root: Path = RUN_ROOT, data_root: Path = DATA_ROOT) -> list[str]:
    """Anything of the lab still present (empty after a successful :func:`down`)."""
    prefix = f"{PREFIX}{lab}-"
    out = [f"netns {n}" for n in list_netns() if n.startswith(prefix)]
    store = podman.load(run_root / lab)
    out += [f"podman container {c}" for c in (podman.lab_containers(store, lab) if store else [])]
    out += [f"process {p}" for p in procs.find_lab_processes(lab)]
    out += [f"path {d}" for d in (run_root / lab, data_root / lab) if d.exists()]
    if NETNS_ETC.is_dir():
        out += [f"path {d}" for d in NETNS_ETC.glob(f"{prefix}*")]
    return out
