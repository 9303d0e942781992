"""Named network namespaces and veth pairs for labs and root-only tests.

Everything created here carries a caller-chosen prefix (labs use ``pnl-``,
tests ``pnt-``) so a crashed run can be swept with :func:`sweep`. Only the
``ip`` command is used: it binds /etc/netns/<name>/ files (resolv.conf) into
``ip netns exec`` children, which a real pod's resolver needs.

Guarantees: :class:`Netns` never touches the root namespace's routes,
iptables or sysctls; :meth:`NetnsPool.close` removes every namespace it made,
even when a test failed half-way, and is idempotent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .nsenter import exec_argv

__all__ = ["Netns", "NetnsPool", "run", "sweep", "list_netns", "unique_name"]

NETNS_ETC = Path("/etc/netns")


def run(args: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 30) -> str:
    """Run a command, return stdout; on failure raise with stderr in the message."""
    p = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def unique_name(prefix: str, length: int = 15) -> str:
    """``prefix`` plus random hex, at most ``length`` characters (IFNAMSIZ-1 by default)."""
    return (prefix + secrets.token_hex(8))[:length]


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class Netns:
    """One named network namespace; commands run inside it with :meth:`run`."""

    name: str

    def run(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 30) -> str:
        return run(exec_argv(self.name, args), check=check, input=input, timeout=timeout)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(exec_argv(self.name, args), **kw)

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def ip(self, *args: str, check: bool = True) -> str:
        return run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def write_resolv_conf(self, text: str) -> Path:
        """Bind ``text`` as /etc/resolv.conf for commands run through ``ip netns exec``."""
        d = NETNS_ETC / self.name
        d.mkdir(parents=True, exist_ok=True)
        f = d / "resolv.conf"
        f.write_text(text)
        return f


@dataclass
class NetnsPool:
    """Creates namespaces and veth pairs, and removes them all on :meth:`close`.

    Use as a context manager (or a pytest fixture that calls close()).
    Names are ``prefix`` + random hex, so parallel runs never collide.
    """

    prefix: str = "pnt-"
    made: list[Netns] = field(default_factory=list)

    def netns(self, suffix: str = "") -> Netns:
        name = unique_name(self.prefix + suffix, 40)
        run(["ip", "netns", "add", name])
        ns = Netns(name)
        self.made.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair with one end in ``a`` named a_if and the other in ``b``."""
        tmp_a, tmp_b = unique_name("pva"), unique_name("pvb")
        # Create inside a so nothing ever appears in the root namespace.
        a.ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b, "netns", b.name)
        a.ip("link", "set", tmp_a, "name", a_if)
        b.ip("link", "set", tmp_b, "name", b_if)
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")

    def close(self) -> None:
        while self.made:
            ns = self.made.pop()
            _remove(ns.name)

    def __enter__(self) -> "NetnsPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove(name: str) -> None:
    # Kill anything still running inside first, or the netns lingers.
    pids = run(["ip", "netns", "pids", name], check=False).split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def sweep(prefix: str) -> list[str]:
    """Remove every namespace whose name starts with ``prefix``; return their names."""
    if len(prefix) < 3:
        raise ValueError("refusing to sweep with a prefix shorter than 3 characters")
    gone = [n for n in list_netns() if n.startswith(prefix)]
    for n in gone:
        _remove(n)
    return gone
