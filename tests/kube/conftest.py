"""Fixtures for API-layer tests: a real lab API server over HTTP, and a client for it.

Other test folders may copy these fixtures (conftest files are per folder):

    @pytest.fixture
    async def lab_api():
        async with LabApiServer(bookmark_interval=0.2) as api:
            yield api
"""

from __future__ import annotations

import pytest

from podnet.kube.client import ApiClient
from podnet.netlab.apiserver import LabApiServer


@pytest.fixture
async def lab_api():
    """A lab API server on 127.0.0.1 (ephemeral port) with its controllers."""
    async with LabApiServer(bookmark_interval=0.2) as api:
        yield api


@pytest.fixture
async def client(lab_api):
    async with ApiClient.from_url(lab_api.url) as c:
        yield c


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
