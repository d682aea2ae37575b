"""Pure decisions: announces + containers → desired keys, and desired vs actual → a plan."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from buoy.etcd.dns_records import instance_entry, instance_name
from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, ServiceRecord, check_instance
from buoy.etcd.store import KeyValue
from buoy.register.mapping import (
    ContainerInfo,
    Placement,
    Refusal,
    check_key_agrees,
    claimants,
    duplicate_refusal,
    map_service,
)


@dataclass(frozen=True)
class Announce:
    """A parsed, self-consistent announce record."""

    key: str
    path: AnnouncePath
    record: AnnounceRecord


@dataclass(frozen=True)
class Refused:
    """An announce of this host's container that gets no record, and why."""

    announce: Announce
    refusal: Refusal
    container: str  # the container's name (several, comma-separated, for duplicates)


@dataclass
class Desired:
    """What this host should have in etcd, and why some announces get nothing."""

    entries: dict[str, str] = field(default_factory=dict)  # service and SkyDNS keys
    refusals: dict[str, str] = field(default_factory=dict)  # announce key -> reason
    verdicts: dict[str, Refused] = field(default_factory=dict)  # announce key -> verdict
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
        found = claimants(ann.record.id, pool)
        if not found:
            continue  # another host's container, or one that is gone
        if len(found) > 1:
            _refuse(out, ann, duplicate_refusal(ann.record.id, found),
                    ",".join(sorted(c.name for c in found)))
            continue
        container = found[0]
        result = map_service(ann.path, ann.record, container, placement)
        if isinstance(result, Refusal):
            _refuse(out, ann, result, container.name)
            continue
        try:  # the rule announce applies at start (buoy.etcd.records.check_instance), then the entry
            check_instance(ann.path, ann.record.id, zone)
            dns_key, dns_value = instance_entry(keys, result, ann.path, zone, dns_ttl)
        except RecordError as exc:  # e.g. the DNS name would pass 253 characters
            _refuse(out, ann, Refusal(f"container={container.name} no DNS name: {exc}",
                                      "no DNS name"), container.name)
            continue
        out.entries[keys.service_key(ann.path, ann.record.id)] = result.to_json()
        out.entries[dns_key] = dns_value
        out.mapped += 1
    return out


def _refuse(out: Desired, ann: Announce, refusal: Refusal, container: str) -> None:
    out.refusals[ann.key] = refusal.reason
    out.verdicts[ann.key] = Refused(ann, refusal, container)


def actual_state(keys: KeyLayout, services: Iterable[KeyValue], skydns: Iterable[KeyValue],
                 host_id: str, zone: str, also: Iterable[str] = ()) -> dict[str, tuple[str, int]]:
    """This host's records in etcd: key -> (value, lease).

    A service record is this host's when its HOST says so; its SkyDNS instance
    record is derived from the key. `also` adds SkyDNS keys that are wanted, so
    their drift is seen too. Records that do not parse are not this host's to touch.
    """
    dns = {kv.key: kv for kv in skydns}
    out: dict[str, tuple[str, int]] = {}
    # A record names its host as a JSON string; one without that string anywhere is
    # another host's, found without parsing it (most records, on a large installation).
    needle = json.dumps(host_id).encode()
    for kv in services:
        if needle not in kv.value:
            continue
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


def status_entries(keys: KeyLayout, verdicts: Mapping[str, Refused], host_id: str) -> dict[str, str]:
    """register's verdict on each announce it refuses, as `/status/<path>/<ID>` records
    (shown by `buoy ls` beside the announce)."""
    out = {}
    for verdict in verdicts.values():
        ann = verdict.announce
        out[keys.status_key(ann.path, ann.record.id)] = json.dumps(
            {"HOST": host_id, "CONTAINER": verdict.container, "SUMMARY": verdict.refusal.summary,
             "REASON": verdict.refusal.reason}, sort_keys=True)
    return out
