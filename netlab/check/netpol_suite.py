"""``podnet lab check --suite netpol``: the upstream NetworkPolicy e2e model on a running lab.

As kubernetes test/e2e/network/netpol does it: namespaces x, y, z; pods a, b, c in each
(labelled ``pod: <name>``, spread over the lab's nodes round-robin), each serving 80 and 81
over TCP and UDP with named container ports ``serve-<port>-<protocol>``, and one Service per
pod (``s-<ns>-<pod>``). For each case of :mod:`.netpol_cases` the suite creates the case's
policies, waits until every node's podnet-policy reports that many policies applied, then
probes every pod from every other pod through the target's Service ClusterIP (``--via pod``:
its pod IP) and compares the observed truth table with the expected one. An update case is
judged twice: before and after its namespace or pod relabel (undone afterwards). A mismatch is probed
once more before it counts, as upstream's ValidateOrFail does (its SECOND TRY).

The AdminNetworkPolicy and BaselineAdminNetworkPolicy conformance cases of
:mod:`.netpol_admin_cases` run the same way: their cluster-scoped objects are created through the
lab API (labelled ``lab.podnet.io/suite``) beside the case's NetworkPolicies, and the engines must
report all of them applied before the table is probed.

SCTP cases are skipped: the lab pod server speaks TCP and UDP only. Everything the suite creates
lives in x, y, z, which are deleted at the end (also on failure) unless ``keep``. Every wait and
every probe is bounded. Admin objects the suite labelled are deleted at the start and the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from podnet.kube import resources as r
from podnet.kube.adminnetpol import parse_admin_network_policy, parse_baseline_admin_network_policy
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.netpol import NAMESPACE_NAME_LABEL, parse_network_policy
from podnet.kube.resources import Resource
from podnet.netlab.check.checkkit import delete_quietly, exec_in, pod_netns_map, ready_endpoints, wait_until
from podnet.netlab.check.netpol_admin_cases import ADMIN_CASES
from podnet.netlab.check.netpol_cases import (ALL, CASES, NAMESPACES, PORTS, UPDATE_CASES, Case, Relabel,
                                               UpdateCase, resolve)
from podnet.netlab.lab import manifests as m
from podnet.netlab.lab.bringup import wait_pods_ready
from podnet.netlab.lab.labstate import LabState
from podnet.netlab.lab.parts import POLICY_HEALTH_PORT
from podnet.netlab.lab.topology import LabPlan

__all__ = ["CaseResult", "run_suite", "render_case", "select_cases", "unmatched_patterns", "NETWORK_POLICIES", "ADMIN_NETWORK_POLICIES",
           "BASELINE_ADMIN_NETWORK_POLICIES"]

NETWORK_POLICIES = Resource("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True,
                            parse_network_policy)
ADMIN_API = "/apis/policy.networking.k8s.io/v1alpha1"
ADMIN_NETWORK_POLICIES = Resource(ADMIN_API, "adminnetworkpolicies", "AdminNetworkPolicy", False,
                                  parse_admin_network_policy)
BASELINE_ADMIN_NETWORK_POLICIES = Resource(ADMIN_API, "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy",
                                           False, parse_baseline_admin_network_policy)
ADMIN_KINDS = {"AdminNetworkPolicy": ADMIN_NETWORK_POLICIES,
               "BaselineAdminNetworkPolicy": BASELINE_ADMIN_NETWORK_POLICIES}
SUITE_LABEL = "lab.podnet.io/suite"
PROTOCOLS = ("TCP", "UDP")
HEALTH_PORT = 8080
PROBE_TIMEOUT = 1.0
RETRIES = 1
SYNC_TIMEOUT = 20.0

# The pod's workload: the lab pod server on 80 and 81 (TCP and UDP echo), then HTTP on 8080 for
# readiness, which therefore answers only once every serving port is bound.
_SERVE = ("import asyncio, sys\n"
          "from podnet.netlab.node.podserver import PodServer\n"
          "async def main():\n"
          "    name = sys.argv[1]\n"
          "    held = [await PodServer(name, '0.0.0.0', p, p, None).start() for p in (80, 81)]\n"
          f"    held.append(await PodServer(name, '0.0.0.0', None, None, {HEALTH_PORT}).start())\n"
          "    await asyncio.Event().wait()\n"
          "asyncio.run(main())\n")


@dataclass
class CaseResult:
    case: Case
    expected: dict[tuple[str, str], bool] = field(default_factory=dict)
    observed: dict[tuple[str, str], bool] = field(default_factory=dict)
    attempts: int = 0
    seconds: float = 0.0
    skipped: str = ""
    error: str = ""

    @property
    def wrong(self) -> list[tuple[str, str]]:
        return sorted(k for k, v in self.expected.items() if self.observed.get(k) != v)

    @property
    def ok(self) -> bool | None:
        if self.skipped:
            return None
        return not self.error and not self.wrong


def select_cases(patterns: Sequence[str] = ()) -> list[Case | UpdateCase]:
    """The cases, the update cases, then the admin cases whose id matches any of ``patterns``
    (full-match regexes); all when none given."""
    every: list[Case | UpdateCase] = [*CASES, *UPDATE_CASES, *ADMIN_CASES]
    if not patterns:
        return every
    return [c for c in every if any(re.fullmatch(p, c.id) for p in patterns)]


def unmatched_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns that select no case (a typo must not silently shrink the suite); raises
    ``re.error`` for a pattern that is not a regex."""
    return [p for p in patterns if not select_cases([p])]


