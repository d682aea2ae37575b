"""The announce loop: keep the record alive, follow the health check, withdraw on stop."""

from __future__ import annotations

import logging
import threading
import time

from announce.check import CheckState, probe
from announce.config import AnnounceConfig
from buoy.health import Health, Metric, loop_metrics, records
from buoy.keys import KeyLayout
from buoy.lease import LeaseKeeper
from buoy.signals import stop_on_signals
from buoy.store import EtcdStore

log = logging.getLogger(__name__)


class Announcer:
    """Owns one announce key under a lease kept by a LeaseKeeper."""

    def __init__(self, config: AnnounceConfig, store: EtcdStore, keys: KeyLayout,
                 health: Health | None = None) -> None:
        self.config = config
        self.store = store
        self.key = keys.announce_key(config.path, config.record.id)
        self.value = config.record.to_json()
        self.stop = threading.Event()
        self.keeper = LeaseKeeper(store, config.ttl, self.stop, interval=config.interval,
                                  name=f"announce id={config.record.id}")
        self.health = health or Health("announce")
        self.health.add_metrics(self._metrics)
        self.health.add_details(lambda: {"key": self.key, "announced": bool(self.keeper.owned())})

    def _metrics(self) -> list[Metric]:
        return [records("announce", len(self.keeper.owned())), *loop_metrics(keepers=[self.keeper])]

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; then revoke, drain and return 0."""
        stop_on_signals(self.stop, verb="withdrawing")
        rec = self.config.record
        log.info("announce key=%s port=%d type=%s check=%s", self.key, rec.port, rec.type,
                 rec.check or "-")
        if rec.check is None:
            self.keeper.set(self.key, self.value)
        self.keeper.start()
        if rec.check is not None:
            self._check_loop(rec.check)
        else:
            self.stop.wait()
        return self._shutdown()

    def _check_loop(self, check: str) -> None:
        state = CheckState(self.config.check_failures)
        while not self.stop.is_set():
            ok = probe(self.config.record.port, check, self.config.check_timeout)
            if state.observe(ok):
                if state.up:
                    log.info("check passed; announcing key=%s", self.key)
                    self.keeper.set(self.key, self.value)
                else:
                    log.warning("check failed %d times; withdrawing key=%s", state.misses,
                                self.key)
                    self.health.error(f"check {check} failed {state.misses} times; withdrawn")
                    self.keeper.remove(self.key)
            self.stop.wait(self.config.check_interval)

    def _shutdown(self) -> int:
        self.keeper.revoke()
        if self.config.drain > 0:
            log.info("withdrawn; draining for %.1fs", self.config.drain)
            time.sleep(self.config.drain)
        self.store.close()
        log.info("announce stopped")
        return 0

