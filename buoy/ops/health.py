"""Health and metrics: a state object the agents update, served as /healthz and /metrics.

The state and the JSON built from it are plain Python (the report is pure and
unit-tested). The Prometheus client is imported only when the HTTP server starts,
so an agent run without --metrics-port (announce, inside every container) never
loads it. Agents keep their own plain counters; a collector reads them at scrape
time through the callbacks registered with `add_metrics`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger(__name__)

ETCD_GRACE = 5.0  # seconds etcd may be unreachable before /healthz answers 503
MESSAGE_MAX = 500


@dataclass(frozen=True)
class Event:
    """Something that happened: when (wall clock), whether it went well, and what was said."""

    time: float
    ok: bool
    message: str


@dataclass(frozen=True)
class Metric:
    """One sample; samples sharing a name form one family (`buoy_` is prepended)."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Page:
    """An extra page of the metrics server: its content type, what produces it, extra headers."""

    content_type: str
    producer: Callable[[], bytes]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthState:
    agent: str
    started: float
    etcd_connected: bool
    etcd_changed: float  # when etcd_connected last flipped (or the start)
    revision: int | None = None
    last_error: Event | None = None
    last_reload: Event | None = None
    errors: int = 0
    details: Mapping[str, object] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # reported by the agent itself (e.g. HAProxy down)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(e: Event | None) -> dict[str, object] | None:
    return None if e is None else {"time": iso(e.time), "ok": e.ok, "message": e.message}


def report(state: HealthState, now: float, grace: float = ETCD_GRACE) -> tuple[int, dict[str, Any]]:
    """The /healthz answer (pure): 503 when etcd has been away for `grace` seconds or more,
    or when the last reload failed; the last error is shown either way."""
    problems = []
    if not state.etcd_connected and now - state.etcd_changed >= grace:
        problems.append(f"etcd unreachable for {now - state.etcd_changed:.0f}s")
    if state.last_reload is not None and not state.last_reload.ok:
        problems.append("last reload failed; the previous config keeps serving")
    problems += state.problems
    body: dict[str, Any] = {
        "agent": state.agent,
        "status": "unhealthy" if problems else "ok",
        "problems": problems,
        "uptime": round(now - state.started, 3),
        "etcd": {"connected": state.etcd_connected, "since": iso(state.etcd_changed)},
        "revision": state.revision,
        "errors": state.errors,
        "last_error": _event(state.last_error),
    }
    if state.last_reload is not None or state.agent == "listen":
        body["last_reload"] = _event(state.last_reload)
    body.update(state.details)
    return (503 if problems else 200), body


class Health:
    """Thread-safe state every agent updates; read by the HTTP server."""

    def __init__(self, agent: str, *, clock: Callable[[], float] = time.time) -> None:
        self.agent = agent
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._state = HealthState(agent, now, False, now)
        self._metrics: list[Callable[[], Iterable[Metric]]] = []
        self._details: list[Callable[[], Mapping[str, object]]] = []
        self._problems: list[Callable[[], Iterable[str]]] = []
        self.pages: dict[str, Page] = {}

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = _replace(self._state, **changes)

    def etcd_ok(self) -> None:
        with self._lock:
            if not self._state.etcd_connected:
                self._state = _replace(self._state, etcd_connected=True, etcd_changed=self.clock())

    def etcd_failed(self, message: str) -> None:
        with self._lock:
            now = self.clock()
            changed = now if self._state.etcd_connected else self._state.etcd_changed
            self._state = _replace(self._state, etcd_connected=False, etcd_changed=changed,
                                   last_error=Event(now, False, _line(message)),
                                   errors=self._state.errors + 1)

    def store_result(self, reached: bool, error: Exception | None) -> None:
        """An EtcdStore observer: etcd answered or not; a refusal is an error too."""
        if not reached:
            self.etcd_failed(str(error))
            return
        self.etcd_ok()
        if error is not None and "permission denied" in str(error):
            self.error(str(error))

    def error(self, message: str) -> None:
        """Count an error and keep it as the last one."""
        with self._lock:
            self._state = _replace(self._state, errors=self._state.errors + 1,
                                   last_error=Event(self.clock(), False, _line(message)))

    def set_revision(self, revision: int) -> None:
        self._update(revision=revision)

    def reloaded(self, ok: bool, message: str) -> None:
        self._update(last_reload=Event(self.clock(), ok, _line(message)))

    def add_metrics(self, source: Callable[[], Iterable[Metric]]) -> None:
        self._metrics.append(source)

    def add_details(self, source: Callable[[], Mapping[str, object]]) -> None:
        """Extra top-level /healthz fields, computed when asked."""
        self._details.append(source)

    def add_problems(self, source: Callable[[], Iterable[str]]) -> None:
        """Problems of the agent's own (each makes /healthz answer 503), computed when asked."""
        self._problems.append(source)

    def add_page(self, path: str, content_type: str, producer: Callable[[], bytes],
                 headers: Mapping[str, str] | None = None) -> None:
        """Another page on the metrics server (`/`, `/status.json`, ...), produced when asked
        on the server's request thread."""
        if not path.startswith("/") or path in ("/healthz", "/metrics"):
            raise ValueError(f"page path must start with / and not be /healthz or /metrics: {path!r}")
        self.pages[path] = Page(content_type, producer, dict(headers or {}))

    def state(self) -> HealthState:
        with self._lock:
            state = self._state
        details: dict[str, object] = {}
        for source in self._details:
            details.update(source())
        problems = tuple(p for source in self._problems for p in source())
        return _replace(state, details=details, problems=problems)

    def metrics(self) -> list[Metric]:
        with self._lock:
            s = self._state
        out = [Metric("etcd_connected", "gauge", "1 when the last etcd operation succeeded.",
                      float(s.etcd_connected)),
               Metric("errors", "counter", "Errors counted (etcd failures, rejected configs, "
                      "malformed records, ...).", float(s.errors))]
        if s.revision is not None:
            out.append(Metric("revision", "gauge", "The last etcd revision applied.",
                              float(s.revision)))
        for source in self._metrics:
            out.extend(source())
        return out


