"""Wire query → wire response, with a per-index cache of finished answers.

A repeated query differs from the last one only in its 2-byte id, so the finished
response (minus its id) is kept per (transport, query bytes after the id) and
reused with the new id patched in. The cache belongs to one index: publishing a
new index swaps (index, empty cache) in one assignment. Answers whose TTL comes
from a lease are rebuilt at most once a second so the TTL keeps counting down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from skydns.answer import RR, resolve
from skydns.index import Index

log = logging.getLogger(__name__)

LEASE_ANSWER_LIFE = 1.0  # seconds a lease-limited answer is reused before its TTL is redone
UDP_PLAIN_MAX = 512


class Responder:
    """Answers wire queries from the current index (set by `publish`)."""

    def __init__(self, zones: Sequence[str], remaining: Callable[[int], float | None], *,
                 cache_size: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        self.zones = tuple(zones)
        self.remaining = remaining
        self.cache_size = cache_size
        self.clock = clock
        self._state: tuple[Index | None, dict[tuple[bool, bytes], tuple[bytes, float]]] = \
            (None, {})
        self.published_at = 0.0

    def publish(self, index: Index) -> None:
        """Swap in a new index (any thread): one assignment, so readers see old or new."""
        self._state = (index, {})
        self.published_at = self.clock()

    @property
    def index(self) -> Index | None:
        return self._state[0]

    def respond(self, data: bytes, udp: bool) -> bytes | None:
        """The response to one query, or None to stay silent (not a query at all)."""
        if len(data) < 12:
            return None
        index, cache = self._state
        key = (udp, data[2:])
        hit = cache.get(key)
        now = self.clock()
        if hit is not None and hit[1] > now:
            return data[:2] + hit[0]
        wire, valid_until = self._build(index, data, udp, now)
        if wire is not None and valid_until > now:
            if len(cache) >= self.cache_size:
                cache.clear()  # bounded: random names must not grow memory without end
            cache[key] = (wire[2:], valid_until)
        return wire

    def _build(self, index: Index | None, data: bytes, udp: bool,
               now: float) -> tuple[bytes | None, float]:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException as exc:
            log.debug("unparsable query bytes=%d error=%s", len(data), exc)
            return _formerr(data), 0.0
        if query.flags & dns.flags.QR:
            return None, 0.0  # a response sent to us: never answer those
        response = dns.message.make_response(query)
        valid_until = math.inf
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
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
                if result.soa is not None:
                    _add(response, response.authority, [result.soa])
                if result.lease_limited:
                    valid_until = now + LEASE_ANSWER_LIFE
        return _to_wire(response, query, udp), valid_until


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
