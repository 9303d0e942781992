"""Corefile parsing and its mapping onto podnet-dns's settings: good and bad Corefiles, table-driven.

kubeadm's default Corefile is the verbatim fixture ``corefiles/kubeadm.Corefile`` (source in
``corefiles/README.md``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from podnet.dns import coreconfig
from podnet.dns.coreconfig import load, parse_duration
from podnet.dns.coredaemon import options_for
from podnet.dns.corefile import CorefileError, parse, tokenize
from podnet.dns.forward import UpstreamAddr

FIXTURES = Path(__file__).parent / "corefiles"
KUBEADM = (FIXTURES / "kubeadm.Corefile").read_text()
KUBEADM_PLAIN_CACHE = KUBEADM.replace(
    "cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }", "cache 30")
PODNET_DNS = str(Path(sys.executable).parent / "podnet-dns")


def test_kubeadm_default_maps_onto_podnet_settings():
    cfg = load(KUBEADM, "/etc/coredns/Corefile")
    (b,) = cfg.blocks
    assert b.zones == ("",) and cfg.port == 53 and cfg.listen == "0.0.0.0:53"
    assert b.plugins == ("errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
                         "loadbalance")
    assert b.errors and b.loop and cfg.reload and cfg.loadbalance
    assert (cfg.health, cfg.lameduck, cfg.ready, cfg.prometheus) == (":8080", 5.0, ":8181", ":9153")
    k = b.kubernetes
    assert (k.zone, k.reverse_zones, k.ttl, k.fallthrough) == ("cluster.local", ("in-addr.arpa", "ip6.arpa"), 30,
                                                              ("in-addr.arpa", "ip6.arpa"))
    assert b.forward.resolv_conf == "/etc/resolv.conf" and b.forward.max_concurrent == 1000
    assert (b.cache.max_ttl, b.cache.max_denial_ttl) == (30, 30)
    assert b.cache.disable_success == b.cache.disable_denial == ("cluster.local",)
    o = options_for(cfg)
    assert (o.zone, o.ttl, o.listen, o.max_concurrent, o.cache_max_ttl, o.lameduck) == ("cluster.local", 30, "0.0.0.0:53",
                                                                                         1000, 30, 5.0)
    assert (o.health_listen, o.ready_listen, o.metrics_listen) == (":8080", ":8181", ":9153")
    assert o.master is None and o.kubeconfig is None  # in-cluster / $KUBECONFIG, as CoreDNS


def _block(cfg, zone=""):
    return next(b for b in cfg.blocks if zone in b.zones)


GOOD = [
    pytest.param(KUBEADM_PLAIN_CACHE, {}, lambda c: _block(c).cache.disable_success == () and _block(c).cache.max_ttl == 30,
                 id="kubeadm-without-cache-block"),
    pytest.param(KUBEADM + "consul.local:53 {\n    errors\n    cache 30\n    forward . 10.150.0.1\n}\n", {},
                 lambda c: _block(c, "consul.local").forward.upstreams == (UpstreamAddr("10.150.0.1"),)
                 and _block(c, "consul.local").kubernetes is None and c.port == 53,
                 id="stub-domain-block"),
    pytest.param("example.org example.net:53, dns://example.com {\n forward . 192.0.2.1:5353 [2001:db8::1]:53\n}\n"
                 ".:53 {\n kubernetes cluster.local\n}\n", {},
                 lambda c: c.blocks[0].zones == ("example.org", "example.net", "example.com")
                 and c.blocks[0].forward.upstreams == (UpstreamAddr("192.0.2.1", 5353), UpstreamAddr("2001:db8::1", 53)),
                 id="several-zones-commas-and-scheme"),
    pytest.param("# leading comment\n. {   # the root\n  kubernetes Cluster.Local. # trailing\n"
                 '  hosts {\n    10.0.0.1 "a.example" b.example\n    fallthrough\n  }\n}\n', {},
                 lambda c: _block(c).kubernetes.zone == "cluster.local" and c.port == 53
                 and _block(c).hosts.inline == (("10.0.0.1", ("a.example", "b.example")),)
                 and _block(c).hosts.fallthrough == (),
                 id="comments-quotes-default-port"),
    pytest.param(".:53 {\n kubernetes {$DOMAIN}\n forward . {$UPSTREAM}\n}\n", {"DOMAIN": "k8s.test", "UPSTREAM": "10.0.0.2"},
                 lambda c: _block(c).kubernetes.zone == "k8s.test" and _block(c).forward.upstreams == (UpstreamAddr("10.0.0.2"),),
                 id="env-substitution"),
    pytest.param(".:53 {\n bind 127.0.0.1\n kubernetes cluster.local {\n  endpoint http://127.0.0.1:6443\n"
                 "  kubeconfig /etc/kube.conf\n }\n log . {combined} {\n  class denial error\n }\n"
                 " rewrite stop {\n  name regex (.*)\\.old\\.test {1}.new.test\n  answer name (.*)\\.new\\.test {1}.old.test\n }\n}\n",
                 {}, lambda c: c.listen == "127.0.0.1:53" and _block(c).kubernetes.endpoint == "http://127.0.0.1:6443"
                 and _block(c).log.format == "{combined}" and _block(c).log.classes == {"denial", "error"}
                 and _block(c).rewrites[0].kind == "regex" and _block(c).rewrites[0].answer_src == "(.*)\\.new\\.test",
                 id="bind-endpoint-log-rewrite-block"),
    pytest.param('.:53 {\n kubernetes cluster.local\n health :18080 {\n  lameduck 1m30s\n }\n prometheus 127.0.0.1:19153\n}\n',
                 {}, lambda c: c.health == ":18080" and c.lameduck == 90.0 and c.prometheus == "127.0.0.1:19153" and c.ready is None,
                 id="addresses-and-durations"),
]


@pytest.mark.parametrize("text, env, check", GOOD)
def test_good_corefiles(text, env, check):
    assert check(load(text, "Corefile", env))


BAD = [
    pytest.param(".:53 {\n    errors\n    foo bar\n}\n", 3, "Unknown directive 'foo'", id="unknown-plugin"),
    pytest.param(".:53 {\n    kubernetes cluster.local\n    autopath @kubernetes\n}\n", 3, "plugin 'autopath' is not supported",
                 id="coredns-plugin-not-implemented"),
    pytest.param(KUBEADM.replace("       ttl 30\n", "       ttl 30\n       namespaces default\n"), 11,
                 "unknown or unsupported property 'namespaces'", id="unknown-kubernetes-property"),
    pytest.param(KUBEADM.replace("pods insecure", "pods verified"), 8, "'pods verified' is not supported", id="pods-verified"),
    pytest.param(KUBEADM.replace("ttl 30", "ttl 4000"), 10, "ttl must be an integer within 0..3600", id="ttl-out-of-range"),
    pytest.param(KUBEADM.replace("lameduck 5s", "lameduck 5x"), 4, "invalid duration '5x'", id="bad-duration"),
    pytest.param(KUBEADM.replace("max_concurrent 1000", "max_concurrent lots"), 14, "max_concurrent must be an integer",
                 id="bad-forward-option"),
    pytest.param(KUBEADM.replace("loadbalance", "loadbalance weighted /etc/w"), 22, "Wrong argument count", id="loadbalance-args"),
    pytest.param(KUBEADM.replace("       disable denial cluster.local\n", "       prefetch 10\n"), 18, "'prefetch' is not supported",
                 id="cache-prefetch"),
    pytest.param(".:53 {\n kubernetes cluster.local\n forward example.org 10.0.0.1\n}\n", 3, "must be '.' or this server block's zone",
                 id="forward-from-other-zone"),
    pytest.param(".:53 {\n kubernetes cluster.local\n forward . not-an-ip\n}\n", 3, "not an IP address or file", id="forward-bad-to"),
    pytest.param(".:53 {\n kubernetes cluster.local\n forward . 10.0.0.1 {\n  policy fastest\n }\n}\n", 4, "unknown policy 'fastest'",
                 id="forward-bad-policy"),
    pytest.param(".:53 {\n kubernetes cluster.local\n forward . tls://1.1.1.1 {\n  tls_servername x\n }\n}\n", 3,
                 "only plain DNS (dns://) is supported", id="forward-tls"),
    pytest.param(".:53 {\n kubernetes cluster.local\n}\nexample.org:5353 {\n forward . 10.0.0.1\n}\n", 4, "listens on one port",
                 id="two-ports"),
    pytest.param(".:53 {\n forward . 10.0.0.1\n}\n", 1, "needs the kubernetes plugin", id="no-kubernetes"),
    pytest.param(".:53 {\n kubernetes cluster.local\n errors\n errors\n}\n", 4, "'errors' is already set at line 3", id="duplicate"),
    pytest.param(".:53 {\n kubernetes cluster.local\n\n", 1, "unclosed '{'", id="unclosed-block"),
    pytest.param(".:53 {\n kubernetes cluster.local {\n  pods insecure\n}\n", 1, "unclosed '{'", id="unclosed-nested"),
    pytest.param(".:53 {\n kubernetes cluster.local\n}\n}\n", 4, "expected a server block address", id="stray-close"),
    pytest.param(".:53\n kubernetes cluster.local\n", 1, "no '{'", id="no-open-brace"),
    pytest.param('.:53 {\n kubernetes "cluster.local\n}\n', 2, "unterminated quoted string", id="unterminated-quote"),
    pytest.param("tls://.:853 {\n kubernetes cluster.local\n}\n", 1, "transport tls:// is not supported", id="tls-server"),
    pytest.param(".:53 {\n kubernetes cluster.local\n rewrite type ANY HINFO\n}\n", 3, "rewrite field 'type' is not supported",
                 id="rewrite-other-field"),
    pytest.param(".:53 {\n kubernetes cluster.local\n rewrite name regex ([a-z \\.x y\n}\n", 3, "invalid regex", id="rewrite-bad-regex"),
    pytest.param(".:53 {\n kubernetes cluster.local\n hosts {\n  10.0.0.1\n }\n}\n", 4, "inline entry 10.0.0.1 without a name",
                 id="hosts-inline-no-name"),
    pytest.param(".:53 {\n kubernetes cluster.local\n hosts {\n  example.org 10.0.0.1\n }\n}\n", 4, "unknown property 'example.org'",
                 id="hosts-bad-line"),
    pytest.param(".:53 {\n kubernetes cluster.local example.org\n}\n", 2, "exactly one cluster zone", id="two-cluster-zones"),
    pytest.param(".:53 {\n kubernetes cluster.local\n}\n.:53 {\n whoami\n}\n", 4, "zone '.' is defined by the server block at line 1",
                 id="zone-twice"),
    pytest.param(".:53 {\n kubernetes cluster.local\n log . {\n  class everything\n }\n}\n", 4, "unknown class 'everything'",
                 id="log-bad-class"),
    pytest.param(".:53 {\n kubernetes cluster.local\n bind eth0\n}\n", 3, "interface names are not supported", id="bind-interface"),
    pytest.param(".:53 {\n kubernetes cluster.local {\n  fallthrough\n }\n}\n", 2, "fallthrough for the cluster zone",
                 id="fallthrough-cluster-zone"),
    pytest.param(".:53 { errors\n kubernetes cluster.local\n}\n", 1, "unexpected text after '{'", id="text-after-brace"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_bad_corefiles_name_the_line(text, line, message):
    with pytest.raises(CorefileError) as e:
        load(text, "/etc/coredns/Corefile")
    assert e.value.line == line, str(e.value)
    assert message in str(e.value)
    assert "\n" not in str(e.value) and f"/etc/coredns/Corefile:{line} - Error during parsing: " in str(e.value)


@pytest.mark.parametrize("text, want", [
    pytest.param('a "b c" `d "e"` f#g # h\n', [("a", 1), ("b c", 1), ('d "e"', 1), ("f#g", 1)], id="quotes-and-comments"),
    pytest.param('x "multi\nline" y\nz', [("x", 1), ("multi\nline", 1), ("y", 2), ("z", 3)], id="line-numbers-after-multiline"),
    pytest.param('"esc \\" quote"', [('esc " quote', 1)], id="escaped-quote"),
])
def test_tokens(text, want):
    assert [(t.text, t.line) for t in tokenize(text)] == want


def test_nested_blocks_keep_structure():
    (b,) = parse("a.org:53 {\n  p x {\n    q y {\n      r\n    }\n  }\n  s\n}\n")
    p, s = b.directives
    assert (p.name, p.args, p.line, s.name) == ("p", ("x",), 2, "s")
    assert p.block[0].name == "q" and p.block[0].block[0].name == "r" and p.block[0].block[0].line == 4


@pytest.mark.parametrize("text, seconds", [
    pytest.param("5s", 5.0, id="seconds"), pytest.param("1m30s", 90.0, id="minutes"),
    pytest.param("250ms", 0.25, id="millis"), pytest.param("0", 0.0, id="zero"), pytest.param("1h", 3600.0, id="hours"),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [pytest.param("5", id="no-unit"), pytest.param("-1s", id="negative"),
                                  pytest.param("s", id="no-number"), pytest.param("5 s", id="space")])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_port_override_and_default_port():
    text = "example.org {\n forward . 10.0.0.1\n}\n.:53 {\n kubernetes cluster.local\n}\n"
    with pytest.raises(CorefileError):
        load(text, default_port=1053)  # example.org on 1053, '.' on 53
    assert load(text, default_port=53).port == 53
    assert load(text, port_override=5300).port == 5300
    assert load(text, port_override=0).port == 0


@pytest.mark.parametrize("text, code, message", [
    pytest.param(".:53 {\n    kubernetes cluster.local\n    frobnicate\n}\n", 2, "Corefile:3 - Error during parsing: Unknown directive 'frobnicate'",
                 id="unknown-directive"),
    pytest.param(None, 2, "cannot read the Corefile", id="missing-file"),
])
def test_console_script_refuses_with_one_line(tmp_path, text, code, message):
    path = tmp_path / "Corefile"
    if text is not None:
        path.write_text(text)
    p = subprocess.run([PODNET_DNS, "-conf", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == code
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_console_script_refuses_flags_the_corefile_sets(tmp_path):
    path = tmp_path / "Corefile"
    path.write_text(KUBEADM)
    p = subprocess.run([PODNET_DNS, "-conf", str(path), "--zone", "example"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--zone cannot be combined with -conf" in p.stderr


def test_every_kubeadm_plugin_is_known():
    """kubeadm's plugins are all mapped (none falls into the not-implemented list)."""
    for d in parse(KUBEADM)[0].directives:
        assert d.name not in coreconfig.COREDNS_PLUGINS


