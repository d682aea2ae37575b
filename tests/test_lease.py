"""The lease keeper against a real etcd: expiry, loss and re-grant after an etcd restart."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest
from conftest import store_for
from etcd_server import EtcdServer, wait_for

from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.store import EtcdStore


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_keys_live_while_kept_and_expire_after_ttl(store: EtcdStore, prefix: str,
                                                   stop: threading.Event) -> None:
    keeper = LeaseKeeper(store, 2, stop, interval=0.5)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: store.get(f"{prefix}/a"), 5, what="key written")
    lease = wait_for(lambda: keeper.lease_id, 5, what="lease")
    # kept alive well past its TTL
    stop.wait(3.0)
    assert store.get(f"{prefix}/a") is not None
    assert store.lease_ttl(lease) > 0
    # stop refreshing without revoking: the key goes with the TTL
    stop.set()
    wait_for(lambda: store.get(f"{prefix}/a") is None, 6, what="key expired")


def test_revoke_removes_at_once(store: EtcdStore, prefix: str, stop: threading.Event) -> None:
    keeper = LeaseKeeper(store, 30, stop)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: store.get(f"{prefix}/a"), 5, what="key written")
    keeper.revoke()
    assert store.get(f"{prefix}/a") is None


def test_lost_lease_is_regranted_and_keys_reput(store: EtcdStore, prefix: str,
                                                stop: threading.Event) -> None:
    keeper = LeaseKeeper(store, 5, stop, interval=0.3)
    keeper.set(f"{prefix}/a", "1")
    keeper.set(f"{prefix}/b", "2")
    keeper.start()
    first = wait_for(lambda: keeper.lease_id, 5, what="lease")
    wait_for(lambda: store.get(f"{prefix}/b"), 5, what="keys written")
    store.revoke(first)  # someone else ends the lease: both keys vanish
    assert store.get(f"{prefix}/a") is None
    wait_for(lambda: store.get(f"{prefix}/a") and store.get(f"{prefix}/b"), 5,
             what="keys re-put")
    assert keeper.lease_id not in (None, first)
    assert store.get(f"{prefix}/a").lease == keeper.lease_id  # type: ignore[union-attr]


def test_remove_deletes_and_forgets(store: EtcdStore, prefix: str, stop: threading.Event) -> None:
    keeper = LeaseKeeper(store, 5, stop, interval=0.3)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: store.get(f"{prefix}/a"), 5, what="key written")
    keeper.remove(f"{prefix}/a")
    assert store.get(f"{prefix}/a") is None
    assert keeper.owned() == {}


def test_regrant_after_etcd_restart_with_data_lost(own_etcd: EtcdServer, prefix: str,
                                                   stop: threading.Event) -> None:
    store = store_for(own_etcd)
    keeper = LeaseKeeper(store, 4, stop, interval=0.5)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    first = wait_for(lambda: keeper.lease_id, 5, what="lease")
    wait_for(lambda: store.get(f"{prefix}/a"), 5, what="key written")
    own_etcd.kill()
    shutil.rmtree(own_etcd.data_dir)  # etcd comes back empty: the lease is unknown
    own_etcd.start()
    wait_for(lambda: _get(store, f"{prefix}/a"), 10, what="key back after restart")
    assert keeper.lease_id != first
    store.close()


def test_survives_etcd_restart_keeping_data(own_etcd: EtcdServer, prefix: str,
                                            stop: threading.Event) -> None:
    store = store_for(own_etcd)
    keeper = LeaseKeeper(store, 3, stop, interval=0.5)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: store.get(f"{prefix}/a"), 5, what="key written")
    own_etcd.kill()
    stop.wait(4.0)  # down for longer than the TTL
    own_etcd.start()
    wait_for(lambda: _get(store, f"{prefix}/a"), 10, what="key back after restart")
    stop.wait(4.0)  # and it stays: the keeper refreshes again
    assert _get(store, f"{prefix}/a")
    store.close()


def _get(store: EtcdStore, key: str) -> bool:
    try:
        return store.get(key) is not None
    except Exception:  # noqa: BLE001 - etcd may still be coming up
        return False


def test_remove_while_etcd_unreachable_is_retried(etcd: EtcdServer, prefix: str,
                                                  stop: threading.Event) -> None:
    from tcp_proxy import CuttableProxy

    from buoy.etcd.settings import EtcdSettings

    direct = store_for(etcd)
    proxy = CuttableProxy(etcd.client_port)
    via_proxy = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=1))
    keeper = LeaseKeeper(via_proxy, 10, stop, interval=0.5)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: direct.get(f"{prefix}/a"), 5, what="key written")
    proxy.cut()
    keeper.remove(f"{prefix}/a")          # fails: etcd is out of reach
    assert direct.get(f"{prefix}/a") is not None
    proxy.restore()
    wait_for(lambda: direct.get(f"{prefix}/a") is None, 8, what="delete retried")
    proxy.close()
    via_proxy.close()
    direct.close()
