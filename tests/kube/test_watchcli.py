"""`podnet watch`: prints ADDED/MODIFIED/DELETED lines as Services change."""

from __future__ import annotations

import argparse
import asyncio
import io
import os

from podnet.kube import resources as r
from podnet.kube.watchcli import add_arguments, watch


def parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


async def test_watch_prints_changes(lab_api, client, h):
    out = io.StringIO()
    args = parse(["svc", "--master", lab_api.url, "-n", "default", "--count", "3"])
    task = asyncio.create_task(watch(args, out))
    await h.wait_for(lambda: lab_api.handlers.watchers, what="the watch to start")
    await client.create(r.SERVICES, h.svc("web"), namespace="default")
    await client.create(r.SERVICES, h.svc("other", ns="kube-system"), namespace="kube-system")  # filtered out
    await client.patch(r.SERVICES, "web", {"spec": {"type": "NodePort"}}, namespace="default")
    await client.delete(r.SERVICES, "web", namespace="default")
    assert await asyncio.wait_for(task, 15) == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [["ADDED", "default/web"], ["MODIFIED", "default/web"],
                                                    ["DELETED", "default/web"]]
    assert "ClusterIP" in lines[0] and "80/TCP->8080" in lines[0]
    assert "NodePort" in lines[1] and "(node 3" in lines[1]


async def test_unknown_resource(lab_api):
    assert await watch(parse(["widgets", "--master", lab_api.url]), io.StringIO()) == 2


def test_cli_is_wired_into_podnet():
    import subprocess
    import sys
    from pathlib import Path

    podnet = Path(sys.executable).with_name("podnet")
    p = subprocess.run([str(podnet), "watch", "--help"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HOME": "/nonexistent"})
    assert p.returncode == 0 and "--master" in p.stdout
