"""CoreDNS's `group` rule (plugin/etcd/msg/service.go `Group`), on index entries.

The shortest keys that carry a group decide the group of the answer; then only
records of that group, or of none, are returned. When the shortest keys disagree,
grouping is off and every record is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from buoy.skydns.index import Entry


def group(entries: Sequence[Entry]) -> list[Entry]:
    if not entries:
        return []
    chosen = entries[0].record.group
    depth = entries[0].depth
    for entry in entries:
        if entry.depth < depth:
            if not entry.record.group:
                break
            depth = entry.depth
            chosen = entry.record.group
    if not chosen:
        return list(entries)
    out = []
    for entry in entries:
        name = entry.record.group
        if not name:
            out.append(entry)
            continue
        if entry.depth == depth and name != chosen:
            return list(entries)  # disagreement on the same level
        if name == chosen:
            out.append(entry)
    return out
