"""Import layers: which podnet package, and which netlab layer, may import which.

Every module of every package folder mapped in pyproject.toml is parsed with ``ast`` (never
imported); every import statement counts, also those inside functions, relative ones resolved.
A failing case names the module, the line and the import that breaks its layer's rule. The
rules are the one-line import rules stated in each package's ``__init__`` docstring.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


RUNTIME_DISTS = frozenset(_dist_key(re.match(r"[A-Za-z0-9_.-]+", req).group())
                          for req in PYPROJECT["project"]["dependencies"])
"""Normalised distribution names of pyproject's runtime dependencies."""


def runtime_dependency(top: str) -> bool:
    """True when the top-level import ``top`` is provided by a declared runtime dependency."""
    return any(_dist_key(d) in RUNTIME_DISTS for d in packages_distributions().get(top, ()))

HOST = "podnet.host"


@dataclass(frozen=True)
class Rule:
    layer: str                  # dotted package whose modules the rule covers
    may_import: tuple[str, ...]  # podnet packages (and their subpackages) its modules may import
    stdlib_only: bool = False   # no third-party imports either, save the declared runtime dependencies
    exact: bool = False         # covers the package's __init__ only, not its submodules


RULES = [
    pytest.param(Rule("podnet.kube", ("podnet.kube", HOST)), id="kube-imports-only-host"),
    pytest.param(Rule("podnet.cni", ("podnet.cni", "podnet.kube", HOST)), id="cni-imports-only-kube-and-host"),
    pytest.param(Rule("podnet.proxy", ("podnet.proxy", "podnet.kube", HOST)), id="proxy-imports-only-kube-and-host"),
    pytest.param(Rule("podnet.dns", ("podnet.dns", "podnet.kube", HOST)), id="dns-imports-only-kube-and-host"),
    pytest.param(Rule("podnet.policy", ("podnet.policy", "podnet.kube", HOST)), id="policy-imports-only-kube-and-host"),
    pytest.param(Rule("podnet.netlab", (), exact=True), id="netlab-init-imports-nothing"),
    pytest.param(Rule(HOST, (HOST,), stdlib_only=True), id="host-imports-stdlib-and-runtime-dependencies-only"),
    pytest.param(Rule("podnet.netlab.apiserver", ("podnet.netlab.apiserver", "podnet.kube", HOST)),
                 id="netlab-apiserver-imports-kube-and-host"),
    pytest.param(Rule("podnet.netlab.node", ("podnet.netlab.node", "podnet.kube", HOST)),
                 id="netlab-node-imports-kube-and-host"),
    pytest.param(Rule("podnet.netlab.lab", ("podnet.netlab.lab", "podnet.kube", HOST)),
                 id="netlab-lab-imports-kube-and-host"),
    pytest.param(Rule("podnet.netlab.check", ("podnet.netlab.check", "podnet.netlab.lab", "podnet.kube", HOST)),
                 id="netlab-check-imports-lab-kube-and-host"),
    pytest.param(Rule("podnet.netlab.picture", ("podnet.netlab.picture", "podnet.netlab.lab", "podnet.kube", HOST)),
                 id="netlab-picture-imports-lab-kube-and-host"),
    pytest.param(Rule("podnet.netlab.commands", ("podnet.netlab", "podnet.kube", HOST)),
                 id="netlab-commands-import-netlab-kube-and-host"),
]


@dataclass(frozen=True)
class Module:
    name: str        # dotted, e.g. podnet.netlab.lab.bringup
    is_package: bool  # an __init__.py
    path: Path


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def all_modules() -> list[Module]:
    found = []
    for dotted, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            parts = list(rel.parts[:-1]) + ([] if path.name == "__init__.py" else [path.stem])
            found.append(Module(".".join([dotted, *parts]), path.name == "__init__.py", path))
    return found


def imports_of(module: str, is_package: bool, source: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``; ``from P import n`` counts as P.n when
    P.n is a known module, else as P."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((node.lineno, full if full in known else base))
    return sorted(out)


def violations(rule: Rule, module: str, is_package: bool, source: str, known: set[str]) -> list[str]:
    bad = []
    for line, target in imports_of(module, is_package, source, known):
        top = target.partition(".")[0]
        if top == "podnet":
            if not any(_within(target, allowed) for allowed in rule.may_import):
                bad.append(f"{module}:{line} imports {target} "
                           f"({rule.layer} may import only {', '.join(rule.may_import) or 'no podnet module'})")
        elif (rule.stdlib_only and top != "__future__" and top not in sys.stdlib_module_names
              and not runtime_dependency(top)):
            bad.append(f"{module}:{line} imports {target} "
                       f"({rule.layer} may import the standard library and the runtime dependencies only)")
    return bad


def _rule_layers() -> list[Rule]:
    return [p.values[0] for p in RULES]


def owner(module: str) -> Rule | None:
    """The most specific rule covering ``module``."""
    covering = [r for r in _rule_layers() if (module == r.layer if r.exact else _within(module, r.layer))]
    return max(covering, key=lambda r: len(r.layer), default=None)


@pytest.mark.parametrize("rule", RULES)
def test_layer_rule(rule: Rule):
    modules = all_modules()
    known = {m.name for m in modules}
    mine = [m for m in modules if owner(m.name) == rule]
    assert mine, f"no module is covered by the rule for {rule.layer}: the layer moved or was renamed"
    bad = [v for m in mine for v in violations(rule, m.name, m.is_package, m.path.read_text(), known)]
    assert not bad, "imports breaking the layer rule:\n" + "\n".join(bad)


def test_every_module_has_a_rule():
    """A new package, or a netlab module outside every layer, needs its rule first."""
    stray = [m.name for m in all_modules() if owner(m.name) is None]
    assert not stray, f"modules no layer rule covers: {stray}"


KNOWN = {"podnet.netlab.lab.topology", "podnet.netlab.node", "podnet.netlab.node.kubelet", "podnet.kube.objects"}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        pytest.param("podnet.host.x", "import pytest\n",
                     ["podnet.host.x:1 imports pytest (podnet.host may import the standard library and the "
                      "runtime dependencies only)"],
                     id="test-only-dependency-in-host"),
        pytest.param("podnet.host.x", "import aiohttp\nfrom uvloop import run\n", [],
                     id="runtime-dependency-in-host-passes"),
        pytest.param("podnet.host.x", "from podnet.kube import objects\n",
                     ["podnet.host.x:1 imports podnet.kube.objects (podnet.host may import only podnet.host)"],
                     id="other-podnet-package-in-host"),
        pytest.param("podnet.netlab.lab.x", "def f():\n    from podnet.netlab import node\n",
                     ["podnet.netlab.lab.x:2 imports podnet.netlab.node (podnet.netlab.lab may import only "
                      "podnet.netlab.lab, podnet.kube, podnet.host)"],
                     id="function-local-import-of-a-higher-layer"),
        pytest.param("podnet.netlab.lab.x", "from ..node import kubelet\n",
                     ["podnet.netlab.lab.x:1 imports podnet.netlab.node.kubelet (podnet.netlab.lab may import only "
                      "podnet.netlab.lab, podnet.kube, podnet.host)"],
                     id="relative-import-resolved"),
        pytest.param("podnet.netlab.lab.x", "from . import topology\nfrom podnet.kube import objects\nimport json\n",
                     [], id="allowed-imports-pass"),
    ],
)
def test_checker_names_the_offending_import(module, source, expected):
    rule = owner(module)
    assert violations(rule, module, False, source, KNOWN) == expected
