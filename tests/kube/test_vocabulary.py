"""kube owns the vocabulary: label/annotation names and ConfigError are declared once, in kube.

Every module of every podnet package is parsed with ``ast`` (never imported); a module-level
assignment of one of :mod:`podnet.kube.names`' strings outside that module is a re-declaration.
The configuration error that kubeconfig, exec credentials and the proxy's configuration raise is
one class, :class:`podnet.kube.errors.ConfigError` (the lab kubelet's own ``ConfigError`` is a
different error, kubelet's CreateContainerConfigError, and stays its own).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from podnet.kube import errors, execauth, kubeconfig, names

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()


def _values() -> set[str]:
    out: set[str] = set()
    for name in names.__all__:
        v = getattr(names, name)
        out |= set(v.values()) if isinstance(v, dict) else {v}
    out.discard(names.PODNET_PREFIX)
    return out


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Dict):
        return {v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return set()


def redeclarations(source: str, vocabulary: set[str]) -> list[str]:
    """'line: "text"' for each module-level assignment of a vocabulary string."""
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for s in sorted(_strings(node.value) & vocabulary):
                out.append(f"{node.lineno}: {s!r}")
    return out


def test_no_package_redeclares_kube_vocabulary():
    vocabulary = _values()
    own = {ROOT / "kube" / "names.py"}
    bad = [f"{path.relative_to(ROOT)}:{hit}"
           for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
           if path not in own and "__pycache__" not in path.parts
           for hit in redeclarations(path.read_text(), vocabulary)]
    assert not bad, "import these from podnet.kube.names instead:\n" + "\n".join(bad)


@pytest.mark.parametrize(("source", "want"), [
    pytest.param('ZONE = "topology.kubernetes.io/zone"\n', ["1: 'topology.kubernetes.io/zone'"], id="plain"),
    pytest.param('A: dict = {4: "podnet.io/vtep-mac"}\n', ["1: 'podnet.io/vtep-mac'"], id="annotated-dict"),
    pytest.param('def f():\n    x = "topology.kubernetes.io/zone"\n', [], id="function-local-data-is-fine"),
    pytest.param("from podnet.kube.names import ZONE_LABEL\nZ = ZONE_LABEL\n", [], id="imported"),
])
def test_checker(source, want):
    assert redeclarations(source, _values()) == want


def test_config_error_is_one_class_everywhere():
    from podnet.proxy import config as proxy_config

    assert kubeconfig.ConfigError is errors.ConfigError is execauth.ConfigError is proxy_config.ConfigError
    assert issubclass(errors.ConfigError, ValueError)
