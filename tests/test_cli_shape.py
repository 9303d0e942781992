"""One CLI shape for the binaries: flags -> one frozen options dataclass -> run.

Checked for podnet-proxy, podnet-policy, the CNI daemon (podnet-cni daemon) and podnet-dns, by
parsing in-process (nothing runs): the node is named with ``--node-name`` everywhere a binary
needs a node (kube-proxy's ``--hostname-override`` stays an alias on podnet-proxy and
podnet-policy); duration flags take Kubernetes' notation, and a bare number of seconds where the
flag took seconds before; the options are frozen. The shared ``-v``/``--logging-format``/
``--version`` are checked per console script in tests/kube/test_logsetup.py.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from podnet.cni import cli as cni_cli
from podnet.cni import daemon as cni_daemon
from podnet.dns import cli as dns_cli
from podnet.netlab.commands import cli as podnet_cli
from podnet.policy import cli as policy_cli
from podnet.proxy import cli as proxy_cli

CNI_BASE = ["daemon", "--socket", "/tmp/pnt-x.sock", "--data-dir", "/tmp/pnt-d"]


def proxy_options(argv: list[str]):
    return proxy_cli.build_config(proxy_cli.parser().parse_args(argv))


def policy_options(argv: list[str]):
    return policy_cli.options_from(policy_cli.parser().parse_args(argv))


def cni_options(argv: list[str]):
    return cni_daemon.options_from(cni_cli.parser().parse_args(CNI_BASE + argv))


def dns_options(argv: list[str]):
    return dns_cli.parse_args(argv)


NODE = [
    pytest.param(proxy_options, ["--node-name", "node-1"], "hostname_override", id="proxy-node-name"),
    pytest.param(proxy_options, ["--hostname-override", "node-1"], "hostname_override", id="proxy-hostname-override"),
    pytest.param(policy_options, ["--node-name", "node-1"], "node", id="policy-node-name"),
    pytest.param(policy_options, ["--hostname-override", "node-1"], "node", id="policy-hostname-override"),
    pytest.param(cni_options, ["--node-name", "node-1"], "node_name", id="cni-daemon-node-name"),
]


@pytest.mark.parametrize(("options", "argv", "field"), NODE)
def test_node_name_flag(options, argv, field):
    assert getattr(options(argv), field) == "node-1"


DURATIONS = [
    pytest.param(policy_options, ["--min-sync-period", "250ms"], "min_sync_period", 0.25, id="policy-go"),
    pytest.param(policy_options, ["--full-sync-period", "1m30s"], "full_sync_period", 90.0, id="policy-compound"),
    pytest.param(policy_options, ["--min-sync-period", "2"], "min_sync_period", 2.0, id="policy-bare-seconds"),
    pytest.param(cni_options, ["--node-name", "n", "--route-interval", "30s"], "route_interval", 30.0, id="cni-go"),
    pytest.param(cni_options, ["--node-name", "n", "--route-interval", "10"], "route_interval", 10.0,
                 id="cni-bare-seconds"),
    pytest.param(cni_options, ["--node-name", "n", "--reconcile-interval", "1m"], "reconcile_interval", 60.0,
                 id="cni-reconcile-minutes"),
    pytest.param(cni_options, ["--node-name", "n", "--policy-timeout", "1500ms"], "policy_timeout", 1.5,
                 id="cni-policy-timeout-millis"),
    pytest.param(dns_options, ["--lameduck", "5s"], "lameduck", 5.0, id="dns-go"),
    pytest.param(dns_options, ["--lameduck", "2.5"], "lameduck", 2.5, id="dns-bare-seconds"),
    pytest.param(proxy_options, ["--iptables-sync-period", "1m30s"], "sync_period", 90.0, id="proxy-go"),
    pytest.param(proxy_options, ["--iptables-min-sync-period", "100ms"], "min_sync_period", 0.1, id="proxy-millis"),
]


@pytest.mark.parametrize(("options", "argv", "field", "seconds"), DURATIONS)
def test_duration_flags(options, argv, field, seconds):
    assert getattr(options(argv), field) == pytest.approx(seconds)


@pytest.mark.parametrize(("parser", "argv"), [
    pytest.param(policy_cli.parser, ["--min-sync-period", "1x"], id="policy"),
    pytest.param(cni_cli.parser, CNI_BASE + ["--node-name", "n", "--route-interval", "-1s"], id="cni-negative"),
    pytest.param(dns_cli._parser, ["--lameduck", "5 s"], id="dns"),
    pytest.param(proxy_cli.parser, ["--iptables-sync-period", "30"], id="proxy-needs-a-unit-as-kube-proxy"),
])
def test_bad_duration_is_one_line_and_status_2(parser, argv, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "error:" in err


@pytest.mark.parametrize("options", [
    pytest.param(lambda: proxy_options(["--node-name", "n"]), id="proxy"),
    pytest.param(lambda: policy_options(["--node-name", "n"]), id="policy"),
    pytest.param(lambda: cni_options(["--node-name", "n"]), id="cni-daemon"),
    pytest.param(lambda: dns_options([]), id="dns"),
    pytest.param(lambda: cni_install_options(["install", "--plugin-dirs", "/a::/b"]), id="cni-install"),
])
def test_options_are_frozen(options):
    opts = options()
    assert dataclasses.is_dataclass(opts)
    field = dataclasses.fields(opts)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(opts, field, getattr(opts, field))


def cni_install_options(argv):
    from podnet.cni import install
    return install.install_options_from(cni_cli.parser().parse_args(argv))


@pytest.mark.parametrize(("argv", "dirs"), [
    pytest.param(["install"], ("/opt/cni/bin",), id="default-is-bin-dir"),
    pytest.param(["install", "--bin-dir", "/x"], ("/x",), id="follows-bin-dir"),
    pytest.param(["install", "--plugin-dirs", "/a::/b"], ("/a", "/b"), id="colon-list-without-empties"),
])
def test_cni_install_plugin_dirs(argv, dirs):
    assert cni_install_options(argv).plugin_dirs == dirs


def test_cni_policy_required_without_socket_is_a_config_error(capsys):
    assert cni_cli.main(CNI_BASE + ["--node-name", "n", "--policy-required"]) == 2
    assert "--policy-required needs --policy-socket" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    pytest.param(["lab", "up", "--nodes", "x"], id="bad-value"),
    pytest.param(["lab", "nosuchverb"], id="unknown-verb"),
])
def test_podnet_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        podnet_cli.parser().parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1


def test_every_podnet_verb_is_wired():
    p = podnet_cli.parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    lab = next(a for a in sub.choices["lab"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(lab.choices) == set(podnet_cli.LAB_VERBS) and set(podnet_cli.TOOLS) <= set(sub.choices)
