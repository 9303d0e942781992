"""--nodeport-addresses with kube-proxy's keywords: parsing, resolution, per-family CIDRs,
the Node lookup behind 'primary', and packet verdicts with the resolved addresses."""

from __future__ import annotations

import pytest

from podnet.kube.objects import parse_node
from podnet.proxy import nodeports
from podnet.proxy.cli import build_config, parser
from podnet.proxy.daemon import Config
from podnet.proxy.node import fetch_primary_ips, nodeport_cidrs
from podnet.proxy.testing import NODE_IP, ctx, ep, program, slice_, svc
from podnet.proxy.trace import Packet

PARSE = [
    ("cidrs-canonical", ["192.168.0.7/24", " fd00::1/64 "], ("192.168.0.0/24", "fd00::/64")),
    ("keywords-any-case", ["Primary", "LOCALHOST", "all"], ("primary", "localhost", "all")),
    ("mixed-deduplicated", ["primary", "10.0.0.0/8", "primary", "10.0.0.1/8"], ("primary", "10.0.0.0/8")),
    ("empty-entries-skipped", ["", " "], ()),
]


@pytest.mark.parametrize("entries,want", [c[1:] for c in PARSE], ids=[c[0] for c in PARSE])
def test_parse(entries, want):
    assert nodeports.parse(entries) == want


@pytest.mark.parametrize("bad", ["prime", "10.0.0.300/8", "default-route"], ids=["typo", "bad-cidr", "old-keyword"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError, match="neither a CIDR nor"):
        nodeports.parse([bad])


def node(*addresses):
    return parse_node({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}})


PRIMARY = [
    ("internal-first", node(("ExternalIP", "203.0.113.5"), ("InternalIP", "192.168.77.11")), ("192.168.77.11",)),
    ("external-when-no-internal", node(("ExternalIP", "203.0.113.5"), ("Hostname", "n1")), ("203.0.113.5",)),
    ("dual-stack-pair", node(("InternalIP", "192.168.77.11"), ("InternalIP", "192.168.77.12"), ("InternalIP", "fd00::11")),
     ("192.168.77.11", "fd00::11")),
    ("no-addresses", node(("Hostname", "n1")), ()),
    ("no-node", None, ()),
]


@pytest.mark.parametrize("n,want", [c[1:] for c in PRIMARY], ids=[c[0] for c in PRIMARY])
def test_primary_ips_like_get_node_host_ips(n, want):
    assert nodeports.primary_ips(n) == want


RESOLVE = [
    ("primary-dual", ("primary",), ("192.168.77.11", "fd00::11"), ("192.168.77.11/32", "fd00::11/128")),
    ("primary-loopback-dropped", ("primary",), ("127.0.0.1",), ()),
    ("primary-unknown-means-all", ("primary",), (), ()),
    ("localhost", ("localhost",), (), ("127.0.0.0/8", "::1/128")),
    ("all", ("all",), (), ("0.0.0.0/0", "::/0")),
    ("primary-plus-localhost", ("primary", "localhost"), ("192.168.77.11",), ("192.168.77.11/32", "127.0.0.0/8", "::1/128")),
    ("cidr-and-keyword", ("10.0.0.0/8", "primary"), ("10.1.2.3",), ("10.0.0.0/8", "10.1.2.3/32")),
]


@pytest.mark.parametrize("entries,primary,want", [c[1:] for c in RESOLVE], ids=[c[0] for c in RESOLVE])
def test_resolve(entries, primary, want):
    assert nodeports.resolve(entries, primary) == want


FAMILY = [
    ("unset-every-address", (), 4, ()),
    ("zero-cidr-every-address", ("0.0.0.0/0", "::/0"), 6, ()),
    ("own-family-only", ("192.168.77.11/32", "fd00::11/128"), 4, ("192.168.77.11/32",)),
    ("none-of-this-family", ("192.168.77.11/32",), 6, ("::/128",)),
]


