"""``podnet lab demo``: up + a sample app + check + a topology picture (SVG) + down.

The sample app is a replicated web Service (one ``web`` pod per node behind a
NodePort Service) and a headless StatefulSet-like Service ``db`` whose pods
``db-0``/``db-1`` have stable DNS names (hostname + subdomain). The picture is
taken while the app runs; the lab is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from podnet.netlab.lab.lab_up import add_topology_arguments, report_topology_error, spec_from_args
from podnet.netlab.lab.topology import TopologyError

__all__ = ["add_arguments", "run", "sample_app"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology_arguments(p)
    p.add_argument("--svg", metavar="PATH", help="where to write the topology picture "
                   "(default /tmp/podnet-lab-<name>-topology.svg)")
    p.add_argument("--keep", action="store_true", help="leave the lab running at the end")


def sample_app(nodes: list[str]) -> tuple[list[dict], list[dict]]:
    """(services, pods) of the demo app."""
    from podnet.netlab.lab import manifests as m
    services = [
        m.service("web", {"app": "web"}, [("http", "TCP", 80, m.HTTP_PORT)], type="NodePort", labels={"demo": "web"}),
        m.service("db", {"app": "db"}, [("echo", "TCP", m.ECHO_PORT, m.ECHO_PORT)], cluster_ip="None",
                  labels={"demo": "db"}),
    ]
    pods = [m.pod(f"web-{i + 1}", n, {"app": "web"}) for i, n in enumerate(nodes)]
    pods += [m.pod(f"db-{i}", nodes[i % len(nodes)], {"app": "db"}, hostname=f"db-{i}", subdomain="db")
             for i in range(2)]
    return services, pods


async def _app_and_picture(name: str, svg_path: Path, out, progress) -> None:
    from podnet.kube import resources as r
    from podnet.kube.client import ApiClient
    from podnet.netlab.check.checkkit import getent, pod_netns_map, probe
    from podnet.netlab.lab import labstate
    from podnet.netlab.lab.bringup import wait_pods_ready
    from podnet.netlab.picture import svg
    from podnet.netlab.picture.snapshot import collect

    st = labstate.load(name)
    plan = st.plan()
    async with ApiClient.from_flags(master=st.local_master, kubeconfig=str(plan.run_dir / "kubeconfig")) as client:
        with progress.step("sample app: web (NodePort, one pod per node) + headless db (db-0, db-1)"):
            services, pods = sample_app([n.name for n in plan.nodes])
            created = {}
            for s in services:
                created[s["metadata"]["name"]] = await client.create(r.SERVICES, s, "default")
            for p in pods:
                await client.create(r.PODS, p, "default")
            await wait_pods_ready(client, [("default", p["metadata"]["name"]) for p in pods], 120, progress)
        web = created["web"]["spec"]
        src = pod_netns_map(plan.run_dir).get("default/echo-n1-1")
        if src:
            res = await probe(src, "http", web["clusterIP"], 80, count=6, timeout=1.0)
            progress.note(f"echo-n1-1 -> web ({web['clusterIP']}:80): " +
                          " ".join(x.get("pod") or x.get("error", "?") for x in res))
            progress.note(f"echo-n1-1: getent db-0.db -> {await getent(src, 'db-0.db')}; "
                          f"web -> {await getent(src, 'web')}")
        np_ = web["ports"][0].get("nodePort")
        if np_:
            res = await probe(plan.outside_netns, "http", plan.nodes[-1].ip, np_, count=3, timeout=1.0)
            progress.note(f"outside -> {plan.nodes[-1].ip}:{np_} (NodePort): " +
                          " ".join(x.get("pod") or x.get("error", "?") for x in res))
        with progress.step("topology picture"):
            topo = await collect(plan, st, client)
            svg_path.write_text(svg.render(topo))
    out.write(f"      topology picture: {svg_path}\n")


def run(a: argparse.Namespace) -> int:
    from podnet.netlab.check.lab_check import check
    from podnet.netlab.lab.bringup import LabExists, up
    from podnet.netlab.lab.interrupt import Interrupted, shielded, signals_raise
    from podnet.netlab.lab.progress import Progress, quiet_api_discovery
    from podnet.netlab.lab.teardown import down, leftovers

    quiet_api_discovery(a)

    try:
        spec = spec_from_args(a)
    except TopologyError as e:
        return report_topology_error(e)
    svg_path = Path(a.svg or f"/tmp/podnet-lab-{spec.name}-topology.svg")
    out = sys.stdout
    rc = 1
    progress = Progress(out)
    ours = []
    try:
        with signals_raise():  # Ctrl-C and SIGTERM end the demo through the finally below
            up(spec, out, progress=progress, claimed=lambda: ours.append(True))
            asyncio.run(_app_and_picture(spec.name, svg_path, out, progress))
            rc = check(spec.name, out, progress=progress)
    except LabExists as e:
        print(f"podnet lab demo: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"\npodnet lab demo: interrupted ({e})", file=sys.stderr)
        rc = e.exit_status
    except Exception as e:  # noqa: BLE001
        print(f"podnet lab demo: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        if ours and not a.keep:
            with shielded(), progress.step(f"down: remove lab {spec.name!r}"):
                gone = down(spec.name)
            left = leftovers(spec.name)
            out.write(f"lab {spec.name!r} down: removed {gone.summary()}"
                      + (f"; STILL PRESENT: {left}" if left else "") + "\n")
    if svg_path.exists():
        out.write(f"topology picture: {svg_path}\n")
    return rc
