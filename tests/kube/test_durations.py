"""Durations in Kubernetes' notation: Go's time.ParseDuration, and the one flag type."""

from __future__ import annotations

import argparse

import pytest

from podnet.kube.durations import duration_flag, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("30s", 30.0, id="seconds"),
    pytest.param("1m30s", 90.0, id="minutes-seconds"),
    pytest.param("100ms", 0.1, id="millis"),
    pytest.param("1.5h", 5400.0, id="fractional-hours"),
    pytest.param(".5s", 0.5, id="leading-dot"),
    pytest.param("1.s", 1.0, id="trailing-dot"),
    pytest.param("2us", 2e-6, id="micros"),
    pytest.param("3\u00b5s", 3e-6, id="micro-sign"),
    pytest.param("7ns", 7e-9, id="nanos"),
    pytest.param("0", 0.0, id="bare-zero"),
    pytest.param("-1m", -60.0, id="negative"),
    pytest.param("+5s", 5.0, id="plus"),
])
def test_parse_duration_as_go(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"), pytest.param("5", id="no-unit"), pytest.param("1d", id="unknown-unit"),
    pytest.param("5 s", id="space"), pytest.param("s", id="no-number"), pytest.param("1m 30s", id="inner-space"),
    pytest.param("\u0665s", id="non-ascii-digit"), pytest.param("5s\n", id="trailing-newline"),
])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    pytest.param(0, "0s", id="zero"), pytest.param(0.5, "500ms", id="millis"), pytest.param(90, "1m30s", id="m-s"),
    pytest.param(3600, "1h0m0s", id="hour"), pytest.param(-2, "-2s", id="negative"),
])
def test_format_duration_as_go(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("30s", 30.0, id="go-notation"),
    pytest.param("1m30s", 90.0, id="go-compound"),
    pytest.param("100ms", 0.1, id="go-millis"),
    pytest.param("10", 10.0, id="bare-seconds"),
    pytest.param("2.5", 2.5, id="bare-fraction"),
    pytest.param("0", 0.0, id="zero"),
])
def test_duration_flag_takes_go_notation_or_seconds(text, seconds):
    assert duration_flag(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    pytest.param("-1s", id="negative"), pytest.param("-1", id="negative-bare"), pytest.param("1x", id="bad-unit"),
    pytest.param("", id="empty"), pytest.param("nan", id="nan"), pytest.param("inf", id="inf"),
])
def test_duration_flag_refuses_with_an_example(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. 30s"):
        duration_flag(text)
