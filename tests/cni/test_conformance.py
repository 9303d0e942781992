"""One edge-case script, run against Debian's reference plugins (bridge + host-local) and against podnet-cni.

Each case returns an observable outcome. Where the spec requires one outcome
both plugins must agree (``SAME``); where podnet is deliberately different
the table records both behaviours (``BETTER``/``DIFFERENT``, with the reason),
so a change on either side shows up here. The reference speaks CNI up to
1.0.0, so the shared cases run at 1.0.0 (and 0.3.1 for result shapes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge") or os.geteuid() != 0,
                                                   reason="needs root and containernetworking-plugins")]


def ok_add_shape(node, pool, tmp):
    pod = pool.netns("p")
    code, res = node.cni("ADD", "a1", pod.path)
    eth0 = [i for i, itf in enumerate(res["interfaces"]) if itf["name"] == "eth0" and itf.get("sandbox") == pod.path]
    ip = res["ips"][0]["address"].split("/")[0]
    return (code, len(eth0), all(x["interface"] in eth0 for x in res["ips"]), ip in pod.ip("addr", "show", "eth0"))


def result_shape_031(node, pool, tmp):
    pod = pool.netns("p")
    code, res = node.cni("ADD", "a1", pod.path, version="0.3.1")
    return (code, res["cniVersion"], [x.get("version") for x in res["ips"]])


def duplicate_ifname(node, pool, tmp):
    pod = pool.netns("p")
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    code, out = node.cni("ADD", "a1", pod.path)
    return (code, "eth0" in out["msg"], node.reservations(), node.host_veths())


def del_twice(node, pool, tmp):
    pod = pool.netns("p")
    node.cni("ADD", "a1", pod.path)
    return (node.cni("DEL", "a1", pod.path)[0], node.cni("DEL", "a1", pod.path)[0], node.reservations(),
            node.host_veths())


def del_netns_missing(node, pool, tmp):
    pod = pool.netns("p")
    node.cni("ADD", "a1", pod.path)
    pod.ip("link", "del", "eth0")
    return (node.cni("DEL", "a1", "/var/run/netns/pnt-cni-gone")[0], node.reservations())


def del_netns_empty(node, pool, tmp):
    pod = pool.netns("p")
    node.cni("ADD", "a1", pod.path)
    return (node.cni("DEL", "a1", "")[0], node.reservations())


def del_netns_not_a_netns(node, pool, tmp):
    pod = pool.netns("p")
    node.cni("ADD", "a1", pod.path)
    f = tmp / "stale-bind-mount"
    f.write_text("")
    return (node.cni("DEL", "a1", str(f))[0] == 0, len(node.reservations()))


def malformed_json(node, pool, tmp):
    return node.cni("ADD", "a1", pool.netns("p").path, stdin=b"{")[0]


def unknown_version(node, pool, tmp):
    return node.cni("ADD", "a1", pool.netns("p").path, version="0.9.9")[0]


def version_110(node, pool, tmp):
    return node.cni("ADD", "a1", pool.netns("p").path, version="1.1.0")[0]


def missing_ifname(node, pool, tmp):
    code, out = node.cni("ADD", "a1", pool.netns("p").path, env={"CNI_IFNAME": None})
    return (code, "CNI_IFNAME" in out["msg"])


def check_ok_then_broken(node, pool, tmp):
    pod = pool.netns("p")
    _, res = node.cni("ADD", "a1", pod.path)
    first = node.cni("CHECK", "a1", pod.path, prevResult=res)[0]
    pod.ip("route", "del", "default")
    return (first, node.cni("CHECK", "a1", pod.path, prevResult=res)[0] != 0)


def version_verb(node, pool, tmp):
    code, out = node.cni("VERSION", stdin=b'{"cniVersion":"1.0.0"}')
    return (code, {"0.3.1", "0.4.0", "1.0.0"} <= set(out["supportedVersions"]))


def gc_verb(node, pool, tmp):
    pod = pool.netns("p")
    node.cni("ADD", "a1", pod.path)
    code = node.cni("GC", version="1.0.0" if node.plugin_binary.endswith("bridge") else "1.1.0",
                    **{"cni.dev/valid-attachments": []})[0]
    return (code, len(node.reservations()))


def add_netns_missing(node, pool, tmp):
    return (node.cni("ADD", "a1", "/var/run/netns/pnt-cni-gone")[0] != 0, node.reservations())


def pod_reaches_gateway_and_node(node, pool, tmp):
    """The pod's default gateway answers TCP (RST from the node): pod -> node connectivity."""
    pod = pool.netns("p")
    _, res = node.cni("ADD", "a1", pod.path)
    gw = res["ips"][0]["gateway"]
    out = pod.run("python3", "-c", f"""
import socket
try:
    socket.create_connection(("{gw}", 9), timeout=3); print("open")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e)
""").strip()
    return out


def _nth(node, n: int) -> str:
    return node.pod_cidrs[0].rsplit(".", 1)[0] + f".{n}"


def requested_ip_cni_args(node, pool, tmp):
    """podman's --ip: CNI_ARGS IP=."""
    pod = pool.netns("p")
    want = _nth(node, 50)
    code, res = node.cni("ADD", "a1", pod.path, env={"CNI_ARGS": f"IgnoreUnknown=1;IP={want}"})
    return (code, res["ips"][0]["address"].split("/")[0] == want, f"inet {want}/" in pod.ip("addr", "show", "eth0"))


