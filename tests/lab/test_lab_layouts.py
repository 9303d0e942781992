"""The whole ``lab check`` table on every underlay layout, and the picture of each running lab.

One real lab per case (up, check, draw, down, nothing left):

- routed (2 nodes, each in its own subnet behind a router that knows no pod CIDR) and mixed
  (n1+n2 on one subnet, n3 on another), both with ``--backend auto``: every row passes, and each
  node-pair row shows the backend the daemon reports (host-gw on one subnet, VXLAN across). The
  flat layout (2 nodes on one bridge) is the default one, where tests/lab/test_lab_e2e.py runs
  the same table and draw and checks its node pair on host-gw;
- routed with ``--backend host-gw``: the node-pair row passes because pod->pod across the
  router finds no path, while the generic "across nodes" row fails, as host-gw must there. Only
  the pod->pod rows run (``--case``): every Service and DNS row that needs a pod on the other node
  can only fail there too, each after waiting out its own timeout, and none is about the backend.

Cost (measured on the shared 2-core development machine): about 60-70 s per auto case (up ~20 s,
check ~25 s, draw, down); the host-gw case about 75 s (its check 15 s, where the whole table took
88 s waiting on its failing rows). Marked slow.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.netlab.lab.teardown import leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODNET = str(Path(sys.executable).parent / "podnet")


def podnet(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([PODNET, "lab", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab():
    name = "l" + secrets.token_hex(3)
    try:
        yield name
    finally:
        podnet("down", "--name", name, timeout=60)
        assert leftovers(name) == []


def rows(table: str) -> dict[str, str]:
    """check name -> its whole line, from the wide table."""
    out = {}
    for line in table.splitlines():
        for result in ("  pass  ", "  FAIL  ", "  skip  "):
            if result in line:
                out[line.split("  ")[0].strip()] = line
    return out


AUTO = [
    pytest.param("routed", 2, {"n1->n2 pod->pod, across subnets": "vxlan"}, id="routed"),
    pytest.param("mixed", 3, {"n1->n2 pod->pod, same subnet": "host-gw", "n1->n3 pod->pod, across subnets": "vxlan",
                              "n2->n3 pod->pod, across subnets": "vxlan"}, id="mixed"),
]


@pytest.mark.parametrize("layout,nodes,pairs", AUTO)
def test_check_table_passes_on_every_layout(lab, tmp_path, layout, nodes, pairs):
    up = podnet("up", "--name", lab, "--underlay", layout, "--nodes", str(nodes), "--pods-per-node", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"{layout} underlay" in up.stdout
    check = podnet("check", "--name", lab, "--wide")
    got = rows(check.stdout)
    assert check.returncode == 0, check.stdout + check.stderr
    for name, backend in pairs.items():
        assert name in got and "  pass  " in got[name], (name, check.stdout)
        assert f": {backend};" in got[name], got[name]
    assert not any("  FAIL  " in line for line in got.values())
    svg = tmp_path / "lab.svg"
    drawn = podnet("draw", "--lab", lab, "-o", str(svg))
    assert drawn.returncode == 0, drawn.stderr
    text = svg.read_text()
    for name, backend in pairs.items():
        a, b = name.split()[0].split("->")
        assert f"→ {lab}-{b}: {backend}" in text, (name, backend)
    assert f"netns pnl-{lab}-n1-p" in text


def test_host_gw_cannot_cross_the_router(lab):
    up = podnet("up", "--name", lab, "--underlay", "routed", "--backend", "host-gw", "--nodes", "2",
                "--pods-per-node", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    check = podnet("check", "--name", lab, "--wide", "--case", "pod->pod, .*", "--case", r"n\d+->n\d+ pod->pod, .*")
    got = rows(check.stdout)
    assert check.returncode == 1, check.stdout
    assert set(got) == {"pod->pod, same node", "pod->pod, across nodes", "n1->n2 pod->pod, across subnets"}, got
    pair = got["n1->n2 pod->pod, across subnets"]
    assert "  pass  " in pair and "daemon on" in pair and ": host-gw;" in pair, pair
    assert "no path" in pair
    assert "  FAIL  " in got["pod->pod, across nodes"]
