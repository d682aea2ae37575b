"""Pure decisions: announces + containers → desired keys, and desired vs actual → a plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from buoy.keys import KeyError_, KeyLayout
from buoy.records import AnnouncePath, AnnounceRecord, RecordError, ServiceRecord
from buoy.store import KeyValue
from register.mapping import (
    ContainerInfo,
    Placement,
    Refusal,
    check_key_agrees,
    find_container,
    map_service,
)
from skydns.records import instance_entry, instance_name


@dataclass(frozen=True)
class Announce:
    """A parsed, self-consistent announce record."""

    key: str
    path: AnnouncePath
    record: AnnounceRecord


@dataclass
class Desired:
    """What this host should have in etcd, and why some announces get nothing."""

    entries: dict[str, str] = field(default_factory=dict)  # service and SkyDNS keys
    refusals: dict[str, str] = field(default_factory=dict)  # announce key -> reason
    mapped: int = 0


@dataclass(frozen=True)
class Plan:
    put: dict[str, str]
    delete: list[str]


def parse_announce(keys: KeyLayout, key: str, value: bytes) -> Announce | str:
    """An announce key and value → Announce, or the reason it is malformed."""
    try:
        path, instance_id = keys.parse_announce_key(key)
        record = AnnounceRecord.from_json(value)
    except (KeyError_, RecordError) as exc:
        return str(exc)
    problem = check_key_agrees(path, instance_id, record)
    return problem if problem else Announce(key, path, record)


def desired_state(keys: KeyLayout, announces: Iterable[Announce],
                  containers: Iterable[ContainerInfo], placement: Placement, zone: str,
                  dns_ttl: int) -> Desired:
    """Every announce whose ID is a running container here, mapped (or refused)."""
    pool = list(containers)
    out = Desired()
    for ann in announces:
        container = find_container(ann.record.id, pool)
        if container is None:
            continue  # another host's container, or one that is gone
        result = map_service(ann.path, ann.record, container, placement)
        if isinstance(result, Refusal):
            out.refusals[ann.key] = result.reason
            continue
        try:
            dns_key, dns_value = instance_entry(keys, result, ann.path, zone, dns_ttl)
        except RecordError as exc:  # e.g. the DNS name would pass 253 characters
            out.refusals[ann.key] = f"container={container.name} no DNS name: {exc}"
            continue
        out.entries[keys.service_key(ann.path, ann.record.id)] = result.to_json()
        out.entries[dns_key] = dns_value
        out.mapped += 1
    return out


def actual_state(keys: KeyLayout, services: Iterable[KeyValue], skydns: Iterable[KeyValue],
                 host_id: str, zone: str, also: Iterable[str] = ()) -> dict[str, tuple[str, int]]:
    """This host's records in etcd: key -> (value, lease).

    A service record is this host's when its HOST says so; its SkyDNS instance
    record is derived from the key. `also` adds SkyDNS keys that are wanted, so
    their drift is seen too. Records that do not parse are not this host's to touch.
    """
    dns = {kv.key: kv for kv in skydns}
    out: dict[str, tuple[str, int]] = {}
    for kv in services:
        try:
            record = ServiceRecord.from_json(kv.value)
            path, instance_id = keys.parse_service_key(kv.key)
        except (KeyError_, RecordError):
            continue
        if record.host != host_id:
            continue
        out[kv.key] = (kv.value.decode(), kv.lease)
        try:
            dns_key = keys.skydns_key(instance_name(path, instance_id, zone))
        except RecordError:
            continue
        if dns_key in dns:
            out[dns_key] = (dns[dns_key].value.decode(), dns[dns_key].lease)
    for key in also:
        if key in dns:
            out[key] = (dns[key].value.decode(), dns[key].lease)
    return out


def plan(desired: Mapping[str, str], actual: Mapping[str, tuple[str, int]],
         lease: int | None) -> Plan:
    """Put what is missing, different or under another lease; delete what is not wanted."""
    put = {k: v for k, v in desired.items()
           if lease is not None and actual.get(k) != (v, lease)}
    delete = sorted(k for k in actual if k not in desired)
    return Plan(put, delete)


def keeper_changes(owned: Mapping[str, str], desired: Mapping[str, str]) -> Plan:
    """What to `set` and `remove` on a LeaseKeeper so it owns exactly `desired`."""
    put = {k: v for k, v in desired.items() if owned.get(k) != v}
    return Plan(put, sorted(k for k in owned if k not in desired))
