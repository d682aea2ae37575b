"""The announce loop: keep the record alive, follow the health check, withdraw on stop.

One thread, one etcd connection (etcd's JSON gateway, `announce.client`): the loop
sleeps until the next lease refresh or health check is due, so an idle announce costs
one small HTTP request every ANNOUNCE_INTERVAL seconds.

- announced: grant a lease of ANNOUNCE_TTL, put the record under it, refresh it every
  ANNOUNCE_INTERVAL. etcd unreachable: retry with backoff (never longer than the
  interval), one log line per try. etcd lost the lease (it was down past the TTL, or
  restored): grant a new one and put the record again.
- CHECK: announced only while the check passes; withdrawn (lease revoked) after
  ANNOUNCE_CHECK_FAILURES failures in a row. Every change of the check's result is logged.
- SIGTERM/SIGINT: revoke the lease (the record goes at once), wait ANNOUNCE_DRAIN, exit 0.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from buoy.announce.check import CheckState, probe
from buoy.announce.client import AnnounceClient
from buoy.announce.config import AnnounceConfig
from buoy.etcd.gateway import GatewayError, GatewayRefused, GatewayUnavailable
from buoy.ops.health import Health, Metric, loop_metrics, records
from buoy.signals import stop_on_signals

log = logging.getLogger(__name__)
FIRST_RETRY = 0.1
WITHDRAW_PATIENCE = 2.0  # seconds a revoke is retried while no endpoint answers


class Announcer:
    """Owns one announce key under a lease of its own."""

    def __init__(self, config: AnnounceConfig, client: AnnounceClient, key: str,
                 health: Health | None = None, stop: threading.Event | None = None) -> None:
        self.config = config
        self.client = client
        self.key = key
        self.value = config.record.to_json()
        self.stop = stop or threading.Event()
        self.lease: int | None = None
        self.wanted = config.record.check is None  # with a CHECK: once it passes
        self.grants = 0
        self.failures = 0
        self.next_refresh = 0.0
        self.last_refresh = 0.0
        self.health = health or Health("announce")
        self.health.add_metrics(self._metrics)
        self.health.add_details(lambda: {"key": self.key, "announced": self.lease is not None,
                                         "etcd_transport": self.client.transport})

    def _metrics(self) -> list[Metric]:
        return [records("announce", int(self.lease is not None)),
                *loop_metrics(keepers=[self])]

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; then revoke, drain and return 0."""
        stop_on_signals(self.stop, verb="withdrawing")
        rec = self.config.record
        log.info("announce key=%s port=%d type=%s check=%s ttl=%d interval=%g", self.key,
                 rec.port, rec.type, rec.check or "-", self.config.ttl, self.config.interval)
        state = CheckState(self.config.check_failures)
        last_result = ""
        next_check = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if rec.check is not None and now >= next_check:
                last_result = self._check(rec.check, state, last_result)
                next_check = time.monotonic() + self.config.check_interval
            if self.wanted and time.monotonic() >= self.next_refresh:
                self._keep()
            due = [next_check] if rec.check is not None else []
            if self.wanted:
                due.append(self.next_refresh)
            self.stop.wait(max(0.0, min(due, default=3600.0) - time.monotonic()))
        return self._shutdown()

    # the health check -------------------------------------------------------------------
    def _check(self, check: str, state: CheckState, last: str) -> str:
        ok, result = probe(self.config.record.port, check, self.config.check_timeout)
        if result != last:
            log.log(logging.INFO if ok else logging.WARNING, "check %s %s: %s", check,
                    "passed" if ok else "failed", result)
        if state.observe(ok):
            if state.up:
                log.info("check passed (%s); announcing key=%s", result, self.key)
                self.wanted, self.next_refresh = True, 0.0
            else:
                why = f"check {check} failed {state.misses} times in a row (last: {result})"
                log.warning("%s; withdrawing key=%s", why, self.key)
                self.health.error(f"{why}; withdrawn")
                self.wanted = False
                self._withdraw()
        return result

    # the lease --------------------------------------------------------------------------
    def _keep(self) -> None:
        """Grant and put, or refresh; on failure schedule the next try with backoff."""
        op = "keepalive" if self.lease is not None else "grant"
        try:
            if self.lease is not None:
                ttl = self.client.keepalive(self.lease)
                if ttl > 0:
                    self._refreshed()
                    return
                log.warning("lease=%x lost (etcd no longer knows it); granting a new one and "
                            "putting key=%s again", self.lease, self.key)
                self.lease = None
            op = "grant"
            lease = self.client.grant(self.config.ttl)
            op = "put"
            try:
                self.client.put(self.key, self.value, lease)
            except GatewayError:
                self._revoke_quietly(lease)
                raise
            self.lease = lease
            self.grants += 1
            log.info("announced key=%s lease=%x ttl=%d", self.key, lease, self.config.ttl)
            self._refreshed()
        except GatewayError as exc:
            self.failures += 1
            wait = min(self.config.interval, FIRST_RETRY * 2 ** min(self.failures - 1, 10))
            wait *= random.uniform(0.5, 1.0)
            what = "refused" if isinstance(exc, GatewayRefused) else "unreachable"
            log.warning("%s failed: etcd %s attempt=%d retry_in=%.2fs lease=%s error=%s", op,
                        what, self.failures, wait, f"{self.lease:x}" if self.lease else "-", exc)
            self.next_refresh = time.monotonic() + wait

    def _refreshed(self) -> None:
        if self.failures:
            log.info("etcd answers again after %d failed attempts", self.failures)
        self.failures = 0
        self.last_refresh = time.monotonic()
        self.next_refresh = self.last_refresh + self.config.interval

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.client.revoke(lease)
        except GatewayError:
            pass  # it expires with its TTL

    def _withdraw(self) -> None:
        """Revoke the lease: the record goes at once. While no endpoint answers (an election,
        a restart) the revoke is retried for up to WITHDRAW_PATIENCE seconds; after that the
        record expires with its TTL, since nothing refreshes it any more."""
        lease, self.lease = self.lease, None
        self.failures = 0
        if lease is None:
            return
        deadline = time.monotonic() + WITHDRAW_PATIENCE
        delay = FIRST_RETRY
        while True:
            try:
                self.client.revoke(lease)
                log.info("withdrawn key=%s (lease=%x revoked)", self.key, lease)
                return
            except GatewayUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    error: GatewayError = exc
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except GatewayError as exc:
                error = exc
                break
        log.warning("revoke lease=%x failed; key=%s expires within %ds error=%s", lease,
                    self.key, self.config.ttl, error)

    def _shutdown(self) -> int:
        log.info("stopping: withdrawing key=%s", self.key)
        self._withdraw()
        if self.config.drain > 0:
            log.info("withdrawn; draining for %.1fs", self.config.drain)
            time.sleep(self.config.drain)
        self.client.close()
        log.info("announce stopped")
        return 0
