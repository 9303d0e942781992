"""One log and version shape for every binary: klog text, component-base JSON, -v, --version.

klog's header is ``Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg`` (k8s.io/klog/v2
formatHeader); the JSON fields are component-base's logs/json encoder config
(``ts`` in epoch milliseconds, ``caller``, ``msg``, then ``v`` for info or ``err``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.kube import logsetup

KLOG = re.compile(r"(?P<sev>[IWE])(?P<mon>\d\d)(?P<day>\d\d) \d\d:\d\d:\d\d\.\d{6} (?P<pid>[ \d]{7,}) "
                  r"(?P<file>[\w.]+):(?P<line>\d+)\] (?P<msg>.*)")


@pytest.fixture
def out():
    buf = io.StringIO()
    yield buf
    logging.getLogger().removeHandler(logsetup._handler)
    logsetup._handler = None
    logging.getLogger().setLevel(logging.WARNING)


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_text_is_klog_header(out):
    logsetup.setup("text", 0, out)
    logging.getLogger("podnet.t").info("hello %s", "world")
    logging.getLogger("podnet.t").warning("careful")
    logging.getLogger("podnet.t").error("broken")
    got = [KLOG.fullmatch(ln) for ln in lines(out)]
    assert all(got), lines(out)
    assert [(m["sev"], m["file"], m["msg"]) for m in got] == [("I", "test_logsetup.py", "hello world"),
                                                              ("W", "test_logsetup.py", "careful"),
                                                              ("E", "test_logsetup.py", "broken")]
    assert got[0]["pid"] == f"{os.getpid():7d}" and len(got[0]["pid"]) == 7


def test_json_is_component_base_shape(out):
    logsetup.setup("json", 0, out)
    log = logging.getLogger("podnet.t")
    log.info("started")
    try:
        raise RuntimeError("x")
    except RuntimeError:
        log.exception("failed")
    info, err = (json.loads(ln) for ln in lines(out))
    assert list(info) == ["ts", "caller", "msg", "v"] and (info["msg"], info["v"]) == ("started", 0)
    assert re.fullmatch(r"test_logsetup\.py:\d+", info["caller"]) and info["ts"] > 1.6e12  # milliseconds
    assert list(err) == ["ts", "caller", "msg", "err"] and "RuntimeError: x" in err["err"]
    assert out.getvalue().count("\n") == 2  # the traceback stays inside one JSON line


VERBOSITY = [
    ("v0", 0, ["info", "warn"]),
    ("v2", 2, ["info", "v2", "warn"]),
    ("v4", 4, ["info", "v2", "debug", "warn"]),
    ("v9", 9, ["info", "v2", "debug", "v5", "warn"]),
]


@pytest.mark.parametrize("verbosity,want", [v[1:] for v in VERBOSITY], ids=[v[0] for v in VERBOSITY])
def test_verbosity_filters_like_klog(out, verbosity, want):
    logsetup.setup("json", verbosity, out)
    log = logging.getLogger("podnet.t")
    log.info("info")
    log.log(logsetup.V(2), "v2")
    log.debug("debug")
    log.log(logsetup.V(5), "v5")
    log.warning("warn")
    got = [json.loads(ln) for ln in lines(out)]
    assert [g["msg"] for g in got] == want
    assert {g["msg"]: g["v"] for g in got}.get("debug", 4) == 4


def test_setup_twice_keeps_one_handler_and_foreign_handlers(out):
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    try:
        logsetup.setup("text", 0, out)
        logsetup.setup("json", 0, out)
        root = logging.getLogger().handlers
        assert foreign in root and sum(isinstance(h.formatter, (logsetup.KlogFormatter, logsetup.JsonFormatter))
                                       for h in root) == 1
    finally:
        logging.getLogger().removeHandler(foreign)


def test_flags_and_version(capsys):
    p = argparse.ArgumentParser(prog="x")
    logsetup.add_flags(p, "proxy")
    a = p.parse_args(["--logging-format", "json", "--v=3"])
    assert (a.logging_format, a.v) == ("json", 3)
    a = p.parse_args(["-v", "2"])
    assert (a.logging_format, a.v) == (None, 2)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--version"])
    assert e.value.code == 0 and re.fullmatch(r"podnet-proxy v\d+\.\d+\.\d+\n", capsys.readouterr().out)
    assert re.fullmatch(r"podnet v\d+\.\d+\.\d+", logsetup.version(""))


def test_one_line_parser_error(capsys):
    p = logsetup.OneLineParser(prog="podnet-x")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "many"])
    assert e.value.code == logsetup.EXIT_CONFIG
    assert capsys.readouterr().err.splitlines() == ["podnet-x: error: argument --n: invalid int value: 'many'"]


def test_config_error_before_and_after_setup(out, capsys):
    assert logsetup.config_error("x", "bad\nvalue") == 2
    assert capsys.readouterr().err == "podnet-x: configuration error: bad value\n"
    logsetup.setup("text", 0, out)
    logsetup.config_error("x", "bad value")
    (line,) = lines(out)
    m = KLOG.fullmatch(line)
    assert m and m["sev"] == "E" and m["msg"] == "configuration error: bad value"


BINARIES = ["podnet-proxy", "podnet-dns", "podnet-cni", "podnet"]


@pytest.mark.parametrize("binary", BINARIES, ids=BINARIES)
def test_every_binary_prints_its_version(binary):
    exe = Path(sys.executable).with_name(binary)
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and re.fullmatch(rf"{binary} v\d+\.\d+\.\d+\n", res.stdout), res


@pytest.mark.parametrize("binary,argv", [("podnet-proxy", ["--iptables-sync-period", "30"]),
                                         ("podnet-dns", ["--logging-format", "xml"]),
                                         ("podnet-cni", ["daemon", "--v", "-1"]),
                                         ("podnet", ["--logging-format", "xml", "lab", "down"])],
                         ids=BINARIES)
def test_every_binary_refuses_a_bad_logging_or_config_flag_with_status_2(binary, argv):
    exe = Path(sys.executable).with_name(binary)
    res = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
