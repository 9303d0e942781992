"""Table-driven query tests through the real UDP and TCP listeners, with dnspython and dig as clients.

Each case: (qname, qtype) -> rcode, answer records, authority records ("owner ttl TYPE rdata").
"""

from __future__ import annotations

import asyncio
import shutil

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

SOA = "cluster.local. 30 SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 30"
REV_SOA = "in-addr.arpa. 30 SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 42 7200 1800 86400 30"
WEB = "web.default.svc.cluster.local."
DB = "db.default.svc.cluster.local."
NODATA = ("NOERROR", [], [SOA])
NXDOMAIN = ("NXDOMAIN", [], [SOA])


def ok(*answer: str) -> tuple[str, list[str], list[str]]:
    return ("NOERROR", list(answer), [])


CASES = [
    # ClusterIP services
    ("clusterip-a", WEB, "A", ok(f"{WEB} 30 A 10.96.0.5")),
    ("clusterip-aaaa-nodata", WEB, "AAAA", NODATA),
    ("clusterip-mx-nodata", WEB, "MX", NODATA),
    ("clusterip-txt-nodata", WEB, "TXT", NODATA),
    ("clusterip-https-nodata", WEB, "HTTPS", NODATA),
    ("clusterip-other-ns", "web.other.svc.cluster.local.", "A", ok("web.other.svc.cluster.local. 30 A 10.96.1.5")),
    ("dual-stack-a", "dual.default.svc.cluster.local.", "A", ok("dual.default.svc.cluster.local. 30 A 10.96.0.7")),
    ("dual-stack-aaaa", "dual.default.svc.cluster.local.", "AAAA", ok("dual.default.svc.cluster.local. 30 AAAA fd00::7")),
    ("clusterip-endpoint-name", f"10-1-0-10.{WEB}", "A", ok(f"10-1-0-10.{WEB} 30 A 10.1.0.10")),
    # SRV
    ("srv-named-port", f"_http._tcp.{WEB}", "SRV", ok(f"_http._tcp.{WEB} 30 SRV 0 100 80 {WEB}")),
    ("srv-second-port", f"_https._tcp.{WEB}", "SRV", ok(f"_https._tcp.{WEB} 30 SRV 0 100 443 {WEB}")),
    ("srv-bare-name", WEB, "SRV", ok(f"{WEB} 30 SRV 0 50 80 {WEB}", f"{WEB} 30 SRV 0 50 443 {WEB}")),
    ("srv-unnamed-port-bare", "plain.default.svc.cluster.local.", "SRV",
     ok("plain.default.svc.cluster.local. 30 SRV 0 100 8080 plain.default.svc.cluster.local.")),
    ("srv-udp-port", "_dns._udp.dual.default.svc.cluster.local.", "SRV",
     ok("_dns._udp.dual.default.svc.cluster.local. 30 SRV 0 50 53 dual.default.svc.cluster.local.")),
    ("srv-wrong-proto", f"_http._udp.{WEB}", "SRV", NXDOMAIN),
    ("srv-unknown-port", f"_nope._tcp.{WEB}", "SRV", NXDOMAIN),
    ("srv-proto-ent", f"_tcp.{WEB}", "A", NODATA),
    ("srv-named-port-a-nodata", f"_http._tcp.{WEB}", "A", NODATA),
    # Headless
    ("headless-a", DB, "A", ok(f"{DB} 30 A 10.1.0.20", f"{DB} 30 A 10.1.0.21", f"{DB} 30 A 10.1.0.23")),
    ("headless-aaaa", DB, "AAAA", ok(f"{DB} 30 AAAA fd00::20")),
    ("headless-hostname", f"db-0.{DB}", "A", ok(f"db-0.{DB} 30 A 10.1.0.20")),
    ("headless-hostname-v6", f"db-6.{DB}", "AAAA", ok(f"db-6.{DB} 30 AAAA fd00::20")),
    ("headless-hostname-other-family", f"db-6.{DB}", "A", NODATA),
    ("headless-dashed-ip", f"10-1-0-23.{DB}", "A", ok(f"10-1-0-23.{DB} 30 A 10.1.0.23")),
    ("headless-not-ready-endpoint", f"10-1-0-22.{DB}", "A", NXDOMAIN),
    ("headless-srv", f"_pg._tcp.{DB}", "SRV", ok(
        f"_pg._tcp.{DB} 30 SRV 0 20 5432 10-1-0-23.{DB}", f"_pg._tcp.{DB} 30 SRV 0 20 5432 db-0.{DB}",
        f"_pg._tcp.{DB} 30 SRV 0 20 5432 db-1.{DB}", f"_pg._tcp.{DB} 30 SRV 0 20 5432 db-6.{DB}")),
    ("headless-no-ready-endpoints", "empty-headless.default.svc.cluster.local.", "A", NXDOMAIN),
    ("headless-publish-not-ready", "notready.default.svc.cluster.local.", "A",
     ok("notready.default.svc.cluster.local. 30 A 10.1.0.40")),
    # ExternalName
    ("externalname-cname", "ext.default.svc.cluster.local.", "CNAME",
     ok("ext.default.svc.cluster.local. 30 CNAME www.example.com.")),
    ("externalname-a-no-upstream", "ext.default.svc.cluster.local.", "A",
     ok("ext.default.svc.cluster.local. 30 CNAME www.example.com.")),
    ("externalname-internal-chase", "ext-internal.default.svc.cluster.local.", "A",
     ok(f"ext-internal.default.svc.cluster.local. 30 CNAME {WEB}", f"{WEB} 30 A 10.96.0.5")),
    ("below-externalname", "x.ext.default.svc.cluster.local.", "A", NXDOMAIN),
    # Namespaces and empty non-terminals
    ("namespace-ent", "default.svc.cluster.local.", "A", NODATA),
    ("namespace-without-services", "quiet.svc.cluster.local.", "A", NODATA),
    ("unknown-namespace", "nope.svc.cluster.local.", "A", NXDOMAIN),
    ("unknown-service", "nope.default.svc.cluster.local.", "A", NXDOMAIN),
    ("svc-ent", "svc.cluster.local.", "A", NODATA),
    ("pod-ent", "pod.cluster.local.", "A", NODATA),
    ("too-many-labels", f"a.b.{WEB}", "A", NXDOMAIN),
    ("not-svc-or-pod", "foo.cluster.local.", "A", NXDOMAIN),
    # Apex
    ("apex-soa", "cluster.local.", "SOA", ok(SOA)),
    ("apex-ns", "cluster.local.", "NS", ok("cluster.local. 30 NS ns.dns.cluster.local.")),
    ("apex-a-nodata", "cluster.local.", "A", NODATA),
    ("ns-dns-a", "ns.dns.cluster.local.", "A", ok("ns.dns.cluster.local. 30 A 10.96.0.10")),
    ("dns-ent", "dns.cluster.local.", "A", NODATA),
    ("dns-version", "dns-version.cluster.local.", "TXT", ok('dns-version.cluster.local. 28800 TXT "1.1.0"')),
    ("dns-version-a-nodata", "dns-version.cluster.local.", "A", NODATA),
    # Pods (insecure mode)
    ("pod-a", "10-1-2-3.default.pod.cluster.local.", "A", ok("10-1-2-3.default.pod.cluster.local. 30 A 10.1.2.3")),
    ("pod-aaaa-nodata", "10-1-2-3.default.pod.cluster.local.", "AAAA", NODATA),
    ("pod-v6", "fd00--1.default.pod.cluster.local.", "AAAA", ok("fd00--1.default.pod.cluster.local. 30 AAAA fd00::1")),
    ("pod-unknown-namespace", "10-1-2-3.nope.pod.cluster.local.", "A", NXDOMAIN),
    ("pod-not-an-ip", "web.default.pod.cluster.local.", "A", NXDOMAIN),
    ("pod-namespace-ent", "default.pod.cluster.local.", "A", NODATA),
    # PTR
    ("ptr-cluster-ip", "5.0.96.10.in-addr.arpa.", "PTR", ok(f"5.0.96.10.in-addr.arpa. 30 PTR {WEB}")),
    ("ptr-clusterip-endpoint", "10.0.1.10.in-addr.arpa.", "PTR", ok(f"10.0.1.10.in-addr.arpa. 30 PTR 10-1-0-10.{WEB}")),
    ("ptr-headless-endpoint", "20.0.1.10.in-addr.arpa.", "PTR", ok(f"20.0.1.10.in-addr.arpa. 30 PTR db-0.{DB}")),
    ("ptr-v6", "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "PTR",
     ok("7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 30 PTR dual.default.svc.cluster.local.")),
    ("ptr-name-other-type", "5.0.96.10.in-addr.arpa.", "A", ("NOERROR", [], [REV_SOA])),
    ("ptr-unknown-no-upstream", "9.9.9.10.in-addr.arpa.", "PTR", ("SERVFAIL", [], [])),
    # ANY: answered from the records (recomputed after compile released them)
    ("any-clusterip", WEB, "ANY", ok(f"{WEB} 30 A 10.96.0.5", f"{WEB} 30 SRV 0 50 80 {WEB}", f"{WEB} 30 SRV 0 50 443 {WEB}")),
    ("any-headless", DB, "ANY", ok(
        f"{DB} 30 A 10.1.0.20", f"{DB} 30 A 10.1.0.21", f"{DB} 30 A 10.1.0.23", f"{DB} 30 AAAA fd00::20",
        f"{DB} 30 SRV 0 20 5432 10-1-0-23.{DB}", f"{DB} 30 SRV 0 20 5432 db-0.{DB}",
        f"{DB} 30 SRV 0 20 5432 db-1.{DB}", f"{DB} 30 SRV 0 20 5432 db-6.{DB}")),
    ("any-ent", f"_tcp.{WEB}", "ANY", NODATA),
    ("any-externalname", "ext.default.svc.cluster.local.", "ANY",
     ok("ext.default.svc.cluster.local. 30 CNAME www.example.com.")),
    # Outside our zones with no upstream
    ("external-no-upstream", "example.com.", "A", ("SERVFAIL", [], [])),
]


