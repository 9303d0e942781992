"""pods/exec, pods/attach and pods/portforward: a Status that says what to run instead.

The lab runs no container runtime streaming server (kubectl 1.32 speaks websocket, then SPDY, to
one through the API server), so these answer 400 BadRequest with a Status whose message names the
pod's network namespace (the lab kubelet's ``podnet.io/netns`` annotation) and the host command
that does the same: ``ip netns exec <netns> <command>`` for exec, the pod IP reachable from the
host's node namespaces for port-forward. kubectl prints the message
("error: unable to upgrade connection: ...").
"""

from __future__ import annotations

import shlex
from typing import Any

from podnet.netlab.apiserver.apistore import StatusError
from podnet.netlab.apiserver.tables import NETNS_ANNOTATION

__all__ = ["STREAMING", "no_streaming"]

STREAMING = ("exec", "attach", "portforward")


def no_streaming(pod: dict[str, Any], sub: str, command: list[str]) -> StatusError:
    meta = pod["metadata"]
    name = meta["name"]
    netns = (meta.get("annotations") or {}).get(NETNS_ANNOTATION)
    if not netns:
        return StatusError(400, "BadRequest", f"pod {name} has no network namespace yet (it is not running on a "
                           "lab node); the podnet lab runs no exec/attach/port-forward server")
    ip = (pod.get("status") or {}).get("podIP") or "<pod IP>"
    node = (pod.get("spec") or {}).get("nodeName") or "<node>"
    if sub == "exec":
        hint = f"ip netns exec {netns} {shlex.join(command) if command else 'sh'}"
    elif sub == "portforward":
        hint = f"ip netns exec pnl-{node} CLIENT {ip} PORT (the pod IP is routed inside its node's namespace)"
    else:
        hint = f"ip netns exec {netns} ... (the container's output is in `kubectl logs {name}`)"
    return StatusError(400, "BadRequest", f"the podnet lab runs no {sub} server: pod {name} lives in network "
                       f"namespace {netns}; on the host, as root: {hint}")
