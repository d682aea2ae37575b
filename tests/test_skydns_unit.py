"""Pure parts of skydns: records, names, the index, grouping and answer rules."""

from __future__ import annotations

import dns.rcode
import dns.rdatatype as T
import pytest

from buoy.etcd.dns_records import SkyDNSRecord, instance_entry
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, ServiceRecord
from buoy.skydns.config import parse_listen, parse_zones
from buoy.skydns.index import Index, parse_entry
from buoy.skydns.resolve import resolve
from buoy.skydns.rrs import target_strip

KEYS = KeyLayout("/p")


def index(kvs: dict[str, str], leases: dict[str, int] | None = None) -> Index:
    leases = leases or {}
    return Index([parse_entry(KEYS, KEYS.skydns_root + k, v.encode(), leases.get(k, 0))
                  for k, v in kvs.items()], revision=7)


def texts(idx: Index, name: str, qtype: int, remaining: float | None = None) -> list[str]:
    result = resolve(idx, ("zone.test.",), name, qtype, lambda lease: remaining)
    return sorted(f"{rr[0]} {rr[2]} {rr[3].to_text()}" for rr in result.answer)


def test_instance_entry_follows_the_design_name_rule() -> None:
    path = AnnouncePath.parse("/internal/app1/dev/db/ghost.example")
    rec = ServiceRecord.from_announce(AnnounceRecord.for_path(path, "0ce60d000eac", 80, "HTTP"),
                                      ip="10.0.0.5", ext_port=32768, host="h1")
    key, value = instance_entry(KEYS, rec, path, ttl=15)
    assert key == "/p/skydns/internal/buoy/internal/app1/dev/db/example/ghost/0ce60d000eac"
    assert KEYS.parse_skydns_key(key) == \
        "0ce60d000eac.ghost.example.db.dev.app1.internal.buoy.internal."
    assert SkyDNSRecord.from_json(value) == SkyDNSRecord(host="10.0.0.5", port=32768, ttl=15)


@pytest.mark.parametrize("value", ['nope', '[]', '{"host":"10.0.0.300"}', '{"host":"a b"}',
                                   '{"port":1}', '{"host":"10.0.0.1","port":70000}',
                                   '{"host":"10.0.0.1","ttl":-1}',
                                   '{"host":"10.0.0.1","mail":"yes"}'])
def test_malformed_values_are_rejected(value: str) -> None:
    with pytest.raises(RecordError):
        parse_entry(KEYS, "/p/skydns/test/zone/x", value.encode())


def test_bad_keys_are_rejected_and_digit_strings_accepted() -> None:
    for key in ("/p/skydns/test/zone/UPPER", "/p/skydns/test//x", "/p/skydns/", "/q/skydns/a"):
        with pytest.raises(RecordError):
            parse_entry(KEYS, key, b'{"host":"10.0.0.1"}')
    assert SkyDNSRecord.from_json('{"host":"10.0.0.1","ttl":"60"}').ttl == 60


def test_subtree_exact_and_nxdomain() -> None:
    idx = index({"test/zone/db/a": '{"host":"10.0.0.1"}', "test/zone/db/b": '{"host":"10.0.0.2"}',
                 "test/zone/db1": '{"host":"10.0.0.9"}'})
    assert texts(idx, "db.zone.test.", T.A) == ["db.zone.test. 300 10.0.0.1",
                                                 "db.zone.test. 300 10.0.0.2"]
    assert texts(idx, "db1.zone.test.", T.A) == ["db1.zone.test. 300 10.0.0.9"]
    missing = resolve(idx, ("zone.test.",), "d.zone.test.", T.A, lambda lease: None)
    assert missing.rcode == dns.rcode.NXDOMAIN and missing.authority
    outside = resolve(idx, ("zone.test.",), "db.other.", T.A, lambda lease: None)
    assert outside.rcode == dns.rcode.REFUSED and not outside.authority


