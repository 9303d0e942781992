"""Running a host tool (iptables-restore, nft, ipset, ...) from the event loop.

:func:`run_tool` never blocks the loop while the tool runs, feeds ``stdin`` whole, and returns
(exit status, stdout, stderr) as text; a tool that outlives ``timeout`` is killed and reported as
status 124 (as coreutils' ``timeout`` does). A missing binary raises FileNotFoundError.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

__all__ = ["run_tool"]


async def run_tool(argv: Sequence[str], stdin: str | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """Run a host tool; (exit status, stdout, stderr), status 124 and the process killed after ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} timed out after {timeout}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
