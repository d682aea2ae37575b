"""`buoy dns` against a real etcd: queries over UDP and TCP with dnspython and dig."""

from __future__ import annotations

import logging
import subprocess

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from etcd_server import wait_for
from test_dns_support import RunningDns, running_dns

from buoy.etcd.dns_records import SkyDNSRecord, instance_entry
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.store import EtcdStore

DB = AnnouncePath.parse("/internal/app1/dev/db")
SERVICE = "db.dev.app1.internal.buoy.internal."


def put_instance(store: EtcdStore, keys: KeyLayout, instance_id: str, ip: str, port: int,
                 lease: int | None = None) -> int:
    rec = ServiceRecord.from_announce(AnnounceRecord.for_path(DB, instance_id, 5432, "TCP"),
                                      ip=ip, ext_port=port, host="h1")
    key, value = instance_entry(keys, rec, DB)
    return store.put(key, value, lease=lease)


@pytest.fixture
def dns_srv(store: EtcdStore, keys: KeyLayout) -> RunningDns:
    with running_dns(store, keys, extra_zones=("example.",)) as running:
        yield running  # type: ignore[misc]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_and_srv_answer_every_instance(dns_srv: RunningDns, store: EtcdStore,
                                         keys: KeyLayout, tcp: bool) -> None:
    put_instance(store, keys, "aaa111", "10.0.0.5", 32768)
    dns_srv.wait_revision(put_instance(store, keys, "bbb222", "10.0.0.6", 32769))

    assert dns_srv.answers(SERVICE, "A", tcp=tcp) == {"10.0.0.5", "10.0.0.6"}
    assert dns_srv.answers("aaa111." + SERVICE, "A", tcp=tcp) == {"10.0.0.5"}
    response = dns_srv.ask(SERVICE, "SRV", tcp=tcp)
    assert response.flags & dns.flags.AA
    srv = {rd.to_text() for rrset in response.answer for rd in rrset}
    # Two instances at priority 10 share the weight (100 each before normalising → 50).
    assert srv == {f"10 50 32768 aaa111.{SERVICE}", f"10 50 32769 bbb222.{SERVICE}"}
    extra = {(rrset.name.to_text(), rd.to_text()) for rrset in response.additional
             if rrset.rdtype == dns.rdatatype.A for rd in rrset}
    assert extra == {(f"aaa111.{SERVICE}", "10.0.0.5"), (f"bbb222.{SERVICE}", "10.0.0.6")}


