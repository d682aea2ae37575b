"""How long each record's lease has left, known without a store read per query.

The writers (register, listen) refresh their leases without touching the keys, so
no watch event tells us a lease was renewed. A small thread asks etcd for the
remaining time of each lease in use (there are few: one per writer) every
`interval` seconds and keeps a monotonic deadline; answers compute what is left
from that deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from buoy.store import EtcdStore, StoreError

log = logging.getLogger(__name__)


class LeaseClock:
    """lease id → monotonic deadline, refreshed in the background."""

    def __init__(self, store: EtcdStore, stop: threading.Event, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.stop = stop
        self.interval = interval
        self.clock = clock
        # Replaced, never mutated in place, so readers on other threads see a whole dict.
        self.deadlines: dict[int, float] = {}
        self._write = threading.Lock()  # two writers: the watcher thread and ours
        self._thread: threading.Thread | None = None

    def track(self, lease: int) -> None:
        """Learn a lease's deadline when a key holding it first arrives."""
        if lease and lease not in self.deadlines:
            self._fetch(lease)

    def retain(self, leases: set[int]) -> None:
        """Forget leases no record holds any more."""
        with self._write:
            if set(self.deadlines) - leases:
                self.deadlines = {k: v for k, v in self.deadlines.items() if k in leases}

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
            for lease in list(self.deadlines):
                self._fetch(lease, refresh=True)

    def _fetch(self, lease: int, refresh: bool = False) -> None:
        try:
            ttl = self.store.lease_ttl(lease)
        except StoreError as exc:
            # Keep the last deadline: etcd away is no reason to change answers.
            log.debug("lease ttl unknown lease=%x error=%s", lease, exc)
            return
        with self._write:
            if refresh and lease not in self.deadlines:
                return  # dropped by retain() while we asked etcd
            new = dict(self.deadlines)
            new[lease] = self.clock() + max(ttl, 0)
            self.deadlines = new
