"""Query → answer records, following the CoreDNS etcd plugin (no I/O, no packets).

The rules are those of CoreDNS's `plugin/backend_lookup.go` and `plugin/etcd`:
a name returns every record under it (or the record at it); priority 0 means 10;
SRV weights are normalised per priority (weight 0 counts as 100); a host that is
a name gives a CNAME (A/AAAA/TXT) or the SRV target; an IP host in an SRV answer
gets a target named after its key plus an additional address record. Where
CoreDNS would ask an upstream resolver for a name outside our zones, we return
the CNAME alone and let the client follow it.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype as T
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from skydns.groups import group
from skydns.index import Entry, Index

IN = dns.rdataclass.IN
DEFAULT_TTL = 300  # CoreDNS etcd: ttl when neither the record nor a lease sets one
DEFAULT_PRIORITY = 10
SOA_TTL = 30  # CoreDNS: min(300, MinTTL=30)
MAX_CHAIN = 7  # CoreDNS follows at most this many CNAMEs

RR = tuple[str, int, int, dns.rdata.Rdata]  # owner, type, ttl, rdata


@dataclass
class Answer:
    rcode: int = dns.rcode.NOERROR
    answer: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    soa: RR | None = None  # the authority record (NXDOMAIN / NODATA)
    lease_limited: bool = False  # some TTL depends on a lease's remaining time


def host_type(host: str, text: str | None) -> tuple[int, str]:
    """CoreDNS `HostType`: A or AAAA for an IP, else CNAME, or TXT when text is set."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (T.TXT if text else T.CNAME), ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return T.A, str(ip.ipv4_mapped)
    return (T.A if ip.version == 4 else T.AAAA), str(ip)


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def target_strip(name: str, count: int) -> str:
    """Drop `count` labels from the left; the whole name when that would leave nothing."""
    labels = name.rstrip(".").split(".")
    return ".".join(labels[count:]) + "." if 0 < count < len(labels) else name


