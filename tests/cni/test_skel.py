"""The CNI protocol in-process: env + stdin -> stdout + exit code, for every verb and version."""

from __future__ import annotations

import json

import pytest

from podnet.cni import skel, version
from podnet.cni.types import CniError, IPConfig, build_result

BASE_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin"}


def conf(v: str = "1.0.0", **kw) -> bytes:
    return json.dumps({"cniVersion": v, "name": "podnet", "type": "podnet-cni", **kw}).encode()


class Recorder:
    """A skel.Handler that records the requests it saw and returns a fixed dual-stack result."""

    def __init__(self, fail: CniError | None = None) -> None:
        self.seen: list[skel.Request] = []
        self.fail = fail

    async def _go(self, req):
        self.seen.append(req)
        if self.fail:
            raise self.fail

    async def add(self, req):
        await self._go(req)
        ips = [IPConfig("10.244.1.2/32", "10.244.1.1"), IPConfig("fd00::2/128", "fd00::1")]
        prev = version.upgrade(req.conf.prev_result) if req.conf.prev_result else None
        return build_result(req.conf.cni_version, {"name": "pnc1", "mac": "aa:aa:aa:aa:aa:aa"},
                            {"name": "eth0", "mac": "bb:bb:bb:bb:bb:bb", "mtu": 1500, "sandbox": req.netns},
                            ips, [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400}], {}, prev)

    delete = check = status = gc = _go


async def call(env: dict, stdin: bytes, handler=None) -> tuple[int, dict | None, Recorder]:
    h = handler or Recorder()
    resp = await skel.dispatch(env, stdin, h)
    return resp.code, (json.loads(resp.stdout) if resp.stdout else None), h


ERROR_CASES = [
    ("no-command", {"CNI_COMMAND": ""}, conf(), 4, "CNI_COMMAND"),
    ("unknown-command", {"CNI_COMMAND": "FROB"}, conf(), 4, "FROB"),
    ("missing-ifname", {"CNI_IFNAME": ""}, conf(), 4, "CNI_IFNAME"),
    ("missing-netns-add", {"CNI_NETNS": ""}, conf(), 4, "CNI_NETNS"),
    ("missing-two", {"CNI_NETNS": "", "CNI_CONTAINERID": ""}, conf(), 4, "CNI_CONTAINERID, CNI_NETNS"),
    ("missing-path", {"CNI_PATH": ""}, conf(), 4, "CNI_PATH"),
    ("bad-containerid", {"CNI_CONTAINERID": "-bad id"}, conf(), 4, "CNI_CONTAINERID"),
    ("bad-ifname-long", {"CNI_IFNAME": "x" * 16}, conf(), 4, "CNI_IFNAME"),
    ("bad-ifname-slash", {"CNI_IFNAME": "a/b"}, conf(), 4, "CNI_IFNAME"),
    ("malformed-json", {}, b"{", 6, "decode"),
    ("json-not-object", {}, b"[1]", 6, "not a JSON object"),
    ("empty-stdin", {}, b"", 6, "decode"),
    ("unknown-version", {}, conf("2.0.0"), 1, "2.0.0"),
    ("old-version", {}, conf("0.2.0"), 1, "0.2.0"),
    ("missing-name", {}, json.dumps({"cniVersion": "1.0.0", "type": "podnet-cni"}).encode(), 7, "name"),
    ("check-too-old", {"CNI_COMMAND": "CHECK"}, conf("0.3.1"), 1, "CHECK"),
    ("gc-too-old", {"CNI_COMMAND": "GC"}, conf("1.0.0"), 1, "GC"),
    ("status-too-old", {"CNI_COMMAND": "STATUS"}, conf("1.0.0"), 1, "STATUS"),
    ("args-bad-pair", {"CNI_ARGS": "K8S_POD_NAME"}, conf(), 4, "CNI_ARGS"),
    ("args-unknown-key", {"CNI_ARGS": "FOO=bar"}, conf(), 2, "FOO='bar'"),
    ("bad-prevresult", {}, conf(prevResult=[1]), 6, "prevResult"),
    ("bad-valid-attachments", {"CNI_COMMAND": "GC"}, conf("1.1.0", **{"cni.dev/valid-attachments": [1]}), 7,
     "valid-attachments"),
]


