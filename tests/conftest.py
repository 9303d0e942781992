"""Fixtures shared by every test folder.

This file sits in tests/, not at the checkout root, and pytest runs with
--import-mode=importlib, so the checkout never lands on sys.path (our dns/
folder must not shadow dnspython's dns).
"""

from __future__ import annotations

import pytest

from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer


@pytest.fixture
async def lab_api():
    """A lab API server on 127.0.0.1 (ephemeral port) with its controllers."""
    async with LabApiServer(bookmark_interval=0.2) as api:
        yield api


@pytest.fixture
async def client(lab_api):
    """An ApiClient talking plain HTTP to the ``lab_api`` server."""
    async with ApiClient.from_url(lab_api.url) as c:
        yield c
