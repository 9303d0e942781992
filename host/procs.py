"""Background processes of a lab: started with a pid file and a log, found again after a crash.

Every process a lab starts gets ``PODNET_LAB=<lab>`` in its environment, which
its children (dnsmasq, pod servers, the CNI daemon's helpers) inherit. So
:func:`find_lab_processes` can find every survivor from /proc even when the
pid files are gone, and :func:`stop` never kills a process that is not the
lab's: it checks the marker before each signal (a pid may have been reused).

Layout in the lab's run dir: ``pids/<name>.pid`` and ``logs/<name>.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Sequence

from .nsenter import exec_argv

__all__ = ["LAB_ENV", "spawn", "stop", "stop_all", "find_lab_processes", "is_lab_process", "read_pid", "alive"]

LAB_ENV = "PODNET_LAB"


def _marker(lab: str) -> bytes:
    return f"{LAB_ENV}={lab}".encode()


def is_lab_process(pid: int, lab: str) -> bool:
    """True if ``pid`` exists and carries this lab's environment marker."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return _marker(lab) in env.split(b"\0")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def find_lab_processes(lab: str) -> list[int]:
    """Every live process carrying this lab's marker (except ourselves)."""
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me and is_lab_process(int(d.name), lab):
            out.append(int(d.name))
    return sorted(out)


def spawn(
    run_dir: Path,
    lab: str,
    name: str,
    argv: Sequence[str],
    *,
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` (inside ``netns`` via ``ip netns exec`` if given) in the background.

    stdout and stderr go to ``logs/<name>.log``; the pid goes to ``pids/<name>.pid``.
    The process gets its own session, so the caller's terminal signals do not reach it, and
    is not the caller's child (started through a shell that exits at once).
    """
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    full = exec_argv(netns, argv)
    e = dict(os.environ)
    e.update(env or {})
    e[LAB_ENV] = lab
    e.setdefault("PYTHONUNBUFFERED", "1")
    e["PODNET_LAB_LOG"] = str(run_dir / "logs" / f"{name}.log")
    # Through a shell that backgrounds the command and exits: the process is re-parented
    # (it outlives the CLI that started it and never becomes its zombie), in its own session.
    sh = subprocess.run(
        ["sh", "-c", '"$@" </dev/null >>"$PODNET_LAB_LOG" 2>&1 & echo $!', "sh", *full],
        env=e, capture_output=True, text=True, start_new_session=True, timeout=30,
    )
    if sh.returncode != 0 or not sh.stdout.strip().isdigit():
        raise RuntimeError(f"could not start {name}: {sh.stderr.strip()}")
    pid = int(sh.stdout.strip())
    (run_dir / "pids" / f"{name}.pid").write_text(f"{pid}\n")
    return pid


def read_pid(run_dir: Path, name: str) -> int | None:
    try:
        return int((run_dir / "pids" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop(pids: Iterable[int], lab: str, grace: float = 3.0) -> list[int]:
    """SIGTERM the lab's processes among ``pids``, SIGKILL whatever survives ``grace`` seconds.

    Returns the pids that were signalled. Pids that are not the lab's are skipped.
    """
    ours = [p for p in set(pids) if is_lab_process(p, lab)]
    for p in ours:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in ours):
        time.sleep(0.05)
    for p in ours:
        if alive(p) and is_lab_process(p, lab):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return ours


def stop_all(run_dir: Path, lab: str, grace: float = 3.0) -> list[int]:
    """Stop every process in the run dir's pid files, then every survivor with the lab marker."""
    pids = []
    for f in sorted((run_dir / "pids").glob("*.pid")) if (run_dir / "pids").is_dir() else []:
        try:
            pids.append(int(f.read_text().strip()))
        except (OSError, ValueError):
            pass
    gone = stop(pids, lab, grace)
    gone += stop(find_lab_processes(lab), lab, grace=1.0)
    return sorted(set(gone))