def _replace(state: HealthState, **changes: Any) -> HealthState:
    return replace(state, **changes)


def _line(message: str) -> str:
    text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text[:MESSAGE_MAX]


def records(kind: str, count: int) -> Metric:
    return Metric("records", "gauge", "Records known, by kind.", float(count), (("kind", kind),))


def loop_metrics(watchers: Iterable[Any] = (), keepers: Iterable[Any] = ()) -> list[Metric]:
    """Watch restarts and replacements (PrefixWatcher) and lease grants (LeaseKeeper.grants)."""
    watchers = list(watchers)
    return [Metric("watch_restarts", "counter", "Watch streams resumed or re-snapshotted.",
                   float(sum(w.restarts for w in watchers))),
            Metric("etcd_replaced", "counter", "Times a watch found etcd replaced (recreated "
                   "or restored) and took a new snapshot.",
                   float(sum(getattr(w, "replacements", 0) for w in watchers))),
            Metric("lease_grants", "counter", "Leases granted (more than one means a lease "
                   "was lost and its keys were put again).", float(sum(k.grants for k in keepers)))]


class MetricsServer:
    """/healthz (JSON), /metrics (Prometheus text) and the pages added with `Health.add_page`,
    on a daemon thread."""

    def __init__(self, health: Health, bind: str, port: int, *, grace: float = ETCD_GRACE) -> None:
        # Imported here: announce runs without a server and should not pay for these.
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = _registry(health)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    code, body = report(health.state(), health.clock(), grace)
                    self._send(code, "application/json", json.dumps(body, indent=1).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path in health.pages:
                    self._page(health.pages[path])
                else:
                    known = " ".join(["/healthz", "/metrics", *sorted(health.pages)])
                    self._send(404, "text/plain", f"not found: try {known}\n".encode())

            def _page(self, page: Page) -> None:
                try:
                    data = page.producer()
                except Exception as exc:  # a broken page must not take the server down
                    log.exception("page failed path=%s", self.path)
                    self._send(500, "text/plain", f"page failed: {exc}\n".encode())
                    return
                self._send(200, page.content_type, data, page.headers)

            def _send(self, code: int, ctype: str, data: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass  # scrapes every few seconds would flood the agent's log

        import socket

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            daemon_threads = True

        self.httpd = Server((bind, port), Handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("health and metrics listening port=%d", self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _registry(health: Health) -> Any:
    """A registry of this process's own (not the global default), so servers never collide."""
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            families: dict[str, Any] = {}
            for m in health.metrics():
                family = families.get(m.name)
                if family is None:
                    kind = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
                    family = families[m.name] = kind(f"buoy_{m.name}", m.help,
                                                     labels=[k for k, _ in m.labels])
                family.add_metric([v for _, v in m.labels], m.value)
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return registry