def zone_for(qname: str, zones: Sequence[str]) -> str | None:
    """The longest configured zone that holds `qname`."""
    best = None
    for zone in zones:
        if in_zone(qname, zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


class Resolver:
    """Answers for one zone from one index; `remaining(lease)` gives a lease's time left."""

    def __init__(self, index: Index, zone: str,
                 remaining: Callable[[int], float | None]) -> None:
        self.index = index
        self.zone = zone
        self.remaining = remaining
        self.lease_limited = False

    def ttl(self, entry: Entry) -> int:
        ttl = entry.record.ttl or DEFAULT_TTL
        if entry.lease:
            left = self.remaining(entry.lease)
            if left is not None:
                self.lease_limited = True
                ttl = min(ttl, int(left))
        return ttl

    def services(self, name: str, qtype: int) -> list[Entry] | None:
        """Records under `name` that can answer `qtype` (CoreDNS `shouldInclude`), grouped."""
        found = self.index.lookup(name)
        if found is None:
            return None
        usable = [e for e in found if e.record.host or (qtype == T.TXT and e.record.text)]
        return group(usable)

    def address(self, qname: str, qtype: int, chain: Sequence[RR] = ()) -> list[RR] | None:
        """A or AAAA records (CoreDNS `A`/`AAAA`), following in-zone CNAMEs."""
        services = None
        if qname == self.zone:
            services = self.services("apex.dns." + self.zone, qtype)
        if services is None:
            services = self.services(qname, qtype)
        if services is None:
            return None
        out: list[RR] = []
        seen: set[str] = set()
        for entry in services:
            what, ip = host_type(entry.record.host, entry.record.text)
            if what == T.CNAME:
                out += self._cname(qname, entry, chain, lambda t, c: self.address(t, qtype, c))
            elif what == qtype and ip not in seen:
                seen.add(ip)
                out.append((qname, qtype, self.ttl(entry), _address(qtype, ip)))
        return out

    def text(self, qname: str, chain: Sequence[RR] = ()) -> list[RR] | None:
        """TXT records (CoreDNS `TXT`): the record's text, in 255-byte strings."""
        services = self.services(qname, T.TXT)
        if services is None:
            return None
        out: list[RR] = []
        seen: set[str] = set()
        for entry in services:
            what, _ = host_type(entry.record.host, entry.record.text)
            if what == T.CNAME:
                out += self._cname(qname, entry, chain, lambda t, c: self.text(t, c))
            elif what == T.TXT and entry.record.text is not None \
                    and entry.record.text not in seen:
                seen.add(entry.record.text)
                data = entry.record.text.encode()
                chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
                out.append((qname, T.TXT, self.ttl(entry), TXT(IN, T.TXT, chunks)))
        return out

    def _cname(self, qname: str, entry: Entry, chain: Sequence[RR],
               follow: Callable[[str, list[RR]], list[RR] | None]) -> list[RR]:
        target = fqdn(entry.record.host)
        if target == qname or len(chain) > MAX_CHAIN:
            return []  # x CNAME x, or a chain too long: CoreDNS drops these
        record: RR = (qname, T.CNAME, self.ttl(entry), CNAME(IN, T.CNAME, dns.name.from_text(target)))  # type: ignore[no-untyped-call]
        if any(r[0] == qname and r[3] == record[3] for r in chain):
            return []
        if not in_zone(target, self.zone):
            return [record]
        following = follow(target, [*chain, record])
        return [record, *following] if following else []

    def srv(self, qname: str) -> tuple[list[RR], list[RR]] | None:
        """SRV records and their additional addresses (CoreDNS `SRV`)."""
        services = self.services(qname, T.SRV)
        if services is None:
            return None
        totals: dict[int, int] = {}
        for entry in services:
            prio = entry.record.priority or DEFAULT_PRIORITY
            totals[prio] = totals.get(prio, 0) + (entry.record.weight or 100)
        records: list[RR] = []
        extra: list[RR] = []
        seen: set[tuple[str, int | str]] = set()
        for entry in services:
            rec = entry.record
            prio = rec.priority or DEFAULT_PRIORITY
            weight = max(1, math.floor(100.0 / totals[prio] * (rec.weight or 100)))
            what, ip = host_type(rec.host, rec.text)
            ttl = self.ttl(entry)
            port = rec.port or 0
            if what == T.CNAME:
                target = target_strip(fqdn(rec.host), rec.targetstrip or 0)
                records.append((qname, T.SRV, ttl, _srv(prio, weight, port, target)))
                if (target, "lookup") not in seen:
                    seen.add((target, "lookup"))
                    if in_zone(target, self.zone):
                        extra += self.address(target, T.A) or []
            elif what in (T.A, T.AAAA):
                target = target_strip(entry.domain, rec.targetstrip or 0)
                if (target, port) not in seen:
                    seen.add((target, port))
                    records.append((qname, T.SRV, ttl, _srv(prio, weight, port, target)))
                if (target, ip) not in seen:
                    seen.add((target, ip))
                    extra.append((target, what, ttl, _address(what, ip)))
        return records, extra

    def cname(self, qname: str) -> list[RR] | None:
        """CNAME query: the record at exactly this name, when its host is a name."""
        found = self.index.lookup(qname)
        if found is None:
            return None
        exact = [e for e in found if e.domain == qname and e.record.host]
        if exact and host_type(exact[0].record.host, None)[0] == T.CNAME:
            target = dns.name.from_text(fqdn(exact[0].record.host))
            return [(qname, T.CNAME, self.ttl(exact[0]), CNAME(IN, T.CNAME, target))]  # type: ignore[no-untyped-call]
        return []

    def ptr(self, qname: str) -> list[RR] | None:
        """PTR query (CoreDNS `PTR`): hosts that are names, of the record at this name."""
        found = self.index.lookup(qname)
        if found is None:
            return None
        out: list[RR] = []
        for entry in found:
            if entry.domain == qname and entry.record.host \
                    and host_type(entry.record.host, None)[0] == T.CNAME:
                target = dns.name.from_text(fqdn(entry.record.host))
                out.append((qname, T.PTR, self.ttl(entry), PTR(IN, T.PTR, target)))  # type: ignore[no-untyped-call]
        return out

    def soa(self, serial: int) -> RR:
        zone = dns.name.from_text(self.zone)
        rdata = SOA(IN, T.SOA, dns.name.from_text("ns.dns", zone),  # type: ignore[no-untyped-call]
                    dns.name.from_text("hostmaster", zone), serial % 2**32, 7200, 1800, 86400,
                    SOA_TTL)
        return (self.zone, T.SOA, SOA_TTL, rdata)


def resolve(index: Index, zones: Sequence[str], qname: str, qtype: int,
            remaining: Callable[[int], float | None]) -> Answer:
    """The answer to `qname`/`qtype` (lower-case, fully qualified)."""
    zone = zone_for(qname, zones)
    if zone is None:
        return Answer(rcode=dns.rcode.REFUSED)
    r = Resolver(index, zone, remaining)
    result = Answer()
    found: list[RR] | None
    if qtype in (T.A, T.AAAA):
        found = r.address(qname, qtype)
    elif qtype == T.TXT:
        found = r.text(qname)
    elif qtype == T.SRV:
        both = r.srv(qname)
        found, result.additional = both if both is not None else (None, [])
    elif qtype == T.CNAME:
        found = r.cname(qname)
    elif qtype == T.PTR:
        found = r.ptr(qname)
    elif qtype == T.SOA and qname == zone:
        found = [r.soa(index.revision)]
    else:
        # NS, MX, ANY and the rest: no data, but tell NODATA from NXDOMAIN.
        found = [] if index.exists(qname) else None
    if found is None and qname == zone:
        found = []  # the zone apex always exists
    if found is None:
        result.rcode = dns.rcode.NXDOMAIN
    result.answer = found or []
    if not result.answer:
        result.soa = r.soa(index.revision)
    result.lease_limited = r.lease_limited
    return result


def _address(qtype: int, ip: str) -> dns.rdata.Rdata:
    return A(IN, T.A, ip) if qtype == T.A else AAAA(IN, T.AAAA, ip)  # type: ignore[no-untyped-call]


def _srv(prio: int, weight: int, port: int, target: str) -> dns.rdata.Rdata:
    return SRV(IN, T.SRV, prio, weight, port, dns.name.from_text(target))  # type: ignore[no-untyped-call]
