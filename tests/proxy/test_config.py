"""KubeProxyConfiguration decoding, defaults and validation; podnet-proxy's flags over the file.

Fixtures, verbatim:

* ``kubeadm_kube_proxy_config.conf``: the ``config.conf`` key of the ``kube-proxy``
  ConfigMap that kubeadm v1.33.0 wrote (``kubectl describe cm -n kube-system
  kube-proxy``), as published in ibtisam-iq/nectar,
  kubernetes/practice-labs/Troubleshooting/cluster-components/kube-proxy.md.
  kubeadm serialises its KubeProxyConfiguration without defaulting, hence the
  ``0s`` periods, ``null`` pointers and empty addresses.
* ``KUBE_PROXY_DEFAULTED`` below: kube-proxy's own defaulted v1alpha1 object,
  kubernetes/kubernetes pkg/proxy/apis/config/scheme/testdata/KubeProxyConfiguration/
  roundtrip/default/v1alpha1.yaml.

Default values are kube-proxy's ``SetDefaults_KubeProxyConfiguration``
(pkg/proxy/apis/config/v1alpha1/defaults.go).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.proxy import config as c
from podnet.proxy.cli import build_config, parser, resolve_args
from podnet.proxy.daemon import Config
from podnet.proxy.sync import Pacer

KUBEADM = (Path(__file__).with_name("kubeadm_kube_proxy_config.conf")).read_text()

KUBE_PROXY_DEFAULTED = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: ""
  qps: 5
clusterCIDR: ""
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: 0.0.0.0:10256
hostnameOverride: ""
iptables:
  localhostNodePorts: true
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 30s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
metricsBindAddress: 127.0.0.1:10249
mode: ""
nodePortAddresses: null
oomScoreAdj: -999
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"""

HEAD = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() installs the process's log handler; take it away again after each test."""
    import logging

    from podnet.kube import logsetup

    level = logging.getLogger().level
    yield
    if logsetup._handler is not None:
        logging.getLogger().removeHandler(logsetup._handler)
        logsetup._handler = None
    logging.getLogger().setLevel(level)


def settings(body: str = "", **flags) -> c.ProxySettings:
    return c.resolve(c.decode(HEAD + body), flags)


# -- the two upstream documents


def test_kubeadm_configmap_decodes_unchanged_to_kube_proxy_defaults():
    s = c.resolve(c.decode(KUBEADM))
    assert (s.sync_period, s.min_sync_period) == (30.0, 1.0)
    assert (s.healthz_bind_address, s.metrics_bind_address) == ("0.0.0.0:10256", "127.0.0.1:10249")
    assert (s.mode, s.masquerade_bit, s.localhost_nodeports, s.masquerade_all) == ("iptables", 14, True, False)
    assert s.cluster_cidrs == ("10.244.0.0/16",) and s.kubeconfig == "/var/lib/kube-proxy/kubeconfig.conf"
    assert s.conntrack == c.Conntrack(32768, 131072, 86400.0, 3600.0, False, 0.0, 0.0)
    assert (s.logging_format, s.verbosity, s.nodeport_addresses, s.ignored) == ("text", 0, (), ())
    assert s.oom_score_adj == -999


def test_kube_proxy_defaulted_object_means_the_same():
    a, b = c.resolve(c.decode(KUBEADM)), c.resolve(c.decode(KUBE_PROXY_DEFAULTED))
    assert b == c.ProxySettings(kubeconfig="", conntrack=a.conntrack)
    assert (a.sync_period, a.healthz_bind_address, a.conntrack) == (b.sync_period, b.healthz_bind_address, b.conntrack)


def test_older_kubeadm_fields_are_accepted_and_reported():
    # udpIdleTimeout and conntrack.max: kubeadm 1.19-era dumps (removed from kube-proxy later)
    s = settings("udpIdleTimeout: 250ms\nresourceContainer: /kube-proxy\nconntrack:\n  max: 0\n  maxPerCore: 0\n")
    assert sorted(i.split()[0] for i in s.ignored) == ["conntrack.max", "resourceContainer", "udpIdleTimeout"]
    assert s.conntrack.max_per_core == 0
    assert settings("conntrack:\n  max: null\n").ignored == ()  # null is Go's "unset"


