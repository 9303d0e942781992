"""Every boundary rule of podnet.kube.validate, with kube-apiserver's own good and bad values.

Sources of the values (kubernetes/kubernetes):
- staging/src/k8s.io/apimachinery/pkg/util/validation/validation_test.go: TestIsDNS1123Label,
  TestIsDNS1123Subdomain, TestIsDNS1035Label, TestIsValidPortName, TestIsQualifiedName,
  TestIsValidLabelValue, TestIsFullyQualifiedDomainName.
- staging/src/k8s.io/apimachinery/pkg/util/validation/ip_test.go: TestIsValidIP and TestIsValidCIDR,
  the "legacyStrictErr" column (IsValidIPForLegacyField / IsValidCIDRForLegacyField with strict
  validation, KEP-4858's StrictIPCIDRValidation).
- pkg/apis/core/validation/validation.go: ValidateNonSpecialIP (unspecified, loopback, link-local,
  link-local multicast; broadcast and other multicast are allowed), ValidateService (externalName
  without one trailing dot is a DNS-1123 subdomain; loadBalancerSourceRanges are TrimSpace'd).
- pkg/apis/discovery/validation/validation.go: EndpointSlice addresses (IPv4/IPv6 + ValidateNonSpecialIP,
  FQDN), hostname (DNS-1123 label), zone (label value), port names (DNS-1123 label).
Rows marked "hostile" are values an attacker sent to the lab API server; each must be refused.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.kube import goip
from podnet.kube import validate as v

A63, A64 = "a" * 63, "a" * 64


def ok(rule, value, want=None, *, id):
    return pytest.param(rule, value, value if want is None else want, id=id)


def bad(rule, value, *, id):
    return pytest.param(rule, value, None, id=id)


def _rows(rule, good, refused, name):
    out = [ok(rule, g, id=f"{name}-ok-{i}") for i, g in enumerate(good)]
    out += [bad(rule, b, id=f"{name}-bad-{i}") for i, b in enumerate(refused)]
    return out


TABLE = [
    # ------------------------------------------------------------------ IsDNS1123Label
    *_rows(v.dns_label,
           ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2", A63],
           ["", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a", "a_b", "1_",
            "_1", "1_2", ".", "a.", ".a", "a.b", "1.", ".1", "1.2", " ", "a ", " a", "a b", "1 ", " 1", "1 2", A64],
           "dns1123-label"),
    bad(v.dns_label, "x\n", id="dns1123-label-hostile-trailing-newline"),
    bad(v.dns_label, "web\nCOMMIT", id="dns1123-label-hostile-line-injection"),
    bad(v.dns_label, "a\x00", id="dns1123-label-hostile-nul"),
    # ------------------------------------------------------------------ IsDNS1035Label (Service names)
    *_rows(v.dns1035_label, ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", A63],
           ["0", "01", "012", "1a", "1-a", "1--a--b--2", "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a",
            "1-", "-1", "_", "a_", "_a", "a_b", "1_", "_1", "1_2", ".", "a.", ".a", "a.b", "1.", ".1", "1.2", " ",
            "a ", " a", "a b", "1 ", " 1", "1 2", A64],
           "dns1035-label"),
    bad(v.dns1035_label, "x\n", id="service-name-hostile-x-newline"),
    # ------------------------------------------------------------------ IsDNS1123Subdomain
    *_rows(v.dns_subdomain,
           ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2", "a.a", "ab.a",
            "abc.a", "a1.a", "a-1.a", "a--1--2--b.a", "a.1", "ab.1", "abc.1", "a1.1", "a-1.1", "a--1--2--b.1", "0.a",
            "01.a", "012.a", "1a.a", "1-a.a", "0.1", "01.1", "012.1", "1a.1", "1-a.1", "1--a--b--2.1", "a.b.c.d.e",
            "aa.bb.cc.dd.ee", "1.2.3.4.5", "11.22.33.44.55", "a" * 253],
           ["", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a", "a_b", "1_", "_1",
            "1_2", ".", "a.", ".a", "a..b", "1.", ".1", "1..2", " ", "a ", " a", "a b", "1 ", " 1", "1 2", "A.a", "aB.a",
            "ab.A", "A1.a", "a1.A", "A.1", "aB.1", "A1.1", "1A.1", "0.A", "01.A", "012.A", "1A.a", "1a.A", "A.B.C.D.E",
            "AA.BB.CC.DD.EE", "a.B.c.d.e", "aa.bB.cc.dd.ee", "a@b", "a,b", "a;b", "a:b", "a%b", "a?b", "a$b",
            "a" * 254],
           "dns1123-subdomain"),
    bad(v.dns_subdomain, "node-1\n", id="dns1123-subdomain-hostile-newline"),
    # ------------------------------------------------------------------ IsFullyQualifiedDomainName (FQDN slices)
    *[ok(v.fqdn, g, g.removesuffix("."), id=f"fqdn-ok-{i}") for i, g in enumerate(
        ["a.com", "k8s.io", "dev.k8s.io", "dev.k8s.io.", "foo.example.com", "this.is.a.really.long.fqdn", "bbc.co.uk",
         "10.0.0.1", "hyphens-are-good.k8s.io", A63 + ".k8s.io"])],
    *[bad(v.fqdn, b, id=f"fqdn-bad-{i}") for i, b in enumerate(
        [".", "...", ".io", "com", ".com", "Dev.k8s.io", ".foo.example.com", "*.example.com", "underscores_are_bad.k8s.io",
         "foo@bar.example.com", "http://foo.example.com", A64 + ".k8s.io", "evil.com\n"])],
    # ------------------------------------------------------------------ IsValidPortName (IANA_SVC_NAME)
    *_rows(v.port_name, ["telnet", "re-mail-ck", "pop3", "a", "a-1", "1-a", "a-1-b-2-c", "1-a-2-b-3"],
           ["longerthan15characters", "a" * 16, "12345", "1-2-3-4", "-begin", "end-", "two--hyphens", "whois++"],
           "port-name"),
    ok(v.port_name, "", id="port-name-empty-means-unnamed"),
    bad(v.port_name, "http\n", id="port-name-hostile-http-newline"),
    bad(v.port_name, "http -j ACCEPT", id="port-name-hostile-rule-text"),
    # ------------------------------------------------------------------ IsQualifiedName (label keys, appProtocol)
    *_rows(v.qualified_name,
           ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple", "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes", "now.with.dots/simple", "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num", "1234/5678", "1.2.3.4/5678", "Uppercase_Is_OK_123", "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo", A63, "a" * 253 + "/" + "b" * 63],
           ["nospecialchars%^=@", "cantendwithadash-", "-cantstartwithadash-", "only/one/slash", "Example.com/abc",
            "example_com/abc", "example.com/", "/simple", A64, "a" * 254 + "/abc"],
           "qualified-name"),
    bad(v.label_key, "a\n", id="label-key-hostile-a-newline"),
    bad(v.label_key, "example.com\n/a", id="label-key-hostile-newline-in-prefix"),
    # ------------------------------------------------------------------ IsValidLabelValue
    *_rows(v.label_value, ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", A63, ""],
           ["nospecialchars%^=@", "Tama-nui-te-rā.is.Māori.sun", "\\backslashes\\are\\bad", "-starts-with-dash",
            "ends-with-dash-", ".starts.with.dot", "ends.with.dot.", A64],
           "label-value"),
    bad(v.label_value, "a\n", id="label-value-hostile-a-newline"),
    bad(v.zone_name, "zone-a\n", id="zone-hostile-newline"),
    ok(v.zone_name, "us-east-1a", id="zone-ok"),
    # ------------------------------------------------------------------ annotation keys (lower-cased, qualified)
    ok(v.annotation_key, "Example.com/Key", id="annotation-key-upper-case-prefix-ok"),
    bad(v.annotation_key, "a\n", id="annotation-key-hostile-newline"),
    # ------------------------------------------------------------------ IsValidIPForLegacyField, strict
    ok(v.ip_address, "1.2.3.4", id="ip-ipv4"),
    ok(v.ip_address, "0.0.0.0", id="ip-ipv4-all-zeros"),
    ok(v.ip_address, "255.255.255.255", id="ip-ipv4-max"),
    ok(v.ip_address, "1234::abcd", id="ip-ipv6"),
    ok(v.ip_address, "::", id="ip-ipv6-all-zeros"),
    ok(v.ip_address, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", id="ip-ipv6-max"),
    ok(v.ip_address, "0:0:0:0:0:0:0:0", "::", id="ip-ipv6-expanded-canonicalised"),
    ok(v.ip_address, "0001:002:03:4::", "1:2:3:4::", id="ip-ipv6-leading-zeros-canonicalised"),
    ok(v.ip_address, "1234::ABCD", "1234::abcd", id="ip-ipv6-capitals-canonicalised"),
    bad(v.ip_address, "1.1.1.01", id="ip-ipv4-leading-zeros"),
    bad(v.ip_address, "010.0.0.1", id="ip-hostile-010.0.0.1"),
    bad(v.ip_address, "::ffff:1.1.1.1", id="ip-ipv4-mapped"),
    bad(v.ip_address, "::ffff:1.2.3.4", id="ip-hostile-ipv4-mapped"),
    bad(v.ip_address, "", id="ip-empty"),
    bad(v.ip_address, "aaaaaaa", id="ip-junk"),
    bad(v.ip_address, "myhost.mydomain", id="ip-domain-name"),
    bad(v.ip_address, "1.2.3.0/24", id="ip-cidr"),
    bad(v.ip_address, "1.2.3.400", id="ip-ipv4-out-of-range"),
    bad(v.ip_address, "-1.0.0.0", id="ip-ipv4-negative"),
    bad(v.ip_address, "2001:db8::10005", id="ip-ipv6-out-of-range-group"),
    bad(v.ip_address, "1.2.3.4:80", id="ip-ipv4-port"),
    bad(v.ip_address, "[2001:db8::1]", id="ip-ipv6-brackets"),
    bad(v.ip_address, "[2001:db8::1]:80", id="ip-ipv6-brackets-port"),
    bad(v.ip_address, "example.com:80", id="ip-host-port"),
    bad(v.ip_address, "1234::abcd%eth0", id="ip-ipv6-zone"),
    bad(v.ip_address, "169.254.0.0%eth0", id="ip-ipv4-zone"),
    bad(v.ip_address, "fd00::1%x y", id="ip-hostile-zone-with-space"),
    bad(v.ip_address, "fd00:96::77%x", id="ip-hostile-zone-cluster-ip"),
    bad(v.ip_address, "fd00::%1\n-A PODNET-SERVICES -j ACCEPT", id="ip-hostile-zone-line-injection"),
    bad(v.ip_address, "x\n", id="ip-hostile-x-newline"),
    bad(v.ip_address, "10.0.0.1\n", id="ip-hostile-trailing-newline"),
    bad(v.ip_address, " 10.0.0.1", id="ip-hostile-leading-space"),
    bad(v.ip_address, "00001::", id="ip-ipv6-five-digit-group"),
    # ------------------------------------------------------------------ ValidateNonSpecialIP (endpoints, externalIPs)
    bad(v.non_special_ip, "0.0.0.0", id="endpoint-hostile-0.0.0.0"),
    bad(v.non_special_ip, "::", id="endpoint-unspecified-v6"),
    bad(v.non_special_ip, "127.0.0.1", id="endpoint-hostile-127.0.0.1"),
    bad(v.non_special_ip, "127.255.0.9", id="endpoint-loopback-range"),
    bad(v.non_special_ip, "::1", id="endpoint-loopback-v6"),
    bad(v.non_special_ip, "169.254.169.254", id="endpoint-hostile-169.254.169.254"),
    bad(v.non_special_ip, "fe80::1", id="endpoint-link-local-v6"),
    bad(v.non_special_ip, "febf::1", id="endpoint-link-local-v6-top-of-fe80/10"),
    bad(v.non_special_ip, "224.0.0.1", id="endpoint-hostile-224.0.0.1"),
    bad(v.non_special_ip, "224.0.0.255", id="endpoint-link-local-multicast-top"),
    bad(v.non_special_ip, "ff02::1", id="endpoint-link-local-multicast-v6"),
    bad(v.non_special_ip, "ff12::1", id="endpoint-link-local-multicast-v6-transient"),
    bad(v.non_special_ip, "10.244.1.5%x", id="endpoint-zone"),
    # kube-apiserver allows these (ValidateNonSpecialIP checks nothing else): so does podnet.
    ok(v.non_special_ip, "255.255.255.255", id="endpoint-broadcast-allowed-by-apiserver"),
    ok(v.non_special_ip, "224.0.1.1", id="endpoint-global-multicast-allowed-by-apiserver"),
    ok(v.non_special_ip, "ff05::1", id="endpoint-site-multicast-allowed-by-apiserver"),
    ok(v.non_special_ip, "169.253.255.255", id="endpoint-below-link-local"),
    ok(v.non_special_ip, "fec0::1", id="endpoint-above-fe80/10"),
    ok(v.non_special_ip, "10.244.1.5", id="endpoint-pod-ip"),
    ok(v.non_special_ip, "fd00:10:244::5", id="endpoint-pod-ip-v6"),
    # ------------------------------------------------------------------ IsValidCIDRForLegacyField, strict
    ok(v.cidr, "1.0.0.0/8", id="cidr-ipv4"),
    ok(v.cidr, "0.0.0.0/0", id="cidr-ipv4-all"),
    ok(v.cidr, "1.1.1.1/32", id="cidr-ipv4-single"),
    ok(v.cidr, "2001:4860:4860::/48", id="cidr-ipv6"),
    ok(v.cidr, "::/0", id="cidr-ipv6-all"),
    ok(v.cidr, "::1/128", id="cidr-ipv6-single"),
    ok(v.cidr, "2a00:79e0:2:0::/64", "2a00:79e0:2::/64", id="cidr-ipv6-extra-zeros-canonicalised"),
    ok(v.cidr, "2001:DB8::/64", "2001:db8::/64", id="cidr-ipv6-capitals-canonicalised"),
    bad(v.cidr, "1.1.01.0/24", id="cidr-ipv4-leading-zeros"),
    bad(v.cidr, "::ffff:1.1.1.0/24", id="cidr-ipv4-mapped-v4-length"),
    bad(v.cidr, "::ffff:1.1.1.0/120", id="cidr-ipv4-mapped-v6-length"),
    bad(v.cidr, "1.2.3.4/24", id="cidr-ipv4-ifaddr"),
    bad(v.cidr, "2001:db8::1/64", id="cidr-ipv6-ifaddr"),
    bad(v.cidr, "192.168.0.0/016", id="cidr-length-leading-zeros"),
    bad(v.cidr, "", id="cidr-empty"),
    bad(v.cidr, "aaaaaaa", id="cidr-junk"),
    bad(v.cidr, "1.2.3.4", id="cidr-ip-address"),
    bad(v.cidr, "192.168.0.1/healthz", id="cidr-partial-url"),
    bad(v.cidr, "192.168.0.1/0/99", id="cidr-partial-url-2"),
    bad(v.cidr, "192.168.0.0/-16", id="cidr-negative-length"),
    bad(v.cidr, "192.168.0.0/+16", id="cidr-signed-length"),
    bad(v.cidr, "10.0.0.0/33", id="cidr-length-too-long"),
    bad(v.cidr, "fd00::%1/64", id="cidr-zone"),
    bad(v.cidr, "10.244.1.0/24\n", id="cidr-hostile-trailing-newline"),
    # ------------------------------------------------------------------ loadBalancerSourceRanges (TrimSpace, then CIDR)
    ok(v.source_range, " 10.0.0.0/8 ", "10.0.0.0/8", id="source-range-space-padded-allowed-by-apiserver"),
    ok(v.source_range, "10.0.0.0/8\n", "10.0.0.0/8", id="source-range-newline-trimmed-by-apiserver"),
    bad(v.source_range, "fd00::%1\n-A PODNET-SERVICES -j ACCEPT", id="source-range-hostile-zone-line-injection"),
    bad(v.source_range, "10.0.0.0/8\n-A PODNET-SERVICES -j ACCEPT", id="source-range-hostile-line-injection"),
    bad(v.source_range, "10.0.0.0/8\x1c", id="source-range-python-space-go-does-not-trim"),
]


@pytest.mark.parametrize("rule, value, want", TABLE)
def test_rule(rule, value, want):
    if want is None:
        with pytest.raises(v.InvalidField):
            rule("field", value)
    else:
        assert rule("field", value) == want


@pytest.mark.parametrize("rule", [v.dns_label, v.dns1035_label, v.dns_subdomain, v.fqdn, v.port_name, v.qualified_name,
                                  v.label_value, v.ip_address, v.non_special_ip, v.cidr, v.source_range,
                                  v.annotation_key, v.opaque_token],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], {}], ids=repr)
def test_non_strings_are_refused(rule, value):
    if value is None and rule in (v.port_name, v.opaque_token):
        assert rule("field", value) == ""  # unset
        return
    with pytest.raises(v.InvalidField):
        rule("field", value)


@pytest.mark.parametrize("value, want", [
    pytest.param("5f0c3d1e-7b2a-4c1d-9e8f-0123456789ab", True, id="uuid"),
    pytest.param("812", True, id="resource-version"),
    pytest.param("812\n", False, id="newline"),
    pytest.param("a b", False, id="space"),
    pytest.param("é", False, id="non-ascii"),
    pytest.param("x" * 257, False, id="too-long"),
])
def test_opaque_token(value, want):
    if want:
        assert v.opaque_token("metadata.uid", value) == value
    else:
        with pytest.raises(v.InvalidField):
            v.opaque_token("metadata.uid", value)


@pytest.mark.parametrize("value, want", [
    pytest.param("1.2.3.4", "1.2.3.4", id="ipv4"),
    pytest.param("010.002.003.004", "10.2.3.4", id="ipv4-leading-zeros-decimal-not-octal"),
    pytest.param("::ffff:1.2.3.4", "1.2.3.4", id="ipv4-mapped-is-ipv4"),
    pytest.param("00001::", "1::", id="five-hex-digits"),
    pytest.param("fd00::1%eth0", None, id="zone"),
    pytest.param("1.2.3.4 ", None, id="trailing-space"),
])
def test_sloppy_parser_is_go_1_16_parse_ip(value, want):
    ip = goip.parse_ip_sloppy(value)
    assert (None if ip is None else str(ip)) == want


@pytest.mark.parametrize("value, want", [
    pytest.param("1.2.3.4/24", ("1.2.3.4", 24), id="ifaddr-kept"),
    pytest.param("192.168.0.0/016", ("192.168.0.0", 16), id="length-leading-zeros"),
    pytest.param("::ffff:1.1.1.0/120", ("1.1.1.0", 120), id="mapped-v6-length"),
    pytest.param("10.0.0.0/33", None, id="too-long"),
    pytest.param("fd00::%1/64", None, id="zone"),
])
def test_sloppy_cidr_parser_is_go_1_16_parse_cidr(value, want):
    got = goip.parse_cidr_sloppy(value)
    assert (None if got is None else (str(got[0]), got[1])) == want


@pytest.mark.parametrize("value, want", [
    pytest.param(" \t\n10.0.0.0/8\r\v\f", "10.0.0.0/8", id="ascii-space"),
    pytest.param("\u00a010.0.0.0/8\u3000", "10.0.0.0/8", id="unicode-space"),
    pytest.param("\x1c10.0.0.0/8\x1f", "\x1c10.0.0.0/8\x1f", id="separators-are-not-go-space"),
])
def test_go_trim_space(value, want):
    assert goip.go_trim_space(value) == want


# ---------------------------------------------------------------------------- properties

_CANONICAL = re.compile(r"[0-9a-f.:]+")
IPISH = st.text(alphabet="0123456789abcdefABCDEF:.%/ \n\tx", max_size=45)


@settings(max_examples=400, deadline=None)
@given(st.one_of(IPISH, st.text(max_size=40)))
def test_accepted_ips_are_canonical_and_stable(s):
    try:
        out = v.ip_address("f", s)
    except v.InvalidField:
        return
    assert _CANONICAL.fullmatch(out)
    assert v.ip_address("f", out) == out


@settings(max_examples=400, deadline=None)
@given(IPISH)
def test_ip_parser_agrees_with_python_where_python_has_no_zone_or_mapping(s):
    """Python's ipaddress, minus its scope IDs and IPv4-mapped forms, accepts exactly the strict set."""
    try:
        a = ipaddress.ip_address(s)
        py = None if isinstance(a, ipaddress.IPv6Address) and (a.scope_id is not None or a.ipv4_mapped) else str(a)
    except ValueError:
        py = None
    try:
        ours = v.ip_address("f", s)
    except v.InvalidField:
        ours = None
    assert ours == py


@settings(max_examples=300, deadline=None)
@given(IPISH)
def test_accepted_cidrs_are_canonical_networks(s):
    try:
        out = v.cidr("f", s)
    except v.InvalidField:
        return
    assert re.fullmatch(r"[0-9a-f.:]+/[0-9]{1,3}", out)
    assert str(ipaddress.ip_network(out, strict=True)) == out


_NAME_RULES = [v.dns_label, v.dns1035_label, v.dns_subdomain, v.fqdn, v.port_name, v.qualified_name, v.label_value,
               v.annotation_key, v.opaque_token]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_NAME_RULES), st.text(max_size=70))
def test_no_accepted_name_holds_whitespace_or_control_bytes(rule, s):
    try:
        out = rule("f", s)
    except v.InvalidField:
        return
    assert not any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in out)
    assert out.isascii()
