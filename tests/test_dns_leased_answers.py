"""Answers limited by a lease are reused as unleased ones are: their TTLs count down by
rewriting the finished response, never past what the lease holds, and a change costs what
it touches (leases are counted per record, not found again over every record)."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rdatatype

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.watch import Change
from buoy.skydns.builder import IndexBuilder
from buoy.skydns.responder import LEASE_ANSWER_REBUILD, Responder, ttl_offsets

KEYS = KeyLayout("/t")
ZONES = ("zone.test.",)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def put(name: str, ip: str, lease: int, revision: int) -> Change:
    return Change("put", KEYS.skydns_key(name), SkyDNSRecord(host=ip, ttl=60).to_json().encode(),
                  revision, lease)


def ask(responder: Responder, name: str, qid: int, edns: bool = False) -> dns.message.Message:
    query = (dns.message.make_query(name, "A", use_edns=0, payload=1232) if edns else
             dns.message.make_query(name, "A", use_edns=False))
    query.id = qid
    wire = responder.respond(query.to_wire(), udp=True)
    assert wire is not None
    return dns.message.from_wire(wire)


def ttls(message: dns.message.Message) -> set[int]:
    return {rrset.ttl for rrset in message.answer}


def test_a_leased_answer_counts_down_without_being_built_again() -> None:
    clock = Clock()
    deadline: dict[int, float] = {}
    responder = Responder(ZONES, lambda lease: max(0.0, deadline[lease] - clock()) if lease in
                          deadline else None, clock=clock)
    builds = 0
    build = responder._build

    def counted(*args: object) -> object:
        nonlocal builds
        builds += 1
        return build(*args)  # type: ignore[arg-type]

    responder._build = counted  # type: ignore[method-assign]
    builder = IndexBuilder(KEYS, responder.publish)
    builder.handle([put("a.svc.zone.test.", "10.0.0.1", 7, 2),
                    put("b.svc.zone.test.", "10.0.0.2", 7, 3)], {}, 3, True)
    for edns in (False, True):
        start = clock.now
        deadline[7] = start + 20.5  # lease 7 has 20.5 s left
        first = ask(responder, "svc.zone.test.", 1, edns)
        assert ttls(first) == {20}
        assert (first.edns >= 0) == edns
        for step in (0.4, 1.3, 2.0, 3.7):
            clock.now = start + step
            again = ask(responder, "svc.zone.test.", 2, edns)
            fresh = int(deadline[7] - clock.now)
            (ttl,) = ttls(again)
            assert ttl <= fresh, f"TTL {ttl} promises more than the lease's {fresh} s"
            assert ttl >= fresh - 2
            assert sorted(rd.to_text() for rrset in again.answer for rd in rrset) == \
                ["10.0.0.1", "10.0.0.2"]
            assert again.id == 2 and again.edns == first.edns
            if edns:
                assert again.payload == first.payload  # the OPT record is not counted down
        clock.now = start + LEASE_ANSWER_REBUILD + 0.5  # built again from the index
        assert ttls(ask(responder, "svc.zone.test.", 3, edns)) == {int(deadline[7] - clock.now)}
        clock.now += 10
    assert builds == 4  # two per transport shape: the first answer and the rebuild


def test_ttl_offsets_walk_every_record() -> None:
    response = dns.message.make_response(dns.message.make_query("svc.zone.test.", "A",
                                                                use_edns=0))
    for n in range(3):
        rrset = response.find_rrset(response.answer, dns.name.from_text("svc.zone.test."),
                                    dns.rdataclass.IN, dns.rdatatype.A, create=True)
        rrset.add(dns.rdata.from_text("IN", "A", f"10.0.0.{n + 1}"), 42)
    wire = response.to_wire()
    offsets = ttl_offsets(wire)
    assert offsets is not None and len(offsets) == 3
    assert all(int.from_bytes(wire[o:o + 4], "big") == 42 for o in offsets)
    assert ttl_offsets(wire[:-3]) is None  # cut short: not walked


def test_a_lease_is_forgotten_when_its_last_record_goes() -> None:
    kept: list[set[int]] = []
    builder = IndexBuilder(KEYS, lambda index, touched: None, lambda lease: None, kept.append)
    builder.handle([put("a.zone.test.", "10.0.0.1", 5, 2), put("b.zone.test.", "10.0.0.2", 5, 3),
                    put("c.zone.test.", "10.0.0.3", 6, 4)], {}, 4, True)
    assert kept[-1] == {5, 6}
    kept.clear()
    builder.handle([put("a.zone.test.", "10.0.0.9", 5, 5)], {}, 5, False)  # rewritten, same lease
    builder.handle([Change("delete", KEYS.skydns_key("a.zone.test."), b"", 6, 5)], {}, 6, False)
    assert kept == []  # b still holds lease 5
    builder.handle([put("c.zone.test.", "10.0.0.3", 5, 7)], {}, 7, False)  # moved to lease 5
    assert kept == [{5}]
    builder.handle([Change("delete", KEYS.skydns_key("b.zone.test."), b"", 8, 5),
                    Change("delete", KEYS.skydns_key("c.zone.test."), b"", 9, 5)], {}, 9, False)
    assert kept == [{5}, set()]
