"""`buoy dns` settings as one frozen, validated object (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from buoy.records import RecordError, check_port
from skydns.records import DEFAULT_ZONE, normalize_zone

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
                try:
                    zones.append(normalize_zone(part))
                except RecordError as exc:
                    raise RecordError(setting, exc.rule, part) from None
    return tuple(zones)
