"""The listen loop: watch /services, apply to HAProxy (debouncing only bursts), keep HAProxy
running, advertise vhosts."""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.etcd.watch import Change, PrefixWatcher
from buoy.listen.apply import Applier, write_atomic
from buoy.listen.config import ListenConfig
from buoy.listen.groups import GroupedView
from buoy.listen.guard import Guard
from buoy.listen.haproxy import HAProxy, HAProxyError
from buoy.listen.metrics import listen_metrics
from buoy.listen.model import Routing
from buoy.listen.render import Renderer
from buoy.listen.slots import layout
from buoy.listen.status_source import serve_status
from buoy.ops.health import Health
from buoy.signals import stop_on_signals

if TYPE_CHECKING:
    from buoy.listen.certs import CertificateRow
    from buoy.listen.https import Https

log = logging.getLogger(__name__)

RESTART_TRIES = 3  # consecutive failed HAProxy restarts before listen exits non-zero
SUPERVISE_EVERY = 0.2  # seconds between checks that HAProxy still runs
FLUSH_AFTER = 1.0  # seconds of quiet before runtime changes are written to the config file


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
        self._first: float | None = None
        self._last = 0.0
        self._logged: set[tuple[str, int]] = set()
        self._errors: tuple[str, ...] = ()
        self._revision = 0  # the highest revision the watchers handed over
        self._applied_at = 0.0  # when the last apply ran (monotonic)
        self._grouped = GroupedView(keys, config.vhost_suffix)
        self.counts = (0, 0)  # valid and malformed records in the last wanted()
        self.refused: tuple[str, ...] = ()  # paths not routed: they lost a name to another
        self.haproxy_down: str | None = None  # why nothing serves, while that lasts
        self.failed = False  # HAProxy could not be restarted
        self.watchers = [PrefixWatcher(store, p, self._on_change, self.stop)
                         for p in config.watch_prefixes]
        self.haproxy = HAProxy(config.haproxy_bin, config.config_path, config.master_socket,
                               config.log_path, own=config.haproxy_socket is None)
        self.https: Https | None = None  # the HTTPS frontend's certificates and policy
        if config.https_bind:
            from buoy.listen.https import Https  # cryptography and acme: only with HTTPS

            self.https = Https(config, store, keys, self.haproxy.sock, self.stop, self.wake)
        self.renderer = Renderer(http_bind=config.http_bind, tcp_bind=config.tcp_bind,
                                 pin_map=config.pin_path, host_map=config.host_path,
                                 template=config.template,
                                 fd_limit=raise_fd_limit(),
                                 https=self.https.template() if self.https else None)
        self.applier = Applier(self.haproxy, self.renderer, config.config_path, config.pin_path,
                               drain_timeout=config.drain_timeout, on_reload=self._on_reload)
        self.guard = Guard(config.max_drop, config.confirm, parse_key=self._instance_of)
        self.health = health or Health("listen")
        self.health.add_metrics(lambda: listen_metrics(self))
        self.health.add_details(lambda: {"holds": self.guard.details(),
                                         "refused": list(self._errors)})
        self.health.add_problems(self._problems)
        if self.https is not None:
            self.health.add_metrics(self.https.metrics)
        serve_status(self.health, self)  # `/` and `/status.json` on the metrics port
        self.keeper: LeaseKeeper | None = None
        self._advertised: list[str] | None = None  # the vhosts the keeper was last given
        if config.advertise_ip:
            self.keeper = LeaseKeeper(store, config.dns_ttl, self.stop,
                                      name=f"listen-dns id={config.listen_id}")

    def _on_change(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                   resync: bool) -> None:
        with self._lock:
            # parsed here, on the watcher's thread, while `view` is as of these changes
            self._grouped.apply([c.key for c in changes], view)
            self._revision = max(self._revision, revision)
            self.guard.note(changes, resync)
            now = time.monotonic()
            self._first = self._first or now
            self._last = now
        self.wake.set()

    def _instance_of(self, key: str) -> tuple[str, str] | None:
        try:
            path, instance_id = self.keys.parse_service_key(key)
        except KeyError_:
            return None
        return str(path), instance_id

    @property
    def conflicts(self) -> tuple[str, ...]:
        """Why names were refused (vhost and port clashes), as of the last apply."""
        return self._errors

    def certificates(self) -> list[CertificateRow]:
        """The certificates served, one row per virtual host (none without HTTPS)."""
        return self.https.certificates() if self.https is not None else []

    def _problems(self) -> list[str]:
        out = [f"haproxy not serving: {self.haproxy_down}"] if self.haproxy_down else []
        out += self.https.problems() if self.https is not None else []
        return out + [f"not routed: {e}" for e in self._errors]

    # the routing wanted now --------------------------------------------------------------
    def wanted(self) -> Routing:
        return self._wanted()[0]

    def _wanted(self) -> tuple[Routing, int]:
        """The routing etcd asks for, and the revision it reflects."""
        with self._lock:
            revision = self._revision
            problems = list(self._grouped.problems.values())
            valid = self._grouped.valid
            # the applied routing's names are kept (first come keeps the name)
            routing = self._grouped.routing(reserved_ports=[self.config.http_port],
                                            applied=self.applier.applied)
        self.counts = (valid, len(problems))
        for p in problems:
            if (p.key, p.revision) not in self._logged:
                self._logged.add((p.key, p.revision))
                log.error("malformed record skipped key=%s revision=%d error=%s",
                          p.key, p.revision, p.message)
                self.health.error(f"malformed record skipped key={p.key}: {p.message}")
        self.refused = routing.refused
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
            try:
                return self._once()
            finally:
                self.stop.set()
                self.store.close()
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
        return 1 if self.failed else 0

    def _start_haproxy(self) -> None:
        cfg = self.config.config_path
        if self.https is not None:
            self.https.prepare()  # the files the HTTPS frontend names exist
        if self.haproxy.own:
            if cfg.exists() and self.haproxy.check(cfg) is None:
                log.info("starting haproxy from the last applied config path=%s", cfg)
            else:
                rendered = self.renderer.render(Routing(), {})
                for path, text in zip(self.config.map_paths, rendered.maps(), strict=True):
                    write_atomic(path, text)
                write_atomic(cfg, rendered.config)
                log.info("starting haproxy with no routes yet path=%s", cfg)
        self.haproxy.start()
        if self.https is not None:
            self.https.start()

    def _loop(self) -> None:
        cfg = self.config
        while not self.stop.is_set():
            self.wake.wait(self._idle_wait())
            self.wake.clear()
            if not self._supervise():
                return
            if self.https is not None:
                self.https.tick()  # certificates through the runtime API, never a reload
            if self.applier.draining:
                self.applier.tick()
            with self._lock:
                first, last = self._first, self._last
            held = self.guard.deadline()
            now = time.monotonic()
            due = held is not None and held <= now  # a hold's time is up: decide again
            if (first is None and not due) or not self.synced():
                if self.applier.dirty and now - self._applied_at >= FLUSH_AFTER:
                    self.applier.flush()  # quiet: write the runtime changes to the file
                continue
            # The first change after a quiet period applies at once; a burst is debounced
            # into one apply after `min_quiet` without changes, at most `max_quiet` late.
            if first is not None and first - self._applied_at < cfg.min_quiet:
                wait = min(last + cfg.min_quiet, first + cfg.max_quiet) - now
                if wait > 0:
                    self.stop.wait(wait)
                    self.wake.set()
                    continue
            with self._lock:
                self._first = None
            self._apply()
            self._applied_at = time.monotonic()

    def _idle_wait(self) -> float:
        wait = SUPERVISE_EVERY
        if self.applier.dirty:
            wait = min(wait, max(0.01, self._applied_at + FLUSH_AFTER - time.monotonic()))
        held = self.guard.deadline()
        if held is not None:
            wait = min(wait, max(0.01, held - time.monotonic()))
        return wait

    def _supervise(self) -> bool:
        """Notice a dead HAProxy and start it again from the last applied config; False when
        it cannot be restarted (listen then exits non-zero)."""
        problem = self.haproxy.failure()
        if problem is None:
            return True
        self.haproxy_down = problem
        log.error("%s; nothing serves", problem)
        self.health.error(problem)
        if not self.haproxy.own:
            return True  # not ours to restart: /healthz says so until it answers again
        self.applier.flush()
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                self.haproxy.restart()
            except (HAProxyError, OSError) as exc:
                log.error("haproxy restart failed attempt=%d error=%s", attempt, exc)
                if self.stop.wait(0.5 * attempt):
                    return False
                continue
            log.warning("haproxy restarted from the last applied config restarts=%d",
                        self.haproxy.restarts)
            self.haproxy_down = None
            self.applier.draining.clear()  # the new worker has no connections to drain
            return True
        log.error("haproxy could not be restarted after %d attempts; exiting", RESTART_TRIES)
        self.failed = True
        return False

    def _apply(self) -> None:
        wanted, revision = self._wanted()
        try:
            routing = self.guard.filter(self.applier.applied, wanted)
            if self.applier.apply(routing):
                self.health.set_revision(revision)
                self._advertise()
                if self.https is not None:
                    self.https.routed(routing)
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
        vhosts = self.applier.applied.vhosts()
        if vhosts == self._advertised:
            return  # a membership change: the keeper owns these already
        self._advertised = vhosts
        value = SkyDNSRecord(host=self.config.advertise_ip, ttl=self.config.dns_ttl).to_json()
        wanted = {self.keys.skydns_key(f"{self.config.listen_id}.{v}") for v in vhosts}
        for key in set(self.keeper.owned()) - wanted:
            self.keeper.remove(key)
        for key in sorted(wanted):
            self.keeper.set(key, value)

    def _once(self) -> int:
        """Render from etcd once; without etcd within `etcd_timeout`, exit 1 and leave the
        state dir's last applied config alone."""
        deadline = time.monotonic() + self.config.etcd_timeout
        while not self.synced():
            if self.stop.wait(0.05) or time.monotonic() > deadline:
                log.error("etcd did not answer within %.1fs; nothing written",
                          self.config.etcd_timeout)
                return 1
        wanted = self.wanted()
        rendered = self.renderer.render(wanted, layout(wanted, {}))
        if self.config.dry_run:
            print(rendered.config, end="", flush=True)
            return 0
        if self.https is not None:
            self.https.prepare()
        staged = self.config.config_path.with_name("haproxy.cfg.staged")
        for path, text in zip(self.config.map_paths, rendered.maps(), strict=True):
            write_atomic(path, text)  # `haproxy -c` of the staged config loads them
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
        self.applier.flush()  # the next start, even with etcd down, serves what ran last
        if self.https is not None:
            self.https.close()
        if self.keeper is not None:
            self.keeper.revoke()
        self.haproxy.stop()
        self.store.close()
        log.info("listen stopped")



def raise_fd_limit() -> int:
    """Raise our soft descriptor limit to the hard one (HAProxy inherits it); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit soft=%d hard=%d error=%s",
                        soft, hard, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
