"""The watch loop: a consistent mirror of one etcd prefix, never a gap.

It takes a snapshot at revision R and watches from R+1. After a disconnect it
resumes from the last revision seen + 1; after a compaction it takes a new
snapshot and hands over the difference from what consumers already saw. The
consumer gets each change once, in revision order, together with the whole
view as of that revision.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from buoy.retry import Backoff, Stopped, call_with_retry
from buoy.store import Compacted, EtcdStore, KeyValue, StoreError, WatchBatch

log = logging.getLogger(__name__)


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
                if k not in old or old[k].mod_revision != kv.mod_revision]
    return changes


class PrefixWatcher:
    """Mirror `prefix` into `view` and report every change to `handler`."""

    def __init__(self, store: EtcdStore, prefix: str, handler: ChangeHandler,
                 stop: threading.Event, *, max_wait: float = 2.0) -> None:
        self.store = store
        self.prefix = prefix
        self.handler = handler
        self.stop = stop
        self.max_wait = max_wait
        self.view: dict[str, KeyValue] = {}
        self.revision = 0
        self.synced = threading.Event()
        self.restarts = 0
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=f"watch:{self.prefix}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        try:
            self._snapshot()
            while not self.stop.is_set():
                self._follow()
        except Stopped:
            pass

    def _snapshot(self) -> None:
        revision, kvs = call_with_retry(
            lambda: self.store.get_prefix(self.prefix), stop=self.stop,
            what=f"snapshot prefix={self.prefix}", log=log, max_wait=self.max_wait)
        new = {kv.key: kv for kv in kvs}
        changes = diff_views(self.view, new, revision)
        self.view = new
        self.revision = revision
        log.info("snapshot prefix=%s revision=%d keys=%d changes=%d",
                 self.prefix, revision, len(new), len(changes))
        self.handler(changes, self.view, revision, True)
        self.synced.set()

    def _follow(self) -> None:
        """Watch from revision+1 until the stream breaks; then return to resume."""
        inbox: queue.Queue[WatchBatch | StoreError] = queue.Queue()
        backoff = Backoff(self.stop, max_wait=self.max_wait)
        cancel = None
        while cancel is None:
            try:
                cancel = self.store.watch_prefix(self.prefix, self.revision + 1, inbox.put)
            except Compacted as exc:
                self._on_compacted(exc)
            except StoreError as exc:
                log.warning("watch prefix=%s start failed attempt=%d error=%s",
                            self.prefix, backoff.failures + 1, exc)
                if not backoff.wait():
                    raise Stopped(self.prefix) from None
        try:
            while not self.stop.is_set():
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, Compacted):
                    self._on_compacted(item)
                    return
                if isinstance(item, StoreError):
                    self.restarts += 1
                    log.warning("watch prefix=%s broke at revision=%d, resuming error=%s",
                                self.prefix, self.revision, item)
                    self.stop.wait(0.1)
                    return
                self._apply(item)
        finally:
            cancel()

    def _on_compacted(self, exc: Compacted) -> None:
        self.restarts += 1
        log.warning("watch prefix=%s revision=%d compacted (up to %d); taking a new snapshot",
                    self.prefix, self.revision, exc.compact_revision)
        self._snapshot()

    def _apply(self, batch: WatchBatch) -> None:
        changes: list[Change] = []
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
