"""``podnet lab check --case REGEX``: which rows of the e2e check table a set of patterns selects."""

from __future__ import annotations

import re

import pytest

from podnet.netlab.check.checks import SCALE_DOWN, SCALE_UP, row_filter
from podnet.netlab.check.netpol_suite import unmatched_patterns

ROWS = ["pod->pod, same node", "pod->pod, across nodes", "n1->n2 pod->pod, across subnets",
        "pod->ClusterIP balanced", "outside->NodePort lab-n1", SCALE_DOWN, SCALE_UP, "DNS short name (search path)"]


@pytest.mark.parametrize("patterns,selected", [
    pytest.param([], ROWS, id="no-pattern-selects-every-row"),
    pytest.param(["pod->pod, .*"], ["pod->pod, same node", "pod->pod, across nodes"], id="whole-name-must-match"),
    pytest.param(["pod->pod, .*", r"n\d+->n\d+ pod->pod, .*"],
                 ["pod->pod, same node", "pod->pod, across nodes", "n1->n2 pod->pod, across subnets"],
                 id="any-pattern-selects"),
    pytest.param(["scale 1->0.*"], [SCALE_DOWN], id="one-of-the-two-scale-rows"),
    pytest.param(["DNS"], [], id="a-prefix-alone-selects-nothing"),
    pytest.param([".*NodePort.*"], ["outside->NodePort lab-n1"], id="regex-around-the-name"),
])
def test_row_filter(patterns, selected):
    wanted = row_filter(patterns)
    assert [row for row in ROWS if wanted(row)] == selected


def test_bad_pattern_is_rejected_up_front():
    with pytest.raises(re.error):
        row_filter(["("])


@pytest.mark.parametrize("patterns,unmatched", [
    pytest.param([], [], id="none-given"),
    pytest.param(["anp-egress-node-peers", "anp-egress-networks"], [], id="every-pattern-selects"),
    pytest.param(["anp-egress-node-peers", "anp-egress-nodes-deny-fails-closed"],
                 ["anp-egress-nodes-deny-fails-closed"], id="a-retired-case-name-is-reported"),
    pytest.param(["anp-.*", "anp"], ["anp"], id="a-prefix-alone-selects-nothing"),
])
def test_netpol_case_patterns_that_select_nothing(patterns, unmatched):
    assert unmatched_patterns(patterns) == unmatched


def test_netpol_bad_pattern_is_rejected_up_front():
    with pytest.raises(re.error):
        unmatched_patterns(["("])