# -- Go durations

DURATIONS = [
    ("s", "30s", 30.0), ("m-s", "1m30s", 90.0), ("ms", "500ms", 0.5), ("h-m", "2h45m", 9900.0),
    ("fraction", "1.5h", 5400.0), ("us", "300us", 0.0003), ("bare-zero", "0", 0.0), ("zero-s", "0s", 0.0),
    ("negative", "-1s", -1.0), ("go-string", "24h0m0s", 86400.0), ("plus", "+2s", 2.0),
]


@pytest.mark.parametrize("text,want", [d[1:] for d in DURATIONS], ids=[d[0] for d in DURATIONS])
def test_parse_duration(text, want):
    assert c.parse_duration(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["30", "1d", "", " 1s", "1s ", "s", "1m30", "+", ".s", "1 s", "1.2.3s"],
                         ids=["no-unit", "days", "empty", "lead-space", "trail-space", "no-number", "trailing-number",
                              "sign-only", "dot-only", "inner-space", "two-dots"])
def test_parse_duration_refuses_what_go_refuses(text):
    with pytest.raises(ValueError):
        c.parse_duration(text)


@pytest.mark.parametrize("secs,text", [(90, "1m30s"), (0, "0s"), (0.5, "500ms"), (86400, "24h0m0s"), (30, "30s")],
                         ids=["m-s", "zero", "ms", "day", "s"])
def test_format_duration_as_go(secs, text):
    assert c.format_duration(secs) == text


# -- zero and empty mean kube-proxy's defaults

DEFAULTS = [
    ("zero-periods", "iptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\n", {},
     dict(sync_period=30.0, min_sync_period=1.0)),
    ("bare-zero-period", "iptables:\n  syncPeriod: '0'\n", {}, dict(sync_period=30.0)),
    ("empty-addresses", 'healthzBindAddress: ""\nmetricsBindAddress: ""\n', {},
     dict(healthz_bind_address="0.0.0.0:10256", metrics_bind_address="127.0.0.1:10249")),
    ("ipv6-bind", "bindAddress: '::'\n", {},
     dict(healthz_bind_address="[::]:10256", metrics_bind_address="[::1]:10249")),
    ("bare-ip-gets-port", "healthzBindAddress: 10.0.0.1\nmetricsBindAddress: '::1'\n", {},
     dict(healthz_bind_address="10.0.0.1:10256", metrics_bind_address="[::1]:10249")),
    ("explicit", "iptables:\n  syncPeriod: 1m30s\n  minSyncPeriod: 250ms\n", {},
     dict(sync_period=90.0, min_sync_period=0.25)),
    ("flag-zero-period", "iptables:\n  syncPeriod: 10s\n", dict(iptables_sync_period="0s"), dict(sync_period=30.0)),
    ("flag-over-file", "iptables:\n  syncPeriod: 10s\n  minSyncPeriod: 2s\n",
     dict(iptables_min_sync_period="3s"), dict(sync_period=10.0, min_sync_period=3.0)),
    ("mode-iptables", "mode: iptables\n", {}, dict(mode="iptables")),
    ("mode-nftables", "mode: nftables\n", {}, dict(mode="nftables")),
    ("mode-nftables-flag", "", dict(proxy_mode="nftables"), dict(mode="nftables")),
    ("mode-flag", "", dict(proxy_mode="iptables"), dict(mode="iptables")),
    ("dual-stack", "clusterCIDR: 10.244.0.0/16,fd00:244::/56\n", {},
     dict(cluster_cidrs=("10.244.0.0/16", "fd00:244::/56"))),
    ("cidr-host-bits", "clusterCIDR: 10.244.1.7/16\n", {}, dict(cluster_cidrs=("10.244.0.0/16",))),
    ("detect-local", "detectLocalMode: ClusterCIDR\n", dict(detect_local_mode="ClusterCIDR"), {}),
    ("hostname-lowered", "hostnameOverride: Node-1\n", {}, dict(hostname_override="node-1")),
    ("flag-hostname", "hostnameOverride: a\n", dict(hostname_override="B"), dict(hostname_override="b")),
    ("logging", "logging:\n  format: json\n  verbosity: 4\n", {}, dict(logging_format="json", verbosity=4)),
    ("logging-flags-win", "logging:\n  format: json\n  verbosity: 4\n", dict(logging_format="text", v=2),
     dict(logging_format="text", verbosity=2)),
    ("nodeport-keywords", "nodePortAddresses: [primary, 10.1.0.0/16]\n", {},
     dict(nodeport_addresses=("primary", "10.1.0.0/16"))),
    ("localhost-nodeports-off", "iptables:\n  localhostNodePorts: false\n  masqueradeBit: 0\n", {},
     dict(localhost_nodeports=False, masquerade_bit=0)),
]