def test_txt_nxdomain_and_refused(dns_srv: RunningDns, store: EtcdStore,
                                  keys: KeyLayout) -> None:
    rev = store.put(keys.skydns_key("info.buoy.internal."),
                    SkyDNSRecord(text="hello from buoy", ttl=30).to_json())
    dns_srv.wait_revision(rev)
    assert dns_srv.answers("info.buoy.internal.", "TXT") == {'"hello from buoy"'}

    missing = dns_srv.ask("nothing-here.buoy.internal.", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.flags & dns.flags.AA
    assert [r.rdtype for r in missing.authority] == [dns.rdatatype.SOA]
    assert missing.authority[0].name.to_text() == "buoy.internal."

    # The name exists but has no A record: NODATA (NOERROR, empty answer, SOA).
    nodata = dns_srv.ask("info.buoy.internal.", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA

    refused = dns_srv.ask("www.debian.org.", "A", tcp=True)
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer


def test_virtual_host_in_extra_zone(dns_srv: RunningDns, store: EtcdStore,
                                    keys: KeyLayout) -> None:
    store.put(keys.skydns_key("ghost.example.") + "/listen1",
              SkyDNSRecord(host="10.1.0.9", ttl=15).to_json())
    rev = store.put(keys.skydns_key("ghost.elsewhere.") + "/listen1",
                    SkyDNSRecord(host="10.1.0.9", ttl=15).to_json())
    dns_srv.wait_revision(rev)
    assert dns_srv.answers("ghost.example.", "A") == {"10.1.0.9"}
    assert dns_srv.answers("GHOST.Example.", "A") == {"10.1.0.9"}  # names are case-blind
    # A record outside every configured zone is never served.
    assert dns_srv.ask("ghost.elsewhere.", "A").rcode() == dns.rcode.REFUSED


def test_ttl_is_capped_by_the_lease(dns_srv: RunningDns, store: EtcdStore,
                                    keys: KeyLayout) -> None:
    lease = store.grant(20)
    long_ttl = SkyDNSRecord(host="10.2.0.1", ttl=300).to_json()
    store.put(keys.skydns_key("leased.buoy.internal."), long_ttl, lease=lease)
    short = SkyDNSRecord(host="10.2.0.2", ttl=5).to_json()
    store.put(keys.skydns_key("short.buoy.internal."), short, lease=lease)
    rev = store.put(keys.skydns_key("plain.buoy.internal."), long_ttl)
    dns_srv.wait_revision(rev)

    leased = dns_srv.ask("leased.buoy.internal.", "A").answer[0].ttl
    assert 0 < leased <= 20
    assert dns_srv.ask("short.buoy.internal.", "A").answer[0].ttl == 5
    assert dns_srv.ask("plain.buoy.internal.", "A").answer[0].ttl == 300

    # Revoking the lease deletes its keys; the answers follow.
    store.revoke(lease)
    wait_for(lambda: dns_srv.ask("leased.buoy.internal.", "A").rcode() == dns.rcode.NXDOMAIN,
             timeout=10, what="leased record gone")


def test_update_is_seen_in_answers(dns_srv: RunningDns, store: EtcdStore,
                                   keys: KeyLayout) -> None:
    dns_srv.wait_revision(put_instance(store, keys, "aaa111", "10.0.0.5", 32768))
    assert dns_srv.answers(SERVICE, "A") == {"10.0.0.5"}  # now cached
    put_instance(store, keys, "aaa111", "10.0.0.77", 32768)
    wait_for(lambda: dns_srv.answers(SERVICE, "A") == {"10.0.0.77"}, timeout=10,
             what="new address answered")
    store.delete(keys.skydns_key("aaa111." + SERVICE))
    wait_for(lambda: dns_srv.ask(SERVICE, "A").rcode() == dns.rcode.NXDOMAIN, timeout=10,
             what="deleted record gone")


def test_malformed_record_is_logged_once_and_skipped(
        dns_srv: RunningDns, store: EtcdStore, keys: KeyLayout,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="buoy.skydns.index")
    bad_json = keys.skydns_key("bad1." + SERVICE)
    bad_ip = keys.skydns_key("bad2." + SERVICE)
    store.put(bad_json, "not json {")
    store.put(bad_ip, '{"host": "10.0.0.300", "port": 1}')
    dns_srv.wait_revision(put_instance(store, keys, "good1", "10.0.0.5", 32768))

    assert dns_srv.answers(SERVICE, "A") == {"10.0.0.5"}
    assert dns_srv.answers("bad1." + SERVICE, "A") == set()
    assert dns_srv.ask("bad2." + SERVICE, "A").rcode() == dns.rcode.NXDOMAIN
    for _ in range(3):  # answering again logs nothing new
        dns_srv.answers(SERVICE, "SRV")
    for key in (bad_json, bad_ip):
        assert sum(key in r.getMessage() for r in caplog.records) == 1, key
    assert dns_srv.agent.builder.rejected == 2


def test_dig_udp_and_tcp(dns_srv: RunningDns, store: EtcdStore, keys: KeyLayout) -> None:
    put_instance(store, keys, "aaa111", "10.0.0.5", 32768)
    dns_srv.wait_revision(put_instance(store, keys, "bbb222", "10.0.0.6", 32769))
    base = ["/usr/bin/dig", "-p", str(dns_srv.port), "@127.0.0.1", "+short", "+time=2",
            "+tries=1"]
    for extra in ([], ["+tcp"]):
        out = subprocess.run([*base, *extra, SERVICE, "A"], capture_output=True, text=True,
                             timeout=15, check=True).stdout.split()
        assert sorted(out) == ["10.0.0.5", "10.0.0.6"]
        srv = subprocess.run([*base, *extra, SERVICE, "SRV"], capture_output=True, text=True,
                             timeout=15, check=True).stdout.strip().splitlines()
        assert sorted(srv) == [f"10 50 32768 aaa111.{SERVICE}", f"10 50 32769 bbb222.{SERVICE}"]
    status = subprocess.run([*base[:4], "+time=2", "+tries=1", "nope.buoy.internal."], capture_output=True,
                            text=True, timeout=15, check=True).stdout
    assert "status: NXDOMAIN" in status and "SOA" in status