@pytest.mark.parametrize("resolved,family,want", [c[1:] for c in FAMILY], ids=[c[0] for c in FAMILY])
def test_for_family(resolved, family, want):
    assert nodeports.for_family(resolved, family) == want


def test_cli_and_config_file_keep_keywords(tmp_path):
    cfg = build_config(parser().parse_args(["--nodeport-addresses", "primary,localhost,10.1.0.0/16"]))
    assert cfg.nodeport_addresses == ("primary", "localhost", "10.1.0.0/16")
    f = tmp_path / "c.json"
    f.write_text('{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", '
                 '"nodePortAddresses": ["primary"]}')
    assert build_config(parser().parse_args(["--config", str(f)])).nodeport_addresses == ("primary",)
    with pytest.raises(ValueError, match="neither a CIDR"):
        build_config(parser().parse_args(["--nodeport-addresses", "primry"]))


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    async def get(self, res, name, namespace=None):
        self.calls += 1
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


RAW_NODE = {"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.11"}]}}
RAW_BARE = {"metadata": {"name": "n1"}, "status": {}}

FETCH = [
    ("first-try", [RAW_NODE], ("192.168.77.11",), 1, []),
    ("retries-until-addresses", [ConnectionError("down"), RAW_BARE, RAW_NODE], ("192.168.77.11",), 3, [1.0, 2.0]),
    ("gives-up-after-six", [ConnectionError("down")] * 6, (), 6, [1.0, 2.0, 4.0, 8.0, 16.0]),
]


@pytest.mark.parametrize("answers,want,calls,sleeps", [c[1:] for c in FETCH], ids=[c[0] for c in FETCH])
async def test_fetch_primary_ips_retries_like_kube_proxy(answers, want, calls, sleeps):
    slept: list[float] = []

    async def sleep(s):
        slept.append(s)

    client = FakeClient(answers)
    assert await fetch_primary_ips(client, "n1", sleep=sleep) == want
    assert (client.calls, slept) == (calls, sleeps)


def test_nodeport_cidrs_per_family_from_config():
    cfg = Config(nodeport_addresses=("primary", "localhost"))
    assert nodeport_cidrs(cfg, ("192.168.77.11",)) == {4: ("192.168.77.11/32", "127.0.0.0/8"), 6: ("::1/128",)}
    assert nodeport_cidrs(Config(nodeport_addresses=("primary",)), ()) == {4: (), 6: ()}


OTHER_IP = "192.168.9.2"
NP = [svc(type="NodePort", ports=((80, "TCP", "p80", 30080),))]
EPS = [slice_(endpoints=[ep("10.0.1.1")])]
FLOWS = [
    ("primary-accepts-primary-ip", ("primary",), Packet("203.0.113.9", NODE_IP, 30080), ("10.0.1.1:80",)),
    ("primary-refuses-other-local-ip", ("primary",), Packet("203.0.113.9", OTHER_IP, 30080), ()),
    ("primary-refuses-localhost", ("primary",), Packet("127.0.0.1", "127.0.0.1", 30080, local_origin=True), ()),
    ("primary-plus-localhost", ("primary", "localhost"), Packet("127.0.0.1", "127.0.0.1", 30080, local_origin=True),
     ("10.0.1.1:80",)),
    ("all-accepts-every-local-ip", ("all",), Packet("203.0.113.9", OTHER_IP, 30080), ("10.0.1.1:80",)),
]


@pytest.mark.parametrize("entries,pkt,endpoints", [c[1:] for c in FLOWS], ids=[c[0] for c in FLOWS])
def test_nodeport_verdicts_with_keywords(entries, pkt, endpoints):
    cidrs = nodeport_cidrs(Config(nodeport_addresses=entries), (NODE_IP,))[4]
    _, tracer, _ = program(NP, EPS, ctx(node_ips=("127.0.0.1", NODE_IP, OTHER_IP), nodeport_cidrs=cidrs))
    assert tracer.trace(pkt).endpoints == endpoints
