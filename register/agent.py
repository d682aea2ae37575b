"""The register loop: announces and Docker events in, service and SkyDNS records out.

Three threads feed one inbox: the announce watcher, the Docker event follower
and (through timeouts) the resync clock. One loop thread owns all state, so the
decisions never race. Every record goes under one lease (`keeper`); the
announces register writes for label-only containers go under a second one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence

from buoy.etcd.keys import KeyLayout
from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.store import EtcdStore, KeyValue, StoreError
from buoy.etcd.watch import Change, PrefixWatcher
from buoy.ops.health import Health
from buoy.register.config import RegisterConfig
from buoy.register.docker_api import DockerAPI, DockerUnavailable
from buoy.register.events import EventFollower
from buoy.register.mapping import ContainerInfo, Refusal, label_announce, shared_hostnames
from buoy.register.metrics import register_metrics
from buoy.register.notes import AnnounceCache, OnceLog
from buoy.register.owned import OwnedKeys, reconcile
from buoy.register.reconcile import (
    desired_state,
    keeper_changes,
    status_entries,
)
from buoy.signals import stop_on_signals

log = logging.getLogger(__name__)
RELIST_RETRY = 1.0
# Leases are refreshed at least this often (seconds), so a lost lease (etcd rebuilt
# or restored) is noticed, re-granted and its keys put back within two seconds.
REFRESH_MAX = 2.0


class Register:
    """One register process: owns this host's /services and /skydns instance records."""

    def __init__(self, config: RegisterConfig, store: EtcdStore, keys: KeyLayout,
                 health: Health | None = None) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.stop = threading.Event()
        interval = min(config.ttl / 3, REFRESH_MAX)
        self.keeper = LeaseKeeper(store, config.ttl, self.stop, interval=interval,
                                  name="register")
        self.label_keeper = LeaseKeeper(store, config.ttl, self.stop, interval=interval,
                                        name="register-labels")
        self.owned = OwnedKeys(store, (self.keeper, self.label_keeper))
        self.inbox: queue.Queue[tuple[object, ...]] = queue.Queue()
        self.watcher = PrefixWatcher(store, keys.announce_root, self._on_announces, self.stop)
        # What register writes is watched too, so a key deleted behind its back is put back.
        self.own_watchers = [PrefixWatcher(store, root, self._on_own_keys, self.stop,
                                           quiet=True)
                             for root in (keys.services_root, keys.skydns_root, keys.status_root)]
        self.docker = DockerAPI(config.docker_host)
        self.follower = EventFollower(DockerAPI(config.docker_host),
                                      lambda item: self.inbox.put(item), self.stop)
        self.containers: dict[str, ContainerInfo] = {}
        self.docker_synced = False
        self.announce_view: Mapping[str, KeyValue] = {}
        self._log_once = OnceLog()
        self._parsed = AnnounceCache(keys, self._log_once)
        self.reconciles = 0
        self.puts = 0
        self.deletes = 0
        self.refusals = 0
        self._view_revision = 0
        self._full_pending = True  # the reconcile at start waits for both sources
        self._resynced = False  # a watcher took a new snapshot since the last sync
        self.health = health or Health("register")
        self.health.add_metrics(lambda: register_metrics(self))
        self.health.add_details(lambda: {"docker_synced": self.docker_synced,
                                         "containers": len(self.containers)})

    # lifecycle -------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; records survive the exit unless --deregister-on-exit."""
        if install_signals:
            stop_on_signals(self.stop)
        c = self.config
        log.info("register host=%s ip=%s ttl=%d resync=%.0fs internal=%s zone=%s docker=%s",
                 c.host_id, c.host_ip, c.ttl, c.resync, c.network or "-", c.zone, c.docker_host)
        self.keeper.start()
        self.label_keeper.start()
        self.follower.start()  # subscribes first, then asks the loop to list containers
        self.watcher.start()
        for watcher in self.own_watchers:
            watcher.start()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.stop.set()
        self.follower.close()
        if self.config.deregister_on_exit:
            self.keeper.revoke()
            self.label_keeper.revoke()
        else:
            log.info("exiting without revoking; records live until their TTL ttl=%d",
                     self.config.ttl)
        self.docker.close()
        self.store.close()
        log.info("register stopped")


    # the loop ----------------------------------------------------------------------------
    def _on_announces(self, changes: Sequence[Change], view: Mapping[str, KeyValue],
                      revision: int, resync: bool) -> None:
        self.inbox.put(("announces", dict(view), revision))
        self._on_own_keys(changes, view, revision, resync)

    def _on_own_keys(self, changes: Sequence[Change], _view: Mapping[str, KeyValue],
                     _revision: int, resync: bool) -> None:
        gone = [c.key for c in changes if c.kind == "delete"]
        if gone:
            self.inbox.put(("deleted", gone))
        if resync:  # a new snapshot (compaction, or etcd replaced): reconcile with etcd now
            self.inbox.put(("resync",))

    def _loop(self) -> None:
        next_resync = time.monotonic() + self.config.resync
        relist_at: float | None = None
        while not self.stop.is_set():
            wake = min(next_resync, relist_at or next_resync)
            try:
                items = [self.inbox.get(timeout=max(0.0, min(0.5, wake - time.monotonic())))]
            except queue.Empty:
                items = []
            while True:  # coalesce a burst (100 containers starting) into one sync
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            changed = False
            for item in items:
                if item[0] == "relist":
                    relist_at = time.monotonic()
                else:
                    changed |= self._apply(item)
            if not self.docker_synced and relist_at is None:
                relist_at = time.monotonic() + RELIST_RETRY
            full = time.monotonic() >= next_resync
            if full or (relist_at is not None and time.monotonic() >= relist_at):
                if self._relist():
                    relist_at = None
                    changed, full = True, True
                else:
                    relist_at = time.monotonic() + RELIST_RETRY
            if full:
                next_resync = time.monotonic() + self.config.resync
            if changed or full:
                self._sync(full)

    def _apply(self, item: tuple[object, ...]) -> bool:
        kind = item[0]
        if kind == "resync":
            self._resynced = True
            return True
        if kind == "deleted":
            self.owned.deleted(item[1])  # type: ignore[arg-type]
            return True
        if kind == "announces":
            self.announce_view = item[1]  # type: ignore[assignment]
            self._view_revision = int(item[2])  # type: ignore[call-overload]
            return True
        container_id = str(item[1])
        if kind == "gone":
            return self.containers.pop(container_id, None) is not None
        try:
            info = self.docker.inspect(container_id)
        except DockerUnavailable as exc:
            log.warning("docker inspect failed id=%s error=%s; relisting later",
                        container_id[:12], exc)
            self.health.error(f"docker inspect failed: {exc}")
            self.inbox.put(("relist",))
            return False
        if info is None:
            return self.containers.pop(container_id, None) is not None
        self.containers[container_id] = info
        return True

    def _relist(self) -> bool:
        try:
            running = self.docker.running()
        except DockerUnavailable as exc:
            log.warning("docker list failed; keeping last known containers=%d error=%s",
                        len(self.containers), exc)
            self.health.error(f"docker list failed: {exc}")
            return False
        self.containers = {c.id: c for c in running}
        if not self.docker_synced:
            log.info("docker listed containers=%d", len(self.containers))
        self.docker_synced = True
        return True

    # decisions → keys --------------------------------------------------------------------
    def _sync(self, full: bool) -> None:
        labels_before = self.label_keeper.owned()
        full, self._resynced = full or self._resynced, False
        self._full_pending |= full
        if not self.docker_synced or not self.watcher.synced.is_set():
            self._sync_labels()
            return  # an empty view here is "not known yet", not "nothing runs"
        desired = desired_state(self.keys, self._parsed.parse(self.announce_view), self.containers.values(),
                                self.config.placement, self.config.zone, self.config.ttl)
        self._log_once("refuse", desired.refusals)
        self.refusals = len(desired.refusals)
        entries = {**desired.entries,
                   **status_entries(self.keys, desired.verdicts, self.config.host_id)}
        changes = keeper_changes(self.keeper.owned(), entries)
        for key in changes.delete:
            log.info("withdraw key=%s", key)
            self.keeper.remove(key)
        for key, value in changes.put.items():
            log.info("register key=%s", key)
            self.keeper.set(key, value)
        self.puts += len(changes.put)
        self.deletes += len(changes.delete)
        # after the records: a container gone leaves routing first, its label announce next
        self._sync_labels()
        self.health.set_revision(self._view_revision)
        if full:  # label announces put at an earlier sync must be in the view by now
            self.owned.compare(self.label_keeper, self.announce_view, set(labels_before))
        self.owned.repair()
        if self._full_pending:
            self._full_pending = not self._reconcile(entries)

    def _sync_labels(self) -> None:
        wanted: dict[str, str] = {}
        reasons: dict[str, str] = {}
        shared = shared_hostnames(self.containers.values())
        for c in self.containers.values():
            result = label_announce(c, c.hostname.lower() in shared)
            if isinstance(result, Refusal):
                reasons[c.id] = result.reason
            elif result is not None:
                path, record = result
                wanted[self.keys.announce_key(path, record.id)] = record.to_json()
        self._log_once("labels", reasons)
        changes = keeper_changes(self.label_keeper.owned(), wanted)
        for key in changes.delete:
            self.label_keeper.remove(key)
        for key, value in changes.put.items():
            log.info("announce for labels key=%s", key)
            self.label_keeper.set(key, value)

    def _reconcile(self, desired: Mapping[str, str]) -> bool:
        """Re-put drifted records, delete stale ones of this host: compared with what the
        own watches mirror (etcd is read only for the differences), or with etcd itself
        while they have no snapshot yet."""
        services, skydns = (w.copy_view() for w in self.own_watchers[:2])
        mirror = None if services is None or skydns is None else (services.values(), skydns.values())
        try:
            todo = reconcile(self.store, self.keys, self.config.host_id, self.config.zone,
                             self.keeper.lease_id, desired, mirror)
        except StoreError as exc:
            log.warning("reconcile failed; trying again with the next change or within "
                        "%.0fs (resync) error=%s", self.config.resync, exc)
            self.health.error(f"reconcile failed: {exc}")
            return False
        self.reconciles += 1
        log.info("reconcile done desired=%d put=%d deleted=%d", len(desired), len(todo.put),
                 len(todo.delete))
        return True
