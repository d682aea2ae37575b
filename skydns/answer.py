"""Query → answer records, following the CoreDNS etcd plugin (no I/O, no packets).

The rules are those of CoreDNS's `plugin/backend_lookup.go` and `plugin/etcd`:
a name returns every record under it (or the record at it), `*` and `any` labels
are wildcards; priority 0 means 10; a host that is a name gives a CNAME
(A/AAAA/TXT) or a target (SRV, MX); CNAME and PTR queries read the exact key.
Where buoy differs (docs/dns.md lists each case): a CNAME stands alone at its
name, and a CNAME to a name outside our zones is returned alone for the client to
follow (there is no upstream resolver).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.rcode
import dns.rdatatype as T

from buoy.skydns import rrs
from buoy.skydns.groups import group
from buoy.skydns.index import Entry, Index, Reads
from buoy.skydns.rrs import RR, fqdn, host_type, in_zone, is_name

DEFAULT_TTL = 300  # CoreDNS etcd: ttl when neither the record nor a lease sets one
DEFAULT_PRIORITY = 10
MAX_CHAIN = 7  # CoreDNS follows at most this many CNAMEs


@dataclass
class Answer:
    rcode: int = dns.rcode.NOERROR
    answer: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)  # the SOA of NXDOMAIN / NODATA
    lease_limited: bool = False  # some TTL depends on a lease's remaining time
    reads: frozenset[str] = frozenset()  # key paths the answer depends on ("": everything)


def is_alias(entry: Entry) -> bool:
    """A record that makes its name a CNAME: a host that is a name, and no text."""
    return not entry.record.text and is_name(entry.record.host)


class Resolver:
    """Answers for one zone from one index; `remaining(lease)` gives a lease's time left."""

    def __init__(self, index: Index, zone: str,
                 remaining: Callable[[int], float | None]) -> None:
        self.index = index
        self.zone = zone
        self.remaining = remaining
        self.lease_limited = False
        self.reads: Reads = set()  # key paths read: what the answer depends on

    def ttl(self, entry: Entry) -> int:
        ttl = entry.record.ttl or DEFAULT_TTL
        if entry.lease:
            left = self.remaining(entry.lease)
            if left is not None:
                self.lease_limited = True
                ttl = min(ttl, int(left))
        return ttl

    def priority(self, entry: Entry) -> int:
        return entry.record.priority or DEFAULT_PRIORITY

    def services(self, name: str, qtype: int) -> list[Entry] | None:
        """Records under `name` that can answer `qtype` (CoreDNS `shouldInclude`), grouped."""
        found = self.index.lookup(name, self.reads)
        if found is None:
            return None
        usable = [e for e in found if e.record.host or (qtype == T.TXT and e.record.text)]
        return group(usable)

    def _owned(self, qname: str, qtype: int) -> tuple[list[Entry], list[Entry]] | None:
        """(data, aliases) under `qname` for an A, AAAA or TXT answer: never both.

        A CNAME stands alone at its name (RFC 1034 3.6.2): when any record under the
        name holds what the answer is made of (an IP host for A and AAAA, text for
        TXT), the records that would make it a CNAME are left out; otherwise the
        records whose host is a name are the candidate CNAMEs.
        """
        services = None
        if qname == self.zone:
            services = self.services("apex.dns." + self.zone, qtype)
        if services is None:
            services = self.services(qname, qtype)
        if services is None:
            return None
        if qtype == T.TXT:
            data = [e for e in services if e.record.text]
        else:
            data = [e for e in services if e.record.host and not is_name(e.record.host)]
        return (data, []) if data else ([], [e for e in services if is_alias(e)])

    def address(self, qname: str, qtype: int, chain: Sequence[RR] = ()) -> list[RR] | None:
        """A or AAAA records (CoreDNS `A`/`AAAA`), or one CNAME followed inside the zone."""
        owned = self._owned(qname, qtype)
        if owned is None:
            return None
        data, aliases = owned
        out: list[RR] = []
        seen: set[str] = set()
        for entry in data:
            what, ip = host_type(entry.record.host, None)
            if what == qtype and ip not in seen:
                seen.add(ip)
                out.append(rrs.address(qname, qtype, self.ttl(entry), ip))
        return out or self._alias(qname, aliases, chain,
                                  lambda t, c: self.address(t, qtype, c))

    def text(self, qname: str, chain: Sequence[RR] = ()) -> list[RR] | None:
        """TXT records (CoreDNS `TXT`): the record's text, in 255-byte strings."""
        owned = self._owned(qname, T.TXT)
        if owned is None:
            return None
        data, aliases = owned
        out: list[RR] = []
        seen: set[str] = set()
        for entry in data:
            text = entry.record.text
            if text is not None and text not in seen:
                seen.add(text)
                out.append(rrs.txt(qname, self.ttl(entry), text))
        return out or self._alias(qname, aliases, chain, lambda t, c: self.text(t, c))

    def _alias(self, qname: str, aliases: Sequence[Entry], chain: Sequence[RR],
               follow: Callable[[str, list[RR]], list[RR] | None]) -> list[RR]:
        """The first CNAME that leads somewhere, with what it leads to; one only."""
        for entry in aliases:
            target = fqdn(entry.record.host)
            if target == qname or len(chain) > MAX_CHAIN:
                continue  # x CNAME x, or a chain too long: CoreDNS drops these
            record = rrs.cname(qname, self.ttl(entry), target)
            if any(r[0] == qname and r[3] == record[3] for r in chain):
                continue
            if not in_zone(target, self.zone):
                return [record]
            following = follow(target, [*chain, record])
            if following:
                return [record, *following]
        return []

    def cname(self, qname: str) -> list[RR] | None:
        """CNAME query (CoreDNS `CNAME`): the record at exactly this key, if it names a host."""
        entry = self.index.exact(qname, self.reads)
        if entry is None:
            return None if not self.index.exists(qname, self.reads) else []
        if not is_name(entry.record.host):
            return []
        return [rrs.cname(qname, self.ttl(entry), fqdn(entry.record.host))]

    def ptr(self, qname: str) -> list[RR] | None:
        """PTR query (CoreDNS `PTR`): the record at exactly this key, if it names a host."""
        entry = self.index.exact(qname, self.reads)
        if entry is None:
            return None if not self.index.exists(qname, self.reads) else []
        if not is_name(entry.record.host):
            return []
        return [rrs.ptr(qname, self.ttl(entry), fqdn(entry.record.host))]
