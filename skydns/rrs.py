"""Names and resource records for answers: the one place dnspython rdata is built.

Every owner and target name reaching here comes from a validated key or record
(`skydns.index`, `skydns.records`) or from the query itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype as T
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

IN = dns.rdataclass.IN
SOA_TTL = 30  # CoreDNS: min(300, MinTTL=30)

RR = tuple[str, int, int, dns.rdata.Rdata]  # owner, type, ttl, rdata


def host_type(host: str, text: str | None) -> tuple[int, str]:
    """CoreDNS `HostType`: A or AAAA for an IP, else CNAME, or TXT when text is set."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (T.TXT if text else T.CNAME), ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return T.A, str(ip.ipv4_mapped)
    return (T.A if ip.version == 4 else T.AAAA), str(ip)


def is_name(host: str) -> bool:
    """A host that is a name (not empty, not an IP address)."""
    return bool(host) and host_type(host, None)[0] == T.CNAME


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


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def address(owner: str, rdtype: int, ttl: int, ip: str) -> RR:
    rdata = A(IN, T.A, ip) if rdtype == T.A else AAAA(IN, T.AAAA, ip)  # type: ignore[no-untyped-call]
    return (owner, rdtype, ttl, rdata)


def srv(owner: str, ttl: int, prio: int, weight: int, port: int, target: str) -> RR:
    return (owner, T.SRV, ttl, SRV(IN, T.SRV, prio, weight, port, _name(target)))  # type: ignore[no-untyped-call]


def mx(owner: str, ttl: int, preference: int, target: str) -> RR:
    return (owner, T.MX, ttl, MX(IN, T.MX, preference, _name(target)))  # type: ignore[no-untyped-call]


def ns(owner: str, ttl: int, target: str) -> RR:
    return (owner, T.NS, ttl, NS(IN, T.NS, _name(target)))  # type: ignore[no-untyped-call]


def cname(owner: str, ttl: int, target: str) -> RR:
    return (owner, T.CNAME, ttl, CNAME(IN, T.CNAME, _name(target)))  # type: ignore[no-untyped-call]


def ptr(owner: str, ttl: int, target: str) -> RR:
    return (owner, T.PTR, ttl, PTR(IN, T.PTR, _name(target)))  # type: ignore[no-untyped-call]


def txt(owner: str, ttl: int, text: str) -> RR:
    """TXT in 255-byte strings (CoreDNS `split255`)."""
    data = text.encode()
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return (owner, T.TXT, ttl, TXT(IN, T.TXT, chunks))


def soa(zone: str, serial: int) -> RR:
    origin = _name(zone)
    rdata = SOA(IN, T.SOA, dns.name.from_text("ns.dns", origin),  # type: ignore[no-untyped-call]
                dns.name.from_text("hostmaster", origin), serial % 2**32, 7200, 1800, 86400,
                SOA_TTL)
    return (zone, T.SOA, SOA_TTL, rdata)
