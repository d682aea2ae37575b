"""The watch loop: no gap and no duplicate across an etcd crash, compaction → re-snapshot."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from conftest import store_for
from etcd_server import EtcdServer, wait_for
from tcp_proxy import CuttableProxy

from buoy.retry import call_with_retry
from buoy.settings import EtcdSettings
from buoy.store import EtcdStore, KeyValue
from buoy.watch import Change, PrefixWatcher, diff_views

N_EVENTS = 3000


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.resyncs: list[list[Change]] = []
        self.view: dict[str, KeyValue] = {}
        self.lock = threading.Lock()

    def __call__(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                 resync: bool) -> None:
        with self.lock:
            if resync:
                self.resyncs.append(list(changes))
            self.changes.extend(changes)
            self.view = dict(view)


def test_crash_during_burst_loses_and_duplicates_nothing(own_etcd: EtcdServer,
                                                         prefix: str) -> None:
    store = store_for(own_etcd)
    writer = store_for(own_etcd)
    stop = threading.Event()
    rec = Recorder()
    watcher = PrefixWatcher(store, prefix + "/", rec, stop, max_wait=0.5)
    watcher.start()
    assert watcher.synced.wait(10)
    import logging
    log = logging.getLogger("test")

    def burst() -> None:
        for i in range(N_EVENTS):
            call_with_retry(lambda i=i: writer.put(f"{prefix}/k{i:05d}", str(i)), stop=stop,
                            what="burst put", log=log, max_wait=0.3)

    t = threading.Thread(target=burst)
    t.start()
    wait_for(lambda: len(rec.changes) >= N_EVENTS // 3, 30, what="a third of the burst")
    own_etcd.kill()   # kill -9 in the middle of the burst
    own_etcd.start()
    t.join(120)
    assert not t.is_alive()
    _, final = writer.get_prefix(prefix + "/")
    wait_for(lambda: len(rec.view) == N_EVENTS and all(
        rec.view[kv.key].mod_revision == kv.mod_revision for kv in final), 30,
        what="watcher caught up")
    stop.set()
    revisions = [c.revision for c in rec.changes]
    assert revisions == sorted(revisions)                      # in order
    assert len(revisions) == len(set(revisions))               # no duplicate
    puts: dict[str, int] = {}
    for c in rec.changes:
        puts[c.key] = puts.get(c.key, 0) + 1
    # etcd's per-key version counts every put since creation: we saw each one
    assert {kv.key: (kv.value, puts.get(kv.key)) for kv in final} == \
        {kv.key: (kv.value, _version(writer, kv.key)) for kv in final}
    assert len(final) == N_EVENTS
    store.close()
    writer.close()


def _version(store: EtcdStore, key: str) -> int:
    kv = store.get(key)
    assert kv is not None
    return kv.version


def test_compaction_while_disconnected_resnapshots_and_hands_over_the_difference(
        etcd: EtcdServer, prefix: str) -> None:
    direct = store_for(etcd)
    for i in range(5):
        direct.put(f"{prefix}/k{i}", "old")
    proxy = CuttableProxy(etcd.client_port)
    watched = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=1))
    stop = threading.Event()
    rec = Recorder()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(10)
    assert len(rec.resyncs[0]) == 5
    proxy.cut()
    # while the watcher is away: change, delete, add, then compact past all of it
    direct.put(f"{prefix}/k0", "new")
    direct.delete(f"{prefix}/k1")
    direct.put(f"{prefix}/k9", "added")
    direct.compact(direct.revision())
    proxy.restore()
    wait_for(lambda: len(rec.resyncs) >= 2, 20, what="a second snapshot")
    diff = {(c.kind, c.key.rsplit("/", 1)[1]) for c in rec.resyncs[1]}
    assert diff == {("put", "k0"), ("delete", "k1"), ("put", "k9")}
    assert watcher.restarts >= 1
    # and it keeps following afterwards
    direct.put(f"{prefix}/k8", "later")
    wait_for(lambda: f"{prefix}/k8" in rec.view, 10, what="events after the re-snapshot")
    _, final = direct.get_prefix(prefix + "/")
    assert {kv.key: kv.value for kv in final} == {k: v.value for k, v in rec.view.items()}
    stop.set()
    proxy.close()
    watched.close()
    direct.close()


def test_disconnect_resumes_from_last_revision(etcd: EtcdServer, prefix: str) -> None:
    direct = store_for(etcd)
    proxy = CuttableProxy(etcd.client_port)
    watched = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=1))
    stop = threading.Event()
    rec = Recorder()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(10)
    direct.put(f"{prefix}/a", "1")
    wait_for(lambda: f"{prefix}/a" in rec.view, 10, what="first event")
    proxy.cut()
    direct.put(f"{prefix}/b", "2")
    direct.delete(f"{prefix}/a")
    proxy.restore()
    wait_for(lambda: f"{prefix}/b" in rec.view and f"{prefix}/a" not in rec.view, 20,
             what="events missed while cut")
    assert len(rec.resyncs) == 1  # resumed, not re-snapshotted
    kinds = [(c.kind, c.key.rsplit("/", 1)[1]) for c in rec.changes]
    assert kinds == [("put", "a"), ("put", "b"), ("delete", "a")]
    stop.set()
    proxy.close()
    watched.close()
    direct.close()


def test_diff_views_is_exact() -> None:
    old = {"a": KeyValue("a", b"1", 2, 2, 0), "b": KeyValue("b", b"1", 3, 3, 0)}
    new = {"a": KeyValue("a", b"2", 5, 2, 0), "c": KeyValue("c", b"1", 6, 6, 0)}
    got = [(c.kind, c.key) for c in diff_views(old, new, 7)]
    assert got == [("delete", "b"), ("put", "a"), ("put", "c")]
    assert diff_views(new, new, 7) == []
