"""Property: whatever values a Service or EndpointSlice carries, the rendered restore text is
valid for the real iptables-restore, names no chain outside the plan, and --cleanup leaves
nothing of podnet's (root; bounded examples, derandomized so CI is reproducible).

Hostile values go straight into parsed objects (dataclasses.replace), bypassing podnet.kube,
so only the proxy's own checks stand between them and the kernel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess

import pytest
from hypothesis import HealthCheck, event, given, settings
from prometheus_client import REGISTRY
from hypothesis import strategies as st

from podnet.host.netns import NetnsPool
from podnet.proxy import guard, names
from podnet.proxy.cleanup import cleanup
from podnet.host.xtables import detect_mode
from podnet.proxy.iptables import IptablesRunner, parse_save
from podnet.proxy.render import render_full
from podnet.proxy.rules import JUMPS
from podnet.proxy.snapshot import build
from podnet.proxy.testing import ctx, ep, slice_, svc

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def skipped_total() -> float:
    return sum(s.value for m in REGISTRY.collect() if m.name == "podnet_proxy_skipped_services"
               for s in m.samples if s.name.endswith("_total"))

HOSTILE_CHARS = "\n\r\t \x00\x7f%\"'\\;:/.-_#*"
SAFE_CHARS = "abcxyz019-"
text_values = st.text(alphabet=st.sampled_from(list(SAFE_CHARS + HOSTILE_CHARS)), min_size=0, max_size=12)
name_values = st.one_of(st.sampled_from(["web", "x", "a-b", "http", ""]), text_values,
                        st.builds(lambda a, b: a + b, st.sampled_from(["web", "http", "x"]), st.sampled_from(["\n", " ", "%", '"', "\n-A PODNET-SERVICES -j ACCEPT"])))

V4 = ["10.96.0.77", "10.0.1.7", "203.0.113.9", "0.0.0.0", "127.0.0.1", "169.254.169.254", "224.0.0.1",
      "239.9.9.9", "255.255.255.255", "010.0.1.7", "10.0.1.7\n", " 10.0.1.7", "10.0.1.7%1", "fd00::1", ""]
V6 = ["fd00:96::77", "fd00:1::7", "2001:db8::9", "::", "::1", "fe80::1", "ff02::1", "fd00:96::77%x",
      "fd00::%1\n-A PODNET-SERVICES -j ACCEPT\n", "FD00::1", "::ffff:10.0.1.7", "fd00:0::1", "10.0.1.7", ""]


def ips(family: int):
    return st.one_of(st.sampled_from(V4 if family == 4 else V6), text_values)


def cidrs(family: int):
    base = ["203.0.113.0/24", "0.0.0.0/0", "10.0.0.0/033", "10.0.0.0/33"] if family == 4 else \
        ["fd00::/8", "fd00::%1/64", "fd00::%1\n-A PODNET-SERVICES -j ACCEPT\n/64", "::/0"]
    return st.one_of(st.sampled_from(base), st.builds(lambda ip, p: f"{ip}/{p}", ips(family), st.sampled_from(["8", "24", "x", "64\n"])))


ports = st.one_of(st.integers(min_value=-1, max_value=70000), st.sampled_from([True, 0, 65535, 65536]))


@st.composite
def hostile(draw):
    family = draw(st.sampled_from([4, 6]))
    cip = "10.96.0.41" if family == 4 else "fd00:96::41"
    base = svc(name="base", cluster_ip="10.96.0.77" if family == 4 else "fd00:96::77", type="LoadBalancer",
               ports=((80, "TCP", "http", 30077),))
    sp = dataclasses.replace(base.ports[0], name=draw(name_values), port=draw(ports),
                             protocol=draw(st.sampled_from(["TCP", "UDP", "SCTP", "tcp", "TCP -j ACCEPT", "ICMP"])),
                             node_port=draw(st.one_of(st.none(), ports)))
    bad = dataclasses.replace(
        base, name=draw(name_values), namespace=draw(st.one_of(st.just("ns"), name_values)), ports=(sp,),
        cluster_ips=(draw(ips(family)),), external_ips=tuple(draw(st.lists(ips(family), max_size=2))),
        load_balancer_ips=tuple(draw(st.lists(ips(family), max_size=2))),
        load_balancer_source_ranges=tuple(draw(st.lists(cidrs(family), max_size=2))),
        session_affinity=draw(st.sampled_from(["None", "ClientIP"])),
    )
    sl = slice_(service="base", endpoints=[ep("10.0.1.1" if family == 4 else "fd00:1::1")], ports=((8080, "TCP", "http"),),
                family=f"IPv{family}", name="bad-1")
    endpoint = sl.endpoints[0]
    eps = tuple(dataclasses.replace(endpoint, addresses=(a,)) for a in draw(st.lists(ips(family), min_size=1, max_size=3)))
    sl = dataclasses.replace(sl, service_name=bad.name, namespace=bad.namespace, endpoints=eps,
                             ports=(dataclasses.replace(sl.ports[0], name=sp.name, port=draw(ports)),))
    good = svc(name="good", cluster_ip=cip, ports=((80, "TCP", "http"),))
    good_slice = slice_(service="good", endpoints=[ep("10.0.1.2" if family == 4 else "fd00:1::2")],
                        ports=((8080, "TCP", "http"),), family=f"IPv{family}", name="good-1")
    context = ctx() if family == 4 else ctx(family=6, cluster_cidrs=("fd00:10::/64",), node_ips=("fd00:ff::2",))
    return family, [good, bad], [good_slice, sl], context


@pytest.fixture(scope="module")
def node():
    pool = NetnsPool("pnt-hp-")
    try:
        ns = pool.netns("node")
        prefix = ["ip", "netns", "exec", ns.name]
        yield ns, prefix, asyncio.run(detect_mode(prefix))
    finally:
        pool.close()


def _lines_ok(text: str, planned: dict[str, set[str]]) -> None:
    """Every line is one of the restore forms podnet writes, naming only planned chains."""
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            assert table in planned, line
        elif line == "COMMIT" or not line:
            continue
        elif line.startswith(":"):
            assert line.endswith(" - [0:0]") and line[1:-8] in planned[table], repr(line)
        else:
            op, chain, rule = line.split(" ", 2)
            assert op == "-A" and chain in planned[table] and names.is_ours(chain), repr(line)
            guard.check_rule(rule)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile())
def test_rendered_text_round_trips_through_real_restore(node, case):
    ns, prefix, mode = node
    family, services, slices, context = case
    before = skipped_total()
    tables = build(services, slices, context, "node-a")
    event("hostile service skipped" if skipped_total() > before else "hostile service valid, written")
    text = render_full(tables)
    planned = {t: set(chains) for t, chains in tables.items()}
    _lines_ok(text, planned)
    good_chain = names.service_port_chains("ns/good:http", "TCP")[0]
    assert good_chain in planned["nat"]  # the good Service is always programmed
    binary = f"{'ip6' if family == 6 else 'ip'}tables-{mode}-restore"
    rc = subprocess.run([*prefix, binary, "--test"], input=text, capture_output=True, text=True, timeout=60)
    assert rc.returncode == 0, (rc.stderr, text)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile())
def test_applied_chains_are_the_plan_and_cleanup_removes_all(node, case):
    ns, prefix, mode = node
    family, services, slices, context = case
    tables = build(services, slices, context, "node-a")
    runner = IptablesRunner(family, mode, prefix)

    async def apply_and_clean():
        await runner.restore(render_full(tables))
        for table, chain, rule in JUMPS:
            await runner.ensure_jump(table, chain, rule)
        saved = parse_save(await runner.save())
        removed = await cleanup(runner)
        return saved, removed, await runner.save()

    saved, removed, after = asyncio.run(apply_and_clean())
    for table in ("mangle", "filter", "nat"):
        ours = {c for c in saved.chains.get(table, set()) if names.is_ours(c)}
        assert ours == set(tables[table]), table
    assert removed == sum(len(c) for c in tables.values())
    assert "PODNET" not in after
