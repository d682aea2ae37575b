"""EtcdStore reads a prefix of any size in pages, at one revision, with gRPC's 4 MiB limit."""

from __future__ import annotations

import threading

import pytest
from conftest import store_for
from etcd_server import EtcdServer
from paged_helpers import GRPC_DEFAULT_LIMIT, PageCount, big_items, fill, limited_store, small_limit

from buoy.etcd import paging as store_paging
from buoy.etcd.store import Compacted, EtcdStore

__all__ = ["limited_store", "small_limit"]  # fixtures


def test_get_prefix_larger_than_the_grpc_limit(etcd: EtcdServer, limited_store: EtcdStore,
                                               prefix: str) -> None:
    total = fill(etcd, big_items(prefix))
    assert total > 5 << 20
    written_at = limited_store.revision()
    count = PageCount()
    revision, kvs = limited_store.get_prefix(prefix + "/")
    assert revision == written_at
    assert [kv.key for kv in kvs] == [f"{prefix}/k{i:06d}" for i in range(6000)]
    assert all(kv.value.startswith(f"{i:06d}".encode()) and len(kv.value) == 1000
               for i, kv in enumerate(kvs))
    assert count.pages >= 6
    assert count.largest < GRPC_DEFAULT_LIMIT


def test_snapshot_is_one_revision_while_keys_change(etcd: EtcdServer, limited_store: EtcdStore,
                                                    prefix: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small pages while a writer puts and deletes: the snapshot is exactly the
    state at its revision, never a mix of two."""
    monkeypatch.setattr(store_paging, "PAGE_KEYS", 7)
    fill(etcd, ((f"{prefix}/k{i:04d}", str(i)) for i in range(1500)))
    base = limited_store.revision()
    ops: list[tuple[int, str, str | None]] = []  # (revision, key, value or None = deleted)
    done = threading.Event()

    def writer() -> None:
        i = 0
        while not done.is_set():
            key = f"{prefix}/k{(i * 37) % 1500:04d}"
            if i % 2:
                ops.append((limited_store.put(key, f"w{i}"), key, f"w{i}"))
            elif limited_store.delete(key):  # the only writer: its revision is etcd's now
                ops.append((limited_store.revision(), key, None))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        count = PageCount()
        snap = limited_store.snapshot(prefix + "/")
    finally:
        done.set()
        thread.join()
    assert count.pages > 100
    assert any(rev > snap.revision for rev, _, _ in ops), "the writer ran during the read"
    expected = {f"{prefix}/k{i:04d}": str(i) for i in range(1500)}
    assert snap.revision >= base
    for rev, key, value in sorted(ops):
        if rev > snap.revision:
            break
        if value is None:
            expected.pop(key, None)
        else:
            expected[key] = value
    got = {kv.key: kv.value.decode() for kv in snap.kvs}
    assert got == expected
    assert all(kv.mod_revision <= snap.revision for kv in snap.kvs)


def test_state_at_an_old_revision_in_pages(etcd: EtcdServer, limited_store: EtcdStore,
                                           prefix: str) -> None:
    fill(etcd, big_items(prefix))
    then = limited_store.revision()
    limited_store.delete_prefix(prefix + "/k0")  # keys 0..9999: all of them
    limited_store.put(f"{prefix}/new", "1")
    now = limited_store.revision()
    count = PageCount()
    snap = limited_store.state_at(prefix + "/", then)
    assert snap.revision == now  # etcd's current revision, as before paging
    assert snap.cluster_id != 0
    assert len(snap.kvs) == 6000 and f"{prefix}/new" not in {kv.key for kv in snap.kvs}
    assert count.pages >= 6 and count.largest < GRPC_DEFAULT_LIMIT
    assert [kv.key for kv in limited_store.get_prefix(prefix + "/")[1]] == [f"{prefix}/new"]


def test_values_too_big_for_a_full_page_shrink_the_page(etcd: EtcdServer,
                                                        limited_store: EtcdStore,
                                                        prefix: str) -> None:
    """20 values of 300 KB: a first page of up to 1,000 keys is refused by the receive
    limit, so it is asked again with fewer keys; every key arrives once."""
    fill(etcd, big_items(prefix, count=20, size=300_000))
    count = PageCount()
    _, kvs = limited_store.get_prefix(prefix + "/")
    assert [kv.key for kv in kvs] == [f"{prefix}/k{i:06d}" for i in range(20)]
    assert all(len(kv.value) == 300_000 for kv in kvs)
    assert count.pages >= 5
    assert count.largest < GRPC_DEFAULT_LIMIT


def test_empty_prefix(limited_store: EtcdStore, prefix: str) -> None:
    revision, kvs = limited_store.get_prefix(prefix + "/")
    assert kvs == [] and revision > 0


class _CompactAfter(store_paging.PageStats):
    """Counts pages like PageStats; once `after` pages were read, writes a key and
    compacts etcd past the revision the read is pinned to."""

    def __init__(self, store: EtcdStore, key: str, after: int) -> None:
        self._requests = 0
        self.largest = 0
        self.store, self.key, self.after = store, key, after
        self.compacted_at = 0

    @property
    def requests(self) -> int:  # type: ignore[override]
        return self._requests

    @requests.setter
    def requests(self, value: int) -> None:
        self._requests = value
        if value == self.after and not self.compacted_at:
            self.compacted_at = self.store.put(self.key, "late")
            self.store.compact(self.compacted_at)


def test_compaction_between_pages_restarts_the_snapshot(etcd: EtcdServer,
                                                        limited_store: EtcdStore, prefix: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_paging, "PAGE_KEYS", 10)
    fill(etcd, ((f"{prefix}/k{i:03d}", str(i)) for i in range(100)))
    pinned = limited_store.revision()
    hook = _CompactAfter(store_for(etcd), f"{prefix}/late", after=3)
    monkeypatch.setattr(store_paging, "STATS", hook)
    snap = limited_store.snapshot(prefix + "/")
    assert hook.compacted_at > pinned
    assert snap.revision >= hook.compacted_at  # read again, at a revision after the compaction
    assert len(snap.kvs) == 101 and snap.kvs[-1].key == f"{prefix}/late"
    # a read at a revision of the caller's own is not restarted: it is gone
    with pytest.raises(Compacted):
        limited_store.state_at(prefix + "/", pinned)
    hook.store.close()
