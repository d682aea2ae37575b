"""The CoreDNS etcd plugin's test tables, against `buoy dns` and a real etcd.

Source: coredns/coredns plugin/etcd lookup_test.go (`services`, `dnsTestCases`),
other_test.go (MX, TXT, NS) and cname_test.go. The records and the expected
answers are restated here as data, one test per case, each asked over UDP and TCP.
Where buoy answers differently by design (docs/dns.md, "Where buoy differs from
CoreDNS") the case says so and expects buoy's answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import pytest
from test_dns_support import running_dns

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore

ZONES = ("skydns.test.", "skydns_extra.test.", "skydns_zonea.test.", "skydns_zoneb.test.",
         "skydns_zonec.test.", "skydns_zoned.test.", "in-addr.arpa.")

LOOKUP = {  # name → record (the Go tables key services by DNS name)
    "a.server1.dev.region1.skydns.test.": {"host": "dev.server1", "port": 8080},
    "a.server1.prod.region1.skydns.test.": {"host": "10.0.0.1", "port": 8080},
    "b.server1.prod.region1.skydns.test.": {"host": "10.0.0.2", "port": 8080},
    "b.server6.prod.region1.skydns.test.": {"host": "::1", "port": 8080},
    "cname.prod.region1.skydns.test.": {"host": "unresolvable.skydns.test"},
    "priority.skydns.test.": {"host": "priority.server1", "priority": 333, "port": 8080},
    "a.sub.region1.skydns.test.": {"host": "sub.server1", "port": 0},
    "b.sub.region1.skydns.test.": {"host": "sub.server2", "port": 80},
    "c.sub.region1.skydns.test.": {"host": "10.0.0.1", "port": 8080},
    "b.cname.skydns.test.": {"host": "a.cname.skydns.test"},
    "a.cname.skydns.test.": {"host": "b.cname.skydns.test"},
    "a.ns.dns.skydns.test.": {"host": "10.0.0.2"},
    "b.ns.dns.skydns.test.": {"host": "10.0.0.3"},
    "x.skydns_zonea.test.": {"host": "10.0.0.2"},
    "y.skydns_zonea.test.": {"host": "10.0.0.3"},
    "x.skydns_zoneb.test.": {"host": "10.0.0.2"},
    "y.skydns_zoneb.test.": {"host": "10.0.0.3"},
    "apex.dns.skydns_zoneb.test.": {"host": "10.0.0.4"},
    "x.skydns_zonec.test.": {"host": "10.0.0.2"},
    "y.skydns_zonec.test.": {"host": "10.0.0.3"},
    "a1.apex.dns.skydns_zonec.test.": {"host": "10.0.0.4"},
    "a2.apex.dns.skydns_zonec.test.": {"host": "10.0.0.5"},
    "x.skydns_zoned.test.": {"host": "10.0.0.2"},
    "y.skydns_zoned.test.": {"host": "10.0.0.3"},
    "a1.apex.dns.skydns_zoned.test.": {"host": "10.0.0.4"},
    "a2.apex.dns.skydns_zoned.test.": {"host": "10.0.0.5"},
    "a3.apex.dns.skydns_zoned.test.": {"host": "2003::8:1"},
    "a4.apex.dns.skydns_zoned.test.": {"host": "2003::8:2"},
    "1.0.0.10.in-addr.arpa.": {"host": "reverse.example.com"},
}

OTHER = {
    "a.server1.dev.region1.skydns.test.": {"host": "dev.server1", "port": 8080},
    "a.mail.skydns.test.": {"host": "mx.skydns.test", "priority": 50, "mail": True},
    "b.mail.skydns.test.": {"host": "mx.miek.nl", "priority": 50, "mail": True},
    "a.mx.skydns.test.": {"host": "a.ipaddr.skydns.test", "priority": 30, "mail": True},
    "a.mx2.skydns.test.": {"host": "a.ipaddr.skydns.test", "mail": True},
    "b.mx2.skydns.test.": {"host": "b.ipaddr.skydns.test", "mail": True},
    "a.mx3.skydns.test.": {"host": "a.ipaddr.skydns.test", "priority": 20, "mail": True},
    "b.mx3.skydns.test.": {"host": "a.ipaddr.skydns.test", "priority": 30, "mail": True},
    "a.ipaddr.skydns.test.": {"host": "172.16.1.1"},
    "b.ipaddr.skydns.test.": {"host": "172.16.1.2"},
    "a1.txt.skydns.test.": {"text": "abc"},
    "a2.txt.skydns.test.": {"text": "abc abc"},
    "large400.skydns.test.": {"text": "0" * 400},
    "ipv4.ns.dns.skydns.test.": {"host": "172.17.1.1"},
    "http.multiport.http.skydns.test.": {"host": "10.11.11.10", "port": 80},
    "https.multiport.http.skydns.test.": {"host": "10.11.11.10", "port": 443},
}

CNAMES = {
    "a.server1.dev.region1.skydns.test.": {"host": "cname1.region2.skydns.test"},
    "cname1.region2.skydns.test.": {"host": "cname2.region2.skydns.test"},
    "cname2.region2.skydns.test.": {"host": "cname3.region2.skydns.test"},
    "cname3.region2.skydns.test.": {"host": "cname4.region2.skydns.test"},
    "cname4.region2.skydns.test.": {"host": "cname5.region2.skydns.test"},
    "cname5.region2.skydns.test.": {"host": "cname6.region2.skydns.test"},
    "cname6.region2.skydns.test.": {"host": "endpoint.region2.skydns.test"},
    "region2.skydns.test.": {"host": "mainendpoint.region2.skydns.test"},
    "region3.skydns.test.": {"text": "SOME-RECORD-TEXT"},
    "endpoint.region2.skydns.test.": {"host": "10.240.0.1"},
}

REGION1_SRV = {f"SRV 10 12 {port} {target}" for port, target in (
    (0, "sub.server1."), (0, "unresolvable.skydns.test."), (80, "sub.server2."),
    (8080, "a.server1.prod.region1.skydns.test."), (8080, "b.server1.prod.region1.skydns.test."),
    (8080, "b.server6.prod.region1.skydns.test."), (8080, "c.sub.region1.skydns.test."),
    (8080, "dev.server1."))}
PROD_SRV = {f"SRV 10 25 {port} {target}" for port, target in (
    (0, "unresolvable.skydns.test."), (8080, "a.server1.prod.region1.skydns.test."),
    (8080, "b.server1.prod.region1.skydns.test."), (8080, "b.server6.prod.region1.skydns.test."))}
PROD_EXTRA = {"a.server1.prod.region1.skydns.test. A 10.0.0.1",
              "b.server1.prod.region1.skydns.test. A 10.0.0.2",
              "b.server6.prod.region1.skydns.test. AAAA ::1"}
SOA = "SOA"


@dataclass
class Case:
    qname: str
    qtype: str
    answer: set[str] = field(default_factory=set)  # "TYPE rdata", owner = qname
    extra: set[str] = field(default_factory=set)  # "owner TYPE rdata"
    rcode: int = dns.rcode.NOERROR
    note: str = ""  # where buoy differs from CoreDNS on purpose

    @property
    def id(self) -> str:
        return f"{self.qname}{self.qtype}"


NXDOMAIN = dns.rcode.NXDOMAIN
CASES: list[tuple[dict[str, dict[str, object]], Case]] = [
    (LOOKUP, Case("a.server1.dev.region1.skydns.test.", "SRV",
                  {"SRV 10 100 8080 dev.server1."})),
    (LOOKUP, Case("a.SERVer1.dEv.region1.skydns.tEst.", "SRV",
                  {"SRV 10 100 8080 dev.server1."})),
    (LOOKUP, Case("doesnotexist.skydns.test.", "A", rcode=NXDOMAIN)),
    (LOOKUP, Case("a.server1.prod.region1.skydns.test.", "A", {"A 10.0.0.1"})),
    (LOOKUP, Case("a.server1.prod.region1.skydns.test.", "SRV",
                  {"SRV 10 100 8080 a.server1.prod.region1.skydns.test."},
                  {"a.server1.prod.region1.skydns.test. A 10.0.0.1"})),
    (LOOKUP, Case("b.server6.prod.region1.skydns.test.", "AAAA", {"AAAA ::1"})),
    (LOOKUP, Case("server1.prod.region1.skydns.test.", "A", {"A 10.0.0.1", "A 10.0.0.2"})),
    (LOOKUP, Case("priority.skydns.test.", "SRV", {"SRV 333 100 8080 priority.server1."})),
    (LOOKUP, Case("sub.region1.skydns.test.", "SRV",
                  {"SRV 10 33 0 sub.server1.", "SRV 10 33 80 sub.server2.",
                   "SRV 10 33 8080 c.sub.region1.skydns.test."},
                  {"c.sub.region1.skydns.test. A 10.0.0.1"})),
    (LOOKUP, Case("cname.prod.region1.skydns.test.", "A")),  # in-zone target missing: NODATA
    (LOOKUP, Case("*.region1.skydns.test.", "SRV", REGION1_SRV,
                  PROD_EXTRA | {"c.sub.region1.skydns.test. A 10.0.0.1"})),
    (LOOKUP, Case("prod.*.skydns.test.", "SRV", PROD_SRV, PROD_EXTRA)),
    (LOOKUP, Case("prod.any.skydns.test.", "SRV", PROD_SRV, PROD_EXTRA)),
    (LOOKUP, Case("a.cname.skydns.test.", "A")),  # a CNAME loop: NODATA
    (LOOKUP, Case("a.server1.dev.region1.skydns.test.", "TXT", {"CNAME dev.server1."},
                  note="CoreDNS asks its upstream for dev.server1.; buoy returns the CNAME")),
    (LOOKUP, Case("a.server1.dev.region1.skydns.test.", "HINFO")),
    (LOOKUP, Case("a.server1.nonexistent.region1.skydns.test.", "HINFO", rcode=NXDOMAIN)),
    (LOOKUP, Case("skydns.test.", "SOA", {SOA})),
    (LOOKUP, Case("skydns.test.", "NS", {"NS a.ns.dns.skydns.test.", "NS b.ns.dns.skydns.test."},
                  {"a.ns.dns.skydns.test. A 10.0.0.2", "b.ns.dns.skydns.test. A 10.0.0.3"})),
    (LOOKUP, Case("a.skydns.test.", "NS", rcode=NXDOMAIN)),
    (LOOKUP, Case("ns.dns.skydns.test.", "A", {"A 10.0.0.2", "A 10.0.0.3"})),
    (LOOKUP, Case("skydns_extra.test.", "SOA", {SOA})),
    (LOOKUP, Case("skydns_zonea.test.", "A", {"A 10.0.0.2", "A 10.0.0.3"})),
    (LOOKUP, Case("skydns_zoneb.test.", "A", {"A 10.0.0.4"})),
    (LOOKUP, Case("skydns_zonec.test.", "A", {"A 10.0.0.4", "A 10.0.0.5"})),
    (LOOKUP, Case("skydns_zoned.test.", "A", {"A 10.0.0.4", "A 10.0.0.5"})),
    (LOOKUP, Case("skydns_zoned.test.", "AAAA", {"AAAA 2003::8:1", "AAAA 2003::8:2"})),
    (LOOKUP, Case("1.0.0.10.in-addr.arpa.", "PTR", {"PTR reverse.example.com."})),
    (OTHER, Case("a.server1.dev.region1.skydns.test.", "MX")),  # not a mail record: NODATA
    (OTHER, Case("a.mail.skydns.test.", "MX", {"MX 50 mx.skydns.test."},
                 {"mx.skydns.test. CNAME a.ipaddr.skydns.test.",
                  "a.ipaddr.skydns.test. A 172.16.1.1"})),
    (OTHER, Case("mx2.skydns.test.", "MX", {"MX 10 a.ipaddr.skydns.test.",
                                            "MX 10 b.ipaddr.skydns.test."},
                 {"a.ipaddr.skydns.test. A 172.16.1.1", "b.ipaddr.skydns.test. A 172.16.1.2"})),
    (OTHER, Case("mx3.skydns.test.", "MX", {"MX 20 a.ipaddr.skydns.test.",
                                            "MX 30 a.ipaddr.skydns.test."},
                 {"a.ipaddr.skydns.test. A 172.16.1.1"})),
    (OTHER, Case("a1.txt.skydns.test.", "TXT", {'TXT "abc"'})),
    (OTHER, Case("a2.txt.skydns.test.", "TXT", {'TXT "abc abc"'})),
    (OTHER, Case("large400.skydns.test.", "TXT", {f'TXT "{"0" * 255}" "{"0" * 145}"'})),
    (OTHER, Case("skydns.test.", "NS", {"NS ipv4.ns.dns.skydns.test."},
                 {"ipv4.ns.dns.skydns.test. A 172.17.1.1"})),
    (OTHER, Case("multiport.http.skydns.test.", "A", {"A 10.11.11.10"})),
    (CNAMES, Case("a.server1.dev.region1.skydns.test.", "SRV",
                  {"SRV 10 100 0 cname1.region2.skydns.test."},
                  {f"cname{n}.region2.skydns.test. CNAME cname{n + 1}.region2.skydns.test."
                   for n in range(1, 6)}
                  | {"cname6.region2.skydns.test. CNAME endpoint.region2.skydns.test.",
                     "endpoint.region2.skydns.test. A 10.240.0.1"})),
    (CNAMES, Case("region2.skydns.test.", "CNAME", {"CNAME mainendpoint.region2.skydns.test."})),
    (CNAMES, Case("region3.skydns.test.", "CNAME")),  # text only: NODATA
]


def key_of(keys: KeyLayout, name: str) -> str:
    """The etcd key of a DNS name (labels reversed); `_` allowed, as in CoreDNS's tables."""
    return keys.skydns_root + "/".join(reversed(name.rstrip(".").split(".")))


