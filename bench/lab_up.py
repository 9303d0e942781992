"""Benchmark: `podnet lab up` wall time, podnet-cni vs the reference bridge plugin, and what the lab's
processes cost while it comes up.

Run as root: .venv/bin/python -P bench/lab_up.py [--reps N] [--nodes N --pods P] [--cni podnet|reference|both]
                                                  [--keep] [--name-prefix P] [--anchor-podnet PATH]
Without --nodes, the 2x3 and 4x25 topologies with both CNIs (the table in bench/results/lab.md).
Each run is a fresh lab (`up`, then `down`), measured from outside (process wall time) and split by
the step times `up` prints. The anchor is the same lab with the reference bridge+host-local CNI
plugins exec'd the same way (--cni reference).

While `up` runs, a sampler reads every process the lab started (its marker in the environment) every
2 s: peak RSS is the kernel's high-water mark (VmHWM, so a peak between samples is not missed),
CPU is the process's user+system time by the end of `up` (every process starts during `up`, so this
is the CPU it spent coming up). ``--keep`` leaves the (last) lab running for bench/lab_netprog.py
``--lab`` and prints its name; remove it with `podnet lab down --name NAME`.

``--anchor-podnet PATH``: the same topology and CNI is also brought up by another install's ``podnet``
(e.g. a copy of an earlier tree in its own venv), in interleaved rounds (which of the two goes first
alternates), and the table gets a row for it and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PODNET = str(Path(sys.executable).parent / "podnet")
HZ = os.sysconf("SC_CLK_TCK")


def proc_cost(pid: int) -> tuple[int, float] | None:
    """(peak RSS in KiB, CPU seconds) of a live process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / HZ  # utime, stime (fields 14, 15 of proc(5))
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return (int(hwm.group(1)) if hwm else 0), cpu


ROLE_MARKS = (("apiserver", "netlab.apiserver"), ("kubelet", "netlab.node.kubelet"), ("cni", "podnet-cni daemon"),
              ("proxy", "podnet-proxy"), ("policy", "podnet-policy"), ("dns", "podnet-dns"),
              ("pod servers", "netlab.node.launch"))


def role_of(cmdline: str) -> str:
    """The part of the lab a process is, from its command line; ``other`` for the rest (dnsmasq, ...)."""
    return next((role for role, mark in ROLE_MARKS if mark in cmdline), "other")


class Sampler(threading.Thread):
    """Samples every process carrying the lab's marker (the daemons run as the DaemonSet's pods, so
    the lab's pid files do not name them) until :meth:`stop`; at most ``limit`` rounds."""

    def __init__(self, lab: str, period: float = 2.0, limit: int = 30 * 30) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.period, self.limit = period, limit
        self.seen: dict[int, tuple[str, int, float]] = {}  # pid -> (role, peak RSS KiB, CPU s) at its last sample
        self._halt = threading.Event()
        self.load_max = 0.0

    def sample(self) -> None:
        from podnet.host import procs

        for pid in procs.find_lab_processes(self.lab):
            try:  # read each time: a pod's launcher execs its container's command
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            cost = proc_cost(pid)
            if cost:
                _, rss, cpu = self.seen.get(pid, ("", 0, 0.0))
                self.seen[pid] = (role_of(cmd), max(rss, cost[0]), max(cpu, cost[1]))
        self.load_max = max(self.load_max, os.getloadavg()[0])

    def run(self) -> None:
        for _ in range(self.limit):
            self.sample()
            if self._halt.wait(self.period):
                break

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.sample()  # the last word: costs at the end of `up`

    def by_role(self) -> dict[str, list[tuple[str, int, float]]]:
        out: dict[str, list[tuple[str, int, float]]] = {}
        for pid, (role, rss, cpu) in sorted(self.seen.items()):
            out.setdefault(role, []).append((str(pid), rss, cpu))
        return out


def one(name: str, nodes: int, pods: int, cni: str, keep: bool = False, podnet: str = PODNET) -> dict:
    sampler = Sampler(name)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    sampler.start()
    try:
        p = subprocess.run([podnet, "lab", "up", "--name", name, "--nodes", str(nodes), "--pods-per-node", str(pods),
                            "--cni", cni], capture_output=True, text=True, timeout=900)
        up = time.monotonic() - t0
    finally:
        sampler.stop()
    steps = {m.group(2).split(":")[0].strip(): float(m.group(3))
             for m in re.finditer(r"\[\s*(\d+)\] ([^\n]*?) \.\.\.\n(?:.*\n)*?\s+done \(([\d.]+) s\)", p.stdout)}
    down, d = float("nan"), None
    if not keep or p.returncode != 0:
        t1 = time.monotonic()
        d = subprocess.run([podnet, "lab", "down", "--name", name], capture_output=True, text=True, timeout=300)
        down = time.monotonic() - t1
    if p.returncode != 0 or (d is not None and d.returncode != 0):
        raise SystemExit(f"lab up/down failed:\n{p.stdout}\n{p.stderr}\n{d and d.stdout}\n{d and d.stderr}")
    pods = next((v for k, v in steps.items() if "pods" in k and "podnet-node" not in k), float("nan"))
    return {"up": up, "down": down, "pods": pods, "steps": steps,
            "roles": sampler.by_role(), "load": (load0, sampler.load_max)}


