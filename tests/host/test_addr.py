"""host:port parsing, as Go's net.SplitHostPort plus the rules every podnet address flag shares."""

from __future__ import annotations

import pytest

from podnet.host.addr import join_hostport, listen_address, split_hostport


@pytest.mark.parametrize(("text", "default_port", "want"), [
    pytest.param("10.0.0.1:53", None, ("10.0.0.1", 53), id="v4"),
    pytest.param("[fd00::1]:8080", None, ("fd00::1", 8080), id="v6-bracketed"),
    pytest.param(":8080", None, ("", 8080), id="empty-host"),
    pytest.param("localhost:9153", None, ("localhost", 9153), id="name-not-resolved"),
    pytest.param("127.0.0.1:0", None, ("127.0.0.1", 0), id="ephemeral"),
    pytest.param("10.0.0.1", 53, ("10.0.0.1", 53), id="default-port-v4"),
    pytest.param("[::1]", 53, ("::1", 53), id="default-port-bracketed-v6"),
    pytest.param("fd00::1", 53, ("fd00::1", 53), id="default-port-bare-v6"),
    pytest.param("10.0.0.1:5353", 53, ("10.0.0.1", 5353), id="given-port-wins"),
])
def test_split_hostport(text, default_port, want):
    assert split_hostport(text, default_port) == want


@pytest.mark.parametrize(("text", "default_port", "message"), [
    pytest.param("10.0.0.1", None, "missing port", id="no-port"),
    pytest.param("::1:80", None, "too many colons", id="v6-without-brackets"),
    pytest.param("10.0.0.1:65536", None, "invalid port", id="port-range"),
    pytest.param("10.0.0.1:+80", None, "invalid port", id="signed-port"),
    pytest.param("10.0.0.1:http", None, "invalid port", id="named-port"),
    pytest.param("10.0.0.1:000080", None, "invalid port", id="six-digits"),
    pytest.param("10.0.0.1:\u0665\u0663", None, "invalid port", id="non-ascii-digits"),
    pytest.param("[fe80::1%eth0]:80", None, "zones", id="zone"),
    pytest.param("[::1:80", None, "missing ']'", id="unclosed-bracket"),
    pytest.param("[::1]x:80", None, "junk after", id="junk-after-bracket"),
    pytest.param("[::1]", None, "missing port", id="bracket-without-port"),
    pytest.param("a]:80", None, "unexpected bracket", id="stray-bracket"),
    pytest.param("10.0.0.1:", None, "invalid port", id="empty-port"),
])
def test_split_hostport_refuses(text, default_port, message):
    with pytest.raises(ValueError, match=message):
        split_hostport(text, default_port)


@pytest.mark.parametrize(("host", "port", "want"), [
    pytest.param("10.0.0.1", 80, "10.0.0.1:80", id="v4"),
    pytest.param("fd00::1", 80, "[fd00::1]:80", id="v6"),
    pytest.param("", 80, ":80", id="empty"),
])
def test_join_hostport_round_trips(host, port, want):
    assert join_hostport(host, port) == want
    assert split_hostport(want) == (host, port)


@pytest.mark.parametrize(("text", "default_port", "want"), [
    pytest.param(":8080", None, ("0.0.0.0", 8080), id="empty-host-is-every-v4-address"),
    pytest.param("[::]:8181", None, ("::", 8181), id="v6-any"),
    pytest.param("0.0.0.0", 53, ("0.0.0.0", 53), id="default-port"),
])
def test_listen_address(text, default_port, want):
    assert listen_address(text, default_port) == want
