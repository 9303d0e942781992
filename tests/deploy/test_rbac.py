"""The ClusterRoles grant exactly the API calls the daemons' code makes: no more, no less.

The code is scanned, not listed by hand: every ``Informer(<client>, <module>.<RESOURCE>)``
is a list and a watch, every ``.get/.list/.create/.replace/.patch/.delete(<module>.<RESOURCE>``
that verb, with ``<module>.<RESOURCE>`` resolved to the real
:class:`~podnet.kube.resources.Resource` object (group and plural). The node pod's
service account runs cni/, proxy/ and policy/, the DNS pod's runs dns/. A bare
``Informer(client, NAME)`` resolves NAME in the calling module itself. Each file that makes a
call is named in the manifest's comments, beside the rule it needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from podnet.kube.resources import Resource


def _load_manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


m = _load_manifest()
ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = {"podnet-node": ("cni", "proxy", "policy"), "podnet-dns": ("dns",)}
VERBS = ("get", "list", "create", "replace", "patch", "delete")
INFORMER = re.compile(r"\bInformer\(")
VERB_CALL = re.compile(r"\.(%s)\(\s*(\w+)\.([A-Z][A-Z0-9_]*)\b" % "|".join(VERBS))
CONST = re.compile(r"\b(\w+)\.([A-Z][A-Z0-9_]*)\b")
BARE = re.compile(r"\bInformer\(\s*\w+,\s*([A-Z][A-Z0-9_]*)\b")
# client verb -> RBAC verb
RBAC_VERB = {"get": "get", "list": "list", "create": "create", "replace": "update", "patch": "patch",
             "delete": "delete"}


def _resource(package: str, alias: str, const: str) -> Resource | None:
    for modname in (f"podnet.{package}.{alias}", f"podnet.kube.{alias}"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        value = getattr(mod, const, None)
        if isinstance(value, Resource):
            return value
    return None


def _own(package: str, stem: str, const: str) -> Resource | None:
    value = getattr(importlib.import_module(f"podnet.{package}.{stem}"), const, None)
    return value if isinstance(value, Resource) else None


def _group(res: Resource) -> str:
    return "" if res.api_path.startswith("/api/") else res.api_path.split("/")[2]


def code_calls(packages: tuple[str, ...]) -> dict[tuple[str, str, str], set[str]]:
    """{(group, resource, verb): {file:line, ...}} for the API calls in ``packages``."""
    calls: dict[tuple[str, str, str], set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name.startswith("fake_") or path.name == "testing.py":
                continue  # fakes never run in a daemon
            for n, line in enumerate(path.read_text().splitlines(), 1):
                found: list[tuple[Resource, str]] = []
                if INFORMER.search(line):
                    for alias, const in CONST.findall(line):
                        res = _resource(package, alias, const)
                        if res is not None:
                            found += [(res, "list"), (res, "watch")]
                    for const in BARE.findall(line):
                        res = _own(package, path.stem, const)
                        if res is not None:
                            found += [(res, "list"), (res, "watch")]
                for verb, alias, const in VERB_CALL.findall(line):
                    res = _resource(package, alias, const)
                    if res is not None:
                        found.append((res, RBAC_VERB[verb]))
                for res, verb in found:
                    calls.setdefault((_group(res), res.plural, verb), set()).add(f"{package}/{path.name}:{n}")
    return calls


def granted(role: str) -> set[tuple[str, str, str]]:
    out = set()
    for rule in m.find("ClusterRole", role)["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), f"{role}: wildcard in {rule}"
                    out.add((g, r, v))
    return out


@pytest.mark.parametrize("account", sorted(ACCOUNTS))
def test_rules_are_exactly_the_calls_the_code_makes(account):
    calls = code_calls(ACCOUNTS[account])
    assert calls, f"no API calls found for {account}: the scan is broken"
    need = set(calls)
    have = granted(account)
    assert not need - have, f"{account} lacks {sorted(need - have)}; needed by " + \
        ", ".join(f"{k}: {sorted(calls[k])}" for k in sorted(need - have))
    assert not have - need, f"{account} grants {sorted(have - need)} that no code uses"


@pytest.mark.parametrize("account", sorted(ACCOUNTS))
def test_each_calling_file_is_named_in_the_manifest(account):
    text = m.MANIFEST.read_text()
    files = {where.split(":")[0] for spots in code_calls(ACCOUNTS[account]).values() for where in spots}
    missing = [f for f in sorted(files) if f not in text]
    assert not missing, f"the manifest's RBAC comments do not name {missing}"


@pytest.mark.parametrize("account", sorted(ACCOUNTS))
def test_binding_and_service_account(account):
    b = m.find("ClusterRoleBinding", account)
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account}
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}]
    users = [wl for wl, spec in m.pod_specs() if spec["serviceAccountName"] == account]
    assert users, f"no workload runs as {account}"


def test_the_scan_sees_every_kind_of_call(tmp_path):
    """The patterns find an informer, a get and a patch, and a call on an unknown name is not a call."""
    src = ("self.x = Informer(client, resources.NODES)\n"
           "node = resources.convert(resources.NODES, await client.get(resources.NODES, name))\n"
           "await self.api.patch(resources.SERVICES, name, body)\n"
           "v = ann.get(ANN_KEY)\n"
           "return Informer(client, NETWORK_POLICIES), Informer(client, NAMESPACES)\n")
    found = []
    for line in src.splitlines():
        if INFORMER.search(line):
            found += [c for a, c in CONST.findall(line) if _resource("kube", a, c)]
            found += [c for c in BARE.findall(line) if _own("policy", "engine", c)]
        found += [(v, c) for v, a, c in VERB_CALL.findall(line) if _resource("kube", a, c)]
    assert found == ["NODES", ("get", "NODES"), ("patch", "SERVICES"), "NETWORK_POLICIES", "NAMESPACES"]


def test_the_policy_engine_needs_exactly_policies_pods_namespaces_and_nodes():
    calls = code_calls(("policy",))
    assert set(calls) == {(g, r, v) for g, r in (("networking.k8s.io", "networkpolicies"), ("", "pods"),
                                                  ("", "namespaces"), ("", "nodes"),
                                                  ("policy.networking.k8s.io", "adminnetworkpolicies"),
                                                  ("policy.networking.k8s.io", "baselineadminnetworkpolicies"))
                          for v in ("list", "watch")}