@pytest.mark.parametrize("body,flags,want", [d[1:] for d in DEFAULTS], ids=[d[0] for d in DEFAULTS])
def test_defaults_and_overrides(body, flags, want):
    s = settings(body, **flags)
    assert {k: getattr(s, k) for k in want} == want


def test_conntrack_flags_and_sysctls():
    s = settings("conntrack:\n  maxPerCore: 1000\n", conntrack_min=5000, conntrack_tcp_timeout_established="2h",
                 conntrack_tcp_timeout_close_wait="90s", conntrack_tcp_be_liberal=True)
    assert c.conntrack_sysctls(s.conntrack, ncpu=2) == {
        "net/netfilter/nf_conntrack_max": 5000,
        "net/netfilter/nf_conntrack_tcp_timeout_established": 7200,
        "net/netfilter/nf_conntrack_tcp_timeout_close_wait": 90,
        "net/netfilter/nf_conntrack_tcp_be_liberal": 1,
    }
    leave = settings("conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n")
    assert c.conntrack_sysctls(leave.conntrack, ncpu=8) == {}


def test_feature_gates_merge_and_are_reported():
    s = settings("featureGates:\n  A: true\n", feature_gates={"B": False})
    assert s.feature_gates == (("A", True), ("B", False))
    assert any(i.startswith("featureGates A=true,B=false") for i in s.ignored)
    assert c.parse_feature_gates("X=1, Y=False") == {"X": True, "Y": False}
    with pytest.raises(ValueError):
        c.parse_feature_gates("X")


# -- refused, with one line naming the field

REFUSED = [
    ("unknown-top", "foo: 1\n", {}, 'unknown field "foo"'),
    ("unknown-nested", "iptables:\n  syncPeriodd: 1s\n", {}, 'unknown field "iptables.syncPeriodd"'),
    ("unknown-logging", "logging:\n  colour: true\n", {}, 'unknown field "logging.colour"'),
    ("mode-ipvs", "mode: ipvs\n", {}, 'mode: Invalid value: "ipvs": podnet-proxy implements only the iptables'),
    ("mode-kernelspace", "mode: kernelspace\n", {}, '"kernelspace": podnet-proxy implements only'),
    ("mode-nonsense", "mode: userspace\n", {}, 'mode: Invalid value: "userspace": must be iptables'),
    ("mode-flag", "", dict(proxy_mode="ipvs"), 'Invalid value: "ipvs"'),
    ("int-as-string", "iptables:\n  masqueradeBit: '14'\n", {}, "iptables.masqueradeBit: cannot unmarshal string"),
    ("bool-as-string", "iptables:\n  masqueradeAll: 'yes'\n", {}, "iptables.masqueradeAll: cannot unmarshal string"),
    ("duration-as-number", "iptables:\n  syncPeriod: 30\n", {}, "iptables.syncPeriod: cannot unmarshal number"),
    ("duration-no-unit", "iptables:\n  syncPeriod: '30'\n", {}, 'iptables.syncPeriod: time: invalid duration "30"'),
    ("negative-period", "iptables:\n  syncPeriod: -1s\n", {}, "iptables.syncPeriod: Invalid value"),
    ("negative-min", "iptables:\n  minSyncPeriod: -1s\n", {}, "iptables.minSyncPeriod: Invalid value"),
    ("min-above-sync", "iptables:\n  syncPeriod: 2s\n  minSyncPeriod: 5s\n", {},
     "iptables.syncPeriod: Invalid value: \"2s\": must be greater than or equal to iptables.minSyncPeriod (5s)"),
    ("masq-bit", "iptables:\n  masqueradeBit: 32\n", {}, "iptables.masqueradeBit: Invalid value: 32"),
    ("cidr", "clusterCIDR: 10.244.0.0\n", {}, 'clusterCIDR: Invalid value: "10.244.0.0"'),
    ("cidr-zone", "clusterCIDR: 'fe80::%eth0/64'\n", {}, "clusterCIDR: Invalid value"),
    ("cidr-leading-zero", "clusterCIDR: 010.0.0.0/8\n", {}, "clusterCIDR: Invalid value"),
    ("three-cidrs", "clusterCIDR: 10.0.0.0/8,fd00::/64,11.0.0.0/8\n", {}, "only one CIDR allowed"),
    ("two-v4", "clusterCIDR: 10.0.0.0/8,11.0.0.0/8\n", {}, "DualStack"),
    ("bind", "bindAddress: 1.2.3\n", {}, 'bindAddress: Invalid value: "1.2.3"'),
    ("healthz", "healthzBindAddress: localhost:10256\n", {}, "healthzBindAddress: Invalid value: \"localhost:10256\": "
     "must be a valid IP"),
    ("metrics-port", "metricsBindAddress: 127.0.0.1:70000\n", {}, "must be a valid port"),
    ("detect-nodecidr", "detectLocalMode: NodeCIDR\n", {}, '"NodeCIDR": podnet-proxy detects local traffic by'),
    ("detect-bogus", "detectLocalMode: Bogus\n", {}, 'detectLocalMode: Invalid value: "Bogus"'),
    ("log-format", "logging:\n  format: xml\n", {}, 'logging.format: Unsupported value: "xml"'),
    ("nodeport-addresses", "nodePortAddresses: [primry]\n", {}, "nodePortAddresses: Invalid value"),
    ("oom", "oomScoreAdj: 2000\n", {}, "oomScoreAdj: Invalid value: 2000"),
    ("conntrack-negative", "conntrack:\n  min: -1\n", {}, "conntrack.min: Invalid value: -1"),
    ("gates-not-bool", "featureGates:\n  A: 'on'\n", {}, "featureGates: cannot unmarshal object"),
]


