"""Serve listen's status page (`/`) and its JSON twin (`/status.json`) on the metrics port.

A request reads the listener's applied routing and slot tables and asks HAProxy for its
view of the servers (`show stat` through the master socket). That question has its own
short timeout, and the answer and the pages made from it are reused for a second, so many
open pages cost HAProxy one question and listen one page a second, and a stuck HAProxy
delays a page by `timeout` at most. It runs on the metrics server's request thread, never
on listen's own loop, which it does not lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from buoy.listen.haproxy import MasterSocket
from buoy.listen.metrics import ListenState
from buoy.listen.status import Snapshot, StatTable, build, parse_stat
from buoy.listen.status_page import HEADERS, render

if TYPE_CHECKING:
    from buoy.listen.certs import CertificateRow
    from buoy.listen.config import ListenConfig
    from buoy.ops.health import Health

log = logging.getLogger(__name__)

STAT_TIMEOUT = 1.0  # seconds a page waits for HAProxy's answer
STAT_MAX_AGE = 1.0  # seconds an answer is reused


class StatusListener(ListenState, Protocol):
    """What the status page reads (the Listener): what its metrics read, and more."""

    @property
    def config(self) -> ListenConfig: ...
    @property
    def conflicts(self) -> tuple[str, ...]: ...
    def certificates(self) -> Sequence[CertificateRow]: ...


class ServerStats:
    """HAProxy's `show stat` of its servers, asked at most once per `max_age`."""

    def __init__(self, ask: Callable[[str], str], *, max_age: float = STAT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ask = ask
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()  # one question at a time; the others reuse its answer
        self._at: float | None = None
        self._answer: tuple[StatTable | None, str | None] = (None, "not asked yet")

    def get(self) -> tuple[StatTable | None, str | None]:
        """The servers' state, or None and why HAProxy did not tell."""
        with self._lock:
            if self._at is not None and self.clock() - self._at < self.max_age:
                return self._answer
            try:
                self._answer = (parse_stat(self.ask("@1 show stat -1 4 -1")), None)
            except (OSError, ValueError) as exc:
                why = str(exc) or type(exc).__name__
                self._answer = (None, f"HAProxy did not report its servers: {why}")
            self._at = self.clock()
            return self._answer


class StatusSource:
    """Snapshots of one listener, as the status dict, its JSON and its page; each is made at
    most once per `max_age`, however many pages are open."""

    def __init__(self, listener: StatusListener, health: Health, *,
                 timeout: float = STAT_TIMEOUT, max_age: float = STAT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listener = listener
        self.health = health
        self.max_age = max_age
        self.clock = clock
        sock = MasterSocket(listener.haproxy.sock.path, timeout=timeout)
        self.stats = ServerStats(sock.command, max_age=max_age, clock=clock)
        self._lock = threading.Lock()
        self._made: dict[str, tuple[float, bytes]] = {}

    def snapshot(self) -> Snapshot:
        ls = self.listener
        stats, error = self.stats.get()
        return Snapshot(
            now=time.time(), health=self.health.state(), applied=ls.applier.applied,
            slots=copy_slots(ls.applier.slots), stats=stats, stats_error=error,
            haproxy_down=ls.haproxy_down, listen_id=ls.config.listen_id,
            tcp_bind=ls.config.tcp_bind, refused=ls.refused, conflicts=ls.conflicts,
            holds=ls.guard.details(), certificates=list(ls.certificates()), records=ls.counts)

    def status(self) -> dict[str, object]:
        return build(self.snapshot())

    def json(self) -> bytes:
        return self._reused("json", lambda: json.dumps(self.status(), indent=1).encode())

    def page(self) -> bytes:
        return self._reused("page", lambda: render(self.status()).encode())

    def _reused(self, kind: str, make: Callable[[], bytes]) -> bytes:
        with self._lock:  # concurrent requests wait for one answer and share it
            made = self._made.get(kind)
            if made is not None and self.clock() - made[0] < self.max_age:
                return made[1]
            data = make()
            self._made[kind] = (self.clock(), data)
            return data


def copy_slots(slots: Mapping[str, Sequence[str | None]]) -> dict[str, list[str | None]]:
    """A copy of the slot tables, which listen's loop changes in place meanwhile."""
    for _ in range(10):
        try:
            return {name: list(table) for name, table in list(slots.items())}
        except RuntimeError:  # changed size during the copy: copy again
            continue
    return {}


def serve_status(health: Health, listener: StatusListener) -> StatusSource:
    """Add `/` and `/status.json` to the agent's metrics server."""
    source = StatusSource(listener, health)
    health.add_page("/", "text/html; charset=utf-8", source.page, HEADERS)
    health.add_page("/status.json", "application/json", source.json, {"Cache-Control": "no-store"})
    return source