def render_case(res: CaseResult) -> str:
    """Upstream's truth-table picture: rows are sources, columns targets; ``.`` connected,
    ``X`` blocked, ``-`` not judged (self); observed cells that differ are marked ``!``."""
    c = res.case
    verdict = {True: "pass", False: "FAIL", None: "skip"}[res.ok]
    head = f"{c.id}  ({c.protocol}/{c.port}, {res.attempts} probe round(s), {res.seconds:.1f} s): {verdict}"
    if res.skipped:
        return head + f"  [{res.skipped}]\n"
    if res.error:
        return head + f"\n  error: {res.error}\n"
    names = list(ALL)
    width = max(len(n) for n in names)

    def grid(table: dict[tuple[str, str], bool], mark: bool) -> list[str]:
        lines = [" " * width + " " + " ".join(f"{t:^{width}}" for t in names)]
        for f in names:
            cells = []
            for t in names:
                if f == t:
                    cell = "-"
                else:
                    cell = "." if table.get((f, t)) else "X"
                    if mark and res.expected.get((f, t)) != table.get((f, t)):
                        cell = "!" + cell
                cells.append(f"{cell:^{width}}")
            lines.append(f"{f:<{width}} " + " ".join(cells))
        return lines

    exp, obs = grid(res.expected, False), grid(res.observed, True)
    w = max(len(x) for x in exp)
    lines = [head, f"  {'expected':<{w}}    observed"]
    lines += [f"  {e:<{w}}    {o}" for e, o in zip(exp, obs)]
    if res.wrong:
        lines.append("  wrong: " + ", ".join(f"{f}->{t} expected {'allowed' if res.expected[(f, t)] else 'blocked'}"
                                             for f, t in res.wrong[:12]) + (" ..." if len(res.wrong) > 12 else ""))
    return "\n".join(lines) + "\n"