@pytest.mark.parametrize("body,flags,msg", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_with_a_message_naming_it(body, flags, msg):
    with pytest.raises(c.ConfigError) as e:
        settings(body, **flags)
    assert msg in str(e.value) and "\n" not in str(e.value)


DOCUMENTS = [
    ("wrong-version", "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
     "expected apiVersion kubeproxy.config.k8s.io/v1alpha1 kind KubeProxyConfiguration"),
    ("no-kind", "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n", "got apiVersion"),
    ("kubeconfig-given", "apiVersion: v1\nkind: Config\nclusters: []\n", "kind 'Config'"),
    ("not-a-mapping", "- a\n- b\n", "expected one KubeProxyConfiguration object"),
    ("two-documents", HEAD + "---\n" + HEAD, "expected one"),
    ("yaml-syntax", HEAD + "iptables: [\n", "not YAML or JSON (line"),
    ("json", '{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "x": 1}',
     'unknown field "x"'),
    ("duplicate-key", HEAD + "mode: iptables\nmode: ipvs\n", 'strict decoding error: duplicate field "mode" (line 4)'),
    ("duplicate-nested", HEAD + "iptables:\n  syncPeriod: 1s\n  syncPeriod: 2s\n", 'duplicate field "syncPeriod"'),
]


@pytest.mark.parametrize("text,msg", [d[1:] for d in DOCUMENTS], ids=[d[0] for d in DOCUMENTS])
def test_document_shape(text, msg):
    with pytest.raises(c.ConfigError) as e:
        c.decode(text)
    assert msg in str(e.value) and "\n" not in str(e.value)


# -- the CLI: flags, files, errors


def test_cli_flags_alone_and_over_the_kubeadm_file(tmp_path):
    f = tmp_path / "config.conf"
    f.write_text(KUBEADM)
    cfg = build_config(parser().parse_args(["--config", str(f), "--hostname-override", "Node-7",
                                            "--iptables-sync-period", "0s", "--v=3", "--proxy-mode", "iptables"]))
    assert (cfg.hostname_override, cfg.sync_period, cfg.min_sync_period) == ("node-7", 30.0, 1.0)
    assert (cfg.healthz_bind_address, cfg.metrics_bind_address) == ("0.0.0.0:10256", "127.0.0.1:10249")
    assert cfg.kubeconfig == "/var/lib/kube-proxy/kubeconfig.conf" and cfg.cluster_cidr == ("10.244.0.0/16",)
    flags = ["--bind-address", "0.0.0.0", "--conntrack-max-per-core", "0", "--conntrack-min", "0",
             "--conntrack-tcp-timeout-established", "0s", "--conntrack-tcp-timeout-close-wait", "0s",
             "--feature-gates", "Foo=true", "--detect-local-mode", "ClusterCIDR", "--cluster-cidr", "10.0.0.0/16",
             "--logging-format", "json", "-v", "2", "--healthz-bind-address", "", "--masquerade-all",
             "--iptables-localhost-nodeports=false"]
    args = parser().parse_args(flags)
    s = resolve_args(args)
    assert (s.logging_format, s.verbosity, s.masquerade_all, s.localhost_nodeports) == ("json", 2, True, False)
    cfg = build_config(args, s)
    assert cfg.healthz_bind_address == "" and cfg.metrics_bind_address == "127.0.0.1:10249"
    assert c.conntrack_sysctls(cfg.conntrack, 4) == {}


CLI_ERRORS = [
    ("bad-duration-flag", ["--iptables-sync-period", "30"], "argument --iptables-sync-period"),
    ("unknown-flag", ["--proxy-mode-x", "ipvs"], "unrecognized arguments"),
    ("bad-bool-flag", ["--masquerade-all=maybe"], "argument --masquerade-all"),
    ("mode-flag", ["--proxy-mode", "ipvs"], 'Invalid value: "ipvs"'),
    ("missing-file", ["--config", "/nonexistent/podnet.conf"], "--config /nonexistent/podnet.conf: cannot read"),
    ("ip-families", ["--ip-families", "5"], "--ip-families"),
    ("bad-verbosity", ["-v", "x"], "invalid verbosity"),
    ("blank-hostname", ["--hostname-override", "  "], "empty --hostname-override is invalid"),
]


@pytest.mark.parametrize("argv,msg", [e[1:] for e in CLI_ERRORS], ids=[e[0] for e in CLI_ERRORS])
def test_cli_configuration_error_is_one_line_and_status_2(argv, msg, capsys):
    from podnet.proxy.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in err, err


def test_cli_bad_file_value_is_one_klog_line(tmp_path, capsys):
    from podnet.proxy.cli import main

    f = tmp_path / "c.yaml"
    f.write_text(KUBEADM.replace('mode: ""', "mode: ipvs"))
    assert main(["--config", str(f)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("E") and "] configuration error: KubeProxyConfiguration.mode: Invalid value" in line


# -- no zero period can reach the pacing loop


@pytest.mark.parametrize("sync,min_sync,want", [(0, 0, (30.0, 1.0)), (-5, 2, (30.0, 2.0)), (0.5, 2, (0.5, 0.5))],
                         ids=["zeros", "negative", "min-capped"])
def test_daemon_config_never_holds_a_zero_period(sync, min_sync, want):
    cfg = Config(sync_period=sync, min_sync_period=min_sync)
    assert (cfg.sync_period, cfg.min_sync_period) == want


@pytest.mark.parametrize("args", [(1.0, 0.0, 5.0), (-1.0, 30.0, 5.0), (1.0, 30.0, 0.0)],
                         ids=["max-zero", "min-negative", "retry-zero"])
def test_pacer_refuses_a_zero_period(args):
    with pytest.raises(ValueError):
        Pacer(*args)


@pytest.mark.timeout(30)  # without the yield the loop never gives the event loop back: fail, not hang
async def test_back_to_back_runs_still_yield_to_other_tasks():
    """A sync that asks for another sync at once (min period 0) must not starve the event loop,
    or a SIGTERM handler could never run."""
    import asyncio

    from podnet.proxy.sync import SyncRunner

    runs = 0

    async def fn() -> bool:  # never awaits anything that yields
        nonlocal runs
        runs += 1
        runner.request()
        return True

    runner = SyncRunner(fn, Pacer(0.0, 30.0, 30.0))
    runner.request()
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # returns only if the runner's loop yields
        assert runs >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