def rr_lines(section) -> list[str]:
    out = []
    for rrset in section:
        for rd in rrset:
            out.append(f"{rrset.name.to_text()} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}")
    return norm(out)


def norm(lines: list[str]) -> list[str]:
    return sorted(line.lower() for line in lines)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qname,qtype,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_dnspython(server, transport, qname, qtype, expect):
    rcode, answer, authority = expect
    q = dns.message.make_query(qname, qtype)
    fn = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    r = await fn(q, "127.0.0.1", port=server.port, timeout=3)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert rr_lines(r.answer) == norm(answer)
    assert rr_lines(r.authority) == norm(authority)
    ours = not qname.startswith("example") and rcode != "SERVFAIL"
    assert bool(r.flags & dns.flags.AA) == ours
    assert not r.flags & dns.flags.TC


DIG = shutil.which("dig")
DIG_CASES = [c for c in CASES if c[0] in {
    "clusterip-a", "clusterip-aaaa-nodata", "srv-named-port", "headless-a", "headless-srv", "unknown-service",
    "externalname-internal-chase", "apex-soa", "dns-version", "pod-a", "ptr-cluster-ip", "ptr-v6", "namespace-ent",
}]


def parse_dig(text: str) -> tuple[str, list[str], list[str]]:
    status, section, answer, authority = "", None, [], []
    for line in text.splitlines():
        if "status:" in line:
            status = line.split("status:")[1].split(",")[0].strip()
        elif line.startswith(";; ANSWER SECTION"):
            section = answer
        elif line.startswith(";; AUTHORITY SECTION"):
            section = authority
        elif line.startswith(";;") or not line.strip():
            section = None if line.startswith(";;") else section
        elif section is not None and not line.startswith(";"):
            name, ttl, _cls, rtype, rdata = line.split(None, 4)
            section.append(f"{name} {ttl} {rtype} {rdata}")
    return status, answer, authority


@pytest.mark.skipif(DIG is None, reason="dig (bind9-dnsutils) not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qname,qtype,expect", [c[1:] for c in DIG_CASES], ids=[c[0] for c in DIG_CASES])
async def test_dig(server, transport, qname, qtype, expect):
    args = [DIG, "-p", str(server.port), "@127.0.0.1", qname, qtype, "+noall", "+comments", "+answer",
            "+authority", "+tries=1", "+time=3"]
    if transport == "tcp":
        args.append("+tcp")
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    status, answer, authority = parse_dig(out.decode())
    rcode, want_answer, want_authority = expect
    assert status == rcode, out.decode()
    assert norm(answer) == norm(want_answer)
    assert norm(authority) == norm(want_authority)
