"""Getting and renewing certificates through ACME, by one listener at a time.

Every listener with `--acme-directory` runs an AcmeIssuer; the one that holds the lease
lock `/acme/lock` issues and renews, for every host that asks for ACME, and writes the
result to `/certs/<vhost>`, from where every listener serves it. The others wait for the
lock (it frees itself within its lease TTL when the holder dies). The account key lives
under `/acme/account`; HTTP-01 answers under `/acme/challenges/<token>` with a lease, so
a crash leaves none behind for long.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore, StoreError
from buoy.listen.acme_client import AcmeClient, AcmeError
from buoy.listen.certs import Bundle, CertError, new_key_pem, parse_record, record, renewal_due

log = logging.getLogger(__name__)

LOCK_TTL = 30  # seconds: how long a dead issuer blocks the next one
CHALLENGE_TTL = 600
FIRST_RETRY = 10.0  # seconds after a failed order; doubles up to MAX_RETRY
MAX_RETRY = 3600.0
TICK = 1.0


@dataclass
class AcmeSettings:
    directory: str
    email: str | None = None
    ca_bundle: str | None = None
    renew: float = 1 / 3  # renew when less than this share of the lifetime is left
    holder: str = "listen"  # written into the lock: who issues


@dataclass
class Attempts:
    """Per host: failures in a row and when the next order may be placed."""

    failures: dict[str, int] = field(default_factory=dict)
    next_at: dict[str, float] = field(default_factory=dict)

    def failed(self, vhost: str, now: float) -> float:
        n = self.failures[vhost] = self.failures.get(vhost, 0) + 1
        delay = float(min(MAX_RETRY, FIRST_RETRY * 2.0 ** (n - 1)))
        self.next_at[vhost] = now + delay
        return delay

    def succeeded(self, vhost: str) -> None:
        self.failures.pop(vhost, None)
        self.next_at.pop(vhost, None)

    def allowed(self, vhost: str, now: float) -> bool:
        return self.next_at.get(vhost, 0.0) <= now


def due(current: Bundle | None, now: float, renew: float) -> bool:
    """Order a certificate: none yet, or less than `renew` of its lifetime left."""
    return current is None or renewal_due(current, now, renew)


class AcmeIssuer:
    """The issuing loop: hold the lock, order what is due, back off per host on failure."""

    def __init__(self, store: EtcdStore, keys: KeyLayout, settings: AcmeSettings,
                 stop: threading.Event, current: Callable[[str], Bundle | None],
                 ready: Callable[[], bool]) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.stop = stop
        self.current = current  # the /certs bundle served for a host now
        self.ready = ready  # the /certs view is synced
        self.wake = threading.Event()
        self.hosts: tuple[str, ...] = ()
        self.errors: dict[str, str] = {}
        self.attempts = Attempts()
        self.issued = 0  # orders that gave a certificate
        self.failed = 0
        self.leader = False
        self._lease: int | None = None
        self._client: AcmeClient | None = None
        self._thread: threading.Thread | None = None

    def want(self, hosts: Collection[str]) -> None:
        hosts = tuple(sorted(hosts))
        if hosts != self.hosts:
            self.hosts = hosts
            for gone in set(self.errors) - set(hosts):
                self.errors.pop(gone, None)
            self.wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="acme-issuer", daemon=True)
        self._thread.start()

    def run(self) -> None:
        last_refresh = 0.0
        while not self.stop.is_set():
            try:
                if self.leader and time.monotonic() - last_refresh > LOCK_TTL / 3:
                    self._refresh()
                    last_refresh = time.monotonic()
                if not self.leader and self.hosts and self.ready():
                    self._acquire()
                    last_refresh = time.monotonic()
                if self.leader and self.ready():
                    self._issue_due()
            except StoreError as exc:
                log.warning("acme: etcd error=%s", exc)
                self.leader = False
            self.wake.wait(TICK)
            self.wake.clear()
        self.release()

    # the lock ---------------------------------------------------------------------------
    def _acquire(self) -> None:
        lease = self.store.grant(LOCK_TTL)
        if self.store.put_if_absent(self.keys.acme_lock_key, self.settings.holder, lease):
            self._lease, self.leader = lease, True
            log.info("acme: this listener issues certificates holder=%s", self.settings.holder)
        else:
            self.store.revoke(lease)

    def _refresh(self) -> None:
        if self._lease is None or self.store.refresh(self._lease) <= 0:
            log.warning("acme: the issuer lock was lost")
            self.leader, self._lease = False, None

    def release(self) -> None:
        lease, self._lease, self.leader = self._lease, None, False
        if lease is not None:
            try:
                self.store.revoke(lease)
            except StoreError:
                pass

    # issuing ----------------------------------------------------------------------------
    def _issue_due(self) -> None:
        for vhost in self.hosts:
            now = time.time()
            if self.stop.is_set() or not self.leader:
                return
            if not due(self.current(vhost), now, self.settings.renew):
                self.errors.pop(vhost, None)
                continue
            if not self.attempts.allowed(vhost, time.monotonic()):
                continue
            try:
                self._issue(vhost)
            except (AcmeError, CertError) as exc:
                self.failed += 1
                delay = self.attempts.failed(vhost, time.monotonic())
                self.errors[vhost] = str(exc)
                log.error("acme: certificate not issued vhost=%s retry_in=%.0fs error=%s",
                          vhost, delay, exc)
            else:
                self.attempts.succeeded(vhost)
                self.errors.pop(vhost, None)

    def _issue(self, vhost: str) -> None:
        client = self._account()
        started = time.monotonic()
        challenge_lease = self.store.grant(CHALLENGE_TTL)

        def publish(token: str, answer: str) -> None:
            self.store.put(self.keys.acme_challenge_key(token), answer, challenge_lease)

        def withdraw(token: str) -> None:
            try:
                self.store.delete(self.keys.acme_challenge_key(token))
            except StoreError:
                pass  # the lease removes it

        try:
            issued = client.issue([vhost], publish, withdraw)
        finally:
            try:
                self.store.revoke(challenge_lease)
            except StoreError:
                pass
        value = record(issued.chain_pem, issued.key_pem, source="acme")
        bundle = parse_record(vhost, value)  # what the CA sent must pass like any record
        self.issued += 1  # counted before every listener can serve it
        self.store.put(self.keys.cert_key(vhost), value)
        log.info("acme: certificate issued vhost=%s serial=%x not_after=%.0f seconds=%.2f",
                 vhost, bundle.serial, bundle.not_after, time.monotonic() - started)

    def _account(self) -> AcmeClient:
        if self._client is not None:
            return self._client
        key = self.keys.acme_account_key
        kv = self.store.get(key)
        if kv is None:
            self.store.put_if_absent(key, json.dumps({"key": new_key_pem("rsa")}))
            kv = self.store.get(key)
        try:
            pem = json.loads(kv.value)["key"] if kv is not None else None
            if not isinstance(pem, str):
                raise ValueError("no key")
            self._client = AcmeClient(self.settings.directory, pem, email=self.settings.email,
                                      ca_bundle=self.settings.ca_bundle)
        except (ValueError, KeyError, TypeError) as exc:
            raise AcmeError(f"the account record {key} is unusable: {exc}") from None
        return self._client
