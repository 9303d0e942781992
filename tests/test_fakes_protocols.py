"""Fakes keep faith with what they stand in for, and only tests use them.

* Every (Protocol, fake) pair: each method the Protocol declares exists on the fake, is async exactly
  when the Protocol's is, and takes the same parameters (names, kinds, order; a parameter with a
  default in the Protocol has one in the fake; a parameter the fake adds has a default). Each data
  attribute the Protocol declares exists on a fake built with its defaults.
* Every fake class in a ``testing`` module has a pair here (or a stated reason it has none).
* No module outside a package's ``testing`` module imports a ``testing`` module or a ``Fake*`` name
  (parsed with ``ast``, never imported; imports inside functions count too).
"""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path
from typing import Any

import pytest

from podnet.cni import testing as cni_testing
from podnet.cni.antispoof import Tables as RawTables
from podnet.cni.ipam import Store
from podnet.cni.overlay import OverlayOps
from podnet.cni.plugin import NetOps
from podnet.dns import testing as dns_testing
from podnet.dns.datagrams import DatagramBatch
from podnet.dns.watch import InformerLike
from podnet.kube import testing as kube_testing
from podnet.kube.informer import Informer
from podnet.policy import testing as policy_testing
from podnet.policy.kernel import Kernel
from podnet.proxy import testing as proxy_testing
from podnet.proxy.conntrack import Conntrack
from podnet.proxy.iptables import Iptables
from podnet.proxy.nft_run import Nft
from podnet.proxy.sync import Clock

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

INFORMER_SURFACE = ("add_handler", "get", "list", "keys", "__len__", "has_synced", "wait_synced", "run")
"""What code outside kube reads of :class:`Informer` (it is a class, not a Protocol)."""

PAIRS = [
    pytest.param(Iptables, proxy_testing.FakeIptables, None, id="proxy-Iptables-FakeIptables"),
    pytest.param(Nft, proxy_testing.FakeNft, None, id="proxy-Nft-FakeNft"),
    pytest.param(Conntrack, proxy_testing.FakeConntrack, None, id="proxy-Conntrack-FakeConntrack"),
    pytest.param(Clock, kube_testing.FakeClock, None, id="proxy-Clock-FakeClock"),
    pytest.param(InformerLike, kube_testing.FakeInformer, None, id="dns-InformerLike-FakeInformer"),
    pytest.param(DatagramBatch, dns_testing.FakeDatagramBatch, None, id="dns-DatagramBatch-FakeDatagramBatch"),
    pytest.param(Informer, kube_testing.FakeInformer, INFORMER_SURFACE, id="kube-Informer-FakeInformer"),
    pytest.param(NetOps, cni_testing.FakeNetOps, None, id="cni-NetOps-FakeNetOps"),
    pytest.param(OverlayOps, cni_testing.FakeOverlayOps, None, id="cni-OverlayOps-FakeOverlayOps"),
    pytest.param(Store, cni_testing.MemoryStore, None, id="cni-Store-MemoryStore"),
    pytest.param(RawTables, cni_testing.FakeRawTables, None, id="cni-Tables-FakeRawTables"),
    pytest.param(Kernel, policy_testing.FakeKernel, None, id="policy-Kernel-FakeKernel"),
]

NO_PROTOCOL = {
    dns_testing.FakeUpstream: "a real UDP/TCP DNS server on a loopback address, not a stand-in for a podnet interface",
}

TESTING_MODULES = [cni_testing, dns_testing, kube_testing, policy_testing, proxy_testing]


def _members(proto: type, only: tuple[str, ...] | None) -> tuple[dict[str, Any], set[str]]:
    """(methods, data attributes) a Protocol declares; ``only`` picks names from a plain class."""
    if only is not None:
        methods = {n: getattr(proto, n) for n in only if callable(getattr(proto, n))}
        return methods, {n for n in only if n not in methods}
    methods = {n: v for n, v in vars(proto).items() if not n.startswith("_") and callable(v)}
    return methods, set(getattr(proto, "__annotations__", {}))


def signature_mismatches(name: str, want: Any, got: Any) -> list[str]:
    out = []
    if inspect.iscoroutinefunction(want) != inspect.iscoroutinefunction(got):
        out.append(f"{name}: async in one and not the other")
    wp = list(inspect.signature(want).parameters.values())
    gp = list(inspect.signature(got).parameters.values())
    for i, w in enumerate(wp):
        if i >= len(gp):
            out.append(f"{name}: missing parameter {w.name}")
            continue
        g = gp[i]
        if (g.name, g.kind) != (w.name, w.kind):
            out.append(f"{name}: parameter {i} is {g.name} ({g.kind.description}), "
                       f"the Protocol's is {w.name} ({w.kind.description})")
        elif w.default is not inspect.Parameter.empty and g.default is inspect.Parameter.empty:
            out.append(f"{name}: parameter {w.name} has a default in the Protocol, none in the fake")
    for g in gp[len(wp):]:
        if g.default is inspect.Parameter.empty and g.kind not in (g.VAR_POSITIONAL, g.VAR_KEYWORD):
            out.append(f"{name}: extra parameter {g.name} without a default")
    return out