def cost_table(roles: dict[str, list[tuple[str, int, float]]]) -> list[str]:
    out = ["| process (per node: each of N) | peak RSS MiB: max (median) | CPU s during `up`: max (median) | sum CPU s |",
           "|---|---|---|---|"]
    for role in (*(r for r, _ in ROLE_MARKS), "other"):
        xs = roles.get(role, [])
        if not xs:
            continue
        rss = [x[1] / 1024 for x in xs]
        cpu = [x[2] for x in xs]
        label = role if len(xs) == 1 else f"{role} (x{len(xs)})"
        out.append(f"| {label} | {max(rss):.1f} ({statistics.median(rss):.1f}) | {max(cpu):.2f} "
                   f"({statistics.median(cpu):.2f}) | {sum(cpu):.1f} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nodes", type=int, help="one topology of N nodes (default: 2x3 and 4x25)")
    ap.add_argument("--pods", type=int, default=3, help="echo pods per node with --nodes (default 3)")
    ap.add_argument("--cni", choices=("podnet", "reference", "both"), default="both")
    ap.add_argument("--keep", action="store_true", help="leave the last lab running (for lab_netprog.py --lab)")
    ap.add_argument("--name-prefix", default="bu", help="lab names start with this (default bu)")
    ap.add_argument("--anchor-podnet", help="another install's podnet, run in interleaved rounds as the anchor")
    a = ap.parse_args()
    reps = max(1, min(a.reps, 20))
    topologies = [(a.nodes, a.pods)] if a.nodes else [(2, 3), (4, 25)]
    cnis = ("podnet", "reference") if a.cni == "both" else (a.cni,)
    rows = []
    last = None
    load_before = os.getloadavg()
    for nodes, pods in topologies:
        for cni in cnis:
            runs, anchor = [], []
            for i in range(reps):
                keep = a.keep and (nodes, pods, cni, i) == (*topologies[-1], cnis[-1], reps - 1)
                name = f"{a.name_prefix}{nodes}x{pods}"
                order = ["anchor", "this"] if i % 2 or keep else ["this", "anchor"]
                for who in order if a.anchor_podnet else ["this"]:
                    if who == "this":
                        runs.append(one(name, nodes, pods, cni, keep))
                        last = name if keep else last
                    else:
                        anchor.append(one(name, nodes, pods, cni, podnet=a.anchor_podnet))
            for label, rs in (("", runs), (" (anchor)", anchor)):
                if rs:
                    med = {k: statistics.median(r[k] for r in rs) for k in ("up", "down", "pods")}
                    rows.append((f"{nodes}x{pods}", cni + label, med, rs))
                    print(f"{nodes}x{pods} {cni}{label}: up {med['up']:.2f} s", flush=True)
            if anchor:
                mine = statistics.median(r["up"] for r in runs)
                theirs = statistics.median(r["up"] for r in anchor)
                print(f"{nodes}x{pods} {cni}: up this/anchor = {mine / theirs:.2f}", flush=True)
    print(f"\nload average before: {' '.join(f'{x:.1f}' for x in load_before)}; "
          f"after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\n`podnet lab up` / `down` wall time, median of {reps} (fresh lab each run)\n")
    print("| topology | CNI | up (s) | pods step (s) | down (s) | up, each run (s) | load at start / max |")
    print("|---|---|---|---|---|---|---|")
    for topo, cni, med, runs in rows:
        each = [round(r["up"], 2) for r in runs]
        load = ", ".join(f"{r['load'][0]:.1f}/{r['load'][1]:.1f}" for r in runs)
        print(f"| {topo} | {cni} | {med['up']:.2f} | {med['pods']:.2f} | {med['down']:.2f} | {each} | {load} |")
    by = {(t, c): m for t, c, m, _ in rows}
    for topo in dict.fromkeys(t for t, _, _, _ in rows):
        if (topo, "podnet") in by and (topo, "reference") in by:
            print(f"\n{topo}: pods step podnet/reference = "
                  f"{by[(topo, 'podnet')]['pods'] / by[(topo, 'reference')]['pods']:.2f}")
    for topo, cni, _, runs in rows:
        r = runs[-1]
        print(f"\n{topo} {cni}, last run: steps {', '.join(f'{k} {v:.1f} s' for k, v in r['steps'].items())}\n")
        print("\n".join(cost_table(r["roles"])))
    if last:
        print(f"\nlab {last!r} left running: `{PODNET} lab down --name {last}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
