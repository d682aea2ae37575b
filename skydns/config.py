"""`buoy dns` settings as one frozen, validated object (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from buoy.etcd.dns_records import DEFAULT_ZONE
from buoy.etcd.records import RecordError, check_port

DEFAULT_LISTEN = "127.0.0.1:5353"


@dataclass(frozen=True)
class DnsConfig:
    zone: str = DEFAULT_ZONE
    extra_zones: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5353
    lease_poll: float = 1.0
    cache_size: int = 10000

    @property
    def zones(self) -> tuple[str, ...]:
        """Every zone answered for, main zone first, without repeats."""
        return tuple(dict.fromkeys((self.zone, *self.extra_zones)))


ZONE_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def served_zone(text: str, setting: str = "BUOY_DNS_ZONE") -> str:
    """`Skydns_ZoneA.test` → `skydns_zonea.test.`: DNS labels, where `_` is allowed.

    Underscores are legal in DNS names and CoreDNS serves zones such as
    `skydns_zonea.test.`; only host names (what register writes) cannot hold them.
    """
    name = text.strip().rstrip(".").lower()
    rule = "must be DNS labels [a-z0-9_-] separated by dots, at most 253 characters"
    if not name or len(name) > 253 or \
            not all(ZONE_LABEL_RE.fullmatch(label) for label in name.split(".")):
        raise RecordError(setting, rule, text)
    return name + "."


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:5353`, `[::1]:53` → (host, port); the host must be an IP address."""
    rule = "must be IP:PORT (IPv6 as [addr]:PORT)"
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise RecordError("BUOY_DNS_LISTEN", rule, text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise RecordError("BUOY_DNS_LISTEN", rule, text) from None
    return str(ip), check_port("BUOY_DNS_LISTEN", port)


def parse_zones(values: Iterable[str], setting: str = "BUOY_DNS_EXTRA_ZONES") -> tuple[str, ...]:
    """Repeated flags and comma lists alike: `a.example.,b.example` → normalised zones."""
    zones: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                zones.append(served_zone(part, setting))
    return tuple(zones)
