"""Fixtures for API-layer tests: ``h`` gives tests/kube/helpers.py, ``pki`` throwaway certificates.

``lab_api`` and ``client`` (a real lab API server over HTTP, and a client for it)
come from tests/conftest.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _load_helpers():
    import importlib.util
    import sys
    from pathlib import Path

    name = "podnet_tests_kube_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("helpers.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def h():
    """tests/kube/helpers.py: Recorder, FlakyClient, wait_for, svc."""
    return _load_helpers()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and two client certificates (EC keys: fast)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=podnet-test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "podnet-proxy"), ("client2", "podnet-rotated")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *(["-extfile", "san.ext"] if name == "server" else []))
    return d