def requested_ip_runtime_config(node, pool, tmp):
    """The ips capability, as libcni and multus pass it (CIDR form)."""
    pod = pool.netns("p")
    want = _nth(node, 51)
    code, res = node.cni("ADD", "a1", pod.path, runtimeConfig={"ips": [f"{want}/24"]})
    return (code, res["ips"][0]["address"].split("/")[0] == want)


def requested_mac(node, pool, tmp):
    pod = pool.netns("p")
    code, _ = node.cni("ADD", "a1", pod.path, env={"CNI_ARGS": "IgnoreUnknown=1;MAC=02:00:00:00:77:50"})
    return (code, "02:00:00:00:77:50" in pod.ip("link", "show", "eth0"))


def requested_ip_outside_range(node, pool, tmp):
    code, out = node.cni("ADD", "a1", pool.netns("p").path, env={"CNI_ARGS": "IgnoreUnknown=1;IP=10.9.9.9"})
    return (code, "10.9.9.9" in out["msg"], node.reservations(), len(node.host_veths()))


def requested_ip_taken(node, pool, tmp):
    env = {"CNI_ARGS": f"IgnoreUnknown=1;IP={_nth(node, 52)}"}
    first = node.cni("ADD", "a1", pool.netns("p").path, env=env)[0]
    code, out = node.cni("ADD", "a2", pool.netns("p").path, env=env)
    return (first, code, _nth(node, 52) in out["msg"], len(node.reservations()), len(node.host_veths()))


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable
    kind: str  # SAME | BETTER | DIFFERENT
    reference: object = None
    podnet: object = None
    why: str = ""


CASES = [
    Case("add-result-has-eth0-sandbox", ok_add_shape, "SAME", (0, 1, True, True)),
    Case("result-0.3.1-has-ip-version", result_shape_031, "SAME", (0, "0.3.1", ["4"])),
    Case("del-twice", del_twice, "SAME", (0, 0, [], [])),
    Case("del-netns-missing", del_netns_missing, "SAME", (0, [])),
    Case("del-netns-empty", del_netns_empty, "SAME", (0, [])),
    Case("malformed-json", malformed_json, "SAME", 6),
    Case("unknown-version", unknown_version, "SAME", 1),
    Case("missing-ifname", missing_ifname, "SAME", (4, True)),
    Case("check-ok-then-broken", check_ok_then_broken, "SAME", (0, True)),
    Case("version-verb", version_verb, "SAME", (0, True)),
    Case("add-netns-missing", add_netns_missing, "SAME", (True, [])),
    Case("pod-reaches-gateway", pod_reaches_gateway_and_node, "SAME", "refused"),
    Case("requested-ip-cni-args", requested_ip_cni_args, "SAME", (0, True, True)),
    Case("requested-ip-runtime-config", requested_ip_runtime_config, "SAME", (0, True)),
    Case("requested-mac-cni-args", requested_mac, "SAME", (0, True)),
    Case("requested-ip-outside-range", requested_ip_outside_range, "BETTER", (999, True, [], 1), (4, True, [], 0),
         "both refuse and name the address; the reference answers 999 and leaves its host veth behind; podnet "
         "answers 4 (CNI_ARGS is the bad variable) and leaves nothing"),
    Case("requested-ip-taken", requested_ip_taken, "BETTER", (0, 999, True, 1, 2), (0, 11, True, 1, 1),
         "both refuse and name the address; the reference answers 999 and leaves a second host veth; podnet "
         "answers 11 (try again later: usually the old sandbox's DEL has not run yet) and rolls back"),
    Case("duplicate-ifname", duplicate_ifname, "DIFFERENT", (999, True, [], []), (4, True, [], []),
         "both refuse and roll back; podnet uses code 4 (CNI_IFNAME is the bad variable) instead of 999"),
    Case("del-netns-not-a-netns", del_netns_not_a_netns, "BETTER", (False, 1), (True, 0),
         "reference fails DEL on a non-nsfs path (unknown FS magic) and keeps the IP; podnet releases"),
    Case("cni-version-1.1.0", version_110, "BETTER", 1, 0, "reference speaks up to 1.0.0; podnet speaks 1.1.0"),
    Case("gc", gc_verb, "BETTER", (4, 1), (0, 0), "reference has no GC (code 4 unknown CNI_COMMAND), leaks the IP"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_side_by_side(case, ref_node, make_node, pool, tmp_path):
    podnet = make_node(("10.244.1.0/24",))
    got_ref = case.run(ref_node, pool, tmp_path / "ref")
    got_podnet = case.run(podnet, pool, tmp_path / "podnet")
    record = {"case": case.name, "kind": case.kind, "reference": got_ref, "podnet": got_podnet, "why": case.why}
    print(json.dumps(record, default=str))
    if case.kind == "SAME":
        assert got_ref == case.reference, "reference plugin changed behaviour"
        assert got_podnet == got_ref
    else:
        assert (got_ref, got_podnet) == (case.reference, case.podnet)


@pytest.fixture(autouse=True)
def _dirs(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "podnet").mkdir()
