"""Guards for the package layout: our dns/ must never shadow dnspython's dns."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    found = set()
    for dotted, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([dotted, *rel.parts]) if rel.parts else dotted)
    return found


def test_packages_list_matches_folders():
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk()


def test_every_source_folder_is_mapped():
    mapped = set(SETUPTOOLS["package-dir"].values())
    assert mapped == {"kube", "host", "proxy", "cni", "dns", "netlab", "policy"}


def test_import_dns_is_dnspython():
    import dns
    import dns.rdatatype

    assert Path(dns.__file__).resolve().parent != ROOT / "dns"
    assert dns.rdatatype.A == 1


def test_our_dns_is_namespaced():
    import podnet.dns

    assert Path(podnet.dns.__file__).resolve().parent == (ROOT / "dns") or "site-packages" in podnet.dns.__file__


@pytest.mark.parametrize("bare", ["proxy", "cni", "netlab", "kube"])
def test_bare_names_not_importable(bare):
    with pytest.raises(ModuleNotFoundError):
        __import__(bare)


def test_console_scripts_declared():
    assert set(PYPROJECT["project"]["scripts"]) == {"podnet", "podnet-proxy", "podnet-cni", "podnet-dns", "podnet-policy"}


def test_every_source_folder_is_a_listed_package():
    """A folder holding modules without an __init__.py would silently miss the wheel."""
    packages = set(SETUPTOOLS["packages"])
    for dotted, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for module in base.rglob("*.py"):
            rel = module.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            assert (module.parent / "__init__.py").is_file(), f"{module.parent} has modules but no __init__.py"
            assert ".".join([dotted, *rel.parts]) in packages, f"{module.parent} is not listed in pyproject packages"
