"""Server slots: each backend has a fixed set of `server` lines, filled and emptied at run time
(pure, no I/O).

HAProxy 2.6 treats a server created with `add server` differently from one in the config
file: it never reuses an idle backend connection, so every request opens a new one. listen
therefore renders every backend with spare slots (`server s<N> 0.0.0.0:0 ... disabled`),
fills a free slot with `set server addr/port` + `state ready`, and empties it with
`state drain` and then `maint`. Only a backend that runs out of free slots needs a reload,
which renders it with a quarter more room (at least two spare slots): each slot costs
HAProxy about 5 KB with two threads (docs/listen.md, Memory), 3,000 spare slots at 10,000
instances about 15 MB; less room would make a scale-up by a quarter cost a reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from buoy.listen.model import Routing

MIN_SLOTS = 4

# backend name → the instance ID held by each slot (None: free)
SlotTable = dict[str, list[str | None]]


def slot_count(instances: int) -> int:
    """Slots for a backend of `instances` servers: a quarter more (two at least), 4 at least."""
    return max(MIN_SLOTS, instances + max(2, (instances + 3) // 4))


def slot_name(index: int) -> str:
    return f"s{index + 1}"


def layout(routing: Routing, previous: Mapping[str, Sequence[str | None]]) -> SlotTable:
    """The slot tables for a reload: an instance keeps its slot when it still fits, so the
    same instance stays the same server across reloads; a table grows or shrinks to
    `slot_count` only when its size is out of bounds."""
    out: SlotTable = {}
    for b in routing.backends:
        ids = [s.name for s in b.servers]
        old = list(previous.get(b.name, ()))
        size = len(old) if len(ids) < len(old) <= 2 * slot_count(len(ids)) else slot_count(len(ids))
        table: list[str | None] = [None] * size
        wanted = set(ids)
        for i, iid in enumerate(old[:size]):
            if iid in wanted:
                table[i] = iid
        placed = {iid for iid in table if iid is not None}
        free = iter([i for i, iid in enumerate(table) if iid is None])
        for iid in ids:
            if iid not in placed:
                table[next(free)] = iid
        out[b.name] = table
    return out


def fits(table: Sequence[str | None], adding: Sequence[str]) -> bool:
    """Whether `adding` (instance IDs) fit in the free slots; an ID that still holds a slot
    (draining) takes that one back."""
    held = set(table)
    needed = sum(1 for iid in adding if iid not in held)
    return needed <= sum(1 for iid in table if iid is None)
