"""LeaseKeeper after etcd was recreated empty: a new lease and every owned key back.

It notices at its next refresh (every `interval`: TTL/3 by default, 2 s in register).
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import store_for
from control_helpers import recreate_empty
from etcd_server import EtcdServer, wait_for

from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.store import EtcdStore, StoreUnavailable


def count(store: EtcdStore, prefix: str) -> int:
    try:
        return len(store.get_prefix(prefix + "/")[1])
    except StoreUnavailable:  # this client too needs a moment after the restart
        return -1


@pytest.mark.parametrize("interval", [2.0, 5.0], ids=["register-2s", "default-ttl15"])
def test_keys_are_back_within_one_interval_after_etcd_is_recreated(
        own_etcd: EtcdServer, prefix: str, interval: float) -> None:
    store = store_for(own_etcd)
    stop = threading.Event()
    keeper = LeaseKeeper(store, 15, stop, interval=interval, name="test")
    for i in range(3):
        keeper.set(f"{prefix}/k{i}", str(i))
    keeper.start()
    try:
        wait_for(lambda: count(store, prefix) == 3, 10, what="keys")
        old = keeper.lease_id
        recreate_empty(own_etcd)
        back_from = time.monotonic()
        wait_for(lambda: count(store, prefix) == 3, interval + 10, what="keys back")
        took = time.monotonic() - back_from
        assert keeper.lease_id != old and keeper.grants == 2
        assert all(kv.lease == keeper.lease_id for kv in store.get_prefix(prefix + "/")[1])
        print(f"\ninterval {interval:.0f}s: keys back {took:.2f}s after etcd was up again")
        assert took < interval + 3.0  # within one refresh interval (plus a retry step)
    finally:
        stop.set()
        store.close()
