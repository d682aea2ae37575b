"""The lease keeper: one lease, the keys it owns, and their survival across outages.

It grants a lease, refreshes it every `interval` (TTL/3 by default), notices
when etcd no longer knows it, and then grants a new one and puts every owned
key again. While etcd is unreachable it keeps retrying with backoff, never
longer than `interval` between tries, so the keys are back within one interval
after etcd returns.

Refreshes go through `EtcdStore.refresh`, which sends them on the store's one
keep-alive stream (every keeper of a store shares it) rather than opening a
stream per refresh; a broken stream is opened again on the next try.
"""

from __future__ import annotations

import logging
import threading
import time

from buoy.etcd.retry import Backoff, Stopped, call_with_retry
from buoy.etcd.store import EtcdStore, StoreError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Keeps `owned` keys alive under one lease of `ttl` seconds."""

    def __init__(self, store: EtcdStore, ttl: int, stop: threading.Event, *,
                 interval: float | None = None, name: str = "lease") -> None:
        self.store = store
        self.ttl = ttl
        self.interval = interval if interval is not None else ttl / 3
        self.stop = stop
        self.name = name
        self.lease_id: int | None = None
        self.last_refresh = 0.0
        self.grants = 0
        self._owned: dict[str, str] = {}
        self._dirty: set[str] = set()      # owned keys whose last put failed
        self._deleting: set[str] = set()   # removed keys whose delete failed
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None

    # ownership --------------------------------------------------------------------------
    def set(self, key: str, value: str) -> None:
        """Own `key` with `value`; written now if the lease is live, else on re-grant."""
        with self._lock:
            if self._owned.get(key) == value and self.lease_id is not None:
                return
            self._owned[key] = value
            self._deleting.discard(key)
            lease = self.lease_id
        if lease is not None:
            self._put(key, value, lease)

    def remove(self, key: str) -> None:
        """Stop owning `key` and delete it; a failed delete is retried every interval."""
        with self._lock:
            if self._owned.pop(key, None) is None:
                return
            self._dirty.discard(key)
            self._deleting.add(key)
        self._delete(key)

    def _delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:
            log.warning("%s delete key=%s failed, will retry error=%s", self.name, key, exc)
            return
        with self._lock:
            self._deleting.discard(key)

    def owned(self) -> dict[str, str]:
        with self._lock:
            return dict(self._owned)

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.lease_id is None:
                    self._grant()
                self._flush_dirty()
                if not self._sleep(self.interval):
                    break
                self._refresh()
        except Stopped:
            pass

    def revoke(self) -> None:
        """Revoke the lease so every owned key goes at once (on shutdown)."""
        with self._lock:
            lease, self.lease_id = self.lease_id, None
            self._owned.clear()
            self._dirty.clear()
            self._deleting.clear()
        if lease is None:
            return
        try:
            self.store.revoke(lease)
            log.info("%s revoked lease=%x", self.name, lease)
        except StoreError as exc:
            log.warning("%s revoke failed; keys expire with the TTL error=%s", self.name, exc)

    # internals -------------------------------------------------------------------------
    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False when shutdown was requested.

        Keys whose put failed are retried on the next tick, so they are back within
        one interval; a single wait keeps an idle keeper from waking the CPU.
        """
        return not self.stop.wait(seconds)

    def _put(self, key: str, value: str, lease: int) -> None:
        try:
            self.store.put(key, value, lease=lease)
            with self._lock:
                self._dirty.discard(key)
        except StoreError as exc:
            log.warning("%s put key=%s failed, will retry error=%s", self.name, key, exc)
            with self._lock:
                self._dirty.add(key)

    def _flush_dirty(self) -> None:
        with self._lock:
            pending = {k: self._owned[k] for k in self._dirty if k in self._owned}
            deleting = list(self._deleting)
            lease = self.lease_id
        if lease is not None:
            for key, value in pending.items():
                self._put(key, value, lease)
        for key in deleting:
            self._delete(key)
        if (pending and self._dirty) or (deleting and self._deleting):
            self.stop.wait(min(self.interval, 1.0))  # etcd is still refusing: do not spin

    def _grant(self) -> None:
        lease = call_with_retry(lambda: self.store.grant(self.ttl), stop=self.stop,
                                what=f"{self.name} grant", log=log, max_wait=self.interval)
        with self._lock:
            self.lease_id = lease
            self.grants += 1
        self.last_refresh = time.monotonic()
        log.info("%s granted lease=%x ttl=%d keys=%d", self.name, lease, self.ttl,
                 len(self._owned))
        for key, value in self.owned().items():
            def put(k: str = key, v: str = value) -> int:
                return self.store.put(k, v, lease=lease)
            try:
                call_with_retry(put, stop=self.stop, what=f"{self.name} put {key}", log=log,
                                max_wait=self.interval)
            except StoreError as exc:  # refused (not unreachable): say so, keep the rest
                log.error("%s put key=%s refused error=%s", self.name, key, exc)

    def _refresh(self) -> None:
        backoff = Backoff(self.stop, max_wait=min(self.interval, 2.0))
        while not self.stop.is_set():
            lease = self.lease_id
            if lease is None:
                return
            try:
                ttl = self.store.refresh(lease)
            except StoreError as exc:
                log.warning("%s refresh lease=%x failed attempt=%d error=%s",
                            self.name, lease, backoff.failures + 1, exc)
                if not backoff.wait():
                    return
                continue
            if ttl <= 0:
                log.warning("%s lease=%x lost; granting a new one and re-putting %d keys",
                            self.name, lease, len(self._owned))
                with self._lock:
                    if self.lease_id == lease:
                        self.lease_id = None
            else:
                self.last_refresh = time.monotonic()
            return
