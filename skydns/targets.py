"""Answers that name targets and carry their addresses: SRV, MX, and NS at the apex.

CoreDNS `backend_lookup.go` `SRV`, `MX` and `NS`: a host that is a name is the
target (its in-zone addresses go to the additional section); an IP host gets a
target named after its key (less `targetstrip` labels) plus an address record.
"""

from __future__ import annotations

import math

import dns.rdatatype as T

from buoy.skydns import rrs
from buoy.skydns.answer import Resolver
from buoy.skydns.rrs import RR, fqdn, host_type, in_zone, target_strip

Both = tuple[list[RR], list[RR]]  # answer, additional


def srv(r: Resolver, qname: str) -> Both | None:
    """SRV records, weights normalised per priority (weight 0 counts as 100)."""
    services = r.services(qname, T.SRV)
    if services is None:
        return None
    totals: dict[int, int] = {}
    for entry in services:
        prio = r.priority(entry)
        totals[prio] = totals.get(prio, 0) + (entry.record.weight or 100)
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[tuple[str, int | str]] = set()
    for entry in services:
        rec = entry.record
        prio = r.priority(entry)
        weight = max(1, math.floor(100.0 / totals[prio] * (rec.weight or 100)))
        what, ip = host_type(rec.host, rec.text)
        ttl = r.ttl(entry)
        port = rec.port or 0
        if what in (T.A, T.AAAA):
            target = target_strip(entry.domain, rec.targetstrip or 0)
            if (target, port) not in seen:
                seen.add((target, port))
                records.append(rrs.srv(qname, ttl, prio, weight, port, target))
            if (target, ip) not in seen:
                seen.add((target, ip))
                extra.append(rrs.address(target, what, ttl, ip))
        else:
            target = target_strip(fqdn(rec.host), rec.targetstrip or 0)
            records.append(rrs.srv(qname, ttl, prio, weight, port, target))
            extra += _lookup(r, target, seen)
    return records, extra


def mx(r: Resolver, qname: str) -> Both | None:
    """MX records from the records marked `"mail": true`; priority is the preference."""
    services = r.services(qname, T.MX)
    if services is None:
        return None
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[tuple[str, int | str]] = set()
    for entry in services:
        rec = entry.record
        if not rec.mail:
            continue
        what, ip = host_type(rec.host, rec.text)
        ttl = r.ttl(entry)
        prio = r.priority(entry)
        if what in (T.A, T.AAAA):
            target = target_strip(entry.domain, rec.targetstrip or 0)
            if (target, prio) not in seen:
                seen.add((target, prio))
                records.append(rrs.mx(qname, ttl, prio, target))
            if (target, ip) not in seen:
                seen.add((target, ip))
                extra.append(rrs.address(target, what, ttl, ip))
        elif what == T.CNAME:
            target = target_strip(fqdn(rec.host), rec.targetstrip or 0)
            records.append(rrs.mx(qname, ttl, prio, target))
            extra += _lookup(r, target, seen)
    return records, extra


def ns(r: Resolver) -> Both | None:
    """The zone's name servers: the records under `ns.dns.<zone>`, each with its glue.

    An NS record's host must be an IP address (CoreDNS); one that is a name is left out.
    """
    services = r.services("ns.dns." + r.zone, T.NS)
    if services is None:
        return None
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[str] = set()
    for entry in services:
        what, ip = host_type(entry.record.host, None)
        if what not in (T.A, T.AAAA):
            continue
        ttl = r.ttl(entry)
        target = target_strip(entry.domain, entry.record.targetstrip or 0)
        extra.append(rrs.address(target, what, ttl, ip))
        if target not in seen:
            seen.add(target)
            records.append(rrs.ns(r.zone, ttl, target))
    return records, extra


def _lookup(r: Resolver, target: str, seen: set[tuple[str, int | str]]) -> list[RR]:
    """A target's in-zone A records (and the CNAMEs leading there), once per target."""
    if (target, "lookup") in seen or not in_zone(target, r.zone):
        return []
    seen.add((target, "lookup"))
    return r.address(target, T.A) or []
