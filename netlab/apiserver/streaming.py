"""pods/attach (and pods/exec and pods/portforward on a server without lab kubelets): a Status that says what to run instead.

pods/exec (:mod:`podnet.netlab.apiserver.podexec`) and pods/portforward
(:mod:`podnet.netlab.apiserver.portforward`) are served over websocket by a server that knows the
lab's run directory (``--pod-log-dir``). attach is not served: the lab runs no terminal
multiplexer to attach to. These answer 400 BadRequest with a Status whose message names the pod's
network namespace (the lab kubelet's ``podnet.io/netns`` annotation) and what does the same:
``kubectl exec`` or ``kubectl logs -f`` for attach, ``ip netns exec <netns> <command>`` for exec
and the pod IP reachable from its node's namespace for port-forward without lab kubelets.
kubectl prints the message ("error: unable to upgrade connection: ...").
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
                           f"lab node); the podnet lab serves no {sub} for it")
    ip = (pod.get("status") or {}).get("podIP") or "<pod IP>"
    node = (pod.get("spec") or {}).get("nodeName") or "<node>"
    if sub == "exec":
        what = "this API server runs without lab kubelets (no --pod-log-dir), so it serves no exec"
        hint = f"on the host, as root: ip netns exec {netns} {shlex.join(command) if command else 'sh'}"
    elif sub == "portforward":
        what = "this API server runs without lab kubelets (no --pod-log-dir), so it serves no port-forward"
        hint = (f"on the host, as root: ip netns exec pnl-{node} CLIENT {ip} PORT "
                "(the pod IP is routed inside its node's namespace)")
    else:
        what = "the podnet lab serves no attach"
        hint = f"use `kubectl exec {name} -- COMMAND`, or `kubectl logs -f {name}` for the container's output"
    return StatusError(400, "BadRequest", f"{what}: pod {name} lives in network namespace {netns}; {hint}")