def test_console_script_port_taken_is_one_line_exit_1(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = tmp_path / "Corefile"
        path.write_text(".:53 {\n    bind 127.0.0.1\n    kubernetes cluster.local\n}\n")
        p = subprocess.run([PODNET_DNS, "-conf", str(path), "--dns-port", str(port), "--master", "http://127.0.0.1:1"],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if line.startswith("E")]
    assert len(errors) == 1 and "cannot start" in errors[0] and "Address already in use" in errors[0], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("argv, message", [
    pytest.param(["-dns.port", "http"], "invalid port 'http'", id="bad-dns-port"),
    pytest.param(["--dns-port", "70000"], "invalid port '70000'", id="bad-port-override"),
])
def test_console_script_bad_flags_one_line(tmp_path, argv, message):
    path = tmp_path / "Corefile"
    path.write_text(KUBEADM)
    p = subprocess.run([PODNET_DNS, "-conf", str(path), *argv], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr


def test_imports_files_globs_and_snippets(tmp_path):
    """k3s's shape: a snippet, `import custom/*.override` inside the block, `import custom/*.server` outside."""
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "a.override").write_text("log\n")
    (tmp_path / "custom" / "stub.server").write_text("consul.local:53 {\n    forward . 10.150.0.1\n}\n")
    main = tmp_path / "Corefile"
    main.write_text("(common) {\n    errors\n    cache 30\n}\n.:53 {\n    import common\n    kubernetes cluster.local\n"
                    "    import custom/*.override\n    import custom/*.missing\n}\nimport custom/*.server\n")
    cfg = load(main.read_text(), str(main))
    root, stub = _block(cfg), _block(cfg, "consul.local")
    assert root.plugins == ("errors", "cache", "kubernetes", "log")
    assert stub.forward.upstreams == (UpstreamAddr("10.150.0.1"),)


@pytest.mark.parametrize("files, main, where, message", [
    pytest.param({"bad.override": "log\nfrobnicate\n"}, ".:53 {\n kubernetes cluster.local\n import bad.override\n}\n",
                 ("bad.override", 2), "Unknown directive 'frobnicate'", id="error-names-the-imported-file"),
    pytest.param({}, ".:53 {\n kubernetes cluster.local\n import nothere.conf\n}\n", ("Corefile", 3), "import nothere.conf",
                 id="plain-path-missing"),
    pytest.param({"loop.conf": "import loop.conf\n"}, ".:53 {\n kubernetes cluster.local\n import loop.conf\n}\n",
                 ("loop.conf", 1), "nested more than 10 deep", id="import-cycle"),
    pytest.param({}, "(snip) {\n errors\n.:53 {\n kubernetes cluster.local\n}\n", ("Corefile", 1), "snippet (snip) has no closing",
                 id="unclosed-snippet"),
])
def test_bad_imports(tmp_path, files, main, where, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "Corefile"
    with pytest.raises(CorefileError) as e:
        load(main, str(path))
    assert (Path(e.value.path).name, e.value.line) == where and message in str(e.value), str(e.value)
