"""Fixtures shared by every test folder.

This file sits in tests/, not at the checkout root, and pytest runs with
--import-mode=importlib, so the checkout never lands on sys.path (our dns/
folder must not shadow dnspython's dns).
"""

from __future__ import annotations

import signal

import pytest

from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """SIGTERM stops the run as Ctrl-C does, so the ``finally`` blocks and fixture teardowns that remove
    the namespaces, labs and processes a test made still run (a plain SIGTERM would kill pytest first)."""
    signal.signal(signal.SIGTERM, _interrupt)


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
