"""`buoy dns` rules beyond the CoreDNS tables, over UDP and TCP against a real etcd:
a CNAME alone at its name, exact-key CNAME/PTR under a populated name, wildcards on
buoy's own instance names, MX and NS written as records, and the query counters."""

from __future__ import annotations

import json
import urllib.request

import dns.rcode
import pytest
from test_dns_support import RunningDns, running_dns

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore
from buoy.ops.health import MetricsServer

TRANSPORTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


def put(store: EtcdStore, keys: KeyLayout, name: str, record: dict[str, object],
        suffix: str = "") -> int:
    return store.put(keys.skydns_key(name) + suffix, json.dumps(record))


def records(srv: RunningDns, name: str, qtype: str, tcp: bool) -> set[str]:
    response = srv.ask(name, qtype, tcp=tcp)
    return {f"{rrset.name.to_text()} {rrset.rdtype.name} {rd.to_text()}"
            for rrset in response.answer for rd in rrset}


@TRANSPORTS
def test_a_cname_stands_alone_at_its_name(store: EtcdStore, keys: KeyLayout, tcp: bool) -> None:
    with running_dns(store, keys, zone="zone.test.") as srv:
        put(store, keys, "c1.sub.zone.test.", {"host": "canon.zone.test", "ttl": 60})
        put(store, keys, "c2.sub.zone.test.", {"host": "other.zone.test", "ttl": 60})
        put(store, keys, "canon.zone.test.", {"host": "10.1.1.1", "ttl": 60})
        put(store, keys, "other.zone.test.", {"host": "10.1.1.2", "ttl": 60})
        srv.wait_revision(put(store, keys, "c3.sub.zone.test.", {"host": "10.1.1.3"}))
        # The name holds an address: its records that are names do not make it a CNAME.
        assert records(srv, "sub.zone.test.", "A", tcp) == {"sub.zone.test. A 10.1.1.3"}

        store.delete(keys.skydns_key("c3.sub.zone.test."))
        srv.wait_revision(put(store, keys, "marker.other.test.", {"host": "10.1.1.9"}))
        # Only aliases left: one CNAME (the first key's), followed, never two.
        assert records(srv, "sub.zone.test.", "A", tcp) == {
            "sub.zone.test. CNAME canon.zone.test.", "canon.zone.test. A 10.1.1.1"}

        # Text under the name: a TXT answer holds the text and no CNAME; the A answer is
        # still the one CNAME (TXT registry records beside a CNAME, as external-dns writes).
        srv.wait_revision(put(store, keys, "t.sub.zone.test.", {"text": "hello"}))
        assert records(srv, "sub.zone.test.", "TXT", tcp) == {'sub.zone.test. TXT "hello"'}
        assert records(srv, "sub.zone.test.", "A", tcp) == {
            "sub.zone.test. CNAME canon.zone.test.", "canon.zone.test. A 10.1.1.1"}


@TRANSPORTS
def test_cname_and_ptr_read_the_exact_key_under_a_populated_name(
        store: EtcdStore, keys: KeyLayout, tcp: bool) -> None:
    with running_dns(store, keys, zone="zone.test.", extra_zones=("0.10.in-addr.arpa.",)) as srv:
        put(store, keys, "web.zone.test.", {"host": "front.example.org"})
        put(store, keys, "a.web.zone.test.", {"host": "10.0.0.1"})
        put(store, keys, "5.0.0.10.in-addr.arpa.", {"host": "five.zone.test"})
        srv.wait_revision(put(store, keys, "x.5.0.0.10.in-addr.arpa.", {"host": "10.0.0.5"}))
        assert records(srv, "web.zone.test.", "CNAME", tcp) == {
            "web.zone.test. CNAME front.example.org."}
        assert records(srv, "5.0.0.10.in-addr.arpa.", "PTR", tcp) == {
            "5.0.0.10.in-addr.arpa. PTR five.zone.test."}
        # A name with records below it but no key of its own: NODATA, not NXDOMAIN.
        below = srv.ask("zone.test.", "CNAME", tcp=tcp)
        assert below.rcode() == dns.rcode.NOERROR and not below.answer
        missing = srv.ask("nothing.zone.test.", "CNAME", tcp=tcp)
        assert missing.rcode() == dns.rcode.NXDOMAIN


