"""Shared fixtures for podnet.dns tests (helpers live in podnet.dns.testing)."""

from __future__ import annotations

import pytest

from podnet.dns.handler import Handler
from podnet.dns.server import DnsServer
from podnet.dns.testing import cluster_table


@pytest.fixture
def table():
    return cluster_table()


@pytest.fixture
async def server(table):
    """A DnsServer with the cluster table on 127.0.0.1 (ephemeral port), no upstream."""
    srv = DnsServer(Handler(table), "127.0.0.1", 0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