def test_ttl_is_the_smaller_of_record_and_lease() -> None:
    idx = index({"test/zone/a": '{"host":"10.0.0.1","ttl":30}'}, {"test/zone/a": 5})
    assert texts(idx, "a.zone.test.", T.A, remaining=12.7) == ["a.zone.test. 12 10.0.0.1"]
    assert texts(idx, "a.zone.test.", T.A, remaining=100) == ["a.zone.test. 30 10.0.0.1"]
    assert texts(idx, "a.zone.test.", T.A, remaining=None) == ["a.zone.test. 30 10.0.0.1"]


def test_cname_inside_the_zone_is_followed_and_loops_are_dropped() -> None:
    idx = index({"test/zone/www": '{"host":"web.zone.test"}',
                 "test/zone/web": '{"host":"10.0.0.3"}',
                 "test/zone/ext": '{"host":"elsewhere.example"}',
                 "test/zone/loop": '{"host":"loop.zone.test"}'})
    assert texts(idx, "www.zone.test.", T.A) == ["web.zone.test. 300 10.0.0.3",
                                                  "www.zone.test. 300 web.zone.test."]
    assert texts(idx, "ext.zone.test.", T.A) == ["ext.zone.test. 300 elsewhere.example."]
    assert texts(idx, "loop.zone.test.", T.A) == []


def test_group_and_targetstrip() -> None:
    idx = index({"test/zone/g/a": '{"host":"10.0.0.1","group":"blue"}',
                 "test/zone/g/b": '{"host":"10.0.0.2","group":"green"}',
                 "test/zone/g/x/c": '{"host":"10.0.0.3","group":"blue"}',
                 "test/zone/s/x": '{"host":"10.0.0.4","port":80,"targetstrip":1}'})
    # The shortest keys disagree on the group: no grouping.
    assert len(texts(idx, "g.zone.test.", T.A)) == 3
    assert texts(idx, "x.g.zone.test.", T.A) == ["x.g.zone.test. 300 10.0.0.3"]
    assert texts(idx, "s.zone.test.", T.SRV) == ["s.zone.test. 300 10 100 80 s.zone.test."]
    assert target_strip("a.b.c.", 2) == "c." and target_strip("a.b.c.", 3) == "a.b.c."


def test_settings_parse() -> None:
    assert parse_listen("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_listen("[::1]:53") == ("::1", 53)
    for bad in ("localhost:53", "127.0.0.1", "127.0.0.1:0", ":53"):
        with pytest.raises(RecordError, match="BUOY_DNS_LISTEN"):
            parse_listen(bad)
    assert parse_zones(["Example.", "a.test,b.test"]) == ("example.", "a.test.", "b.test.")
    with pytest.raises(RecordError, match="BUOY_DNS_EXTRA_ZONES"):
        parse_zones(["bad_zone!"])
    # Underscores are DNS (CoreDNS serves skydns_zonea.test.); spaces, empty labels,
    # an edge `-` and labels over 63 characters are not: labels [a-z0-9_-].
    assert parse_zones(["SkyDNS_ZoneA.test"]) == ("skydns_zonea.test.",)
    for bad in ("a b.test", "-a.test", "a..test", "x" * 64 + ".test"):
        with pytest.raises(RecordError, match="BUOY_DNS_EXTRA_ZONES"):
            parse_zones([bad])


class RefreshedLease:
    """A lease granted for 15 s whose writer refreshes it every 5 s, on a fake clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def lease_ttl(self, lease_id: int) -> int:
        return int(15 - self.now % 5)


def test_leases_are_read_on_a_schedule_and_never_run_out_while_refreshed() -> None:
    import threading

    from buoy.skydns.leases import LeaseClock

    source = RefreshedLease()
    clock = LeaseClock(source, threading.Event(), interval=0.5, clock=lambda: source.now)
    clock.track(7)
    lowest = 15.0
    while source.now < 60:
        source.now += 0.5
        clock.poll_due()
        left = clock.remaining(7)
        assert left is not None and left <= 15 - source.now % 5  # never more than etcd holds
        lowest = min(lowest, left)
    assert lowest >= 5  # never counts down to nothing while the writer refreshes it
    assert clock.reads <= 60 / 2.5  # not a read per tick (that would be 120)
