"""One log and version shape for every podnet binary, as Kubernetes components have.

* text (default): klog's header, ``I1207 18:15:29.123456   12345 file.py:42] msg``
  (severity I/W/E, month and day, local time with microseconds, the process id
  right-aligned in 7 columns, the source file's base name and line);
* ``--logging-format json``: component-base's JSON shape, one object a line:
  ``{"ts": <ms since the epoch>, "caller": "file.py:42", "msg": ..., "v": 0}``;
  errors carry no ``v`` and carry ``"err"`` when an exception is attached;
* ``-v N`` / ``--v N``: klog verbosity. ``log.info`` and up are V(0); a record
  at level ``INFO - n`` (see :func:`V`) is V(n); ``log.debug`` is V(4), kube-proxy's
  usual detail level. Records above the verbosity are dropped;
* ``--version`` prints ``podnet-<binary> vX.Y.Z`` (``podnet vX.Y.Z`` for the
  ``podnet`` command) and exits 0;
* a configuration error is one line on stderr and :data:`EXIT_CONFIG`; argparse
  errors through :class:`OneLineParser` are one line too (no usage block).

Exit statuses shared by the binaries: 0 done, 1 failed at run time,
:data:`EXIT_CONFIG` (2) the flags or a configuration file cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import IO, Any, NoReturn

EXIT_CONFIG = 2
FORMATS = ("text", "json")
DEBUG_V = 4
"""The klog verbosity that Python's DEBUG level stands for."""
_handler: logging.Handler | None = None


def V(n: int) -> int:
    """The Python level to log a klog V(n) message at: ``log.log(V(2), ...)``."""
    return logging.INFO - n if n > 0 else logging.INFO


def record_v(levelno: int) -> int:
    """klog verbosity of a record below WARNING (0 for INFO and up)."""
    if levelno >= logging.INFO:
        return 0
    if levelno <= logging.DEBUG:
        return DEBUG_V
    return logging.INFO - levelno


def version(binary: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        v = dist_version("podnet")
    except PackageNotFoundError:
        v = "0.0.0"
    return f"podnet-{binary} v{v}" if binary else f"podnet v{v}"


def _severity(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


class KlogFormatter(logging.Formatter):
    """klog's text header, then the message; an exception follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        us = int((record.created % 1) * 1_000_000)
        head = (f"{_severity(record.levelno)}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{us:06d} {record.process or os.getpid():7d} "
                f"{record.filename}:{record.lineno}] ")
        out = head + record.getMessage()
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


class JsonFormatter(logging.Formatter):
    """component-base's JSON logger fields: ts (ms), caller, msg, then v (info) or err (errors)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": round(record.created * 1000, 3),
            "caller": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
        }
        if record.levelno < logging.ERROR:
            obj["v"] = record_v(record.levelno)
        if record.exc_info:
            obj["err"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


class VerbosityFilter(logging.Filter):
    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record_v(record.levelno) <= self.verbosity


def setup(fmt: str = "text", verbosity: int = 0, stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger to one stderr handler in the chosen format; replaces the handler an
    earlier call installed, so a binary can set up from its flags, then again from its config file."""
    global _handler
    if fmt not in FORMATS:
        raise ValueError(f'logging format "{fmt}" is not one of text, json')
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KlogFormatter())
    handler.addFilter(VerbosityFilter(verbosity))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)  # only ours: handlers others installed (e.g. pytest's) stay
    root.addHandler(handler)
    root.setLevel(1 if verbosity >= DEBUG_V else V(verbosity))
    _handler = handler
    return handler


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], binary: str = "", **kw: Any) -> None:
        super().__init__(option_strings, nargs=0, default=argparse.SUPPRESS, **kw)
        self.binary = binary

    def __call__(self, parser: argparse.ArgumentParser, *_a: Any, **_k: Any) -> NoReturn:
        print(version(self.binary))
        parser.exit(0)


def _verbosity(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid verbosity {text!r}: want a number 0 or greater") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid verbosity {text!r}: want a number 0 or greater")
    return n


def add_flags(parser: argparse.ArgumentParser, binary: str, short_v: bool = True, with_version: bool = True) -> None:
    """--logging-format, -v/--v N (default None: not given) and --version on ``parser``."""
    parser.add_argument("--logging-format", choices=FORMATS, default=None,
                        help="log format: text (klog, the default) or json (as Kubernetes components)")
    names = ["-v", "--v"] if short_v else ["--v"]
    parser.add_argument(*names, dest="v", type=_verbosity, default=None, metavar="N",
                        help="log verbosity (klog levels; 4 shows debug detail)")
    if with_version:
        parser.add_argument("--version", action=_Version, binary=binary, help="print the version and exit")


def setup_from_args(args: argparse.Namespace, fmt: str = "text", verbosity: int = 0) -> logging.Handler:
    """setup() with the flags when given, else the defaults passed in (e.g. from a config file)."""
    return setup(getattr(args, "logging_format", None) or fmt,
                 verbosity if getattr(args, "v", None) is None else args.v)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``prog: error: ...``) and exit with EXIT_CONFIG."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def config_error(binary: str, message: object) -> int:
    """One line naming the problem (a log line once :func:`setup` ran, plain text before);
    returns EXIT_CONFIG for ``return`` from main."""
    line = " ".join(str(message).split())
    if _handler is not None and _handler in logging.getLogger().handlers:
        logging.getLogger(f"podnet.{binary}").error("configuration error: %s", line, stacklevel=2)
    else:
        sys.stderr.write(f"podnet-{binary}: configuration error: {line}\n")
    return EXIT_CONFIG
