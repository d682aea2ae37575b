"""Lease refreshes share one keep-alive stream per store, as etcd itself counts them, and
the stream is opened again after etcd restarts or the endpoint in use goes away."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import store_for
from etcd_server import EtcdServer, wait_for
from tcp_proxy import CuttableProxy

from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore, StoreError


def keepalive_counts(server: EtcdServer) -> tuple[int, int]:
    """(LeaseKeepAlive streams started, keep-alive requests received) from etcd's metrics."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as resp:
        text = resp.read().decode()

    def metric(name: str) -> int:
        found = re.search(rf'^{name}{{[^}}]*grpc_method="LeaseKeepAlive"[^}}]*}} (\S+)$', text,
                          re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    return metric("grpc_server_started_total"), metric("grpc_server_msg_received_total")


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_refreshes_share_one_stream(etcd: EtcdServer, store: EtcdStore) -> None:
    lease = store.grant(30)
    streams, requests = keepalive_counts(etcd)
    assert [store.refresh(lease) for _ in range(25)] == [30] * 25
    streams_after, requests_after = keepalive_counts(etcd)
    assert streams_after - streams == 1
    assert requests_after - requests == 25
    assert store.keepalive.opened == 1
    store.revoke(lease)


def test_unknown_lease_answers_zero_and_the_stream_stays(etcd: EtcdServer,
                                                         store: EtcdStore) -> None:
    live, gone = store.grant(20), store.grant(20)
    store.revoke(gone)
    assert store.refresh(live) == 20
    assert store.refresh(gone) == 0
    assert store.refresh(live) == 20
    assert store.keepalive.opened == 1
    store.revoke(live)


def test_keepers_of_one_store_share_the_stream_concurrently(etcd: EtcdServer, prefix: str,
                                                            stop: threading.Event) -> None:
    store = store_for(etcd)
    streams, _ = keepalive_counts(etcd)
    keepers = [LeaseKeeper(store, ttl, stop, interval=0.1, name=f"k{ttl}") for ttl in (7, 11)]
    for k in keepers:
        k.set(f"{prefix}/{k.name}", "1")
        k.start()
    wait_for(lambda: all(k.lease_id for k in keepers), 5, what="leases granted")
    answers: dict[int, set[int]] = {7: set(), 11: set()}
    errors: list[Exception] = []

    def hammer(keeper: LeaseKeeper) -> None:
        assert keeper.lease_id is not None
        for _ in range(50):
            try:
                answers[keeper.ttl].add(store.refresh(keeper.lease_id))
            except StoreError as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in keepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert answers == {7: {7}, 11: {11}}  # every answer went to the lease that asked
    wait_for(lambda: all(k.last_refresh for k in keepers), 5, what="keepers refreshed")
    assert keepalive_counts(etcd)[0] - streams == 1
    assert store.keepalive.opened == 1
    stop.set()
    store.close()


def test_stream_reopened_after_etcd_restarts(own_etcd: EtcdServer, prefix: str,
                                             stop: threading.Event) -> None:
    store = store_for(own_etcd)
    keeper = LeaseKeeper(store, 3, stop, interval=0.3)
    keeper.set(f"{prefix}/a", "1")
    keeper.start()
    wait_for(lambda: keeper.last_refresh and store.keepalive.opened == 1, 5,
             what="first refresh on the stream")
    lease = keeper.lease_id
    own_etcd.kill()
    own_etcd.start()
    refreshed = keeper.last_refresh
    wait_for(lambda: keeper.last_refresh > refreshed, 15, what="refresh after the restart")
    assert keeper.lease_id == lease  # the same lease, kept alive on a new stream
    assert store.keepalive.opened >= 2
    streams = keepalive_counts(own_etcd)[0]
    assert 1 <= streams <= 2  # the restarted etcd saw one stream (two if the first broke)
    refreshed = keeper.last_refresh
    wait_for(lambda: keeper.last_refresh > refreshed + 1.0, 10, what="later refreshes")
    assert keepalive_counts(own_etcd)[0] == streams  # and they stay on it
    store.close()


def test_fails_over_to_another_endpoint(etcd: EtcdServer) -> None:
    proxies = [CuttableProxy(etcd.client_port) for _ in range(2)]
    store = EtcdStore(EtcdSettings.from_strings(",".join(p.endpoint for p in proxies),
                                                timeout=2))
    lease = store.grant(30)
    assert store.refresh(lease) == 30
    in_use = store._get_client().endpoint_in_use.netloc
    first = next(p for p in proxies if p.endpoint.endswith(in_use))
    other = next(p for p in proxies if p is not first)
    first.cut()

    def refreshed() -> bool:
        try:
            return store.refresh(lease) == 30
        except StoreError:
            return False

    wait_for(refreshed, 15, what="refresh through the other endpoint")
    assert store._get_client().endpoint_in_use.netloc == other.endpoint.split("//")[1]
    assert store.keepalive.opened >= 2
    first.restore()
    store.revoke(lease)
    store.close()
    for p in proxies:
        p.close()


class FreezableProxy(CuttableProxy):
    """A proxy that can hold every byte (connections stay open, nothing gets through)."""

    def __init__(self, target_port: int) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        super().__init__(target_port)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)


def test_an_unanswered_refresh_times_out_and_the_next_uses_a_new_stream(
        etcd: EtcdServer) -> None:
    proxy = FreezableProxy(etcd.client_port)
    store = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=1))
    lease = store.grant(30)
    assert store.refresh(lease) == 30
    proxy.flowing.clear()  # etcd never sees the next request
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.refresh(lease)
    assert time.monotonic() - started < 5  # the client's timeout (1 s), generously
    proxy.flowing.set()

    def refreshed() -> bool:
        try:
            return store.refresh(lease) == 30
        except StoreError:
            return False

    wait_for(refreshed, 10, what="refresh after the stall")
    assert store.keepalive.opened >= 2
    store.revoke(lease)
    store.close()
    proxy.close()
