"""Updating the index by change and keeping the cached answers no change touched must
answer exactly what a fresh index answers: a differential test over random batches."""

from __future__ import annotations

import json
import random

import dns.message
import dns.rcode

from buoy.etcd.keys import KeyLayout
from buoy.etcd.watch import Change
from buoy.skydns.builder import IndexBuilder
from buoy.skydns.index import Index, parse_entry, touched_paths
from buoy.skydns.responder import Responder

KEYS = KeyLayout("/c")
ZONES = ("zone.test.",)
NAMES = ["zone.test.", "svc.zone.test.", "a.svc.zone.test.", "b.svc.zone.test.",
         "c.b.svc.zone.test.", "www.zone.test.", "web.zone.test.", "apex.dns.zone.test.",
         "n1.ns.dns.zone.test.", "mail.zone.test.", "m.mail.zone.test."]
QUERIES = [(name, qtype) for name in [*NAMES, "*.zone.test.", "any.svc.zone.test.",
                                      "missing.zone.test.", "x.other.test."]
           for qtype in ("A", "AAAA", "SRV", "TXT", "CNAME", "MX", "NS", "SOA")]


def random_value(rng: random.Random) -> bytes:
    host = rng.choice(["10.0.0.1", "10.0.0.2", "fd00::1", "web.zone.test", "svc.zone.test",
                       "www.zone.test", "out.example.org", ""])
    record: dict[str, object] = {"host": host} if host else {"text": "t" * rng.randint(1, 3)}
    if rng.random() < 0.3:
        record["mail"] = True
    if rng.random() < 0.3:
        record["port"] = rng.choice([80, 443])
    return json.dumps(record).encode()


def answer_text(responder: Responder, name: str, qtype: str) -> str:
    """The response as text, records sorted in each section (dnspython shuffles RRsets)."""
    query = dns.message.make_query(name, qtype)
    query.id = 7
    wire = responder.respond(query.to_wire(), udp=True)
    assert wire is not None
    response = dns.message.from_wire(wire)
    parts = [dns.rcode.to_text(response.rcode()), str(response.flags)]
    for section in (response.answer, response.authority, response.additional):
        parts.append("\n".join(sorted(line for rrset in section
                                       for line in rrset.to_text().splitlines())))
    return "\n--\n".join(parts)


def test_changed_index_matches_a_rebuilt_one() -> None:
    rng = random.Random(12)
    current: dict[str, bytes] = {}
    cached = Responder(ZONES, lambda lease: None)
    builder = IndexBuilder(KEYS, cached.publish)
    revision = 1
    builder.handle([], {}, revision, True)
    for _ in range(40):
        batch = []
        for _ in range(rng.randint(1, 3)):
            revision += 1
            key = KEYS.skydns_key(rng.choice(NAMES)) + rng.choice(["", "/x", "/y"])
            if key in current and rng.random() < 0.4:
                batch.append(Change("delete", key, current.pop(key), revision))
            else:
                current[key] = random_value(rng)
                batch.append(Change("put", key, current[key], revision))
        # Ask before the change (fills the cache), apply it, ask again.
        for name, qtype in rng.sample(QUERIES, 40):
            answer_text(cached, name, qtype)
        builder.handle(batch, {}, revision, False)
        fresh = Responder(ZONES, lambda lease: None)
        fresh.publish(Index([parse_entry(KEYS, k, v) for k, v in current.items()], revision))
        for name, qtype in QUERIES:
            assert answer_text(cached, name, qtype) == answer_text(fresh, name, qtype), \
                (name, qtype, batch)


def test_a_change_keeps_the_answers_it_cannot_alter() -> None:
    responder = Responder(ZONES, lambda lease: None)
    builder = IndexBuilder(KEYS, responder.publish)
    web, other = KEYS.skydns_key("web.zone.test."), KEYS.skydns_key("other.zone.test.")
    builder.handle([Change("put", web, b'{"host":"10.0.0.1"}', 2),
                    Change("put", other, b'{"host":"10.0.0.9"}', 2)], {}, 2, True)
    for name in ("web.zone.test.", "other.zone.test.", "elsewhere.example."):
        answer_text(responder, name, "A")
    assert responder.cached() == 3
    builder.handle([Change("put", web, b'{"host":"10.0.0.2"}', 3)], {}, 3, False)
    assert responder.cached() == 2  # web's answer dropped; other and the REFUSED kept
    assert "10.0.0.2" in answer_text(responder, "web.zone.test.", "A")
    builder.handle([Change("delete", other, b"", 4)], {}, 4, True)
    assert responder.cached() == 0  # a new snapshot drops everything


def test_touched_paths_are_the_path_and_its_ancestors() -> None:
    assert touched_paths(["test/zone/a"]) == {"", "test", "test/zone", "test/zone/a"}
    assert touched_paths(["local/skydns/"]) == {"", "local", "local/skydns", "local/skydns/"}
