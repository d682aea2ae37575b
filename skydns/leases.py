"""How long each record's lease has left, known without a store read per query.

The writers (register, listen) refresh their leases without touching the keys, so
no watch event tells us a lease was renewed. What we know of a lease is a
deadline: the time left that etcd last reported, counted down on our clock. A
refresh only ever moves the real deadline later, so ours is never too late and
TTLs from it never promise more than the lease holds.

Each lease is read again on a schedule of its own rather than every second: when
half of the longest time seen on it (about its granted TTL) has run out of our
deadline. A writer that refreshes at least that often (register and listen
refresh at a third of the TTL) costs one read per lease every few seconds, and
its TTLs never count down to zero while it lives; one that refreshes less often
is read every `interval` seconds (`--lease-poll`, the shortest gap) until its
deadline moves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from buoy.etcd.store import StoreError

log = logging.getLogger(__name__)


class LeaseSource(Protocol):
    def lease_ttl(self, lease_id: int) -> int: ...


class LeaseClock:
    """lease id → monotonic deadline, each refreshed when half its known life is used."""

    def __init__(self, store: LeaseSource, stop: threading.Event, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.stop = stop
        self.interval = interval
        self.clock = clock
        # Replaced, never mutated in place, so readers on other threads see a whole dict.
        self.deadlines: dict[int, float] = {}
        self._longest: dict[int, float] = {}  # the longest time left seen on each lease
        self._due: dict[int, float] = {}  # when each lease is read next
        self._write = threading.Lock()  # two writers: the watcher thread and ours
        self._thread: threading.Thread | None = None
        self.reads = 0  # lease reads asked of etcd so far

    def track(self, lease: int) -> None:
        """Learn a lease's deadline when a key holding it first arrives."""
        if lease and lease not in self.deadlines:
            self._fetch(lease)

    def retain(self, leases: set[int]) -> None:
        """Forget leases no record holds any more."""
        with self._write:
            if set(self.deadlines) - leases:
                self.deadlines = {k: v for k, v in self.deadlines.items() if k in leases}
                self._due = {k: v for k, v in self._due.items() if k in leases}
                self._longest = {k: v for k, v in self._longest.items() if k in leases}

    def remaining(self, lease: int, now: float | None = None) -> float | None:
        """Seconds left on `lease`; None when unknown (then the record's ttl alone counts)."""
        deadline = self.deadlines.get(lease)
        if deadline is None:
            return None
        return max(0.0, deadline - (self.clock() if now is None else now))

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="dns-leases", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll_due()

    def poll_due(self) -> None:
        """Read every lease whose turn has come; the maps are replaced once for all of them,
        so a round costs its reads, not a copy of every map per lease."""
        now = self.clock()
        self._fetch([lease for lease, due in list(self._due.items()) if due <= now],
                    refresh=True)

    def _fetch(self, leases: list[int] | int, refresh: bool = False) -> None:
        batch = leases if isinstance(leases, list) else [leases]
        if not batch:
            return
        read: dict[int, tuple[int, float]] = {}  # lease → (ttl, when it was read)
        failed: list[int] = []
        for lease in batch:
            self.reads += 1
            try:
                read[lease] = (max(self.store.lease_ttl(lease), 0), self.clock())
            except StoreError as exc:
                # Keep the last deadline: etcd away is no reason to change answers.
                log.debug("lease ttl unknown lease=%x error=%s", lease, exc)
                failed.append(lease)
        with self._write:
            longest, deadlines, due = dict(self._longest), dict(self.deadlines), dict(self._due)
            for lease in failed:
                if not refresh or lease in self.deadlines:
                    due[lease] = self.clock() + self.interval
            for lease, (ttl, now) in read.items():
                if refresh and lease not in self.deadlines:
                    continue  # dropped by retain() while we asked etcd
                longest[lease] = max(longest.get(lease, 0.0), float(ttl))
                deadlines[lease] = now + ttl
                due[lease] = now + max(self.interval, ttl - longest[lease] / 2)
            self._longest, self.deadlines, self._due = longest, deadlines, due
