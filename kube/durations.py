"""Durations in Kubernetes' notation: Go's ``time.ParseDuration`` text, and the one flag type.

* :func:`parse_duration` reads Go's syntax exactly: an optional sign, then one or more
  ``<decimal><unit>`` parts with units ns, us (µs, μs), ms, s, m, h (``1m30s``, ``100ms``,
  ``1.5h``, ``.5s``); ``0`` alone needs no unit; anything else (a space, a missing unit,
  an unknown unit, an empty text) is a ValueError with Go's message;
* :func:`format_duration` writes Go's ``Duration.String()`` for whole milliseconds and up;
* :func:`duration_flag` is the argparse ``type`` every podnet binary uses for a duration
  flag: Go's notation, or a bare non-negative number of seconds (``30``, ``2.5``) where the
  flag took seconds before; negative durations are refused. Returns seconds as a float.

Pure functions, no podnet imports.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["parse_duration", "format_duration", "duration_flag", "parse_flag_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_UNIT = r"(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_PART = re.compile(f"({_NUMBER})({_UNIT})")
_DURATION = re.compile(f"[-+]?(?:{_NUMBER}{_UNIT})+")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def parse_duration(text: str) -> float:
    """Seconds from Go's time.ParseDuration syntax ('1m30s', '500ms', '0', '-1h'); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}")
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError(f'time: invalid duration "{text}"')
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Go's Duration.String() for whole milliseconds and up ('1m30s', '500ms', '0s')."""
    if seconds == 0:
        return "0s"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:g}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = (f"{int(h)}h" if h else "") + (f"{int(m)}m" if h or m else "") + f"{s:g}s"
    return sign + out


def parse_flag_duration(text: str) -> float:
    """A non-negative duration flag value in seconds: Go's notation, or a bare number of seconds."""
    if _SECONDS.fullmatch(text or ""):
        return float(text)
    seconds = parse_duration(text)
    if seconds < 0 or text.startswith("-"):
        raise ValueError(f'invalid duration "{text}": must not be negative')
    return seconds


def duration_flag(text: str) -> float:
    """argparse ``type`` for duration flags (see :func:`parse_flag_duration`); errors name the
    value and an example."""
    try:
        return parse_flag_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (e.g. 30s, 1m30s, 100ms, or a number of seconds)") from None
