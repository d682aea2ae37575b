"""The mass-removal guard: a removal that looks like losing a writer or etcd itself, and would
take most of a backend's servers away at once, is held until it has persisted for `confirm`
seconds.

It protects routing from transient blips: an etcd outage that lets a register's lease
expire, a wiped /services, or an etcd replaced by an empty one would otherwise empty every
backend at once. A graceful withdrawal is never held: keys deleted by their writers one at a
time (register removing a stopped container, a scale-down of several containers, a paused
one) apply at once. What counts as suspect (`suspect_deletes`) is a delete that shares its
etcd revision with other deletes (a lease expiring or revoked with many keys, a prefix
wiped) or a delete found by a new snapshot (after a compaction or etcd replaced).

The drop of a backend is its net loss of servers to suspect deletes,
`(before - after - graceful) / before`, where `before` is what is applied, `after` what is
wanted now and `graceful` the servers withdrawn gracefully, so replacing instances (new IDs
for old) is no drop. A backend that disappears entirely is a 100% drop. Additions are never
held: a held backend gets the wanted servers plus the suspect ones it would lose.
The decision (`decide`) is pure; `Guard` keeps the holds between applies and logs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from buoy.etcd.records import RecordError
from buoy.etcd.watch import Change
from buoy.listen.model import Backend, Pin, Routing, Server

# (service path, instance ID) → whether its removal is suspect
Suspect = Callable[[str, str], bool]


def every_removal(_path: str, _instance: str) -> bool:
    return True


def suspect_deletes(changes: Sequence[Change], resync: bool) -> list[str]:
    """The deleted keys that look like a lost writer or etcd, not a graceful withdrawal."""
    per_revision = Counter(c.revision for c in changes if c.kind == "delete")
    return [c.key for c in changes
            if c.kind == "delete" and (resync or per_revision[c.revision] > 1)]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    """A held removal: backend, servers applied and wanted, and since when (monotonic)."""

    backend: str
    before: int
    after: int
    since: float

    @property
    def drop(self) -> float:
        return 100.0 * (self.before - self.after) / self.before


@dataclass(frozen=True)
class Decision:
    routing: Routing  # what to apply now
    holds: dict[str, Hold] = field(default_factory=dict)  # still held after this decision
    started: tuple[Hold, ...] = ()
    released: tuple[Hold, ...] = ()  # persisted for `confirm`: applied now
    cleared: tuple[Hold, ...] = ()  # no longer a mass removal (the servers came back)


def decide(applied: Routing | None, wanted: Routing, holds: Mapping[str, Hold], now: float, *,
           max_drop: float, confirm: float, suspect: Suspect = every_removal) -> Decision:
    """What to apply: `wanted`, except that suspect mass removals younger than `confirm` keep
    their applied servers (and pins)."""
    if applied is None or confirm <= 0:
        return Decision(wanted, cleared=tuple(holds.values()))
    backends: dict[str, Backend] = {}  # filled at the first hold: without one, `wanted` applies
    pins: dict[str, Pin] = {}
    old_pins: dict[str, Pin] = {}
    kept: dict[str, Hold] = {}
    started, released = [], []
    for old in applied.backends:
        want = wanted.backend(old.name)
        if want is old:
            continue  # unchanged
        after = len(want.servers) if want is not None else 0
        before = len(old.servers)
        staying = {s.name for s in want.servers} if want is not None else set()
        lost = [s for s in old.servers if s.name not in staying]
        graceful = sum(1 for s in lost if not suspect(old.path, s.name))
        if not before or (before - after - graceful) * 100.0 <= max_drop * before:
            continue
        hold = holds.get(old.name)
        hold = Hold(old.name, before, after, hold.since if hold else now)
        if now - hold.since >= confirm:
            released.append(hold)
            continue
        if want is None and any(b.vhost == old.vhost if old.vhost else
                                b.bind_port == old.bind_port for b in wanted.backends):
            released.append(hold)  # another service took its host or port: it cannot stay
            continue
        if old.name not in holds:
            started.append(hold)
        kept[old.name] = hold
        if not backends:
            backends.update(wanted.by_name())
            pins.update((p.host, p) for p in wanted.pins)
            old_pins.update((p.host, p) for p in applied.pins)
        keep = tuple(s for s in lost if suspect(old.path, s.name))
        backends[old.name] = _with_removed(old, want, keep)
        for s in keep:
            host = f"{s.name}.{old.vhost}"
            if old.vhost and host in old_pins and host not in pins:
                pins[host] = old_pins[host]
    cleared = tuple(h for name, h in holds.items()
                    if name not in kept and name not in {r.backend for r in released})
    if not kept:
        return Decision(wanted, kept, tuple(started), tuple(released), cleared)
    routing = Routing(tuple(backends[n] for n in sorted(backends)),
                      tuple(pins[h] for h in sorted(pins)), wanted.errors)
    return Decision(routing, kept, tuple(started), tuple(released), cleared)


def _with_removed(old: Backend, want: Backend | None, keep: tuple[Server, ...]) -> Backend:
    """The wanted backend (or the old one, emptied) plus the held servers `keep`."""
    base = want if want is not None else replace(old, servers=())
    return replace(base, servers=tuple(sorted(base.servers + keep, key=lambda s: s.name)))


class Guard:
    """Keeps the holds between applies and logs each hold once, with backend and counts."""

    def __init__(self, max_drop: float, confirm: float,
                 clock: Callable[[], float] = time.monotonic,
                 parse_key: Callable[[str], tuple[str, str] | None] | None = None) -> None:
        self.max_drop = max_drop
        self.confirm = confirm
        self.clock = clock
        self.parse_key = parse_key  # etcd key → (service path, instance ID), None: not one
        self.holds: dict[str, Hold] = {}
        self.holds_total = 0
        self.suspects: dict[tuple[str, str], float] = {}  # suspect removals, since when

    def note(self, changes: Sequence[Change], resync: bool) -> None:
        """Remember which deletes were suspect; a put of the same key clears it."""
        if self.parse_key is None:
            return
        now = self.clock()
        for key in suspect_deletes(changes, resync):
            instance = self.parse_key(key)
            if instance is not None:
                self.suspects[instance] = now
        for c in changes:
            if c.kind == "put":
                instance = self.parse_key(c.key)
                if instance is not None:
                    self.suspects.pop(instance, None)
        # a suspect removal that was held has been applied by now (or never was one)
        stale = now - 2 * self.confirm - 1
        for instance in [i for i, t in self.suspects.items() if t < stale]:
            del self.suspects[instance]

    def _suspect(self, path: str, instance: str) -> bool:
        return self.parse_key is None or (path, instance) in self.suspects

    def filter(self, applied: Routing | None, wanted: Routing) -> Routing:
        d = decide(applied, wanted, self.holds, self.clock(), max_drop=self.max_drop,
                   confirm=self.confirm, suspect=self._suspect)
        for h in d.started:
            self.holds_total += 1
            log.warning("mass removal held backend=%s servers=%d->%d drop=%.0f%% max_drop=%.0f%% "
                        "confirm=%.1fs", h.backend, h.before, h.after, h.drop, self.max_drop,
                        self.confirm)
        for h in d.released:
            log.warning("mass removal applied backend=%s servers=%d->%d held=%.1fs", h.backend,
                        h.before, h.after, self.clock() - h.since)
        for h in d.cleared:
            log.info("mass removal hold cleared backend=%s servers=%d (the servers came back)",
                     h.backend, h.before)
        self.holds = d.holds
        return d.routing

    def deadline(self) -> float | None:
        """When the earliest hold is due (monotonic), or None without holds."""
        return min((h.since + self.confirm for h in self.holds.values()), default=None)

    def details(self) -> list[dict[str, object]]:
        now = self.clock()
        return [{"backend": h.backend, "servers_applied": h.before, "servers_wanted": h.after,
                 "held_for": round(now - h.since, 3),
                 "applies_in": round(max(0.0, h.since + self.confirm - now), 3)}
                for h in sorted(self.holds.values(), key=lambda h: h.backend)]


def parse_max_drop(text: str) -> float:
    """`50` or `50%` → 50.0 (0-100; 100 turns the guard off)."""
    rule = "must be a percentage from 0 to 100"
    try:
        value = float(str(text).strip().removesuffix("%"))
    except ValueError:
        raise RecordError("BUOY_MAX_DROP", rule, text) from None
    if not 0 <= value <= 100:
        raise RecordError("BUOY_MAX_DROP", rule, text)
    return value

