"""Keys register owns, put back when someone else deletes them.

A LeaseKeeper writes a key once and then only refreshes its lease, so a key
deleted behind its back (`etcdctl del`, a second register on this host that
revokes its lease on exit, a rebuilt etcd) would stay gone. register watches
what it writes; every delete of a key one of its keepers still owns is noted
here and put back under that keeper's lease on the next sync. On every full
resync the label announces are also compared with the /announce view.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from buoy.etcd.keys import KeyLayout
from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.store import EtcdStore, KeyValue, StoreError
from buoy.register.reconcile import Plan, actual_state, plan

log = logging.getLogger("buoy.register.agent")


class OwnedKeys:
    """Notes deletes of owned keys and puts them back (called from register's loop)."""

    def __init__(self, store: EtcdStore, keepers: Sequence[LeaseKeeper]) -> None:
        self.store = store
        self.keepers = keepers
        self.pending: set[str] = set()
        self.repairs = 0  # keys put back

    def deleted(self, keys: Iterable[str]) -> None:
        """Someone deleted `keys` (those register no longer owns are ignored later)."""
        self.pending.update(keys)

    def compare(self, keeper: LeaseKeeper, view: Mapping[str, KeyValue],
                among: set[str]) -> None:
        """Note every key of `among` that `keeper` owns and `view` lacks or holds with
        another value."""
        for key, value in keeper.owned().items():
            if key not in among:
                continue
            kv = view.get(key)
            if kv is None or kv.value != value.encode():
                self.pending.add(key)

    def repair(self) -> int:
        """Put back every noted key a keeper still owns; returns how many were put."""
        if not self.pending:
            return 0
        noted, self.pending = self.pending, set()
        done = 0
        for keeper in self.keepers:
            owned = keeper.owned()
            todo = {k: owned[k] for k in sorted(noted) if k in owned}
            lease = keeper.lease_id
            if not todo or lease is None:
                continue  # no lease yet: the keeper puts every owned key when granted
            failed = []
            for key, value in todo.items():
                try:
                    self.store.put(key, value, lease=lease)
                    done += 1
                except StoreError as exc:
                    failed.append(key)
                    error = exc
            log.warning("%s: put back %d of %d keys deleted (or changed) while still wanted "
                        "(first %s)",
                        keeper.name, len(todo) - len(failed), len(todo), next(iter(todo)))
            if failed:
                log.warning("%s: %d keys could not be put back yet; the keeper's lease "
                            "refresh or the next resync puts them error=%s",
                            keeper.name, len(failed), error)
        self.repairs += done
        return done


def reconcile(store: EtcdStore, keys: KeyLayout, host_id: str, zone: str, lease: int | None,
              desired: Mapping[str, str],
              mirror: tuple[Iterable[KeyValue], Iterable[KeyValue]] | None = None) -> Plan:
    """Compare with etcd: put back drifted records, delete stale ones of this host.

    `mirror` is /services and /skydns as register's own watches hold them; without it
    both prefixes are read from etcd. With it, etcd is read only for the differences
    found: each is confirmed by one read of its key (the mirror may not hold a put of a
    moment ago yet), so a periodic reconcile costs etcd nothing while nothing drifted.
    Raises StoreError; the caller tries again at its next sync.
    """
    if mirror is None:
        _, services = store.get_prefix(keys.services_root)
        _, skydns = store.get_prefix(keys.skydns_root)
    else:
        services, skydns = (list(m) for m in mirror)
    actual = actual_state(keys, services, skydns, host_id, zone, also=desired)
    todo = plan(desired, actual, lease)
    if mirror is not None:
        todo = _confirmed(store, todo, lease)
    for key, value in todo.put.items():
        store.put(key, value, lease=lease)
    for key in todo.delete:
        log.info("reconcile delete stale key=%s", key)
        store.delete(key)
    return todo


def _confirmed(store: EtcdStore, todo: Plan, lease: int | None) -> Plan:
    """The part of `todo` that etcd itself still needs (one read per key)."""
    put = {}
    for key, value in todo.put.items():
        kv = store.get(key)
        if kv is None or kv.value != value.encode() or kv.lease != lease:
            put[key] = value
    return Plan(put, [key for key in todo.delete if store.get(key) is not None])
