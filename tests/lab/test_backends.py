"""Which backend joins each lab node pair: what the layout calls for, and what the daemon's log says."""

from __future__ import annotations

import pytest

from podnet.netlab.lab import backends
from podnet.netlab.lab.topology import LabSpec, plan

EXPECTED = [
    pytest.param("flat", "auto", 3, {("n1", "n2"): "host-gw", ("n1", "n3"): "host-gw", ("n2", "n3"): "host-gw"},
                 id="flat-auto"),
    pytest.param("routed", "auto", 3, {("n1", "n2"): "vxlan", ("n1", "n3"): "vxlan", ("n2", "n3"): "vxlan"},
                 id="routed-auto"),
    pytest.param("mixed", "auto", 3, {("n1", "n2"): "host-gw", ("n1", "n3"): "vxlan", ("n2", "n3"): "vxlan"},
                 id="mixed-auto"),
    pytest.param("routed", "host-gw", 2, {("n1", "n2"): "host-gw"}, id="routed-forced-host-gw"),
    pytest.param("flat", "vxlan", 2, {("n1", "n2"): "vxlan"}, id="flat-forced-vxlan"),
]


@pytest.mark.parametrize("layout,backend,nodes,want", EXPECTED)
def test_expected_backend_per_pair(layout, backend, nodes, want):
    p = plan(LabSpec(name="b", nodes=nodes, layout=layout, backend=backend))
    got = {(a.name[2:], b.name[2:]): backends.expected(p, a, b) for a, b in backends.pairs(p)}
    assert got == want


LOGS = [
    pytest.param("I1207 21:13:30.470994 1696 overlay.py:677] backend auto: m-n2 10.244.1.0/24 host-gw, "
                 "m-n3 10.244.2.0/24 vxlan\n", {"m-n2": "host-gw", "m-n3": "vxlan"}, id="klog-line"),
    pytest.param("backend auto: a 10.244.1.0/24 vxlan\nsomething else\nbackend auto: a 10.244.1.0/24 host-gw\n",
                 {"a": "host-gw"}, id="last-line-wins"),
    pytest.param("backend vxlan: (no peers)\n", {}, id="no-peers"),
    pytest.param("backend auto: a 10.244.1.0/24 host-gw, a fd00::/64 vxlan\n", {"a": "host-gw+vxlan"},
                 id="dual-stack-mixed"),
    pytest.param("", {}, id="empty"),
    pytest.param("backend auto: a 10.244.1.0/24 ipip, b nonsense\n", {}, id="garbage-ignored"),
]


@pytest.mark.parametrize("text,want", LOGS)
def test_reported_reads_the_daemons_last_summary(text, want):
    assert backends.reported(text) == want


def test_reported_by_reads_the_node_pods_cni_daemon_log(tmp_path):
    p = plan(LabSpec(name="b", nodes=2), run_root=tmp_path)
    assert backends.reported_by(p, p.nodes[0]) == {}
    (p.run_dir / "pods" / "b-n1").mkdir(parents=True)
    (p.run_dir / "pods" / "b-n1" / "host-u1.json").write_text('{"pod": "kube-system/podnet-node-abcde", "uid": "u1"}')
    log = p.run_dir / "logs" / "pods" / "kube-system_podnet-node-abcde_u1" / "cni-daemon"
    log.mkdir(parents=True)
    (log / "0.log").write_text("backend auto: b-n2 10.244.1.0/24 host-gw\n")
    assert backends.reported_by(p, p.nodes[0]) == {"b-n2": "host-gw"}
    assert backends.reported_by(p, p.nodes[1]) == {}
