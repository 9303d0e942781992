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


PLUGIN = """#!/bin/sh
echo run >> "$(dirname "$0")/runs"
[ -f "$(dirname "$0")/fail" ] && { echo "login required" >&2; exit 4; }
echo '{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t"}}'
"""


def _exec_kubeconfig(d, server):
    import json

    (d / "bin").mkdir(parents=True)
    (d / "bin" / "plugin").write_text(PLUGIN)
    (d / "bin" / "plugin").chmod(0o755)
    (d / "kc").write_text(json.dumps({
        "current-context": "lab",
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me", "namespace": "default"}}],
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                    "command": "./bin/plugin", "interactiveMode": "Never"}}}],
    }))


async def _podnet_watch(env, *args):
    import sys
    from pathlib import Path

    podnet = Path(sys.executable).with_name("podnet")
    return await asyncio.create_subprocess_exec(str(podnet), "watch", "svc", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_podnet_watch_uses_kubeconfig_env_list_with_exec_plugin(lab_api, client, tmp_path, h):
    """No flags: $KUBECONFIG (a missing file first), a relative exec command, the plugin runs, lines appear."""
    _exec_kubeconfig(tmp_path, lab_api.url)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "KUBECONFIG": f"{tmp_path / 'missing'}:{tmp_path / 'kc'}"}
    proc = await _podnet_watch(env, "--count", "1")
    try:
        await h.wait_for(lambda: lab_api.handlers.watchers, what="the watch to start")
        await client.create(r.SERVICES, h.svc("web"), namespace="default")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split()[:2] == ["ADDED", "default/web"]
    assert (tmp_path / "bin" / "runs").read_text().count("run") >= 1


async def test_podnet_watch_failing_plugin_is_one_clear_line_and_retried(lab_api, tmp_path):
    _exec_kubeconfig(tmp_path, lab_api.url)
    (tmp_path / "bin" / "fail").write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "kc")}
    proc = await _podnet_watch(env)
    seen: list[str] = []
    try:
        async def read_two_failures():
            while sum("exit code 4" in line for line in seen) < 2:
                line = await proc.stderr.readline()
                if not line:
                    break
                seen.append(line.decode())
        await asyncio.wait_for(read_two_failures(), 30)
    finally:
        proc.kill()
        await proc.wait()
    text = "".join(seen)
    assert sum("exit code 4: login required" in line for line in seen) == 2, text
    assert "Traceback" not in text
