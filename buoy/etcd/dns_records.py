"""The SkyDNS/CoreDNS etcd record and the instance-name rule (DESIGN.md)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from buoy.etcd.records import AnnouncePath, RecordError, check_hostname, check_label, load_json_object

if TYPE_CHECKING:
    from buoy.etcd.keys import KeyLayout
    from buoy.etcd.records import ServiceRecord

DEFAULT_ZONE = "buoy.internal."


def normalize_zone(zone: str) -> str:
    """`Buoy.Internal` → `buoy.internal.`; validated as host-name labels (register's zone)."""
    name = zone.strip().rstrip(".").lower()
    check_hostname("BUOY_DNS_ZONE", name)
    return name + "."


def instance_name(path: AnnouncePath, instance_id: str, zone: str = DEFAULT_ZONE) -> str:
    """ID, then the path's segments in reverse, then the zone.

    `/internal/app1/dev/db/ghost.example` + `0ce60d000eac` →
    `0ce60d000eac.ghost.example.db.dev.app1.internal.buoy.internal.`
    """
    check_label("ID", instance_id)
    return ".".join((instance_id, *reversed(path.segments))) + "." + normalize_zone(zone)


def service_name(path: AnnouncePath, zone: str = DEFAULT_ZONE) -> str:
    """The name that answers with every instance of `path`."""
    return ".".join(reversed(path.segments)) + "." + normalize_zone(zone)


@dataclass(frozen=True)
class SkyDNSRecord:
    """CoreDNS etcd plugin format: `{"host": "10.0.0.5", "port": 32768, "ttl": 15}`."""

    host: str = ""
    port: int | None = None
    priority: int | None = None
    weight: int | None = None
    ttl: int | None = None
    text: str | None = None
    targetstrip: int | None = None
    group: str | None = None
    mail: bool = False  # an MX record: priority becomes the preference

    def __post_init__(self) -> None:
        # A non-string host from JSON (a number, list or object) must be a RecordError,
        # not a crash of the watcher that parses it (ip_address(5) would even accept it).
        if not isinstance(self.host, str):
            raise RecordError("host", "must be an IP address or a host name", self.host)
        if self.host:
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                if self.host.replace(".", "").isdigit():
                    # `10.0.0.300` is a broken address, not a host name to CNAME to.
                    raise RecordError("host", "must be a valid IP address", self.host) from None
                check_hostname("host", self.host.rstrip("."))
        for name in ("port", "priority", "weight", "ttl", "targetstrip"):
            value = getattr(self, name)
            limit = 65535 if name != "ttl" else 2**31 - 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= limit):
                raise RecordError(name, f"must be an integer from 0 to {limit}", value)
        if self.text is not None and (not isinstance(self.text, str) or len(self.text) > 4096
                                      or not self.text.isprintable()):
            raise RecordError("text", "must be printable text of at most 4096 characters",
                              self.text)
        if self.group is not None:
            check_hostname("group", self.group)
        if not isinstance(self.mail, bool):
            raise RecordError("mail", "must be true or false", self.mail)
        if not self.host and self.text is None:
            raise RecordError("host", "is required unless the record holds text", self.host)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if v is not None and v != "" and v is not False}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SkyDNSRecord:
        data = load_json_object(text)
        known = {k: _number(k, data[k]) for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


INT_FIELDS = ("port", "priority", "weight", "ttl", "targetstrip")


def _number(name: str, value: Any) -> Any:
    """Digit strings count as integers: CoreDNS's own examples write `"ttl":"60"`."""
    if name in INT_FIELDS and isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def instance_entry(keys: KeyLayout, record: ServiceRecord, path: AnnouncePath,
                   zone: str = DEFAULT_ZONE, ttl: int = 15) -> tuple[str, str]:
    """The SkyDNS (key, JSON value) register writes for one service instance.

    host = the instance's IP, port = its EXT_PORT, so A and SRV answers reach it
    from outside its Docker host.
    """
    name = instance_name(path, record.id, zone)
    value = SkyDNSRecord(host=record.ip, port=record.ext_port, ttl=ttl)
    return keys.skydns_key(name), value.to_json()
