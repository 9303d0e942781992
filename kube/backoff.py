"""Reconnect policy for watches: jittered exponential backoff as a pure function.

:func:`decide` maps (error, attempt number, a random draw) to an :class:`Action`:
retry after some delay, or give up and raise. It never sleeps and never reads a
clock, so it is tested as a plain table; the watch loop does the sleeping. The
delay is never zero for an error, so a loop driven by this policy cannot spin
while the API server is down.

Shape (like client-go's wait.Backoff with jitter): the n-th consecutive failure
waits ``min(initial * factor**(n-1), maximum)`` scaled by a random factor in
``[1, 1 + jitter)`` and capped at ``maximum``, so many clients restarting at
once spread out instead of hammering in step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff", "Action", "DEFAULT", "decide", "is_retriable_status"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    """Delay before the first retry, in seconds."""
    factor: float = 2.0
    maximum: float = 30.0
    """No delay is ever longer than this."""
    jitter: float = 0.5
    """The delay is multiplied by ``1 + jitter * rand`` (rand in [0, 1))."""
    reset_after: float = 60.0
    """A stream that stayed healthy this long resets the attempt counter."""

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        attempt = max(1, attempt)
        # Cap the exponent so huge attempt counts cannot overflow a float.
        base = self.initial * self.factor ** min(attempt - 1, 64)
        return min(self.maximum, min(base, self.maximum) * (1.0 + self.jitter * min(max(rand, 0.0), 1.0)))


DEFAULT = Backoff()


@dataclass(frozen=True, slots=True)
class Action:
    retry: bool
    delay: float
    reason: str


# HTTP statuses after which retrying the same request can never succeed.
_FATAL_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 415, 422})


def is_retriable_status(status: int) -> bool:
    return status not in _FATAL_STATUSES


def decide(status: int | None, attempt: int, rand: float, policy: Backoff = DEFAULT, *, fatal_ok: bool = True) -> Action:
    """What to do after failure number ``attempt`` (1-based).

    ``status`` is the HTTP status of an API error, or None for a transport
    error (refused, reset, timeout). A watcher must keep going whatever
    happens (``fatal_ok=True``, the default): fatal statuses such as 403 still
    retry, but at the maximum delay so a misconfigured client does not flood
    the API server's logs. With ``fatal_ok=False`` they give up.
    """
    if status is not None and not is_retriable_status(status):
        if not fatal_ok:
            return Action(False, 0.0, f"HTTP {status} is not retriable")
        return Action(True, policy.maximum, f"HTTP {status}; retrying slowly")
    if status == 429:
        return Action(True, max(policy.delay(attempt, rand), 1.0), "throttled (429)")
    why = "transport error" if status is None else f"HTTP {status}"
    return Action(True, policy.delay(attempt, rand), why)
