"""Watcher changes → a new Index, published with the key paths the changes touched."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import KeyValue
from buoy.etcd.watch import Change
from buoy.skydns.index import Entry, Index, Op, parse_entry, touched_paths

log = logging.getLogger(__name__)

# publish(index, touched): `touched` is the set of read paths the changes can alter
# (None: anything may have changed, e.g. after a new snapshot).
Publish = Callable[[Index, "set[str] | None"], None]


class IndexBuilder:
    """Applies watcher changes to the index and publishes each new version.

    Parsing happens once per put, so a malformed value is logged once (per revision
    written) and skipped; the other records are unaffected. A batch of changes is
    applied to the last index (`Index.changed`); a resync (new snapshot) rebuilds it.
    """

    def __init__(self, keys: KeyLayout, publish: Publish,
                 track_lease: Callable[[int], None] | None = None,
                 retain_leases: Callable[[set[int]], None] | None = None) -> None:
        self.keys = keys
        self.publish = publish
        self.track_lease = track_lease
        self.retain_leases = retain_leases
        self.parsed: dict[str, Entry] = {}
        self.index: Index | None = None
        self.rejected = 0
        self._held: Counter[int] = Counter()  # lease → records holding it

    def handle(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
               resync: bool) -> None:
        """A `PrefixWatcher` handler (runs on the watcher thread)."""
        ops: list[Op] = []
        released: set[int] = set()  # leases a record let go of
        for change in changes:
            path = change.key[len(self.keys.skydns_root):]
            old = self.parsed.pop(change.key, None)
            if old is not None and old.lease:
                self._held[old.lease] -= 1
                released.add(old.lease)
            if change.kind == "delete":
                ops.append((path, None))
                continue
            try:
                entry = parse_entry(self.keys, change.key, change.value, change.lease)
            except ValueError as exc:
                self.rejected += 1
                log.warning("skipping malformed skydns record key=%s revision=%d error=%s",
                            change.key, change.revision, exc)
                ops.append((path, None))
                continue
            if entry.lease and self.track_lease is not None:
                self.track_lease(entry.lease)
            self.parsed[change.key] = entry
            if entry.lease:
                self._held[entry.lease] += 1
            ops.append((entry.path, entry))
        if resync:
            self._held = Counter(e.lease for e in self.parsed.values() if e.lease)
        # only a lease no record holds any more is forgotten: a change costs what it touches
        gone = {lease for lease in released if self._held.get(lease, 0) <= 0}
        for lease in gone:
            self._held.pop(lease, None)
        if (gone or resync) and self.retain_leases is not None:
            self.retain_leases(set(self._held))
        if resync or self.index is None:
            self.index = Index(self.parsed.values(), revision)
            self.publish(self.index, None)
        else:
            self.index = self.index.changed(ops, revision)
            self.publish(self.index, touched_paths(path for path, _ in ops))
        log.debug("index published revision=%d records=%d changes=%d resync=%s",
                  revision, len(self.parsed), len(ops), resync)
