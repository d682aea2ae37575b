"""announce's settings as one frozen, validated object (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, check_check, check_port


@dataclass(frozen=True)
class AnnounceConfig:
    path: AnnouncePath
    record: AnnounceRecord
    ttl: int = 15
    interval: float = 5.0
    drain: float = 0.0
    check_interval: float = 2.0
    check_timeout: float = 1.0
    check_failures: int = 3

    def __post_init__(self) -> None:
        if self.interval >= self.ttl:
            raise RecordError("ANNOUNCE_INTERVAL", f"must be shorter than ANNOUNCE_TTL ({self.ttl})",
                              self.interval)


def build_record(*, path: str | None, port: str | None, type_: str | None, instance_id: str,
                 check: str | None) -> tuple[AnnouncePath, AnnounceRecord]:
    """Validate the seed's settings and build the record announce writes."""
    if not path:
        raise RecordError("ANNOUNCE_PATH", "is required", None)
    parsed = AnnouncePath.parse(path)
    if port is None or port == "":
        raise RecordError("PORT", "is required", None)
    port_number = check_port("PORT", port)
    kind = (type_ or "").upper() if type_ else None
    if kind not in ("HTTP", "TCP"):
        raise RecordError("TYPE", "must be HTTP or TCP", type_)
    record = AnnounceRecord.for_path(
        parsed, instance_id.lower(), port_number, kind,  # type: ignore[arg-type]
        check=check_check(check) if check else None)
    return parsed, record