def put_table(store: EtcdStore, keys: KeyLayout, table: dict[str, dict[str, object]]) -> int:
    rev = 0
    for name, record in table.items():
        rev = store.put(key_of(keys, name), json.dumps(record))
    return rev


def section(response: dns.message.Message, which: str) -> set[str]:
    """`owner TYPE rdata` per record (owner left out in the answer, SOA as its type only)."""
    out = set()
    for rrset in getattr(response, which):
        kind = rrset.rdtype.name
        for rd in rrset:
            text = kind if kind == SOA else f"{kind} {rd.to_text()}"
            out.add(text if which == "answer" else f"{rrset.name.to_text().lower()} {text}")
    return out


@pytest.mark.parametrize("table,case", CASES, ids=[c.id for _, c in CASES])
def test_coredns_table_case(store: EtcdStore, keys: KeyLayout,
                            table: dict[str, dict[str, object]], case: Case) -> None:
    with running_dns(store, keys, zone=ZONES[0], extra_zones=ZONES[1:]) as srv:
        srv.wait_revision(put_table(store, keys, table))
        for tcp in (False, True):
            response = srv.ask(case.qname, case.qtype, tcp=tcp)
            where = f"{case.id} tcp={tcp} {case.note}"
            assert response.rcode() == case.rcode, where
            assert section(response, "answer") == case.answer, where
            assert section(response, "additional") == case.extra, where
            assert {rrset.name.to_text().lower() for rrset in response.answer} <= \
                {case.qname.lower(), *(e.split()[0] for e in case.extra)}, where
            if not case.answer:  # NXDOMAIN and NODATA carry the zone's SOA
                assert [r.rdtype.name for r in response.authority] == [SOA], where
