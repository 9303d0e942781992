"""policy/ipsetnl.py and the member-delta path: requests decoded by pyroute2 (an independent decoder),
then applied to real ipsets in a namespace of the test's own (root); a peer pod's new address reaches
the kernel's set with no ``ipset`` or ``iptables-restore`` exec."""

from __future__ import annotations

import os

import pytest
from pyroute2.netlink.nfnetlink.ipset import ipset_msg

from podnet.host.netns import NetnsPool
from podnet.policy import render as r
from podnet.policy.ipsetnl import IPSET_CMD_ADD, IPSET_CMD_DEL, member_messages
from podnet.policy.kernel import KernelError, KernelRunner
from podnet.policy.model import AddressSet, Allow, PodVerdict
from podnet.policy.programmer import Programmer

ENCODED = {
    # name: (deletions, additions, [(command, set, address)])
    "one IPv4 deletion then one addition": ([("S4", "10.1.0.1")], [("S4", "10.1.0.2")],
                                            [(IPSET_CMD_DEL, "S4", "10.1.0.1"), (IPSET_CMD_ADD, "S4", "10.1.0.2")]),
    "IPv6 address": ([], [("S6", "fd00::1")], [(IPSET_CMD_ADD, "S6", "fd00::1")]),
    "long set name": ([], [("PODNET-PS4-0123456789ABCDEF", "10.0.0.9")],
                      [(IPSET_CMD_ADD, "PODNET-PS4-0123456789ABCDEF", "10.0.0.9")]),
}


@pytest.mark.parametrize("dels, adds, want", ENCODED.values(), ids=ENCODED.keys())
def test_requests_decode_as_pyroute2_reads_them(dels, adds, want):
    got = []
    for seq, name, raw in member_messages(dels, adds, seq=7):
        msg = ipset_msg(raw)
        msg.decode()
        assert msg["header"]["sequence_number"] == seq and msg["header"]["flags"] == 5  # REQUEST | ACK, no EXCL
        assert msg["header"]["length"] == len(raw)
        assert msg.get_attr("IPSET_ATTR_PROTOCOL") == 6
        ip = msg.get_attr("IPSET_ATTR_DATA").get_attr("IPSET_ATTR_IP_FROM")  # pyroute2's name for IPSET_ATTR_IP
        six = msg["nfgen_family"] == 10
        addr = ip.get_attr("IPSET_ATTR_IPADDR_IPV6" if six else "IPSET_ATTR_IPADDR_IPV4")
        got.append((msg["header"]["type"] & 0xFF, msg.get_attr("IPSET_ATTR_SETNAME"), addr))
    assert got == want
    assert [s for s, _, _ in member_messages(dels, adds, seq=7)] == list(range(7, 7 + len(want)))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def node():
    pool = NetnsPool("pnt-s5pp-")
    try:
        yield pool.netns("node")
    finally:
        pool.close()


def members(node, name: str) -> set[str]:
    return set(node.run("ipset", "list", name).split("Members:\n", 1)[1].split())


@pytest.mark.root
@needs_root
async def test_member_changes_reach_the_namespace_sets(node):
    k = KernelRunner(4, "legacy", netns=node.name)
    await k.ipset_restore("create A hash:ip family inet\ncreate B hash:ip family inet6\n")
    await k.ipset_update([], [("A", "10.1.0.1"), ("A", "10.1.0.2"), ("B", "fd00::1")])
    await k.ipset_update([("A", "10.1.0.1"), ("A", "10.9.9.9")], [("A", "10.1.0.2"), ("A", "10.1.0.3")])  # -exist
    assert members(node, "A") == {"10.1.0.2", "10.1.0.3"} and members(node, "B") == {"fd00::1"}
    many = [("A", f"10.5.{i // 250}.{i % 250 + 1}") for i in range(1000)]  # several batches
    await k.ipset_update([], many)
    assert len(members(node, "A")) == 1002
    with pytest.raises(KernelError, match="set NOPE"):
        await k.ipset_update([], [("NOPE", "10.1.0.1")])
    with pytest.raises(KernelError, match="set A"):
        await k.ipset_update([], [("A", "fd00::2")])  # wrong family
    await k.ipset_update([("A", "10.1.0.2")], [])  # the socket still serves after a refusal
    assert "10.1.0.2" not in members(node, "A")
    assert node.run("ipset", "list", "-n").split() == ["A", "B"]


class CountingRunner(KernelRunner):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.execs: list[str] = []

    async def _run(self, argv, stdin=None):
        self.execs.append(argv[0])
        return await super()._run(argv, stdin)


def verdict(peers: tuple[str, ...]) -> dict[str, PodVerdict]:
    return {"x/a": PodVerdict("x/a", ("10.1.0.1",), (Allow(AddressSet("pods|x|b", peers), None),), None)}


@pytest.mark.root
@needs_root
async def test_a_peer_address_change_execs_no_tool(node):
    k = CountingRunner(4, "legacy", netns=node.name)
    prog = Programmer(k)
    await prog.apply(verdict(("10.1.0.2", "10.1.0.3")))
    name = r.set_name("pods|x|b", 4)
    k.execs.clear()
    applied = await prog.apply(verdict(("10.1.0.3", "10.1.0.4")))
    assert k.execs == [] and applied.sets_written == 1 and not applied.chains_written
    assert members(node, name) == {"10.1.0.3", "10.1.0.4"}
