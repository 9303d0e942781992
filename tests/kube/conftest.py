"""Fixtures for API-layer tests: ``h`` gives tests/kube/helpers.py.

``lab_api`` and ``client`` (a real lab API server over HTTP, and a client for it)
come from tests/conftest.py.
"""

from __future__ import annotations

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
