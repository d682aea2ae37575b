"""The watch loop: no gap and no duplicate across an etcd crash, compaction → re-snapshot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

import pytest
from conftest import store_for
from control_helpers import recreate_empty, retry
from etcd_server import EtcdServer, wait_for
from tcp_proxy import CuttableProxy

from buoy.etcd.retry import call_with_retry
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.etcd.watch import Change, PrefixWatcher, diff_views, history_problem

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


def test_etcd_recreated_empty_resnapshots_and_hands_over_the_difference(
        own_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """etcd is wiped and restarted under the watcher; the writers put back part of it."""
    caplog.set_level(logging.INFO, logger="buoy.etcd.watch")
    writer = store_for(own_etcd)
    for round_ in range(6):  # a history of some length, so the new one starts behind it
        for i in range(5):
            writer.put(f"{prefix}/k{i}", f"old{round_}")
    store = store_for(own_etcd)
    stop = threading.Event()
    rec = Recorder()
    watcher = PrefixWatcher(store, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(10)
    old_revision = watcher.revision
    recreate_empty(own_etcd)
    retry(lambda: writer.put(f"{prefix}/k0", "back"))  # a writer puts its key back
    writer.put(f"{prefix}/k9", "new")       # and a new one appears
    put_at = time.monotonic()
    wait_for(lambda: rec.view.get(f"{prefix}/k9") is not None and len(rec.view) == 2, 15,
             what="the new etcd's state")
    seen_after = time.monotonic() - put_at
    assert {k.rsplit("/", 1)[1]: kv.value for k, kv in rec.view.items()} == {
        "k0": b"back", "k9": b"new"}
    last = rec.resyncs[-1]
    assert {(c.kind, c.key.rsplit("/", 1)[1]) for c in last} == {
        ("delete", "k1"), ("delete", "k2"), ("delete", "k3"), ("delete", "k4"),
        ("put", "k0"), ("put", "k9")} or len(rec.resyncs) >= 2
    assert watcher.revision < old_revision
    warnings = [r for r in caplog.records if "etcd was replaced" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    # it keeps following the new etcd afterwards
    writer.put(f"{prefix}/k8", "later")
    writer.delete(f"{prefix}/k0")
    wait_for(lambda: f"{prefix}/k8" in rec.view and f"{prefix}/k0" not in rec.view, 10,
             what="events of the new etcd")
    assert seen_after < 5.0, seen_after  # generous bound; measured well under 2 s
    print(f"new key seen {seen_after:.2f}s after it was put")
    stop.set()
    store.close()
    writer.close()


def test_replaced_etcd_that_ran_past_our_revision_is_noticed(
        own_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """While the watcher is cut off, etcd is recreated and written past the revision the
    watcher knows: the revision does not go back, but the keys at that revision differ."""
    caplog.set_level(logging.INFO, logger="buoy.etcd.watch")
    writer = store_for(own_etcd)
    for i in range(5):
        writer.put(f"{prefix}/k{i}", "old")
    proxy = CuttableProxy(own_etcd.client_port)
    watched = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=1))
    stop = threading.Event()
    rec = Recorder()
    watcher = PrefixWatcher(watched, prefix + "/", rec, stop, max_wait=0.3)
    watcher.start()
    assert watcher.synced.wait(10)
    old_revision = watcher.revision
    proxy.cut()
    recreate_empty(own_etcd)
    retry(writer.revision)
    for i in range(old_revision + 5):
        writer.put(f"{prefix}/filler", str(i))
    writer.put(f"{prefix}/k0", "back")
    assert writer.revision() > old_revision
    proxy.restore()
    wait_for(lambda: set(rec.view) == {f"{prefix}/filler", f"{prefix}/k0"}
             and rec.view[f"{prefix}/k0"].value == b"back", 20, what="the new etcd's state")
    assert watcher.replacements == 1
    assert any("etcd was replaced" in r.getMessage() and "differ" in r.getMessage()
               for r in caplog.records)
    stop.set()
    proxy.close()
    watched.close()
    writer.close()


def test_history_problem_is_none_for_the_same_history() -> None:
    a = KeyValue("a", b"1", 4, 2, 7)
    view = {"a": a}
    assert history_problem(view, 9, 7, {"a": a}, 12, 7) is None
    assert "behind" in str(history_problem(view, 9, 7, None, 3, 0))
    assert "cluster id" in str(history_problem(view, 9, 7, {"a": a}, 12, 8))
    assert "differ" in str(history_problem(view, 9, 7, {"a": KeyValue("a", b"1", 5, 2, 7)}, 12, 7))
    # the same key, value and revisions under another lease: a rebuilt etcd
    assert "differ" in str(history_problem(view, 9, 7, {"a": KeyValue("a", b"1", 4, 2, 8)}, 12, 7))
    assert "differ" in str(history_problem(view, 9, 7, {}, 12, 7))