@pytest.mark.parametrize("proto,fake,only", PAIRS)
def test_fake_satisfies_its_protocol(proto: type, fake: type, only: tuple[str, ...] | None):
    methods, attrs = _members(proto, only)
    assert methods, f"{proto.__name__} declares no methods: the case checks nothing"
    bad = []
    for name, want in methods.items():
        got = getattr(fake, name, None)
        if got is None or not callable(got):
            bad.append(f"{name}: missing")
        else:
            bad += signature_mismatches(name, want, got)
    instance = fake()
    bad += [f"{a}: attribute missing on {fake.__name__}()" for a in sorted(attrs) if not hasattr(instance, a)]
    assert not bad, f"{fake.__name__} does not satisfy {proto.__name__}:\n" + "\n".join(bad)


CHECKER_CASES = [
    pytest.param("async def f(self, a: int) -> None: ...", "def f(self, a): ...", ["async"], id="sync-for-async"),
    pytest.param("def f(self, netns, ifname): ...", "def f(self, ns, ifname): ...", ["parameter 1 is ns"], id="renamed"),
    pytest.param("def f(self, a, b=1): ...", "def f(self, a, b): ...", ["none in the fake"], id="lost-default"),
    pytest.param("def f(self, a): ...", "def f(self, a, b): ...", ["extra parameter b"], id="extra-required"),
    pytest.param("def f(self, a, b): ...", "def f(self, a): ...", ["missing parameter b"], id="missing"),
    pytest.param("def f(self, a, *, k=0): ...", "def f(self, a, k=0): ...", ["keyword-only"], id="kind-changed"),
    pytest.param("def f(self, a): ...", "def f(self, a, b=2, **kw): ...", [], id="extra-with-default-is-fine"),
]


@pytest.mark.parametrize("want_src,got_src,expect", CHECKER_CASES)
def test_signature_checker(want_src: str, got_src: str, expect: list[str]):
    want, got = {}, {}
    exec(want_src, want)
    exec(got_src, got)
    found = signature_mismatches("f", want["f"], got["f"])
    assert len(found) == len(expect), found
    for text, msg in zip(expect, found):
        assert text in msg, (text, msg)


def _fake_classes(module: Any) -> list[type]:
    return [v for n, v in vars(module).items()
            if inspect.isclass(v) and v.__module__ == module.__name__ and (n.startswith("Fake") or n == "MemoryStore")]


@pytest.mark.parametrize("module", TESTING_MODULES, ids=lambda m: m.__name__)
def test_every_fake_has_a_protocol_case(module: Any):
    covered = {p.values[1] for p in PAIRS} | set(NO_PROTOCOL)
    fakes = _fake_classes(module)
    assert not [f.__name__ for f in fakes if f not in covered], "fakes without a Protocol case"


def test_fakes_live_only_in_testing_modules():
    """Fakes are found by name: a Fake* class anywhere else (or a stray fake module) is a layout break."""
    stray = []
    for path, source in _product_sources():
        tree = ast.parse(source)
        stray += [f"{path}:{n.lineno} class {n.name}" for n in ast.walk(tree)
                  if isinstance(n, ast.ClassDef) and (n.name.startswith("Fake") or n.name == "MemoryStore")]
        if "fake" in path.stem or "testing" in path.stem:
            stray.append(f"{path}: test support outside the package's testing.py")
    assert not stray, "\n".join(stray)


def _product_sources() -> list[tuple[Path, str]]:
    out = []
    for folder in PACKAGE_DIRS.values():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts and path.name != "testing.py":
                out.append((path, path.read_text()))
    return out


def fake_imports(source: str) -> list[str]:
    """Import statements in ``source`` that pull in a testing module or a Fake* name."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.rpartition(".")[2] == "testing"]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            names = [a.name for a in node.names]
            if mod.rpartition(".")[2] == "testing" or any(n == "testing" or n.startswith("Fake") for n in names):
                bad.append(f"{node.lineno}: from {'.' * node.level}{mod} import {', '.join(names)}")
    return bad


SCAN_CASES = [
    pytest.param("from podnet.proxy.testing import FakeIptables", 1, id="from-testing-module"),
    pytest.param("from podnet.proxy import testing", 1, id="testing-module-by-name"),
    pytest.param("import podnet.kube.testing", 1, id="plain-import"),
    pytest.param("def f():\n    from .testing import svc", 1, id="relative-inside-function"),
    pytest.param("from podnet.cni.other import FakeNetOps", 1, id="fake-name-from-elsewhere"),
    pytest.param("from podnet.proxy.iptables import Iptables, jump_target", 0, id="product-import"),
    pytest.param("import unittest.mock", 0, id="unrelated"),
]


@pytest.mark.parametrize("source,count", SCAN_CASES)
def test_fake_import_scanner(source: str, count: int):
    assert len(fake_imports(source)) == count


def test_product_code_never_imports_a_fake():
    sources = _product_sources()
    assert len(sources) > 50, "the scan found too few modules: package folders moved?"
    bad = [f"{path.relative_to(ROOT)}:{b}" for path, source in sources for b in fake_imports(source)]
    assert not bad, "product modules importing test support:\n" + "\n".join(bad)
