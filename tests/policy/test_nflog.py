"""podnet.policy.nflog: NFLOG messages decoded (hand-built messages, named cases), one rate-limited
line per denied connection (a fake clock), and the socket in a real network namespace receiving what
an ``NFLOG`` rule sends (a TCP connection whose SYN is retransmitted gives one line)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from podnet.policy import nflog as n
from podnet.policy.render import render

V4 = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + socket.inet_aton("10.1.1.1") + socket.inet_aton("10.1.0.1")
V6 = (bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + socket.inet_pton(socket.AF_INET6, "fd00::1")
      + socket.inet_pton(socket.AF_INET6, "fd00::2"))


def packet_body(prefix: bytes | None, payload: bytes | None, family: int = socket.AF_INET) -> bytes:
    body = struct.pack("!BBH", family, 0, n.NFLOG_GROUP)
    body += n._attr(1, struct.pack("!HBB", 0x0800, 3, 0))  # NFULA_PACKET_HDR, ignored
    if prefix is not None:
        body += n._attr(n.NFULA_PREFIX, prefix)
    if payload is not None:
        body += n._attr(n.NFULA_PAYLOAD, payload)
    return body


@pytest.mark.parametrize("body, want", [
    pytest.param(packet_body(b"PODNET-NP-I-abc:\0", V4 + struct.pack("!HH", 40000, 80)),
                 n.Denied("PODNET-NP-I-abc", "TCP", "10.1.1.1", "10.1.0.1", 40000, 80), id="ipv4-tcp"),
    pytest.param(packet_body(b"PODNET-NP-E-abc:\0", V6 + struct.pack("!HH", 5353, 53), socket.AF_INET6),
                 n.Denied("PODNET-NP-E-abc", "UDP", "fd00::1", "fd00::2", 5353, 53), id="ipv6-udp"),
    pytest.param(packet_body(b"P:\0", V4[:9] + bytes([1]) + V4[10:] + b"\x08\0\0\0"),
                 n.Denied("P", "ICMP", "10.1.1.1", "10.1.0.1", 0, 0), id="icmp-no-ports"),
    pytest.param(packet_body(b"P:\0", V4), n.Denied("P", "TCP", "10.1.1.1", "10.1.0.1", 0, 0),
                 id="ports-cut-off-by-copy-range"),
    pytest.param(packet_body(None, V4 + struct.pack("!HH", 1, 2)), n.Denied("", "TCP", "10.1.1.1", "10.1.0.1", 1, 2),
                 id="no-prefix"),
    pytest.param(packet_body(b"P:\0", None), None, id="no-payload"),
    pytest.param(packet_body(b"P:\0", V4[:10]), None, id="truncated-ip-header"),
    pytest.param(packet_body(b"P:\0", b"\x70" + bytes(40)), None, id="not-ip"),
    pytest.param(b"\x02\0", None, id="short-body"),
    pytest.param(struct.pack("!BBH", 2, 0, 1) + struct.pack("=HH", 200, 9) + b"x", None, id="attribute-overruns"),
])
def test_parse_packet(body, want):
    assert n.parse_packet(body) == want


def test_parse_messages_splits_a_batch_and_reports_errors():
    one = packet_body(b"A:\0", V4 + struct.pack("!HH", 1, 80))
    msg = struct.pack("=IHHII", 16 + len(one), (n.NFNL_SUBSYS_ULOG << 8), 0, 0, 0) + one
    err = struct.pack("=IHHII", 20, n.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16)
    got = list(n.parse_messages(msg + err + b"\x01\x02"))
    assert [(k, e) for k, e, _ in got] == [(n.NFNL_SUBSYS_ULOG << 8, 0), (n.NLMSG_ERROR, 16)]
    assert n.parse_packet(got[0][2]).prefix == "A"


def test_config_message_layout():
    msg = n.config_message(7, n.bind_attrs(), 3)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), 0x0401, n.NLM_F_REQUEST | n.NLM_F_ACK, 3)
    assert msg[16:20] == bytes([0, 0, 0, 7])  # AF_UNSPEC, version 0, group big endian
    assert list(n._attrs(msg[20:])) == [(n.NFULA_CFG_CMD, b"\x01")]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def d(sport: int, prefix: str = "PODNET-NP-I-abc") -> n.Denied:
    return n.Denied(prefix, "TCP", "10.1.1.1", "10.1.0.1", sport, 80)


def test_denied_log_one_line_per_connection_and_rate_limited():
    clock, lines = Clock(), []
    log = n.DeniedLog(lines.append, rate=2, window=30, clock=clock)
    assert log.add(d(1)) and not log.add(d(1))  # a retransmission is the same connection
    for sport in range(2, 10):  # a burst: the bucket holds 2 x rate lines
        log.add(d(sport))
    assert len(lines) == 4 and log.suppressed == 5
    clock.t += 1.0  # two more tokens
    assert log.add(d(20))
    assert lines[-1].endswith("(5 more denied connections not logged)")
    clock.t += 31  # past the repeat window the same connection is logged again
    assert log.add(d(1))
    assert lines[0] == "denied PODNET-NP-I-abc TCP 10.1.1.1:1 -> 10.1.0.1:80"


def test_denied_log_forgets_the_oldest_connections_beyond_its_memory():
    clock, lines = Clock(), []
    log = n.DeniedLog(lines.append, rate=1000, clock=clock, remembered=3)
    for sport in (1, 2, 3, 4):
        log.add(d(sport))
    assert len(log.seen) == 3 and log.add(d(1))  # 1 was forgotten: logged again


@pytest.mark.parametrize("chain, want", [
    pytest.param("PODNET-NP-I-abc", "ingress of x/a (PODNET-NP-I-abc)", id="ingress"),
    pytest.param("PODNET-NP-EP-abc", "egress of x/a (PODNET-NP-EP-abc)", id="egress-stage"),
    pytest.param("PODNET-NP-I-zzz", "PODNET-NP-I-zzz", id="unknown-chain"),
])
def test_describe_chain(chain, want):
    assert n.describe_chain(chain, {"PODNET-NP-I-abc": "x/a", "PODNET-NP-EP-abc": "x/a"}) == want
    assert n.Denied(chain, "UDP", "fd00::1", "fd00::2", 1, 2).line(want) == f"denied {want} UDP [fd00::1]:1 -> [fd00::2]:2"


def test_render_puts_a_limited_nflog_rule_before_each_drop():
    from podnet.policy.model import PodVerdict
    v = PodVerdict(key="x/a", ips=("10.1.0.1",), ingress=(), egress=None)
    text = render({"x/a": v}, 4, log_denied=True).iptables
    drops = [i for i, line in enumerate(text.splitlines()) if line.endswith("-j DROP")]
    assert drops
    assert any(text.splitlines()[i].startswith("-A PODNET-NP-I-") for i in drops)
    for i in drops:
        before, chain = text.splitlines()[i - 1], text.splitlines()[i].split()[1]
        assert f"-j NFLOG --nflog-group {n.NFLOG_GROUP} --nflog-prefix {chain}:" in before  # the pod's chain, or
        assert "-m limit --limit 10/second" in before  # the dispatch chain for a pod still pending
    assert "NFLOG" not in render({"x/a": v}, 4).iptables


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_reader_in_a_real_namespace_logs_one_line_for_a_retransmitted_syn():
    from podnet.host.netns import NetnsPool
    from podnet.host.nsenter import made_inside

    pool = NetnsPool("pnt-nflog-")
    try:
        ns = pool.netns("a")
        ns.ip("link", "set", "lo", "up")
        for rule in (["-j", "NFLOG", "--nflog-group", str(n.NFLOG_GROUP), "--nflog-prefix", "PODNET-NP-I-t:"],
                     ["-j", "DROP"]):
            ns.run("iptables-legacy", "-A", "OUTPUT", "-p", "tcp", "--syn", "--dport", "9", *rule)
        packets, lines = [], []
        dlog = n.DeniedLog(lines.append)
        reader = n.NflogReader(lambda p: (packets.append(p), dlog.add(p)))
        fd = os.open(ns.path, os.O_RDONLY)
        try:
            made_inside(fd, reader.open)
            s = made_inside(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.settimeout(1.6)  # the SYN is sent at 0 and retransmitted after about 1 s
            with pytest.raises(OSError):
                s.connect(("127.0.0.1", 9))
            s.close()
            reader.read_ready()
        finally:
            reader.close()
            os.close(fd)
        assert len(packets) >= 2, packets
        assert {(p.prefix, p.protocol, p.src, p.dst, p.dport) for p in packets} == {
            ("PODNET-NP-I-t", "TCP", "127.0.0.1", "127.0.0.1", 9)}
        assert lines == [f"denied PODNET-NP-I-t TCP 127.0.0.1:{packets[0].sport} -> 127.0.0.1:9"]
    finally:
        pool.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_podnet_policy_log_denied_reader_names_the_pod(caplog):
    """The binary's --log-denied path (cli._start_denied_log) on the event loop, opened inside a
    namespace: a denied UDP datagram becomes one warning naming the pod the chain belongs to."""
    import asyncio
    import logging
    from types import SimpleNamespace

    from podnet.host.netns import NetnsPool
    from podnet.host.nsenter import made_inside
    from podnet.policy.cli import _start_denied_log

    engine = SimpleNamespace(programmers=[SimpleNamespace(chain_pods={"PODNET-NP-I-t": "x/a"})])
    pool = NetnsPool("pnt-nflog-")
    try:
        ns = pool.netns("b")
        ns.ip("link", "set", "lo", "up")
        ns.run("iptables-legacy", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "NFLOG",
               "--nflog-group", str(n.NFLOG_GROUP), "--nflog-prefix", "PODNET-NP-I-t:")
        fd = os.open(ns.path, os.O_RDONLY)
        caplog.set_level(logging.WARNING, logger="podnet.policy.denied")
        reader = made_inside(fd, lambda: _start_denied_log(engine))
        try:
            assert reader is not None
            s = made_inside(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            s.sendto(b"x", ("127.0.0.1", 9))
            port = s.getsockname()[1]
            s.close()
            for _ in range(100):  # bounded: up to 5 s for the loop to read the socket
                if any(r.name == "podnet.policy.denied" for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        finally:
            if reader is not None:
                reader.close()
            os.close(fd)
        got = [r.getMessage() for r in caplog.records if r.name == "podnet.policy.denied"]
        assert got == [f"denied ingress of x/a (PODNET-NP-I-t) UDP 127.0.0.1:{port} -> 127.0.0.1:9"]
    finally:
        pool.close()
