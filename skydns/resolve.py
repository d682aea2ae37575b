"""One query, one answer: the query type picks the rule (CoreDNS etcd `ServeDNS`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dns.rcode
import dns.rdatatype as T

from buoy.skydns import rrs
from buoy.skydns.answer import Answer, Resolver
from buoy.skydns.index import Index
from buoy.skydns.rrs import RR
from buoy.skydns.targets import Both, mx, ns, srv


def resolve(index: Index, zones: Sequence[str], qname: str, qtype: int,
            remaining: Callable[[int], float | None]) -> Answer:
    """The answer to `qname`/`qtype` (lower-case, fully qualified)."""
    zone = rrs.zone_for(qname, zones)
    if zone is None:
        return Answer(rcode=dns.rcode.REFUSED)
    r = Resolver(index, zone, remaining)
    result = Answer()
    found: list[RR] | None
    both: Both | None = None
    if qtype in (T.A, T.AAAA):
        found = r.address(qname, qtype)
    elif qtype == T.TXT:
        found = r.text(qname)
    elif qtype == T.SRV:
        both = srv(r, qname)
    elif qtype == T.MX:
        both = mx(r, qname)
    elif qtype == T.NS and qname == zone:
        both = ns(r)
    elif qtype == T.CNAME:
        found = r.cname(qname)
    elif qtype == T.PTR:
        found = r.ptr(qname)
    elif qtype == T.SOA and qname == zone:
        found = [rrs.soa(zone, index.revision)]
    else:
        # NS below the apex, ANY and the rest: no data, but tell NODATA from NXDOMAIN.
        found = [] if index.exists(qname, r.reads) else None
    if both is not None or qtype in (T.SRV, T.MX) or (qtype == T.NS and qname == zone):
        found, result.additional = both if both is not None else (None, [])
    if found is None and qname == zone:
        found = []  # the zone apex always exists
    if found is None:
        result.rcode = dns.rcode.NXDOMAIN
    result.answer = found or []
    if not result.answer:
        result.additional = []
        result.authority = [rrs.soa(zone, index.revision)]
    if result.authority or qtype == T.SOA:
        r.reads.add("")  # the SOA's serial is the index revision: any change alters it
    result.lease_limited = r.lease_limited
    result.reads = frozenset(r.reads)
    return result
