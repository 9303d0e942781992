"""Benchmark: `podnet lab up` wall time for 2x3 and 4x25 pods, podnet-cni vs the reference bridge plugin.

Run as root: .venv/bin/python -P bench/lab_up.py [--reps N]
Each run is a fresh lab (`up`, then `down`), measured from outside (process wall
time) and split by the step times `up` prints. The anchor is the same lab with
the reference bridge+host-local CNI plugins exec'd the same way (--cni reference).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PODNET = str(Path(sys.executable).parent / "podnet")


def one(name: str, nodes: int, pods: int, cni: str) -> dict:
    t0 = time.monotonic()
    p = subprocess.run([PODNET, "lab", "up", "--name", name, "--nodes", str(nodes), "--pods-per-node", str(pods),
                        "--cni", cni], capture_output=True, text=True, timeout=600)
    up = time.monotonic() - t0
    steps = {m.group(2).split(":")[0].strip(): float(m.group(3))
             for m in re.finditer(r"\[\s*(\d+)\] ([^\n]*?) \.\.\.\n(?:.*\n)*?\s+done \(([\d.]+) s\)", p.stdout)}
    t1 = time.monotonic()
    d = subprocess.run([PODNET, "lab", "down", "--name", name], capture_output=True, text=True, timeout=300)
    down = time.monotonic() - t1
    if p.returncode != 0 or d.returncode != 0:
        raise SystemExit(f"lab up/down failed:\n{p.stdout}\n{p.stderr}\n{d.stdout}\n{d.stderr}")
    return {"up": up, "down": down, "pods": steps.get("pods", float("nan"))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for nodes, pods in ((2, 3), (4, 25)):
        for cni in ("podnet", "reference"):
            runs = [one(f"bu{nodes}x{pods}", nodes, pods, cni) for _ in range(a.reps)]
            med = {k: statistics.median(r[k] for r in runs) for k in ("up", "down", "pods")}
            rows.append((f"{nodes}x{pods}", cni, med, [round(r["up"], 2) for r in runs]))
            print(f"{nodes}x{pods} {cni}: up {med['up']:.2f} s", flush=True)
    print(f"\n`podnet lab up` / `down` wall time, median of {a.reps} (fresh lab each run)\n")
    print("| topology | CNI | up (s) | pods step (s) | down (s) | up, each run (s) |")
    print("|---|---|---|---|---|---|")
    for topo, cni, med, each in rows:
        print(f"| {topo} | {cni} | {med['up']:.2f} | {med['pods']:.2f} | {med['down']:.2f} | {each} |")
    by = {(t, c): m for t, c, m, _ in rows}
    for topo in ("2x3", "4x25"):
        print(f"\n{topo}: pods step podnet/reference = {by[(topo, 'podnet')]['pods'] / by[(topo, 'reference')]['pods']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
