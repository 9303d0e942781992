"""Every flag the manifests pass exists in its binary's parser, and every value is accepted.

Each container's command is checked against the installed console script's own
``--help`` (the parser the container runs), and then run with ``--help`` appended:
argparse converts and checks each value (types, choices) before it reaches
``--help``, so a value the binary would refuse fails here. ``$(VAR)`` references
are expanded from the container's env as kubelet does (ConfigMap keys and the
downward API's node name).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _load_manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


m = _load_manifest()
VENV_BIN = Path(sys.executable).parent
CONTAINERS = list(m.containers())
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _env_values(container: dict) -> dict[str, str]:
    """What kubelet puts in the container's env for $(VAR) expansion (downward API: a sample node name)."""
    out = {}
    for e in container.get("env", []):
        src = e.get("valueFrom", {})
        if "value" in e:
            out[e["name"]] = e["value"]
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            out[e["name"]] = m.find("ConfigMap", ref["name"])["data"][ref["key"]]
        elif src.get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            out[e["name"]] = "node-1"
    return out


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda mt: env[mt.group(1)], arg)


def _split(command: list[str]) -> tuple[list[str], list[str]]:
    """(the program and its subcommand, the arguments)."""
    n = 2 if command[0] == "podnet-cni" else 1
    return command[:n], command[n:]


@pytest.mark.parametrize("where, container", CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_every_flag_exists_in_the_binary(where, container):
    prog, args = _split(container["command"])
    p = subprocess.run([str(VENV_BIN / prog[0]), *prog[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    known = set(FLAG.findall(p.stdout))
    used = [a.split("=", 1)[0] for a in args if FLAG.fullmatch(a.split("=", 1)[0])]
    assert used, f"{where}: no flags found in {args}"
    missing = [f for f in used if f not in known]
    assert not missing, f"{where}: {' '.join(prog)} has no {missing}"


@pytest.mark.parametrize("where, container", CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_every_value_is_accepted(where, container):
    prog, args = _split(container["command"])
    env = _env_values(container)
    argv = [_expand(a, env) for a in args]
    p = subprocess.run([str(VENV_BIN / prog[0]), *prog[1:], *argv, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"{where}: {p.stderr}"


def test_the_check_catches_a_missing_flag_and_a_bad_value():
    p = subprocess.run([str(VENV_BIN / "podnet-cni"), "install", "--help"], capture_output=True, text=True)
    assert "--no-such-flag" not in set(FLAG.findall(p.stdout))
    p = subprocess.run([str(VENV_BIN / "podnet-cni"), "install", "--form=bogus", "--help"], capture_output=True,
                       text=True)
    assert p.returncode != 0 and "bogus" in p.stderr
