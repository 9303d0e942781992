"""The end-to-end check suite of ``podnet lab check``, one :class:`Row` per behaviour.

Everything the suite needs (Services, extra pods) is created at the start with
the label ``lab.podnet.io/check=e2e`` and deleted at the end, also on failure.
Traffic comes from real pods (their netns, routes and resolv.conf) and from the
outside host; what a server saw is reported by the pod server itself, so
"source IP preserved" and "answered by pod X" are observed, not assumed.
One row per node pair checks the backend that node's CNI daemon reports against the one
the layout calls for (podnet.netlab.lab.backends) and sends a pod-to-pod connection across
it; on a routed underlay with ``--backend host-gw`` the row expects no path across subnets.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.check.checkkit import (Row, delete_quietly, getent, pod_netns_map, probe, ready_endpoints,
                                          wait_until)
from podnet.netlab.lab import backends
from podnet.netlab.lab import manifests as m
from podnet.netlab.lab.bringup import UPSTREAM_NAMES, wait_pods_ready
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.topology import LabPlan

__all__ = ["run_checks", "row_filter", "CHECK_LABEL", "BasePod"]

CHECK_LABEL = "lab.podnet.io/check"
NODE_LABEL = "lab.podnet.io/node"
POD_LABEL = "lab.podnet.io/pod"
NS = "default"
SVC_PORT, UDP_PORT = 80, 5353
SCALE_DOWN, SCALE_UP = "scale 1->0: refused at once", "scale 0->1: reachable within 1 s"


def row_filter(patterns: Iterable[str]):
    """A predicate on row names: true for every row when ``patterns`` is empty, else for the rows
    whose whole name one of the regular expressions matches (as ``--case`` selects netpol cases)."""
    compiled = [re.compile(p) for p in patterns]
    return lambda check: not compiled or any(c.fullmatch(check) for c in compiled)


@dataclass(frozen=True)
class BasePod:
    name: str
    node: str
    ip: str
    netns: str


class Suite:
    def __init__(self, plan: LabPlan, st: LabState, client: ApiClient, wanted=row_filter(())) -> None:
        self.plan, self.st, self.client, self.wanted = plan, st, client, wanted
        self.pods: list[BasePod] = []
        self.svc: dict[str, dict[str, Any]] = {}
        self.rows: list[Row] = []
        pool = ipaddress.ip_network(plan.external_pool)
        self.external_ip, self.lb_ip = str(pool.network_address + 10), str(pool.network_address + 20)
        self.proxy_ok = st.parts.get("proxy", "").startswith("podnet")
        self.dns_ok = st.parts.get("dns", "").startswith("podnet")

    # ------------------------------------------------------------------ setup

    def _svc(self, name: str, selector: dict[str, str], **kw: Any) -> dict[str, Any]:
        proto = kw.pop("protocol", "TCP")
        port, target = (UDP_PORT, m.ECHO_PORT) if proto == "UDP" else (SVC_PORT, m.ECHO_PORT)
        return m.service(name, selector, [("echo", proto, port, target)], labels={CHECK_LABEL: "e2e"}, **kw)

    def _pod(self, name: str, node: str, app: str, **kw: Any) -> dict[str, Any]:
        return m.pod(name, node, {"app": app, CHECK_LABEL: "e2e", NODE_LABEL: node, POD_LABEL: name}, **kw)

    async def setup(self) -> None:
        items, _ = await self.client.list(r.PODS, NS, label_selector="app=echo")
        nsmap = pod_netns_map(self.plan.run_dir)
        for p in sorted(items, key=lambda p: p["metadata"]["name"]):
            ip = (p.get("status") or {}).get("podIP")
            key = f"{NS}/{p['metadata']['name']}"
            if ip and key in nsmap:
                self.pods.append(BasePod(p["metadata"]["name"], p["spec"]["nodeName"], ip, nsmap[key]))
        await self.cleanup()
        nodes = [n.name for n in self.plan.nodes]
        first, last = nodes[0], nodes[-1]
        p0 = self.pods[0].name if self.pods else "none"
        services = [
            self._svc("chk-echo", {"app": "echo"}),
            self._svc("chk-np", {"app": "echo"}, type="NodePort"),
            self._svc("chk-local", {"app": "echo", NODE_LABEL: first}, type="NodePort", external_traffic_policy="Local"),
            self._svc("chk-aff", {"app": "echo"}, session_affinity="ClientIP"),
            self._svc("chk-scale", {"app": "chk-scale"}),
            self._svc("chk-udp", {"app": "chk-udp"}, protocol="UDP"),
            self._svc("chk-hp", {POD_LABEL: p0}),
            self._svc("chk-hl", {"app": "chk-db"}, cluster_ip="None"),
            self._svc("chk-ext", {"app": "echo"}, external_ips=[self.external_ip]),
            self._svc("chk-lb", {"app": "echo"}, type="LoadBalancer"),
        ]
        for s in services:
            created = await self.client.create(r.SERVICES, s, NS)
            self.svc[s["metadata"]["name"]] = created
        # The lab has no cloud: the check plays the load-balancer controller and publishes the ingress IP.
        await self.client.patch(r.SERVICES, "chk-lb", {"status": {"loadBalancer": {"ingress": [{"ip": self.lb_ip}]}}},
                                NS, subresource="status")
        pods = [
            self._pod("chk-scale-1", last, "chk-scale"),
            self._pod("chk-udp-a", first, "chk-udp"),
            self._pod("chk-db-0", first, "chk-db", hostname="chk-db-0", subdomain="chk-hl"),
            self._pod("chk-db-1", last, "chk-db", hostname="chk-db-1", subdomain="chk-hl"),
        ]
        # the base echo pods also need the node/pod labels the selectors above use
        for bp in self.pods:
            await self.client.patch(r.PODS, bp.name, {"metadata": {"labels": {NODE_LABEL: bp.node, POD_LABEL: bp.name}}}, NS)
        for p in pods:
            await self.client.create(r.PODS, p, NS)
        await wait_pods_ready(self.client, [(NS, p["metadata"]["name"]) for p in pods], 60)

    async def cleanup(self) -> None:
        for res in (r.SERVICES, r.PODS):
            items, _ = await self.client.list(res, NS, label_selector=f"{CHECK_LABEL}=e2e")
            for i in items:
                await delete_quietly(self.client, res, i["metadata"]["name"], NS)

    def cluster_ip(self, name: str) -> str:
        return self.svc[name]["spec"].get("clusterIP", "")

    def node_port(self, name: str) -> int:
        return int(self.svc[name]["spec"]["ports"][0].get("nodePort") or 0)

    async def netns_of(self, name: str) -> str:
        return pod_netns_map(self.plan.run_dir).get(f"{NS}/{name}", "")

    # ------------------------------------------------------------------ rows

    async def row(self, check: str, expected: str, fn, needs: tuple[str, ...] = ()) -> None:
        if not self.wanted(check):
            return
        t0 = time.monotonic()
        missing = [n for n in needs if not {"proxy": self.proxy_ok, "dns": self.dns_ok}[n]]
        if missing:
            self.rows.append(Row(check, expected, f"not run: {', '.join(missing)} not working ({self.st.parts.get(missing[0])})", False, 0.0))
            return
        try:
            ok, observed = await fn()
        except Exception as e:  # noqa: BLE001 - a broken check is a failed row, not a crash
            ok, observed = False, f"error: {type(e).__name__}: {e}"
        ok = None if ok is None else bool(ok)
        self.rows.append(Row(check, expected, observed, ok, time.monotonic() - t0))

    async def _until_ok(self, netns: str, mode: str, ip: str, port: int, timeout: float = 10.0) -> dict[str, Any]:
        async def once():
            res = (await probe(netns, mode, ip, port, timeout=0.5))[0]
            return res if res.get("ok") else None
        return await wait_until(once, timeout, 0.1) or (await probe(netns, mode, ip, port, timeout=0.5))[0]

    async def pod_to_pod(self, same_node: bool) -> tuple[bool, str]:
        src = self.pods[0]
        dsts = [p for p in self.pods[1:] if (p.node == src.node) == same_node]
        if not dsts:
            return None, "skipped: needs " + ("2 echo pods on one node" if same_node else "echo pods on 2 nodes")
        dst = dsts[0]
        res = await self._until_ok(src.netns, "tcp", dst.ip, m.ECHO_PORT, 5)
        ok = res.get("ok") and res.get("pod") == dst.name and res.get("peer") == src.ip
        if not res.get("ok"):
            return False, f"{src.name} -> {dst.name} {dst.ip}: {res.get('error', '?')}"
        same = " = client pod" if res["peer"] == src.ip else f", client pod is {src.ip}"
        return bool(ok), f"{res['pod']} answered, saw {res['peer']}{same}"

    async def balanced(self) -> tuple[bool, str]:
        src, ip = self.pods[0], self.cluster_ip("chk-echo")
        first = await self._until_ok(src.netns, "tcp", ip, SVC_PORT)
        if not first.get("ok"):
            return False, f"{ip}:{SVC_PORT} {first.get('error')}"
        n = max(60, 15 * len(self.pods))
        res = await probe(src.netns, "tcp", ip, SVC_PORT, count=n, timeout=1.0)
        hits = collections.Counter(x.get("pod") for x in res if x.get("ok"))
        want = {p.name for p in self.pods}
        nodes = {p.node for p in self.pods if p.name in hits}
        ok = set(hits) == want and len(nodes) == len(self.plan.nodes)
        return ok, f"{sum(hits.values())}/{n} answered by {len(hits)}/{len(want)} pods on {len(nodes)} nodes (min {min(hits.values(), default=0)} each)"

    async def node_port_from_outside(self, node) -> tuple[bool, str]:
        port = self.node_port("chk-np")
        res = await self._until_ok(self.plan.outside_netns, "tcp", node.ip, port)
        return bool(res.get("ok")), f"{node.ip}:{port}: " + (f"{res['pod']} answered" if res.get("ok") else res.get("error", "?"))

    async def from_outside(self, ip: str) -> tuple[bool, str]:
        res = await self._until_ok(self.plan.outside_netns, "tcp", ip, SVC_PORT)
        ok = res.get("ok") and res.get("pod") in {p.name for p in self.pods}
        return bool(ok), f"{ip}:{SVC_PORT} via {self.plan.nodes[0].name}: " + (
            f"{res['pod']} answered" if res.get("ok") else res.get("error", "?"))

    async def etp_local(self, with_endpoint: bool) -> tuple[bool, str]:
        port = self.node_port("chk-local")
        node = self.plan.nodes[0] if with_endpoint else self.plan.nodes[-1]
        if with_endpoint:
            res = await self._until_ok(self.plan.outside_netns, "tcp", node.ip, port)
            ok = res.get("ok") and res.get("peer") == self.plan.outside_ip and res["pod"] in {
                p.name for p in self.pods if p.node == node.name}
            if not res.get("ok"):
                return False, f"{node.ip}:{port} {res.get('error', '?')}"
            who = "= outside" if res["peer"] == self.plan.outside_ip else f"!= outside {self.plan.outside_ip}"
            return bool(ok), f"{res['pod']} answered, saw {res['peer']} {who}"
        if len(self.plan.nodes) < 2:
            return None, "skipped: needs >= 2 nodes"
        # judge node 2 only once the Service is programmed (node 1 answers)
        first = await self._until_ok(self.plan.outside_netns, "tcp", self.plan.nodes[0].ip, port)
        if not first.get("ok"):
            return False, f"cannot judge: the node with the endpoint does not answer either ({first.get('error')})"
        res = await probe(self.plan.outside_netns, "tcp", node.ip, port, count=3, timeout=1.0)
        errors = [x.get("error") for x in res if not x.get("ok")]
        ok = len(errors) == len(res) and all(e in ("refused", "timeout") for e in errors)
        return ok, f"{node.ip}:{port}: " + ", ".join(x.get("error") or f"answered by {x.get('pod')}" for x in res)

    async def affinity(self) -> tuple[bool, str]:
        src, ip = self.pods[-1], self.cluster_ip("chk-aff")
        first = await self._until_ok(src.netns, "tcp", ip, SVC_PORT)
        if not first.get("ok"):
            return False, first.get("error", "?")
        res = await probe(src.netns, "tcp", ip, SVC_PORT, count=30, timeout=1.0)
        hits = collections.Counter(x.get("pod") for x in res if x.get("ok"))
        return len(hits) == 1 and sum(hits.values()) == 30, f"30 connections -> {dict(hits)}"

    async def scale_to_zero_and_back(self) -> tuple[Row, Row]:
        src, ip = self.pods[0], self.cluster_ip("chk-scale")
        t0 = time.monotonic()
        first = await self._until_ok(src.netns, "tcp", ip, SVC_PORT)
        if not first.get("ok"):
            obs = f"never reachable before scaling: {first.get('error')}"
            return (Row(SCALE_DOWN, "", obs, False, time.monotonic() - t0),
                    Row(SCALE_UP, "", obs, False, 0.0))
        bg = asyncio.create_task(probe(src.netns, "tcp", ip, SVC_PORT, count=40, interval=0.05, timeout=0.5))
        await asyncio.sleep(0.4)
        t_del = time.time()
        await delete_quietly(self.client, r.PODS, "chk-scale-1", NS)
        res = await bg
        after = [x for x in res if x["t"] >= t_del]
        # the suffix of attempts that were all refused: from then on the Service refuses for good
        k = len(after)
        while k > 0 and after[k - 1].get("error") == "refused":
            k -= 1
        delay = (after[k]["t"] - t_del) if k < len(after) else None
        ok1 = delay is not None and delay <= 1.0 and len(after) - k >= 5
        before = collections.Counter(x.get("error") or "answered" for x in after[:k])
        row1 = Row(SCALE_DOWN, "refused for good within 1 s of the delete",
                   (f"refused {delay:.2f} s after delete, then always ({len(after) - k}x); before: "
                    f"{dict(before) or 'nothing'}") if delay is not None else
                   f"never refused for good: {dict(collections.Counter(x.get('error') or 'answered' for x in after))}",
                   ok1, time.monotonic() - t0)
        t1 = time.monotonic()
        bg = asyncio.create_task(probe(src.netns, "tcp", ip, SVC_PORT, count=120, interval=0.05, timeout=0.5))
        await self.client.create(r.PODS, self._pod("chk-scale-2", self.plan.nodes[-1].name, "chk-scale"), NS)

        async def ep_ready():
            return await ready_endpoints(self.client, NS, "chk-scale")
        await wait_until(ep_ready, 30, 0.02)
        t_ready = time.time()
        res = await bg
        oks = [x for x in res if x.get("ok") and x["t"] >= t_ready - 1.0]
        delay = (max(oks[0]["t"], t_ready) - t_ready) if oks else None
        ok2 = delay is not None and delay <= 1.0 and bool(oks) and oks[0].get("pod") == "chk-scale-2"
        row2 = Row(SCALE_UP, "answered within 1 s of endpoint ready",
                   f"{oks[0]['pod']} answered {delay:.2f} s after its endpoint became ready" if oks else
                   "never answered", ok2, time.monotonic() - t1)
        return row1, row2

    async def udp_replace(self) -> tuple[bool, str]:
        src, ip = self.pods[-1], self.cluster_ip("chk-udp")
        first = await self._until_ok(src.netns, "udp", ip, UDP_PORT)
        if not first.get("ok"):
            return False, f"never reachable: {first.get('error')}"
        bg = asyncio.create_task(probe(src.netns, "udp-flow", ip, UDP_PORT, count=80, interval=0.05, timeout=0.3))
        await asyncio.sleep(0.3)
        await self.client.create(r.PODS, self._pod("chk-udp-b", self.plan.nodes[-1].name, "chk-udp"), NS)
        await wait_pods_ready(self.client, [(NS, "chk-udp-b")], 30)
        t_del = time.time()
        await delete_quietly(self.client, r.PODS, "chk-udp-a", NS)
        res = await bg
        seq = [x.get("pod") or x.get("error") for x in res]
        runs: list[list] = []
        for s in seq:
            if runs and runs[-1][0] == s:
                runs[-1][1] += 1
            else:
                runs.append([s, 1])
        lost_after = sum(1 for x in res if x["t"] >= t_del and not x.get("ok"))
        ok = all(x.get("pod") == "chk-udp-b" for x in res[-10:])
        return ok, " ".join(f"{s}x{n}" for s, n in runs) + f"; {lost_after} lost after the delete"

    async def dns_short_name(self) -> tuple[bool, str]:
        src = self.pods[0]
        want = self.cluster_ip("chk-echo")
        got = await wait_until(lambda: getent(src.netns, "chk-echo"), 10, 0.2)
        return got == [want], f"in {src.name}: {','.join(got) or 'no answer'}"

    async def dns_headless(self) -> tuple[bool, str]:
        src = self.pods[-1]
        items, _ = await self.client.list(r.PODS, NS, label_selector="app=chk-db")
        want = sorted((i.get("status") or {}).get("podIP", "") for i in items)
        async def q():
            got = sorted(await getent(src.netns, "chk-hl"))
            return got if got == want else None
        got = await wait_until(q, 10, 0.2) or sorted(await getent(src.netns, "chk-hl"))
        one = await getent(src.netns, "chk-db-0.chk-hl")
        want0 = [(i.get("status") or {}).get("podIP") for i in items if i["metadata"]["name"] == "chk-db-0"]
        ok = got == want and one == want0
        return ok, f"chk-hl: {','.join(got) or '-'}; chk-db-0.chk-hl: {','.join(one) or '-'}"

    async def dns_external(self) -> tuple[bool, str]:
        src = self.pods[0]
        want = UPSTREAM_NAMES["example.org"]
        got = await wait_until(lambda: getent(src.netns, "example.org"), 10, 0.2)
        return got == [want], f"getent example.org: {','.join(got) or 'no answer'}"

    async def hairpin(self) -> tuple[bool, str]:
        src, ip = self.pods[0], self.cluster_ip("chk-hp")
        res = await self._until_ok(src.netns, "tcp", ip, SVC_PORT)
        ok = res.get("ok") and res.get("pod") == src.name
        return bool(ok), f"{src.name} -> {ip}:{SVC_PORT}: " + (
            f"{res['pod']} answered (saw {res['peer']})" if res.get("ok") else res.get("error", "?"))

    async def node_pair(self, a, b) -> tuple[bool, str]:
        """A pod on ``a`` to a pod on ``b``: the backend ``a``'s daemon reports, and whether the pod
        answers with the client's IP kept; across subnets host-gw must NOT get through."""
        want = backends.expected(self.plan, a, b)
        if self.st.parts.get("cni", "").startswith("podnet"):
            got = backends.reported_by(self.plan, a).get(b.name, "none reported")
        else:  # the reference plugins: the lab itself added host-gw routes
            want = got = "host-gw (routes by the lab)"
        src = next((p for p in self.pods if p.node == a.name), None)
        dst = next((p for p in self.pods if p.node == b.name), None)
        if src is None or dst is None:
            return None, f"skipped: needs an echo pod on {a.name} and on {b.name}"
        blocked = want == "host-gw" and a.segment != b.segment
        if blocked:  # no route can exist: a short look is enough
            res = (await probe(src.netns, "tcp", dst.ip, m.ECHO_PORT, count=2, timeout=1.0))[-1]
        else:
            res = await self._until_ok(src.netns, "tcp", dst.ip, m.ECHO_PORT, 5)
        seen = (f"{res['pod']} answered, saw {res['peer']}" + (" = client pod" if res["peer"] == src.ip else "")
                if res.get("ok") else res.get("error", "?"))
        crossed = bool(res.get("ok")) and res.get("pod") == dst.name and res.get("peer") == src.ip
        return got == want and crossed != blocked, f"daemon on {a.name}: {got}; {src.name} -> {dst.name}: {seen}"

    # ------------------------------------------------------------------ run

    async def run(self) -> list[Row]:
        await self.row("pod->pod, same node", "the pod answers, sees the client pod IP", lambda: self.pod_to_pod(True))
        await self.row("pod->pod, across nodes", "the pod answers, sees the client pod IP", lambda: self.pod_to_pod(False))
        for a, b in backends.pairs(self.plan):
            where = "same subnet" if a.segment == b.segment else "across subnets"
            want = backends.expected(self.plan, a, b)
            outcome = ("no path (host-gw cannot cross the router)" if want == "host-gw" and a.segment != b.segment
                       else "answers, client pod IP kept")
            await self.row(f"n{a.index}->n{b.index} pod->pod, {where}", f"{want}; {outcome}",
                           lambda a=a, b=b: self.node_pair(a, b))
        await self.row("pod->ClusterIP balanced", "every endpoint on every node answers", self.balanced, ("proxy",))
        for node in self.plan.nodes:
            await self.row(f"outside->NodePort {node.name}", "answered by an echo pod",
                           lambda node=node: self.node_port_from_outside(node), ("proxy",))
        await self.row("outside->externalIP", "answered by an echo pod", lambda: self.from_outside(self.external_ip),
                       ("proxy",))
        await self.row("outside->LoadBalancer IP", "an echo pod answers (check acts as LB ctrl)",
                       lambda: self.from_outside(self.lb_ip), ("proxy",))
        await self.row("eTP=Local, node with endpoint", "local pod answers, sees the outside IP",
                       lambda: self.etp_local(True), ("proxy",))
        await self.row("eTP=Local, node without endpoint", "refused or dropped", lambda: self.etp_local(False), ("proxy",))
        await self.row("session affinity ClientIP", "every connection to one pod", self.affinity, ("proxy",))
        if self.proxy_ok:
            if self.wanted(SCALE_DOWN) or self.wanted(SCALE_UP):
                self.rows.extend(row for row in await self.scale_to_zero_and_back() if self.wanted(row.check))
        else:
            await self.row("scale 1->0 / 0->1", "refused at once / reachable within 1 s", None, ("proxy",))
        await self.row("UDP endpoint replaced", "the same flow moves to the new pod", self.udp_replace, ("proxy",))
        await self.row("DNS short name (search path)", "getent chk-echo = its ClusterIP", self.dns_short_name, ("dns",))
        await self.row("DNS headless service", "pod IPs; hostname.subdomain = that pod", self.dns_headless, ("dns",))
        await self.row("DNS external name", f"example.org = {UPSTREAM_NAMES['example.org']} (upstream)",
                       self.dns_external, ("dns",))
        await self.row("hairpin: pod->own Service", "answered by the same pod", self.hairpin, ("proxy",))
        return self.rows


async def run_checks(plan: LabPlan, st: LabState, keep: bool = False, progress=None,
                     rows: Iterable[str] = ()) -> list[Row]:
    """The check table, or only the rows whose name fully matches one of the regular expressions ``rows``."""
    async with ApiClient.from_flags(master=st.local_master, kubeconfig=str(plan.run_dir / "kubeconfig")) as client:
        suite = Suite(plan, st, client, row_filter(rows))
        try:
            if progress:
                progress.note("setting up check Services and pods")
            await suite.setup()
            if len(suite.pods) < 2:
                return [Row("lab has echo pods", ">= 2 ready echo pods", f"{len(suite.pods)}", False, 0.0)]
            return await suite.run()
        finally:
            if not keep:
                await suite.cleanup()
