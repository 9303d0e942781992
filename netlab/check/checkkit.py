"""Tools for the end-to-end check: rows, the table, probes run inside lab namespaces, waits.

A :class:`Row` is one line of the table (check, expected, observed, pass/fail,
time). Probes run ``podnet.netlab.check.probe`` or ``getent`` through ``ip netns
exec``, so a pod's own resolv.conf and routes apply, exactly as for a program
in that pod. Every wait is bounded; nothing here retries forever.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from podnet.host.nsenter import exec_argv
from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError

__all__ = ["Row", "render_table", "exec_in", "probe", "getent", "pod_netns_map", "wait_until", "delete_quietly",
           "ready_endpoints", "pods_by_label"]


@dataclass
class Row:
    check: str
    expected: str
    observed: str
    ok: bool | None
    """True pass, False fail, None skipped (the lab's shape cannot show it, e.g. one node)."""
    seconds: float

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.ok]


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def render_table(rows: Iterable[Row], widths: tuple[int, int, int] | None = (32, 44, 58)) -> str:
    """A fixed-width text table; long cells are clipped so each row stays on one line (``widths=None``: no clipping)."""
    rows = list(rows)
    if widths is None:
        widths = tuple(max([len(h)] + [len(" ".join(getattr(r, a).split())) for r in rows])
                       for h, a in (("check", "check"), ("expected", "expected"), ("observed", "observed")))
    wc, we, wo = widths
    head = f"{'check':<{wc}}  {'expected':<{we}}  {'observed':<{wo}}  {'result':<6}  {'time':>7}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{_clip(row.check, wc):<{wc}}  {_clip(row.expected, we):<{we}}  {_clip(row.observed, wo):<{wo}}  "
            f"{row.verdict:<6}  {row.seconds:>6.2f}s"
        )
    passed = sum(r.ok is True for r in rows)
    skipped = sum(r.ok is None for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{passed}/{len(rows) - skipped} checks passed" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines) + "\n"


async def exec_in(netns: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        *exec_argv(netns, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        return 124, "", "timeout"
    return p.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def probe(netns: str, mode: str, host: str, port: int, *, count: int = 1, interval: float = 0.0,
                timeout: float = 1.0) -> list[dict[str, Any]]:
    """Run the probe client in ``netns``; one dict per attempt (see podnet.netlab.check.probe)."""
    argv = [sys.executable, "-P", "-m", "podnet.netlab.check.probe", mode, host, str(port), "--count", str(count),
            "--interval", str(interval), "--timeout", str(timeout)]
    budget = count * (timeout + interval) + 15
    rc, out, err = await exec_in(netns, argv, budget)
    rows = []
    for line in out.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    if not rows:
        rows.append({"ok": False, "error": f"probe failed rc={rc}: {err.strip()[-200:]}"})
    return rows


async def getent(netns: str, name: str, timeout: float = 10.0) -> list[str]:
    """IPv4 addresses glibc resolves for ``name`` inside ``netns`` (its resolv.conf, search paths, ndots)."""
    rc, out, _ = await exec_in(netns, ["getent", "ahostsv4", name], timeout)
    ips: list[str] = []
    for line in out.splitlines():
        ip = line.split()[0] if line.split() else ""
        if ip and ip not in ips:
            ips.append(ip)
    return ips


def pod_netns_map(run_dir: Path) -> dict[str, str]:
    """``namespace/name`` -> pod netns, from the lab kubelets' records."""
    out = {}
    for f in (run_dir / "pods").glob("*/*.json") if (run_dir / "pods").is_dir() else []:
        try:
            d = json.loads(f.read_text())
            out[d["pod"]] = d["netns"]
        except (OSError, ValueError, KeyError):
            pass
    return out


async def wait_until(fn: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.05) -> Any:
    """Call ``fn`` until it returns something truthy or ``timeout`` passes; the last value either way."""
    end = time.monotonic() + timeout
    while True:
        v = await fn()
        if v or time.monotonic() >= end:
            return v
        await asyncio.sleep(interval)


async def delete_quietly(client: ApiClient, res: r.Resource, name: str, namespace: str | None) -> None:
    try:
        await client.delete(res, name, namespace)
    except ApiError as e:
        if not e.is_not_found:
            raise


async def ready_endpoints(client: ApiClient, namespace: str, service: str) -> list[str]:
    items, _ = await client.list(r.ENDPOINT_SLICES, namespace, label_selector=f"kubernetes.io/service-name={service}")
    out = []
    for s in items:
        for ep in s.get("endpoints") or ():
            if (ep.get("conditions") or {}).get("ready", True):
                out.extend(ep.get("addresses") or ())
    return sorted(out)


async def pods_by_label(client: ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    items, _ = await client.list(r.PODS, namespace, label_selector=selector)
    return items
