"""The in-memory index `buoy dns` answers from: every SkyDNS record, looked up by name.

An `Index` is immutable once built; the watcher thread builds a new one for each
batch of changes and publishes it with one reference swap, so the asyncio loop
never sees a half-updated index and never takes a lock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from buoy.keys import KeyLayout
from buoy.records import RecordError
from buoy.store import KeyValue
from buoy.watch import Change
from skydns.records import SkyDNSRecord

log = logging.getLogger(__name__)

# Key labels may hold `_` (SRV-style names such as `_http._tcp`); nothing else that
# could not appear in a DNS name is let through to an answer.
KEY_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

Labels = tuple[str, ...]
WILDCARDS = frozenset({"*", "any"})  # query labels that match any key label (CoreDNS)


@dataclass(frozen=True)
class Entry:
    """One record: its key's labels (reversed name, as in etcd), the record, its lease."""

    key: str
    labels: Labels
    record: SkyDNSRecord
    lease: int = 0

    @property
    def domain(self) -> str:
        """The owner name the key spells (CoreDNS `msg.Domain`), with a trailing dot."""
        return ".".join(reversed([label for label in self.labels if label])) + "."

    @property
    def depth(self) -> int:
        """Slashes in the key below the root: CoreDNS groups by the shortest keys."""
        return len(self.labels)


def name_labels(name: str) -> Labels:
    """`a.b.example.` → `("example", "b", "a")`: the key path of a (lower-cased) name."""
    text = name.rstrip(".").lower()
    return tuple(reversed(text.split("."))) if text else ()


def parse_entry(keys: KeyLayout, key: str, value: bytes, lease: int = 0) -> Entry:
    """A key and value from etcd as an Entry; ValueError (RecordError) when malformed."""
    root = keys.skydns_root
    if not key.startswith(root):
        raise RecordError("key", f"must be under {root}", key)
    labels = tuple(key[len(root):].split("/"))
    # A trailing `/` is allowed (CoreDNS's zone-apex example uses `/skydns/local/skydns/`).
    body = labels[:-1] if len(labels) > 1 and labels[-1] == "" else labels
    if not body or not all(KEY_LABEL_RE.match(label) for label in body):
        raise RecordError("key", "must be DNS labels [a-z0-9_-] separated by /", key)
    return Entry(key, labels, SkyDNSRecord.from_json(value), lease)


class Index:
    """Entries by name: the subtree under a name, or the exact key (CoreDNS etcd `get`)."""

    def __init__(self, entries: Iterable[Entry], revision: int = 0) -> None:
        self.revision = revision
        self.entries: tuple[Entry, ...] = tuple(sorted(entries, key=lambda e: e.key))
        under: dict[Labels, list[Entry]] = {}
        exact: dict[Labels, Entry] = {}
        for entry in self.entries:
            for depth in range(len(entry.labels)):
                under.setdefault(entry.labels[:depth], []).append(entry)
            exact[entry.labels] = entry
        self._under = {k: tuple(v) for k, v in under.items()}
        self._exact = exact

    def lookup(self, name: str) -> tuple[Entry, ...] | None:
        """Every entry under `name` (key prefix `<path>/`), else the one at `<path>`.

        None means the name does not exist (NXDOMAIN); that is what CoreDNS's etcd
        plugin does with a prefix read followed by an exact read. A `*` or `any` label
        is a wildcard (CoreDNS `PathWithWildcard`): the read stops above the first one,
        and keys at least as long as the name whose other labels match are kept.
        """
        labels = name_labels(name)
        for i, label in enumerate(labels):
            if label in WILDCARDS:
                return self._wildcard(labels, i)
        return self._read(labels)

    def _read(self, labels: Labels) -> tuple[Entry, ...] | None:
        found = self._under.get(labels)
        if found:
            return found
        one = self._exact.get(labels)
        return (one,) if one else None

    def _wildcard(self, labels: Labels, first: int) -> tuple[Entry, ...] | None:
        found = self._read(labels[:first])
        if found is None:
            return None
        size = len(labels)
        return tuple(e for e in found if len(e.labels) >= size and all(
            want in WILDCARDS or want == have for want, have in zip(labels, e.labels, strict=False)))

    def exact(self, name: str) -> Entry | None:
        """The entry at exactly this name's key (CoreDNS's exact read, for CNAME and PTR)."""
        return self._exact.get(name_labels(name))

    def exists(self, name: str) -> bool:
        return self.lookup(name) is not None

    def __len__(self) -> int:
        return len(self.entries)


class IndexBuilder:
    """Applies watcher changes to the parsed entries and publishes a new Index.

    Parsing happens once per put, so a malformed value is logged once (per revision
    written) and skipped; the other records are unaffected.
    """

    def __init__(self, keys: KeyLayout, publish: Callable[[Index], None],
                 track_lease: Callable[[int], None] | None = None,
                 retain_leases: Callable[[set[int]], None] | None = None) -> None:
        self.keys = keys
        self.publish = publish
        self.track_lease = track_lease
        self.retain_leases = retain_leases
        self.parsed: dict[str, Entry] = {}
        self.rejected = 0

    def handle(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
               resync: bool) -> None:
        """A `PrefixWatcher` handler (runs on the watcher thread)."""
        for change in changes:
            if change.kind == "delete":
                self.parsed.pop(change.key, None)
                continue
            try:
                entry = parse_entry(self.keys, change.key, change.value, change.lease)
            except ValueError as exc:
                self.parsed.pop(change.key, None)
                self.rejected += 1
                log.warning("skipping malformed skydns record key=%s revision=%d error=%s",
                            change.key, change.revision, exc)
                continue
            if entry.lease and self.track_lease is not None:
                self.track_lease(entry.lease)
            self.parsed[change.key] = entry
        if self.retain_leases is not None:
            self.retain_leases({e.lease for e in self.parsed.values() if e.lease})
        self.publish(Index(self.parsed.values(), revision))
        log.debug("index published revision=%d records=%d resync=%s",
                  revision, len(self.parsed), resync)
