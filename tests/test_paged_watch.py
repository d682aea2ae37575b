"""PrefixWatcher on a prefix larger than gRPC's 4 MiB limit: snapshot, history check after a
disconnect, and a watch catch-up too large to receive, all complete."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

import pytest
from conftest import store_for
from etcd_server import EtcdServer, wait_for
from paged_helpers import GRPC_DEFAULT_LIMIT, PageCount, big_items, fill, small_limit
from tcp_proxy import CuttableProxy

from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.etcd.watch import Change, PrefixWatcher

__all__ = ["small_limit"]  # fixture


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.resyncs = 0
        self.view: dict[str, KeyValue] = {}
        self.lock = threading.Lock()

    def __call__(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                 resync: bool) -> None:
        with self.lock:
            self.resyncs += resync
            self.changes.extend(changes)
            self.view = dict(view)

    def size(self) -> int:
        with self.lock:
            return len(self.view)


@pytest.fixture
def proxied(small_limit: None, etcd: EtcdServer) -> Iterator[tuple[CuttableProxy, EtcdStore]]:
    """A store with the 4 MiB limit that reaches etcd through a proxy the test can cut."""
    proxy = CuttableProxy(etcd.client_port)
    store = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=5))
    yield proxy, store
    store.close()
    proxy.close()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_snapshot_larger_than_the_limit_then_events(etcd: EtcdServer, prefix: str,
                                                    proxied: tuple[CuttableProxy, EtcdStore],
                                                    stop: threading.Event) -> None:
    _, watched = proxied
    direct = store_for(etcd)
    assert fill(etcd, big_items(prefix)) > 5 << 20
    rec = Recorder()
    count = PageCount()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(20)
    assert rec.size() == 6000 and rec.resyncs == 1
    assert count.pages >= 6 and count.largest < GRPC_DEFAULT_LIMIT
    snapshot_revision = watcher.revision
    # the watch starts right after the snapshot: the next writes arrive, nothing before
    direct.put(f"{prefix}/after", "1")
    direct.delete(f"{prefix}/k000000")
    wait_for(lambda: f"{prefix}/k000000" not in rec.view, 10, what="delete delivered")
    later = [(c.kind, c.key) for c in rec.changes[6000:]]
    assert later == [("put", f"{prefix}/after"), ("delete", f"{prefix}/k000000")]
    assert all(c.revision > snapshot_revision for c in rec.changes[6000:])
    assert rec.size() == 6000 and watcher.restarts == 0
    direct.close()


def test_history_check_after_a_disconnect_reads_in_pages(
        etcd: EtcdServer, prefix: str, proxied: tuple[CuttableProxy, EtcdStore],
        stop: threading.Event) -> None:
    """Resuming needs the > 4 MiB prefix as of the last revision seen: read in pages, it
    proves the same history and the watch resumes (no new snapshot)."""
    proxy, watched = proxied
    direct = store_for(etcd)
    fill(etcd, big_items(prefix))
    rec = Recorder()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(20)
    direct.put(f"{prefix}/ready", "1")  # the watch stream is up once this arrives
    wait_for(lambda: f"{prefix}/ready" in rec.view, 10, what="watch started")
    proxy.cut()
    direct.put(f"{prefix}/while-cut", "1")
    direct.delete(f"{prefix}/k000001")
    proxy.restore()
    wait_for(lambda: f"{prefix}/while-cut" in rec.view and f"{prefix}/k000001" not in rec.view,
             20, what="changes made while cut")
    assert watcher.restarts >= 1 and watcher.replacements == 0
    assert rec.resyncs == 1  # resumed after the history check, not re-snapshotted
    assert [(c.kind, c.key) for c in rec.changes[6000:]] == [
        ("put", f"{prefix}/ready"), ("put", f"{prefix}/while-cut"),
        ("delete", f"{prefix}/k000001")]
    direct.close()


def test_watch_catch_up_too_large_to_receive_takes_a_paged_snapshot(
        etcd: EtcdServer, prefix: str, proxied: tuple[CuttableProxy, EtcdStore],
        stop: threading.Event, caplog: pytest.LogCaptureFixture) -> None:
    """6 MB written while disconnected: etcd sends the catch-up as one watch response,
    larger than the limit; the watcher takes a paged snapshot and hands over the
    difference, so no key is missed."""
    proxy, watched = proxied
    direct = store_for(etcd)
    direct.put(f"{prefix}/first", "1")
    rec = Recorder()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(10)
    direct.put(f"{prefix}/ready", "1")  # the watch stream is up once this arrives
    wait_for(lambda: f"{prefix}/ready" in rec.view, 10, what="watch started")
    proxy.cut()
    fill(etcd, big_items(prefix))
    direct.delete(f"{prefix}/first")
    proxy.restore()
    wait_for(lambda: rec.size() == 6001 and f"{prefix}/first" not in rec.view, 30,
             what="every key written while cut")
    assert rec.resyncs == 2  # the first snapshot and the one that replaced the catch-up
    assert "a watch response was too large to receive" in caplog.text
    puts = {c.key for c in rec.changes if c.kind == "put"}
    assert puts == ({f"{prefix}/first", f"{prefix}/ready"}
                    | {f"{prefix}/k{i:06d}" for i in range(6000)})
    assert [c.key for c in rec.changes if c.kind == "delete"] == [f"{prefix}/first"]
    direct.close()
