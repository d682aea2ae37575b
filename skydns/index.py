"""The in-memory index `buoy dns` answers from: every SkyDNS record, looked up by name.

Entries are kept sorted by key path, so everything under a name is one contiguous
run found by bisection. An `Index` is immutable once built; a batch of changes
makes a new one from the old (`changed`: two list copies and a bisection per key,
no re-sorting, no re-parsing) that the watcher thread publishes with one
reference swap, so the listeners never see a half-updated index nor take a lock.

Lookups can record the key paths they read (`reads`): an answer depends on exactly
those paths and everything below them, which is what lets a change drop only the
cached answers it can alter (`touched_paths`).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import RecordError

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
    def path(self) -> str:
        """The key below the root, `example/b/a`: the sort order of the index."""
        return "/".join(self.labels)

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


Reads = set[str]  # key paths an answer read (each covers the path and everything below)
Op = tuple[str, Entry | None]  # (key path, new entry) or (key path, None) for a delete


def touched_paths(paths: Iterable[str]) -> set[str]:
    """Every read a change at one of `paths` can alter: the path and each ancestor."""
    out = {""}
    for path in paths:
        parts = path.split("/")
        out.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    return out


class Index:
    """Entries by name: the subtree under a name, or the exact key (CoreDNS etcd `get`)."""

    def __init__(self, entries: Iterable[Entry] = (), revision: int = 0) -> None:
        ordered = sorted(entries, key=lambda e: e.path)
        self._paths = [e.path for e in ordered]
        self._entries = ordered
        self.revision = revision

    def changed(self, ops: Sequence[Op], revision: int) -> Index:
        """A new index: this one with `ops` applied in order (this one is left as it is)."""
        new = Index(revision=revision)
        paths, entries = self._paths.copy(), self._entries.copy()
        for path, entry in ops:
            i = bisect_left(paths, path)
            found = i < len(paths) and paths[i] == path
            if entry is None:
                if found:
                    del paths[i], entries[i]
            elif found:
                entries[i] = entry
            else:
                paths.insert(i, path)
                entries.insert(i, entry)
        new._paths, new._entries = paths, entries
        return new

    def lookup(self, name: str, reads: Reads | None = None) -> tuple[Entry, ...] | None:
        """Every entry under `name` (key prefix `<path>/`), else the one at `<path>`.

        None means the name does not exist (NXDOMAIN); that is what CoreDNS's etcd
        plugin does with a prefix read followed by an exact read. A `*` or `any` label
        is a wildcard (CoreDNS `PathWithWildcard`): the read stops above the first one,
        and keys at least as long as the name whose other labels match are kept.
        """
        labels = name_labels(name)
        for i, label in enumerate(labels):
            if label in WILDCARDS:
                return self._wildcard(labels, i, reads)
        return self._read(labels, reads)

    def _read(self, labels: Labels, reads: Reads | None) -> tuple[Entry, ...] | None:
        path = "/".join(labels)
        if reads is not None:
            reads.add(path)
        paths = self._paths
        if labels:
            lo = bisect_left(paths, path + "/")
            hi = bisect_left(paths, path + "0", lo)  # "0" sorts right after "/"
        else:
            lo, hi = 0, len(paths)
        if lo < hi:
            return tuple(self._entries[lo:hi])
        i = bisect_left(paths, path)
        return (self._entries[i],) if i < len(paths) and paths[i] == path else None

    def _wildcard(self, labels: Labels, first: int,
                  reads: Reads | None) -> tuple[Entry, ...] | None:
        found = self._read(labels[:first], reads)
        if found is None:
            return None
        size = len(labels)
        return tuple(e for e in found if len(e.labels) >= size and all(
            want in WILDCARDS or want == have
            for want, have in zip(labels, e.labels, strict=False)))

    def exact(self, name: str, reads: Reads | None = None) -> Entry | None:
        """The entry at exactly this name's key (CoreDNS's exact read, for CNAME and PTR)."""
        path = "/".join(name_labels(name))
        if reads is not None:
            reads.add(path)
        i = bisect_left(self._paths, path)
        return self._entries[i] if i < len(self._paths) and self._paths[i] == path else None

    def exists(self, name: str, reads: Reads | None = None) -> bool:
        return self.lookup(name, reads) is not None

    def __len__(self) -> int:
        return len(self._paths)
