"""podnet-dns with 2 worker processes (SO_REUSEPORT) fed by one control process: the single-process
answers, updates reaching every worker, a killed worker restarted, /ready and /metrics over all
workers, SIGTERM stopping everything. Queries leave from many source ports so the kernel spreads
them over both workers."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest
import pytest_asyncio

from podnet.dns.cli import parse_args
from podnet.dns.daemon import Options, PoolDaemon, default_workers
from podnet.dns.metrics import Stats
from podnet.dns.testing import cluster_objects, eps, svc
from podnet.dns.workers import Report, merge_reports
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer

on_pool = pytest.mark.asyncio(loop_scope="module")
"""The tests that share the module's worker pool (and so its event loop)."""


def _load_queries():
    """The single-process query table (tests/dns/test_queries.py), loaded by path (importlib import mode)."""
    spec = importlib.util.spec_from_file_location("_podnet_test_queries", Path(__file__).with_name("test_queries.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_queries = _load_queries()
CASES, norm, rr_lines = _queries.CASES, _queries.norm, _queries.rr_lines

WORKERS = 2
SPREAD = 48
"""Source ports per check: with 2 workers the chance that all land on one is 2**-47."""
SUBSET = {
    "clusterip-a", "clusterip-aaaa-nodata", "srv-named-port", "srv-bare-name", "srv-wrong-proto", "headless-a",
    "headless-srv", "headless-not-ready-endpoint", "externalname-cname", "externalname-internal-chase",
    "below-externalname", "namespace-ent", "namespace-without-services", "unknown-service", "apex-soa", "dns-version",
    "pod-a", "pod-unknown-namespace", "ptr-cluster-ip", "ptr-v6", "ptr-unknown-no-upstream", "any-headless",
    "external-no-upstream",
}
SUBSET_CASES = [c for c in CASES if c[0] in SUBSET]
SOA_SERIAL = re.compile(r"(soa \S+ \S+) \d+ ")


def no_serial(lines: list[str]) -> list[str]:
    """The SOA serial is the sync's wall clock in a daemon (the table fixture's is 42)."""
    return [SOA_SERIAL.sub(r"\1 SERIAL ", line) for line in lines]


class Pool:
    def __init__(self) -> None:
        services, slices, namespaces = cluster_objects()
        self.services, self.slices = FakeInformer(services), FakeInformer(slices)
        self.namespaces = FakeInformer([Namespace(n) for n in namespaces])
        opts = Options(listen="127.0.0.1:0", resolv_conf="/nonexistent/resolv.conf", health_listen="127.0.0.1:0",
                       ready_listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", lameduck=0.2, workers=WORKERS)
        self.daemon = PoolDaemon(opts, make_informers=lambda: (self.services, self.slices, self.namespaces))
        self.daemon.cfg = replace(self.daemon.cfg, report_interval=0.1)

    @property
    def port(self) -> int:
        return self.daemon.pool.port

    def sync(self) -> None:
        for inf in (self.services, self.slices, self.namespaces):
            inf.synced()

    async def http(self, path: str) -> tuple[int, str]:
        port = self.daemon.http.ports[path]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                return r.status, await r.text()

    async def until(self, cond, what: str, tries: int = 250) -> None:
        for _ in range(tries):
            if cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")


async def query(port: int, name: str, qtype: str = "A", tcp: bool = False):
    q = dns.message.make_query(name, qtype)
    fn = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await fn(q, "127.0.0.1", port=port, timeout=3)


async def spread(port: int, name: str, qtype: str = "A", n: int = SPREAD) -> list:
    """``n`` queries, each from its own UDP socket (its own source port)."""
    return await asyncio.gather(*(query(port, name, qtype) for _ in range(n)))


def fast_counts(pool: Pool) -> list[int]:
    return [sum(w.report.stats.fast.values()) for w in pool.daemon.pool.workers]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool():
    p = Pool()
    tasks = await p.daemon.start()
    try:
        yield p
    finally:
        for t in tasks:
            t.cancel()
        pids = p.daemon.pool.pids()
        await p.daemon.pool.stop()
        await p.daemon.http.stop()
        assert len(pids) == WORKERS
        assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


@on_pool
async def test_servfail_and_not_ready_until_every_worker_synced(pool):
    r = await query(pool.port, "web.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert await pool.http("/ready") == (503, "kubernetes")
    assert (await pool.http("/health"))[0] == 200
    pool.sync()
    await pool.until(pool.daemon.ready, "every worker ready")
    assert await pool.http("/ready") == (200, "OK")
    for r in await spread(pool.port, "web.default.svc.cluster.local."):
        assert [rd.to_text() for rd in r.answer[0]] == ["10.96.0.5"]


@on_pool
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qname,qtype,expect", [c[1:] for c in SUBSET_CASES], ids=[c[0] for c in SUBSET_CASES])
async def test_queries_answered_as_one_process(pool, transport, qname, qtype, expect):
    rcode, answer, authority = expect
    replies = await asyncio.gather(*(query(pool.port, qname, qtype, tcp=transport == "tcp") for _ in range(8)))
    for r in replies:
        assert dns.rcode.to_text(r.rcode()) == rcode
        assert no_serial(rr_lines(r.answer)) == no_serial(norm(answer))
        assert no_serial(rr_lines(r.authority)) == no_serial(norm(authority))
        ours = not qname.startswith("example") and rcode != "SERVFAIL"
        assert bool(r.flags & dns.flags.AA) == ours


@on_pool
async def test_service_created_is_answered_by_every_worker(pool):
    name = "fresh.default.svc.cluster.local."
    before_rebuilds = [w.report.stats.programming.n for w in pool.daemon.pool.workers]
    before_fast = fast_counts(pool)
    pool.services.set(svc("default", "fresh", clusterIP="10.96.3.3", ports=[{"name": "http", "port": 80}]))
    await pool.until(lambda: all(w.report.stats.programming.n > b for w, b in zip(pool.daemon.pool.workers, before_rebuilds)),
                     "every worker rebuilt")
    for r in await spread(pool.port, name):
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in r.answer[0]] == ["10.96.3.3"]
    # Both workers answered a share of them (the kernel spread the source ports).
    await pool.until(lambda: sum(fast_counts(pool)) - sum(before_fast) >= SPREAD, "reports")
    assert all(after > before for after, before in zip(fast_counts(pool), before_fast))


@on_pool
async def test_metrics_sum_every_worker(pool):
    def total(text: str) -> int:
        return sum(int(float(v)) for v in re.findall(r'^coredns_dns_requests_total\{[^}]*type="TXT"[^}]*\} (\S+)', text, re.M))

    before = total((await pool.http("/metrics"))[1])
    await spread(pool.port, "dns-version.cluster.local.", "TXT")
    for _ in range(250):
        status, text = await pool.http("/metrics")
        if total(text) == before + SPREAD:
            break
        await asyncio.sleep(0.02)
    assert status == 200
    assert total(text) == before + SPREAD
    assert "podnet_dns_ready 1.0" in text


@on_pool
async def test_killed_worker_is_restarted_with_the_current_state(pool):
    p = pool.daemon.pool
    victim = p.workers[0].proc.pid
    before = sum(sum(w.report.stats.fast.values()) for w in p.workers)
    pool.services.set(svc("default", "later", clusterIP="10.96.4.4"))
    os.kill(victim, signal.SIGKILL)
    await pool.until(lambda: p.workers[0].proc.pid != victim and p.ready(), "the worker restarted and synced", tries=500)
    assert await pool.http("/ready") == (200, "OK")
    for r in await spread(pool.port, "later.default.svc.cluster.local."):
        assert [rd.to_text() for rd in r.answer[0]] == ["10.96.4.4"]
    # The exited worker's counters are kept: the total never goes backwards.
    await pool.until(lambda: sum(p.merged().stats.fast.values()) >= before + SPREAD, "the reports of the answers")
    assert len(p.retired) == 1


@on_pool
async def test_worker_too_far_behind_is_replaced(pool):
    p = pool.daemon.pool
    victim, healthy = p.workers[1].proc.pid, p.workers[0].proc.pid
    p.max_backlog, p.max_behind = 16 << 10, 2.0
    os.kill(victim, signal.SIGSTOP)  # reads nothing from now on
    try:
        pool.services.set(svc("default", "big", clusterIP="None"))
        for i in range(16):  # more than the kernel's socket buffer holds (40 KB each)
            pool.slices.set(eps("default", "big", f"big-{i}", "IPv4",
                                   [{"addresses": [f"10.{3 + j // 250}.{i}.{j % 250 + 1}"], "hostname": f"h{j}"}
                                    for j in range(1000)]))
            await asyncio.sleep(0)
        last = 0
        for last in range(200):  # events keep coming: the working worker keeps up, the stopped one does not
            pool.services.set(svc("default", f"bulk-{last}", clusterIP=f"10.96.5.{last + 1}"))
            if p.workers[1].proc.pid != victim:
                break
            await asyncio.sleep(0.05)
        await pool.until(lambda: p.workers[1].proc.pid != victim and p.ready(), "the stuck worker replaced", tries=500)
    finally:
        p.max_backlog, p.max_behind = 64 << 20, 10.0
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert p.workers[0].proc.pid == healthy
    for r in await spread(pool.port, f"bulk-{last}.default.svc.cluster.local."):
        assert [rd.to_text() for rd in r.answer[0]] == [f"10.96.5.{last + 1}"]


@pytest.mark.parametrize("reports,expect", [
    pytest.param([({"fast": 3, "dropped": 1}, 2), ({"fast": 4, "dropped": 2}, 2)], (7, 3, 2), id="counters-summed"),
    pytest.param([({"fast": 1, "dropped": 0}, 5), ({"fast": 1, "dropped": 0}, 5)], (2, 0, 5), id="sync-figures-not-multiplied"),
])
def test_merge_reports(reports, expect):
    live = []
    for counts, rebuilds in reports:
        st = Stats()
        st.fast[b"\x00\x01"] = counts["fast"]
        st.dropped = counts["dropped"]
        for _ in range(rebuilds):
            st.programming.observe(0.001)
        live.append(Report(ready=True, stats=st))
    out = merge_reports(live)
    assert (sum(out.stats.fast.values()), out.stats.dropped, out.stats.programming.n) == expect
    assert out.ready


def test_merge_reports_keeps_exited_workers_counters():
    gone, live = Stats(), Stats()
    gone.fast[b"\x00\x01"] = 10
    live.fast[b"\x00\x01"] = 1
    out = merge_reports([Report(ready=False, stats=live)], [Report(stats=gone)])
    assert sum(out.stats.fast.values()) == 11
    assert not out.ready


SCRIPT = """
import asyncio, sys
from podnet.dns.cli import parse_args
from podnet.dns.daemon import Options, PoolDaemon, default_workers
from podnet.dns.testing import cluster_objects
from podnet.kube.objects import Namespace
from podnet.kube.testing import FakeInformer

async def main():
    s, e, n = cluster_objects()
    infs = (FakeInformer(s), FakeInformer(e), FakeInformer([Namespace(x) for x in n]))
    d = PoolDaemon(Options(listen="127.0.0.1:0", resolv_conf="/nonexistent", health_listen=None, ready_listen=None,
                           metrics_listen=None, lameduck=0.2, workers=2), make_informers=lambda: infs)
    orig = d.start
    async def start():
        tasks = await orig()
        for i in infs:
            i.synced()
        print("pids", *d.pool.pids(), "port", d.pool.port, flush=True)
        return tasks
    d.start = start
    return await d.run()

sys.exit(asyncio.run(main()))
"""


def test_sigterm_stops_control_and_workers():
    proc = subprocess.Popen([sys.executable, "-P", "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "pids", line
        pids = [int(x) for x in line[1:3]]
        port = int(line[4])
        r = subprocess.run(["dig", "+short", "+tries=3", "+time=1", "-p", str(port), "@127.0.0.1",
                            "dns-version.cluster.local", "TXT"], capture_output=True, text=True)
        assert r.stdout.strip() == '"1.1.0"'
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))  # nobody holds the port any more
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv,workers", [
    pytest.param([], 1, id="default-one-process"),
    pytest.param(["--workers", "0"], default_workers(), id="zero-one-per-cpu"),
    pytest.param(["--workers", "1"], 1, id="one-process"),
    pytest.param(["--workers", "3"], 3, id="three"),
])
def test_workers_flag(argv, workers):
    assert parse_args(argv).workers == workers


def test_negative_workers_refused(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--workers", "-1"])
    assert e.value.code == 2
    assert "--workers must be 0" in capsys.readouterr().err
