"""The reconnect policy as a table: delays grow, are capped, jittered, never zero."""

from __future__ import annotations

import pytest

from podnet.kube.backoff import Backoff, decide
from podnet.kube.watch import watch_timeout_seconds

POLICY = Backoff(initial=0.5, factor=2.0, maximum=30.0, jitter=0.5)


@pytest.mark.parametrize(
    "status, attempt, rand, retry, delay",
    [
        pytest.param(None, 1, 0.0, True, 0.5, id="first-transport-error"),
        pytest.param(None, 2, 0.0, True, 1.0, id="second"),
        pytest.param(None, 5, 0.0, True, 8.0, id="fifth"),
        pytest.param(None, 7, 0.0, True, 30.0, id="capped"),
        pytest.param(None, 1000, 0.0, True, 30.0, id="huge-attempt-no-overflow"),
        pytest.param(None, 1, 0.999, True, 0.5 * 1.4995, id="jitter-up-to-half"),
        pytest.param(None, 7, 0.999, True, 30.0, id="jitter-never-exceeds-max"),
        pytest.param(None, 6, 0.999, True, 16 * 1.4995, id="jitter-below-max"),
        pytest.param(500, 3, 0.0, True, 2.0, id="server-error"),
        pytest.param(503, 1, 0.5, True, 0.625, id="unavailable-jittered"),
        pytest.param(429, 1, 0.0, True, 1.0, id="throttled-at-least-1s"),
        pytest.param(403, 1, 0.0, True, 30.0, id="forbidden-retries-slowly"),
        pytest.param(404, 1, 0.0, True, 30.0, id="not-found-retries-slowly"),
        pytest.param(None, 0, 0.0, True, 0.5, id="attempt-zero-treated-as-first"),
    ],
)
def test_decide(status, attempt, rand, retry, delay):
    action = decide(status, attempt, rand, POLICY)
    assert action.retry is retry
    assert action.delay == pytest.approx(delay)
    assert action.delay > 0 and action.reason


def test_fatal_statuses_can_give_up():
    assert decide(401, 1, 0.0, POLICY, fatal_ok=False).retry is False
    assert decide(500, 1, 0.0, POLICY, fatal_ok=False).retry is True


def test_delays_are_monotonic_without_jitter():
    delays = [decide(None, n, 0.0, POLICY).delay for n in range(1, 20)]
    assert delays == sorted(delays) and min(delays) > 0 and max(delays) == 30.0


@pytest.mark.parametrize(
    "rand, expected", [pytest.param(0.0, 300, id="min"), pytest.param(0.5, 450, id="mid"),
                       pytest.param(1.0, 599, id="max")]
)
def test_watch_timeout_is_randomized_between_5_and_10_minutes(rand, expected):
    assert watch_timeout_seconds(rand) == expected
