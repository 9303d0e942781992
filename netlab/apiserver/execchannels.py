"""The websocket channel protocol of pods/exec (k8s.io/apimachinery wsstream, remotecommand v4 and v5).

Each binary websocket message is one channel byte followed by the payload: 0 stdin (client to
server), 1 stdout, 2 stderr, 3 the error channel (one ``Status`` JSON once the command has ended),
4 terminal resize (client to server: ``{"Width": W, "Height": H}``). ``v5.channel.k8s.io`` adds
the close signal: a message ``[255, channel]`` half-closes that channel (kubectl sends it for
stdin when its input ends). ``v4.channel.k8s.io`` has no close signal, so a v4 client's stdin
ends only with the connection. Older versions (plain-text error channel) are not offered.

Everything here is pure: framing, parsing and the Status documents kubelet writes on the error
channel (``NonZeroExitCode`` with an ``ExitCode`` cause, which kubectl turns into its own exit code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["PROTOCOLS", "STDIN", "STDOUT", "STDERR", "ERROR", "RESIZE", "CLOSE", "Message", "frame",
           "parse_message", "success_status", "exit_status", "failure_status", "exit_code_of"]

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""The versions served; of those a client offers, its first is chosen (as wsstream does)."""
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
"""v5: the message ``[CLOSE, channel]`` half-closes ``channel``."""


@dataclass(frozen=True)
class Message:
    """One client message: data on ``channel``, a v5 close of ``channel`` or a terminal size."""
    channel: int
    data: bytes = b""
    closed: bool = False
    size: tuple[int, int] | None = None
    """(width, height) of a resize message."""


def frame(channel: int, data: bytes = b"") -> bytes:
    return bytes((channel,)) + data


def parse_message(protocol: str, payload: bytes) -> Message | None:
    """One binary message from the client; None for one that carries nothing (an empty message)."""
    if not payload:
        return None
    channel, data = payload[0], payload[1:]
    if channel == CLOSE and protocol.startswith("v5.") and data:
        return Message(data[0], closed=True)
    if channel == RESIZE:
        try:
            size = json.loads(data or b"{}")
            return Message(RESIZE, size=(int(size.get("Width", 0)), int(size.get("Height", 0))))
        except (ValueError, TypeError, AttributeError):
            return None
    return Message(channel, data)


def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(command: Sequence[str], code: int) -> dict[str, Any]:
    """What kubelet writes for a command that ended with ``code`` != 0 (kubectl exits with ``code``)."""
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def failure_status(message: str) -> dict[str, Any]:
    """The command could not be run at all (kubectl: ``error executing remote command: <message>``)."""
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


def exit_code_of(returncode: int) -> int:
    """A process's status as a runtime reports it: a signal N as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
