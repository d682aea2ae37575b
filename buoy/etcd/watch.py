"""The watch loop: a consistent mirror of one etcd prefix, never a gap.

It takes a snapshot at revision R and watches from R+1. After a disconnect it
resumes from the last revision seen + 1; after a compaction it takes a new
snapshot and hands over the difference from what consumers already saw. The
consumer gets each change once, in revision order, together with the whole
view as of that revision.

Before resuming after a disconnect it checks that the etcd it reaches still has
the history it was following: the keys under the prefix as of the last revision
seen must be exactly the view. An etcd that was recreated empty or restored from
an older snapshot fails that check (its revision is behind ours, its cluster id
changed, or its keys at our revision differ); the watcher then logs one WARNING,
takes a new snapshot and hands over the difference, the same path as after a
compaction. A watch response too large to receive takes the same path too.

Every read of the prefix (snapshot and history check) is paged at one revision by
the store, so a prefix of any size fits under gRPC's receive limit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from buoy.etcd.retry import Stopped, call_with_retry
from buoy.etcd.store import (
    Compacted,
    EtcdStore,
    FutureRevision,
    KeyValue,
    StoreError,
    StoreUnavailable,
    TooLarge,
    WatchBatch,
)

log = logging.getLogger(__name__)
START_RETRY = 0.5  # seconds between attempts to start a watch stream


@dataclass(frozen=True)
class Change:
    """A key put or deleted; `value` is the new value (put) or the last one (delete)."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int
    lease: int = 0


# (changes, the whole view after them, the revision the view is at, resync?)
ChangeHandler = Callable[[Sequence[Change], Mapping[str, KeyValue], int, bool], None]


def diff_views(old: Mapping[str, KeyValue], new: Mapping[str, KeyValue],
               revision: int) -> list[Change]:
    """The changes that turn `old` into `new` (pure; used after a compaction)."""
    changes = [Change("delete", k, kv.value, revision, kv.lease)
               for k, kv in sorted(old.items()) if k not in new]
    changes += [Change("put", k, kv.value, kv.mod_revision, kv.lease)
                for k, kv in sorted(new.items())
                if k not in old or _differs(old[k], kv)]
    return changes


def _differs(a: KeyValue, b: KeyValue) -> bool:
    # The revision alone is not enough across a replaced etcd: a rebuilt history can
    # reuse a revision number for another value or lease.
    return (a.mod_revision, a.value, a.lease) != (b.mod_revision, b.value, b.lease)


def history_problem(view: Mapping[str, KeyValue], revision: int, cluster_id: int,
                    then: Mapping[str, KeyValue] | None, etcd_revision: int,
                    etcd_cluster_id: int) -> str | None:
    """Why the etcd we reach is not the one whose history `view` follows, or None (pure).

    `then` is the prefix as of `revision` as etcd reports it now (None: etcd has not
    reached `revision`). The same history has the same keys there, each with the same
    value, mod revision and lease; a rebuilt one differs at least in its leases.
    """
    if then is None:
        return (f"its revision {etcd_revision} is behind the {revision} already seen "
                f"(recreated or restored from an older snapshot)")
    if cluster_id and etcd_cluster_id and etcd_cluster_id != cluster_id:
        return f"its cluster id changed from {cluster_id:x} to {etcd_cluster_id:x}"
    missing = len(view.keys() - then.keys())
    extra = len(then.keys() - view.keys())
    changed = sum(1 for k, kv in view.items() if k in then and _differs(kv, then[k]))
    if missing or extra or changed:
        return (f"the keys it holds as of revision {revision} differ from the ones seen "
                f"({missing} missing, {extra} unknown, {changed} changed): another history")
    return None


class QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose warnings are debug lines (a second watcher of the same outage)."""

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        self.debug(msg, *args, **kwargs)  # type: ignore[arg-type]


Log = logging.Logger | QuietLog


class PrefixWatcher:
    """Mirror `prefix` into `view` and report every change to `handler`."""

    def __init__(self, store: EtcdStore, prefix: str, handler: ChangeHandler,
                 stop: threading.Event, *, max_wait: float = 2.0, quiet: bool = False) -> None:
        self.store = store
        # An agent with several watchers on one etcd warns through its main one; a
        # `quiet` watcher says the same things at DEBUG (replacements at INFO).
        self.log: Log = QuietLog(log) if quiet else log
        self.replaced_level = logging.INFO if quiet else logging.WARNING
        self.prefix = prefix
        self.handler = handler
        self.stop = stop
        self.max_wait = max_wait
        self.view: dict[str, KeyValue] = {}
        self._view_lock = threading.Lock()  # `copy_view` from other threads
        self.revision = 0
        self.cluster_id = 0
        self.synced = threading.Event()
        self.restarts = 0
        self.replacements = 0  # times the etcd behind the watch was found replaced
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=f"watch:{self.prefix}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def copy_view(self) -> dict[str, KeyValue] | None:
        """A copy of the view as of the last event applied, safe to take from any thread;
        None before the first snapshot."""
        if not self.synced.is_set():
            return None
        with self._view_lock:
            return dict(self.view)

    def run(self) -> None:
        try:
            self._snapshot()
            while not self.stop.is_set():
                if self._follow():
                    self._check_history()
        except Stopped:
            pass

    def _snapshot(self) -> None:
        snap = call_with_retry(
            lambda: self.store.snapshot(self.prefix), stop=self.stop,
            what=f"snapshot prefix={self.prefix}", log=self.log, max_wait=self.max_wait)
        revision = snap.revision
        new = {kv.key: kv for kv in snap.kvs}
        changes = diff_views(self.view, new, revision)
        with self._view_lock:
            self.view = new
        self.revision = revision
        self.cluster_id = snap.cluster_id
        log.info("snapshot prefix=%s revision=%d keys=%d changes=%d",
                 self.prefix, revision, len(new), len(changes))
        self.handler(changes, self.view, revision, True)
        self.synced.set()

    def _check_history(self) -> None:
        """After a disconnect: resume only on the same history, else re-snapshot."""
        try:
            snap = call_with_retry(
                lambda: self.store.state_at(self.prefix, self.revision), stop=self.stop,
                what=f"watch prefix={self.prefix} history check at revision={self.revision}",
                log=self.log, max_wait=self.max_wait, retry_on=(StoreUnavailable,))
            then: dict[str, KeyValue] | None = {kv.key: kv for kv in snap.kvs}
            etcd_revision, etcd_cluster = snap.revision, snap.cluster_id
        except FutureRevision:
            then, etcd_revision, etcd_cluster = None, self._current_revision(), 0
        except Compacted as exc:
            self._on_compacted(exc)
            return
        except StoreError as exc:  # refused: resume and let the watch report it
            self.log.warning("watch prefix=%s history check refused error=%s", self.prefix, exc)
            return
        problem = history_problem(self.view, self.revision, self.cluster_id, then,
                                  etcd_revision, etcd_cluster)
        if problem is None:
            return
        self.restarts += 1
        self.replacements += 1
        log.log(self.replaced_level, "watch prefix=%s etcd was replaced: %s; taking a new "
                "snapshot and handing over the difference (keys=%d seen)", self.prefix, problem,
                len(self.view))
        self._snapshot()

    def _current_revision(self) -> int:
        try:
            return self.store.revision()
        except StoreError:
            return -1

    def _follow(self) -> bool:
        """Watch from revision+1 until the stream breaks (True) or a re-snapshot (False)."""
        inbox: queue.Queue[WatchBatch | StoreError] = queue.Queue()
        try:
            cancel = self.store.watch_prefix(self.prefix, self.revision + 1, inbox.put)
        except Compacted as exc:
            self._on_compacted(exc)
            return False
        except StoreError as exc:
            self.log.warning("watch prefix=%s start failed at revision=%d, retrying in %.1fs "
                        "error=%s", self.prefix, self.revision, START_RETRY, exc)
            if self.stop.wait(START_RETRY):
                raise Stopped(self.prefix) from None
            return True  # etcd went away before the watch started: check it again
        try:
            while not self.stop.is_set():
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, Compacted):
                    self._on_compacted(item)
                    return False
                if isinstance(item, TooLarge):
                    self.restarts += 1
                    self.log.warning("watch prefix=%s revision=%d: a watch response was too "
                                     "large to receive; taking a new snapshot (in pages) and "
                                     "handing over the difference error=%s",
                                     self.prefix, self.revision, item)
                    self._snapshot()
                    return False
                if isinstance(item, StoreError):
                    self.restarts += 1
                    self.log.warning("watch prefix=%s broke at revision=%d; resuming once etcd "
                                "answers and still has that history error=%s",
                                self.prefix, self.revision, item)
                    self.stop.wait(0.1)
                    return True
                self._apply(item)
        finally:
            cancel()
        return False

    def _on_compacted(self, exc: Compacted) -> None:
        self.restarts += 1
        self.log.warning("watch prefix=%s revision=%d compacted (up to %d); taking a new snapshot",
                    self.prefix, self.revision, exc.compact_revision)
        self._snapshot()

    def _apply(self, batch: WatchBatch) -> None:
        changes: list[Change] = []
        with self._view_lock:
            for ev in batch.events:
                if ev.revision <= self.revision:
                    continue  # already seen (a resumed stream may repeat the boundary)
                if ev.kind == "put":
                    self.view[ev.key] = KeyValue(ev.key, ev.value, ev.revision,
                                                 ev.create_revision or ev.revision, ev.lease,
                                                 ev.version)
                    changes.append(Change("put", ev.key, ev.value, ev.revision, ev.lease))
                else:
                    old = self.view.pop(ev.key, None)
                    changes.append(Change("delete", ev.key, old.value if old else b"",
                                          ev.revision, old.lease if old else 0))
        self.revision = max(self.revision, batch.revision)
        if changes:
            self.handler(changes, self.view, self.revision, False)
