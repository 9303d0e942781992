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
