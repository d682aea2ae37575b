"""Wire query → wire response, with a per-index cache of finished answers.

A repeated query differs from the last one only in its 2-byte id, so the finished
response (minus its id) is kept per (transport, query bytes after the id) and
reused with the new id patched in. Each answer remembers the key paths it read;
publishing a new index swaps (index, caches) in one assignment, carrying over
the answers no change touched. Answers whose TTL comes from a lease are rebuilt
at most once a second so the TTL keeps counting down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from buoy.skydns.index import Index
from buoy.skydns.resolve import resolve
from buoy.skydns.rrs import RR

log = logging.getLogger(__name__)

LEASE_ANSWER_LIFE = 1.0  # seconds a lease-limited answer is reused before its TTLs count down
LEASE_ANSWER_REBUILD = 5.0  # seconds after which it is built again (a lease read since)
UDP_PLAIN_MAX = 512
OPT = 41  # the EDNS pseudo-record: its TTL field holds flags, never counted down


Label = tuple[str, str]  # (query type, rcode) as text: one counter each


@dataclass(frozen=True)
class CountDown:
    """A lease-limited answer as built: its TTLs count down a second at a time by
    rewriting the TTL fields of the finished response, not by building it again."""

    built: float  # when it was built (clock seconds)
    tail: bytes  # the response after its id
    offsets: tuple[int, ...]  # where each TTL field is in `tail`

    def at(self, now: float) -> tuple[bytes, float] | None:
        """The response with every TTL lowered by the whole seconds begun since it was built
        (never more than the lease holds), and until when; None once it is due to be built
        again or a TTL would reach 0."""
        elapsed = math.floor(now - self.built) + 1
        if now - self.built >= LEASE_ANSWER_REBUILD:
            return None
        out = bytearray(self.tail)
        for off in self.offsets:
            ttl = int.from_bytes(out[off:off + 4], "big") - elapsed
            if ttl <= 0:
                return None
            out[off:off + 4] = ttl.to_bytes(4, "big")
        return bytes(out), self.built + elapsed


# response after its id, reusable until, counter label, key paths it depends on, and for a
# lease-limited answer how to count its TTLs down
Cached = tuple[bytes, float, Label, frozenset[str], "CountDown | None"]
NO_READS: frozenset[str] = frozenset()


class Responder:
    """Answers wire queries from the current index (set by `publish`), counting them."""

    def __init__(self, zones: Sequence[str], remaining: Callable[[int], float | None], *,
                 cache_size: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        self.zones = tuple(zones)
        self.remaining = remaining
        self.cache_size = cache_size
        self.clock = clock
        self._state: tuple[Index | None, dict[bytes, Cached], dict[bytes, Cached]] = \
            (None, {}, {})
        self.published_at = 0.0
        # Queries answered, by (type, rcode); one dict per transport, each written by one
        # thread only (UDP worker, asyncio loop), so a scrape never races an increment.
        self._counts: dict[bool, dict[Label, int]] = {True: {}, False: {}}

    def publish(self, index: Index, touched: set[str] | None = None) -> None:
        """Swap in a new index (any thread): one assignment, so readers see old or new.

        The cached answers that read none of the `touched` paths are carried over;
        `touched=None` drops them all.
        """
        old_index, udp, tcp = self._state
        if touched is None or old_index is None:
            self._state = (index, {}, {})
        else:
            self._state = (index, _unaffected(udp, touched), _unaffected(tcp, touched))
        self.published_at = self.clock()

    @property
    def index(self) -> Index | None:
        return self._state[0]

    def cached(self) -> int:
        """Finished answers held for reuse (both transports)."""
        return len(self._state[1]) + len(self._state[2])

    def counts(self) -> dict[Label, int]:
        """Queries answered so far by (type, rcode), both transports together."""
        total: dict[Label, int] = {}
        for counts in self._counts.values():
            for label, n in list(counts.items()):
                total[label] = total.get(label, 0) + n
        return total

    def respond(self, data: bytes, udp: bool) -> bytes | None:
        """The response to one query, or None to stay silent (not a query at all)."""
        if len(data) < 12:
            return None
        state = self._state
        cache = state[1] if udp else state[2]
        tail = data[2:]
        hit = cache.get(tail)
        counts = self._counts[udp]
        if hit is not None and hit[1] > self.clock():
            label = hit[2]
            counts[label] = counts.get(label, 0) + 1
            return data[:2] + hit[0]
        now = self.clock()
        if hit is not None and hit[4] is not None:
            counted = hit[4].at(now)
            if counted is not None:  # a lease-limited answer, a second older
                cache[tail] = (counted[0], counted[1], hit[2], hit[3], hit[4])
                counts[hit[2]] = counts.get(hit[2], 0) + 1
                return data[:2] + counted[0]
        wire, valid_until, label, reads = self._build(state[0], data, udp, now)
        if wire is None:
            return None
        counts[label] = counts.get(label, 0) + 1
        if valid_until > now:
            if len(cache) >= self.cache_size:
                cache.clear()  # bounded: random names must not grow memory without end
            offsets = ttl_offsets(wire) if valid_until != math.inf else None
            countdown = None if offsets is None else CountDown(
                now, wire[2:], tuple(o - 2 for o in offsets))
            cache[tail] = (wire[2:], valid_until, label, reads, countdown)
        return wire

    def _build(self, index: Index | None, data: bytes, udp: bool,
               now: float) -> tuple[bytes | None, float, Label, frozenset[str]]:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException as exc:
            log.debug("unparsable query bytes=%d error=%s", len(data), exc)
            return _formerr(data), 0.0, ("none", "FORMERR"), NO_READS
        if query.flags & dns.flags.QR:
            return None, 0.0, ("none", "none"), NO_READS  # a response: never answer those
        response = dns.message.make_response(query)
        valid_until = math.inf
        reads = NO_READS
        qtype = query.question[0].rdtype if len(query.question) == 1 else None
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif qtype is None:
            response.set_rcode(dns.rcode.FORMERR)
        elif index is None:
            response.set_rcode(dns.rcode.SERVFAIL)  # not synced with etcd yet
            valid_until = 0.0
        else:
            q = query.question[0]
            if q.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
                response.set_rcode(dns.rcode.REFUSED)
            else:
                qname = q.name.to_text().lower()
                result = resolve(index, self.zones, qname, q.rdtype, self.remaining)
                response.set_rcode(dns.rcode.Rcode(result.rcode))
                if result.rcode != dns.rcode.REFUSED:
                    response.flags |= dns.flags.AA
                _add(response, response.answer, result.answer)
                _add(response, response.additional, result.additional)
                _add(response, response.authority, result.authority)
                if result.lease_limited:
                    valid_until = now + LEASE_ANSWER_LIFE
                reads = result.reads
        label = (type_label(qtype), dns.rcode.to_text(response.rcode()))
        return _to_wire(response, query, udp), valid_until, label, reads


def _unaffected(cache: dict[bytes, Cached], touched: set[str]) -> dict[bytes, Cached]:
    """The cached answers that read none of the `touched` paths (from a copy: the
    listener threads may add to `cache` meanwhile)."""
    return {k: v for k, v in cache.copy().items() if touched.isdisjoint(v[3])}


COUNTED_TYPES = frozenset({"A", "AAAA", "SRV", "TXT", "CNAME", "PTR", "MX", "NS", "SOA", "ANY"})


def type_label(qtype: int | None) -> str:
    """The type as counted: a known name, `other` (a bounded label set), `none` (no question)."""
    if qtype is None:
        return "none"
    name = dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype))
    return name if name in COUNTED_TYPES else "other"


def _add(response: dns.message.Message, section: list[dns.rrset.RRset],
         records: list[RR]) -> None:
    for owner, rdtype, ttl, rdata in records:
        rrset = response.find_rrset(section, dns.name.from_text(owner), dns.rdataclass.IN,
                                    dns.rdatatype.RdataType(rdtype), create=True)
        rrset.add(rdata, ttl)  # one TTL per RRset: the smallest of its records


def _to_wire(response: dns.message.Message, query: dns.message.Message, udp: bool) -> bytes:
    limit = 65535
    if udp:
        limit = max(UDP_PLAIN_MAX, query.payload) if query.edns >= 0 else UDP_PLAIN_MAX
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # Too big for UDP: send the header and question with TC so the client retries on TCP.
        truncated = dns.message.make_response(query)
        truncated.set_rcode(response.rcode())
        truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
        return truncated.to_wire(max_size=limit)


def _formerr(data: bytes) -> bytes | None:
    """FORMERR for a query dnspython cannot parse, built by dnspython from the id alone."""
    if (data[2] & 0x80) != 0:
        return None  # QR set: not a query
    message = dns.message.Message(id=int.from_bytes(data[:2], "big"))
    message.flags = dns.flags.QR
    message.set_rcode(dns.rcode.FORMERR)
    return message.to_wire()


def ttl_offsets(wire: bytes) -> list[int] | None:
    """Where the TTL field of each record of a response is (the EDNS OPT record's
    excepted); None when the message cannot be walked."""
    try:
        counts = [int.from_bytes(wire[i:i + 2], "big") for i in (4, 6, 8, 10)]
        pos = 12
        for _ in range(counts[0]):
            pos = _skip_name(wire, pos) + 4
        out = []
        for _ in range(sum(counts[1:])):
            pos = _skip_name(wire, pos)
            if int.from_bytes(wire[pos:pos + 2], "big") != OPT:
                out.append(pos + 4)
            pos += 10 + int.from_bytes(wire[pos + 8:pos + 10], "big")
        if pos != len(wire):
            return None
    except IndexError:
        return None
    return out


def _skip_name(wire: bytes, pos: int) -> int:
    """The position after the (possibly compressed) name at `pos`."""
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += length + 1