@pytest.mark.parametrize("env_over,stdin,code,needle", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
async def test_bad_input_gets_spec_error(env_over, stdin, code, needle):
    rc, out, h = await call({**BASE_ENV, **env_over}, stdin)
    assert rc == code
    assert out["code"] == code and needle in out["msg"]
    assert out["cniVersion"] in version.SUPPORTED
    assert h.seen == []  # nothing reached the handler


@pytest.mark.parametrize("v", version.SUPPORTED)
async def test_add_result_converted_to_config_version(v):
    rc, out, _ = await call(BASE_ENV, conf(v))
    assert rc == 0 and out["cniVersion"] == v
    eth0 = out["interfaces"][out["ips"][0]["interface"]]
    assert eth0 == {**eth0, "name": "eth0", "sandbox": "/var/run/netns/x"}
    has_ip_version = [ip.get("version") for ip in out["ips"]]
    if v.startswith("0."):
        assert has_ip_version == ["4", "6"]
    else:
        assert has_ip_version == [None, None]
    assert ("mtu" in eth0) == (v == "1.1.0")
    assert ("mtu" in out["routes"][0]) == (v == "1.1.0")


async def test_version_needs_only_command_and_ignores_stdin():
    rc, out, _ = await call({"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy"}, b"garbage")
    assert rc == 0 and out == {"cniVersion": "1.1.0", "supportedVersions": list(version.SUPPORTED)}


@pytest.mark.parametrize("verb,v", [("DEL", "0.3.0"), ("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")])
async def test_other_verbs_succeed_silently(verb, v):
    env = {**BASE_ENV, "CNI_COMMAND": verb}
    rc, out, h = await call(env, conf(v))
    assert (rc, out) == (0, None) and h.seen[0].verb == verb


async def test_del_without_netns_is_accepted():
    rc, _, h = await call({**BASE_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, conf())
    assert rc == 0 and h.seen[0].netns == ""


async def test_k8s_args_and_ignore_unknown():
    env = {**BASE_ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=bar;MAC=02:00:00:00:00:01"}
    rc, _, h = await call(env, conf())
    assert rc == 0 and h.seen[0].pod == "ns/p" and h.seen[0].args["FOO"] == "bar"


async def test_prev_result_passes_through_at_its_version():
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "net1"}],
            "ips": [{"version": "4", "address": "192.168.0.5/24", "interface": 0}], "routes": [], "dns": {}}
    rc, out, _ = await call(BASE_ENV, conf("0.4.0", prevResult=prev))
    assert rc == 0
    assert out["interfaces"][0] == {"name": "net1"} and out["ips"][0] == prev["ips"][0]
    # our IPs point at our eth0, after the chained interfaces
    assert [out["interfaces"][ip["interface"]]["name"] for ip in out["ips"][1:]] == ["eth0", "eth0"]


async def test_valid_attachments_old_and_new_keys_are_merged():
    c = conf("1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                         "cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}]})
    rc, _, h = await call({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, c)
    assert rc == 0 and {a.container_id for a in h.seen[0].conf.valid_attachments} == {"a", "b"}


async def test_handler_errors_keep_their_code_and_crashes_become_999():
    rc, out, _ = await call(BASE_ENV, conf(), Recorder(CniError(11, "busy")))
    assert (rc, out["code"], out["msg"]) == (11, 11, "busy")
    rc, out, _ = await call(BASE_ENV, conf(), Recorder(RuntimeError("boom")))
    assert rc == 999 and "boom" in out["msg"]


async def test_unknown_config_keys_are_kept():
    rc, _, h = await call(BASE_ENV, conf(extra={"x": 1}, runtimeConfig={"portMappings": []}))
    assert rc == 0 and h.seen[0].conf.raw["extra"] == {"x": 1}
