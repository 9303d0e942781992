"""Ctrl-C (SIGINT) and SIGTERM during a real ``podnet lab up`` roll back everything it built.

Each case starts ``lab up`` on a small topology (1 node, 1 pod), waits for a progress line
that marks a point of the bring-up, signals the process, and then checks that nothing with
the lab's prefix is left: no ``pnl-<lab>-`` namespace, no process carrying the lab's marker,
no ``/run/podnet/<lab>`` or ``/var/lib/podnet/<lab>``. With ``--retain`` the lab is kept; a
failed ``up`` is rolled back too (its logs copied out first); an ``up`` refused because the
name is taken removes nothing. Cost: about 5-25 s per case (a partial bring-up and a
teardown), about 80 s for the module; marked slow.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podnet.host import procs
from podnet.host.netns import list_netns
from podnet.netlab.lab.teardown import leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODNET = str(Path(sys.executable).parent / "podnet")

# progress lines of `lab up` (plain lines: stdout is a pipe), each the start of a step
POINTS = {
    "fabric": "[ 1] fabric",
    "apiserver": "[ 2] API server",
    "apply": "[ 3] podnet: apply",
    "kubelets": "[ 4] kubelets",
    "node-network": "[ 5] podnet-node",
    "pods": "[ 6] podnet-dns Deployment",
}


@pytest.fixture
def lab():
    name = "i" + secrets.token_hex(3)
    try:
        yield name
    finally:
        subprocess.run([PODNET, "lab", "down", "--name", name], capture_output=True, timeout=60)


def up_until(name: str, marker: str, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """Start `lab up` and read its output until a line starts with ``marker`` (bounded: 120 s)."""
    p = subprocess.Popen([PODNET, "lab", "up", "--name", name, "--nodes", "1", "--pods-per-node", "1", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    end = time.monotonic() + 120
    assert p.stdout is not None
    while time.monotonic() < end:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if line.startswith(marker):
            return p, seen
    p.kill()
    p.wait()
    pytest.fail(f"never reached {marker!r}: {seen} {p.stderr.read() if p.stderr else ''}")


def nothing_left(name: str) -> list[str]:
    left = leftovers(name)
    left += [f"netns {n}" for n in list_netns() if n.startswith(f"pnl-{name}-") and f"netns {n}" not in left]
    left += [f"process {pid}" for pid in procs.find_lab_processes(name) if f"process {pid}" not in left]
    left += [f"path {d}" for d in (Path("/run/podnet") / name, Path("/var/lib/podnet") / name) if d.exists()
             and f"path {d}" not in left]
    return left


CASES = [pytest.param(sig, point, id=f"{sig.name}-{point}")
         for sig, point in [(signal.SIGINT, "fabric"), (signal.SIGTERM, "apiserver"), (signal.SIGINT, "apply"),
                            (signal.SIGINT, "kubelets"), (signal.SIGTERM, "node-network"), (signal.SIGINT, "pods"),
                            (signal.SIGTERM, "pods")]]


@pytest.mark.parametrize("sig,point", CASES)
def test_signal_during_up_rolls_back_everything(lab, sig, point):
    p, seen = up_until(lab, POINTS[point])
    p.send_signal(sig)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 128 + sig, (p.returncode, seen, out, err)
    assert f"interrupted ({sig.name})" in err and "rolling back" in err, err
    assert "is up" not in out
    assert nothing_left(lab) == [], (seen, out, err)


def test_retain_keeps_an_interrupted_lab(lab):
    p, seen = up_until(lab, POINTS["kubelets"], "--retain")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 128 + signal.SIGTERM, (out, err)
    assert "kept (--retain)" in err and f"podnet lab down --name {lab}" in err
    assert any(n.startswith(f"pnl-{lab}-") for n in list_netns())
    assert (Path("/run/podnet") / lab / "lab.json").exists()
    subprocess.run([PODNET, "lab", "down", "--name", lab], capture_output=True, timeout=60, check=True)
    assert nothing_left(lab) == []


def test_up_over_an_existing_lab_removes_nothing(lab):
    """A refused `up` (the name is taken) never rolls back: what exists is someone else's lab."""
    run_dir = Path("/run/podnet") / lab
    run_dir.mkdir(parents=True)
    (run_dir / "lab.json").write_text("{}")
    up = subprocess.run([PODNET, "lab", "up", "--name", lab], capture_output=True, text=True, timeout=60)
    assert up.returncode == 1 and "already exists" in up.stderr, up.stderr
    assert "rolling back" not in up.stderr
    assert (run_dir / "lab.json").read_text() == "{}"


def test_failed_up_is_rolled_back_and_its_logs_kept(lab):
    """A failure (here: pods cannot be Ready within a zero timeout) removes the lab as kind deletes a
    failed cluster; its logs are copied out first and the message says where."""
    up = subprocess.run([PODNET, "lab", "up", "--name", lab, "--nodes", "1", "--pods-per-node", "1",
                         "--ready-timeout", "0"], capture_output=True, text=True, timeout=180)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "FAILED: TimeoutError" in up.stderr and "rolling back" in up.stderr
    logs = [line.split("logs copied to ", 1)[1].strip() for line in up.stderr.splitlines() if "logs copied to" in line]
    try:
        assert len(logs) == 1 and (Path(logs[0]) / "apiserver.log").is_file(), up.stderr
        assert nothing_left(lab) == []
    finally:
        for d in logs:
            shutil.rmtree(d, ignore_errors=True)