@TRANSPORTS
def test_wildcards_reach_every_instance(store: EtcdStore, keys: KeyLayout, tcp: bool) -> None:
    with running_dns(store, keys) as srv:
        for env, ip in (("dev", "10.3.0.1"), ("prod", "10.3.0.2")):
            put(store, keys, f"i1.db.{env}.app1.internal.buoy.internal.",
                {"host": ip, "port": 5432})
        srv.wait_revision(put(store, keys, "i1.web.prod.app1.internal.buoy.internal.",
                              {"host": "10.3.0.3", "port": 80}))
        assert records(srv, "db.*.app1.internal.buoy.internal.", "A", tcp) == {
            "db.*.app1.internal.buoy.internal. A 10.3.0.1",
            "db.*.app1.internal.buoy.internal. A 10.3.0.2"}
        srv_answer = records(srv, "any.prod.app1.internal.buoy.internal.", "SRV", tcp)
        assert {r.split()[-1] for r in srv_answer} == {
            "i1.db.prod.app1.internal.buoy.internal.", "i1.web.prod.app1.internal.buoy.internal."}
        none = srv.ask("*.staging.app1.internal.buoy.internal.", "A", tcp=tcp)
        assert none.rcode() == dns.rcode.NXDOMAIN


@TRANSPORTS
def test_mx_and_apex_ns_with_glue(store: EtcdStore, keys: KeyLayout, tcp: bool) -> None:
    with running_dns(store, keys, zone="corp_zone.test.") as srv:
        store.put(keys.skydns_root + "test/corp_zone/dns/ns/ns1", '{"host":"10.9.0.1"}')
        store.put(keys.skydns_root + "test/corp_zone/dns/ns/ns2", '{"host":"fd00::53"}')
        store.put(keys.skydns_root + "test/corp_zone/mail/m1",
                  '{"host":"10.9.0.25","priority":5,"mail":true}')
        srv.wait_revision(store.put(keys.skydns_root + "test/corp_zone/mail/web",
                                    '{"host":"10.9.0.80"}'))
        ns = srv.ask("corp_zone.test.", "NS", tcp=tcp)
        assert {rd.to_text() for rrset in ns.answer for rd in rrset} == {
            "ns1.ns.dns.corp_zone.test.", "ns2.ns.dns.corp_zone.test."}
        assert {(r.name.to_text(), rd.to_text()) for r in ns.additional for rd in r} == {
            ("ns1.ns.dns.corp_zone.test.", "10.9.0.1"), ("ns2.ns.dns.corp_zone.test.", "fd00::53")}
        mx = srv.ask("mail.corp_zone.test.", "MX", tcp=tcp)
        assert {rd.to_text() for rrset in mx.answer for rd in rrset} == {
            "5 m1.mail.corp_zone.test."}
        assert {(r.name.to_text(), rd.to_text()) for r in mx.additional for rd in r} == {
            ("m1.mail.corp_zone.test.", "10.9.0.25")}


def metric_lines(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return [line for line in reply.read().decode().splitlines()
                if line.startswith("buoy_dns_queries_total")]


def test_queries_are_counted_by_type_and_rcode(store: EtcdStore, keys: KeyLayout) -> None:
    with running_dns(store, keys) as srv:
        srv.wait_revision(put(store, keys, "web.buoy.internal.", {"host": "10.4.0.1"}))
        server = MetricsServer(srv.agent.health, "127.0.0.1", 0).start()
        try:
            for tcp in (False, True, False):  # cached or not, every query counts
                srv.ask("web.buoy.internal.", "A", tcp=tcp)
            srv.ask("none.buoy.internal.", "SRV", tcp=True)
            srv.ask("web.elsewhere.", "A")
            lines = metric_lines(server.port)
        finally:
            server.close()
    assert 'buoy_dns_queries_total{rcode="NOERROR",type="A"} 3.0' in lines
    assert 'buoy_dns_queries_total{rcode="NXDOMAIN",type="SRV"} 1.0' in lines
    assert 'buoy_dns_queries_total{rcode="REFUSED",type="A"} 1.0' in lines
    assert len(lines) == 3, lines
