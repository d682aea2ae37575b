"""register's reconcile against its watched mirror: etcd is read only for the differences.

Real etcd. The store is wrapped to count what reconcile asks of it.
"""

from __future__ import annotations

from typing import Any

from buoy.etcd.dns_records import DEFAULT_ZONE, SkyDNSRecord, instance_name
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.register.owned import reconcile

HOST = "host-a"
WEB = AnnouncePath.parse("/internal/app1/dev/web")


class Counting:
    """An EtcdStore that counts reads and writes."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in ("get_prefix", "get", "put", "delete"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)
        return counted


def records(keys: KeyLayout, instance_id: str, host: str = HOST) -> dict[str, str]:
    service = ServiceRecord.from_announce(AnnounceRecord.for_path(WEB, instance_id, 80, "HTTP"),
                                          ip="10.0.0.5", ext_port=32001, host=host)
    dns = SkyDNSRecord(host="10.0.0.5", port=32001, ttl=15)
    return {keys.service_key(WEB, instance_id): service.to_json(),
            keys.skydns_key(instance_name(WEB, instance_id, DEFAULT_ZONE)): dns.to_json()}


def mirror(store: EtcdStore, keys: KeyLayout) -> tuple[list[KeyValue], list[KeyValue]]:
    return store.get_prefix(keys.services_root)[1], store.get_prefix(keys.skydns_root)[1]


def put_all(store: EtcdStore, entries: dict[str, str], lease: int) -> None:
    for key, value in entries.items():
        store.put(key, value, lease=lease)


def test_nothing_drifted_costs_etcd_nothing(store: EtcdStore, keys: KeyLayout) -> None:
    lease = store.grant(30)
    desired = records(keys, "web-1")
    put_all(store, desired, lease)
    counting = Counting(store)
    todo = reconcile(counting, keys, HOST, DEFAULT_ZONE, lease, desired,
                     mirror(store, keys))
    assert (todo.put, todo.delete) == ({}, [])
    assert counting.calls == {}


def test_a_put_the_mirror_does_not_hold_yet_is_confirmed_not_repeated(
        store: EtcdStore, keys: KeyLayout) -> None:
    lease = store.grant(30)
    before = mirror(store, keys)  # taken before the records are written
    desired = records(keys, "web-1")
    put_all(store, desired, lease)
    revision = store.revision()
    counting = Counting(store)
    todo = reconcile(counting, keys, HOST, DEFAULT_ZONE, lease, desired,
                     before)
    assert todo.put == {} and counting.calls == {"get": 2}
    assert store.revision() == revision  # nothing written


def test_drift_is_put_back_and_stale_records_deleted(store: EtcdStore, keys: KeyLayout) -> None:
    lease = store.grant(30)
    desired = records(keys, "web-1")
    stale = records(keys, "web-gone")
    other_host = records(keys, "web-b", host="host-b")
    put_all(store, {**stale, **other_host}, lease)
    counting = Counting(store)
    todo = reconcile(counting, keys, HOST, DEFAULT_ZONE, lease, desired,
                     mirror(store, keys))
    assert todo.put == desired
    assert sorted(todo.delete) == sorted(stale)
    assert "get_prefix" not in counting.calls
    for key, value in desired.items():
        kv = store.get(key)
        assert kv is not None and kv.value == value.encode() and kv.lease == lease
    assert all(store.get(key) is None for key in stale)
    assert all(store.get(key) is not None for key in other_host)  # another host's: untouched


def test_a_stale_record_already_gone_is_not_deleted_again(store: EtcdStore, keys: KeyLayout) -> None:
    lease = store.grant(30)
    stale = records(keys, "web-gone")
    put_all(store, stale, lease)
    seen = mirror(store, keys)
    for key in stale:
        store.delete(key)
    counting = Counting(store)
    todo = reconcile(counting, keys, HOST, DEFAULT_ZONE, lease, {}, seen)
    assert todo.delete == [] and "delete" not in counting.calls


def test_without_a_mirror_etcd_is_read(store: EtcdStore, keys: KeyLayout) -> None:
    lease = store.grant(30)
    desired = records(keys, "web-1")
    counting = Counting(store)
    todo = reconcile(counting, keys, HOST, DEFAULT_ZONE, lease, desired)
    assert todo.put == desired and counting.calls["get_prefix"] == 2
