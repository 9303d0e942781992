"""One pod's row of a NetworkPolicy truth table: probe many targets at once from inside the pod.

``python -P -m podnet.netlab.check.netpol_probe PROTOCOL TIMEOUT HOST:PORT...`` prints one JSON
list, one entry per target in order: ``{"ok": true, "pod": "b"}`` or ``{"ok": false, "error":
"timeout"}``. TCP: a new connection and one echo line; UDP: one datagram and its echo (the
lab pod server's wire format, podnet.netlab.check.probe). Every target is probed in parallel, so
a row costs one timeout at most, and the process ends after it. Stdlib only.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from podnet.host.addr import split_hostport
from podnet.netlab.check.probe import attempt_tcp, attempt_udp

__all__ = ["probe_all", "main"]

MAX_TARGETS = 256


def probe_all(protocol: str, targets: list[tuple[str, int]], timeout: float) -> list[dict]:
    attempt = {"TCP": attempt_tcp, "UDP": attempt_udp}[protocol]
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda hp: attempt(hp[0], hp[1], timeout), targets))


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] not in ("TCP", "UDP") or len(args) - 2 > MAX_TARGETS:
        print("usage: netpol_probe TCP|UDP TIMEOUT HOST:PORT... (at most 256 targets)", file=sys.stderr)
        return 2
    timeout = min(max(float(args[1]), 0.05), 10.0)
    targets = [split_hostport(a) for a in args[2:]]
    out.write(json.dumps(probe_all(args[0], targets, timeout)) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
