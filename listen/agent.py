"""The listen loop: watch /services, debounce, apply to HAProxy, advertise vhosts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from buoy.health import Health
from buoy.keys import KeyLayout
from buoy.lease import LeaseKeeper
from buoy.signals import stop_on_signals
from buoy.store import EtcdStore, KeyValue
from buoy.watch import Change, PrefixWatcher
from listen.apply import Applier, write_atomic
from listen.config import ListenConfig
from listen.guard import Guard
from listen.haproxy import HAProxy, HAProxyError
from listen.metrics import listen_metrics
from listen.model import Routing, build_routing, parse_view
from listen.render import Renderer
from skydns.records import SkyDNSRecord

log = logging.getLogger(__name__)


class Listener:
    """Owns the watchers, the applier and (when advertising) a lease for vhost records."""

    def __init__(self, config: ListenConfig, store: EtcdStore, keys: KeyLayout,
                 health: Health | None = None) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._views: dict[str, dict[str, KeyValue]] = {}
        self._first: float | None = None
        self._last = 0.0
        self._logged: set[tuple[str, int]] = set()
        self._errors: tuple[str, ...] = ()
        self._revision = 0  # the highest revision the watchers handed over
        self.counts = (0, 0)  # valid and malformed records in the last wanted()
        self.watchers = [PrefixWatcher(store, p, self._handler(p), self.stop)
                         for p in config.watch_prefixes]
        self.haproxy = HAProxy(config.haproxy_bin, config.config_path, config.master_socket,
                               config.log_path, own=config.haproxy_socket is None)
        self.renderer = Renderer(http_bind=config.http_bind, tcp_bind=config.tcp_bind,
                                 pin_map=config.pin_path, template=config.template)
        self.applier = Applier(self.haproxy, self.renderer, config.config_path, config.pin_path,
                               drain_timeout=config.drain_timeout, on_reload=self._on_reload)
        self.guard = Guard(config.max_drop, config.confirm)
        self.health = health or Health("listen")
        self.health.add_metrics(lambda: listen_metrics(self))
        self.health.add_details(lambda: {"holds": self.guard.details()})
        self.keeper: LeaseKeeper | None = None
        if config.advertise_ip:
            self.keeper = LeaseKeeper(store, config.dns_ttl, self.stop,
                                      name=f"listen-dns id={config.listen_id}")

    def _handler(self, prefix: str):  # type: ignore[no-untyped-def]
        def on_change(changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                      resync: bool) -> None:
            with self._lock:
                self._views[prefix] = dict(view)
                self._revision = max(self._revision, revision)
                now = time.monotonic()
                self._first = self._first or now
                self._last = now
            self.wake.set()
        return on_change

    # the routing wanted now --------------------------------------------------------------
    def wanted(self) -> Routing:
        return self._wanted()[0]

    def _wanted(self) -> tuple[Routing, int]:
        """The routing etcd asks for, and the revision it reflects."""
        with self._lock:
            merged: dict[str, KeyValue] = {}
            for view in self._views.values():
                merged.update(view)
            revision = self._revision
        entries, problems = parse_view(merged, self.keys)
        self.counts = (len(entries), len(problems))
        for p in problems:
            if (p.key, p.revision) not in self._logged:
                self._logged.add((p.key, p.revision))
                log.error("malformed record skipped key=%s revision=%d error=%s",
                          p.key, p.revision, p.message)
                self.health.error(f"malformed record skipped key={p.key}: {p.message}")
        routing = build_routing(entries, vhost_suffix=self.config.vhost_suffix,
                                reserved_ports=[self.config.http_port])
        for err in routing.errors:
            if err not in self._errors:
                log.error("%s", err)
                self.health.error(err)
        self._errors = routing.errors
        return routing, revision

    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watchers)

    # lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        stop_on_signals(self.stop, self.wake)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        for w in self.watchers:
            w.start()
        if self.config.once:
            return self._once()
        try:
            self._start_haproxy()
        except (HAProxyError, OSError) as exc:
            log.error("haproxy could not start error=%s", exc)
            self._shutdown()
            return 1
        if self.keeper is not None:
            self.keeper.start()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _start_haproxy(self) -> None:
        cfg = self.config.config_path
        if self.haproxy.own:
            if cfg.exists() and self.haproxy.check(cfg) is None:
                log.info("starting haproxy from the last applied config path=%s", cfg)
            else:
                rendered = self.renderer.render(Routing())
                write_atomic(self.config.pin_path, rendered.pins)
                write_atomic(cfg, rendered.config)
                log.info("starting haproxy with no routes yet path=%s", cfg)
        self.haproxy.start()

    def _loop(self) -> None:
        cfg = self.config
        while not self.stop.is_set():
            self.wake.wait(self._idle_wait())
            self.wake.clear()
            if self.applier.draining:
                self.applier.tick()
            with self._lock:
                first, last = self._first, self._last
            held = self.guard.deadline()
            now = time.monotonic()
            due = held is not None and held <= now  # a hold's time is up: decide again
            if (first is None and not due) or not self.synced():
                continue
            if first is not None:
                wait = min(last + cfg.min_quiet, first + cfg.max_quiet) - now
                if wait > 0:  # debounce: a burst becomes one apply
                    self.stop.wait(wait)
                    self.wake.set()
                    continue
            with self._lock:
                self._first = None
            self._apply()

    def _idle_wait(self) -> float:
        wait = 0.5 if self.applier.draining else 5.0
        held = self.guard.deadline()
        if held is not None:
            wait = min(wait, max(0.01, held - time.monotonic()))
        return wait

    def _apply(self) -> None:
        wanted, revision = self._wanted()
        try:
            if self.applier.apply(self.guard.filter(self.applier.applied, wanted)):
                self.health.set_revision(revision)
                self._advertise()
        except (HAProxyError, OSError) as exc:
            log.error("apply failed; the running config keeps serving error=%s", exc)
            self._on_reload(False, f"apply failed: {exc}")

    def _on_reload(self, ok: bool, message: str) -> None:
        self.health.reloaded(ok, message)
        if not ok:
            self.health.error(message)


    def _advertise(self) -> None:
        if self.keeper is None or self.applier.applied is None:
            return
        assert self.config.advertise_ip is not None
        value = SkyDNSRecord(host=self.config.advertise_ip, ttl=self.config.dns_ttl).to_json()
        wanted = {self.keys.skydns_key(f"{self.config.listen_id}.{v}")
                  for v in self.applier.applied.vhosts()}
        for key in set(self.keeper.owned()) - wanted:
            self.keeper.remove(key)
        for key in sorted(wanted):
            self.keeper.set(key, value)

    def _once(self) -> int:
        while not self.synced() and not self.stop.wait(0.05):
            pass
        rendered = self.renderer.render(self.wanted())
        if self.config.dry_run:
            print(rendered.config, end="")
            return 0
        staged = self.config.config_path.with_name("haproxy.cfg.staged")
        write_atomic(self.config.pin_path, rendered.pins)
        write_atomic(staged, rendered.config)
        problem = self.haproxy.check(staged)
        if problem is not None:
            staged.unlink()
            log.error("config rejected haproxy=%s", problem)
            return 1
        staged.replace(self.config.config_path)
        if not self.haproxy.own:
            self.haproxy.reload()
        log.info("config written path=%s", self.config.config_path)
        return 0

    def _shutdown(self) -> None:
        self.stop.set()
        if self.keeper is not None:
            self.keeper.revoke()
        self.haproxy.stop()
        self.store.close()
        log.info("listen stopped")