class NetpolModel:
    """The x/y/z model in a running lab, and probing it."""

    def __init__(self, plan: LabPlan, st: LabState, client: ApiClient, via: str = "service") -> None:
        self.plan, self.st, self.client, self.via = plan, st, client, via
        self.pod_ip: dict[str, str] = {}
        self.svc_ip: dict[str, str] = {}
        self.netns: dict[str, str] = {}

    def _pod(self, pod: str, node: str) -> dict[str, Any]:
        ns, name = pod.split("/")
        ports = [(n, p, proto) for n, p, proto in PORTS if proto in PROTOCOLS] + [("health", HEALTH_PORT, "TCP")]
        obj = m.pod(name, node, {"pod": name, SUITE_LABEL: "netpol"}, namespace=ns,
                    command=[sys.executable, "-P", "-c", _SERVE, pod],
                    readiness={"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 1},
                    ports=ports)
        return obj

    def _service(self, pod: str) -> dict[str, Any]:
        ns, name = pod.split("/")
        ports = [(n, proto, p, p) for n, p, proto in PORTS if proto in PROTOCOLS]
        return m.service(f"s-{ns}-{name}", {"pod": name}, ports, namespace=ns, labels={SUITE_LABEL: "netpol"})

    async def setup(self) -> None:
        await self.cleanup()
        for ns in NAMESPACES:
            await self.client.create(r.NAMESPACES, {"metadata": {"name": ns, "labels": {NAMESPACE_NAME_LABEL: ns}}})
        nodes = [n.name for n in self.plan.nodes]
        for i, pod in enumerate(ALL):
            ns, name = pod.split("/")
            await self.client.create(r.PODS, self._pod(pod, nodes[i % len(nodes)]), namespace=ns)
            svc = await self.client.create(r.SERVICES, self._service(pod), namespace=ns)
            self.svc_ip[pod] = svc["spec"]["clusterIP"]
        ready = await wait_pods_ready(self.client, [tuple(p.split("/")) for p in ALL], 90)
        self.pod_ip = {f"{ns}/{n}": pod["status"]["podIP"] for (ns, n), pod in ready.items()}
        nsmap = pod_netns_map(self.plan.run_dir)
        self.netns = {p: nsmap[p] for p in ALL}
        for pod in ALL:
            ns, name = pod.split("/")
            if not await wait_until(lambda: ready_endpoints(self.client, ns, f"s-{ns}-{name}"), 30):
                raise TimeoutError(f"Service {ns}/s-{ns}-{name} has no ready endpoint after 30 s")

    async def cleanup(self) -> None:
        for res in ADMIN_KINDS.values():
            try:
                items, _ = await self.client.list(res, None, label_selector=f"{SUITE_LABEL}=netpol")
            except ApiError as e:
                if e.is_not_found:
                    continue
                raise
            for i in items:
                await delete_quietly(self.client, res, i["metadata"]["name"], None)
        for ns in NAMESPACES:
            for res in (NETWORK_POLICIES, r.SERVICES, r.PODS):
                try:
                    items, _ = await self.client.list(res, ns)
                except ApiError as e:
                    if e.is_not_found:
                        continue
                    raise
                for i in items:
                    await delete_quietly(self.client, res, i["metadata"]["name"], ns)
            await delete_quietly(self.client, r.NAMESPACES, ns, None)

    def address(self, pod: str) -> str:
        return self.svc_ip[pod] if self.via == "service" else self.pod_ip[pod]

    async def probe_row(self, src: str, protocol: str, port: int) -> dict[tuple[str, str], bool]:
        targets = [t for t in ALL if t != src]
        argv = [sys.executable, "-P", "-m", "podnet.netlab.check.netpol_probe", protocol, str(PROBE_TIMEOUT),
                *(f"{self.address(t)}:{port}" for t in targets)]
        rc, out, err = await exec_in(self.netns[src], argv, PROBE_TIMEOUT * 4 + 20)
        try:
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"probe from {src} failed (rc={rc}): {err.strip()[-200:]}") from None
        return {(src, t): bool(g.get("ok")) and g.get("pod") == t for t, g in zip(targets, got)}

    async def probe_all(self, protocol: str, port: int) -> dict[tuple[str, str], bool]:
        rows = await asyncio.gather(*(self.probe_row(src, protocol, port) for src in ALL))
        return {k: v for row in rows for k, v in row.items()}

    async def applied_policies(self) -> list[int | None]:
        """``podnet_policy_policies`` on every node (None: no engine answered)."""
        code = ("import urllib.request,sys\n"
                f"t=urllib.request.urlopen('http://127.0.0.1:{POLICY_HEALTH_PORT}/metrics',timeout=2).read().decode()\n"
                "print(next((l.split()[1] for l in t.splitlines() if l.startswith('podnet_policy_policies ')),''))\n")

        async def one(netns: str) -> int | None:
            rc, out, _ = await exec_in(netns, [sys.executable, "-S", "-c", code], 10)
            try:
                return int(float(out.strip())) if rc == 0 else None
            except ValueError:
                return None
        return list(await asyncio.gather(*(one(n.netns) for n in self.plan.nodes)))

    async def wait_applied(self, count: int) -> list[int | None]:
        async def done():
            seen = await self.applied_policies()
            return seen if all(s == count for s in seen) else None
        return await wait_until(done, SYNC_TIMEOUT, 0.1) or await self.applied_policies()

    async def _create(self, case: Case, names: list[tuple[Resource, str | None, str]]) -> None:
        """Create the case's admin objects and policies, recording each in ``names`` as it exists
        (for the cleanup)."""
        for _, raw in resolve([("", a) for a in case.admin], self.pod_ip):
            res = ADMIN_KINDS[raw["kind"]]
            name = raw["metadata"]["name"]
            await self.client.create(res, {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": raw["kind"],
                                           "metadata": {"name": name, "labels": {SUITE_LABEL: "netpol"}},
                                           "spec": raw["spec"]})
            names.append((res, None, name))
        for i, (ns, spec) in enumerate(resolve(case.policies, self.pod_ip)):
            name = f"{case.id.split('/')[0][:50]}-{i}"
            await self.client.create(NETWORK_POLICIES, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                                        "metadata": {"name": name, "namespace": ns}, "spec": spec},
                                     namespace=ns)
            names.append((NETWORK_POLICIES, ns, name))

    async def _judge(self, res: CaseResult) -> None:
        """Probe the whole table into ``res`` (a second round on any mismatch)."""
        case = res.case
        res.expected = {(f, t): bool(case.expected(f, t)) for f in ALL for t in ALL if f != t}
        for _ in range(1 + RETRIES):
            res.attempts += 1
            res.observed = await self.probe_all(case.protocol, case.port)
            if not res.wrong:
                break
            await asyncio.sleep(1.0)

    async def _relabel(self, relabel: Relabel, undo: bool = False) -> None:
        labels = {k: None for k in relabel.labels} if undo else dict(relabel.labels)
        body = {"metadata": {"labels": labels}}
        if "/" in relabel.target:
            ns, name = relabel.target.split("/")
            await self.client.patch(r.PODS, name, body, ns)
        else:
            await self.client.patch(r.NAMESPACES, relabel.target, body)

    async def run_case(self, case: Case | UpdateCase) -> list[CaseResult]:
        """One case's result, or an update case's two (before and after the relabel)."""
        phases = case.phases() if isinstance(case, UpdateCase) else (case,)
        results = [CaseResult(c) for c in phases]
        if case.protocol not in PROTOCOLS:
            for res in results:
                res.skipped = f"{case.protocol}: the lab pod server serves TCP and UDP only"
            return results
        t0 = time.monotonic()
        names: list[tuple[Resource, str | None, str]] = []
        relabeled = False
        current = results[0]
        try:
            await self._create(phases[0], names)
            seen = await self.wait_applied(len(names))
            if any(s != len(names) for s in seen):
                raise RuntimeError(f"policy engines report {seen} policies applied, want {len(names)} on every node")
            await self._judge(current)
            if isinstance(case, UpdateCase):
                current.seconds = time.monotonic() - t0
                current, t0 = results[1], time.monotonic()
                await self._relabel(case.relabel)
                relabeled = True
                await self._judge(current)
        except Exception as e:  # noqa: BLE001 - one broken case is a failed case, not a crashed suite
            current.error = f"{type(e).__name__}: {e}"
        finally:
            if relabeled:
                await self._relabel(case.relabel, undo=True)
            for res_kind, ns, name in names:
                await delete_quietly(self.client, res_kind, name, ns)
            await self.wait_applied(0)
            current.seconds = time.monotonic() - t0
        for res in results[results.index(current) + 1:]:
            res.error = "not run: an earlier phase failed"
        return results


async def run_suite(plan: LabPlan, st: LabState, cases: Sequence[Case | UpdateCase], *, via: str = "service", keep: bool = False,
                    on_result: Callable[[CaseResult], None] | None = None, progress=None) -> list[CaseResult]:
    """Run ``cases`` against the lab; ``on_result`` sees each result as it completes. The first
    result is the baseline (no policy: everything reachable over TCP/80)."""
    async with ApiClient.from_flags(master=st.local_master, kubeconfig=str(plan.run_dir / "kubeconfig")) as client:
        model = NetpolModel(plan, st, client, via)
        results: list[CaseResult] = []
        try:
            if progress:
                progress.note("netpol: namespaces x, y, z; pods a, b, c; one Service per pod")
            await model.setup()
            baseline = Case("baseline-no-policy", [], "TCP", 80, lambda f, t: True)
            for case in [baseline, *cases]:
                got = await model.run_case(case)
                if case is baseline and not got[0].ok:
                    # the proxy may still be programming the new Services: give it one more round
                    await asyncio.sleep(2.0)
                    got = await model.run_case(case)
                results += got
                if on_result:
                    for res in got:
                        on_result(res)
            return results
        finally:
            if not keep:
                await model.cleanup()
