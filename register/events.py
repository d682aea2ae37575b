"""The Docker event loop: subscribe, report, and reconnect with `since=` when the stream drops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from buoy.etcd.retry import Backoff
from buoy.register.docker_api import DockerAPI, DockerUnavailable, event_since, event_verdict

log = logging.getLogger(__name__)

# ("relist",) after every (re)connect; ("gone"|"fresh", container_id) per event.
Emit = Callable[[tuple[str, ...]], None]


class EventFollower:
    """Follows container events on its own thread and hands them to `emit`.

    It subscribes *before* asking for a relist, so a container that starts
    between the subscription and the listing shows up in one or the other. After
    a drop (or a daemon restart) it resumes from the last event's time, and asks
    for a relist again because the daemon may have lost containers meanwhile.
    """

    def __init__(self, api: DockerAPI, emit: Emit, stop: threading.Event, *,
                 max_wait: float = 2.0) -> None:
        self.api = api
        self.emit = emit
        self.stop = stop
        self.max_wait = max_wait
        self.since: str | None = None
        self.connects = 0
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="docker-events", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        backoff = Backoff(self.stop, max_wait=self.max_wait)
        while not self.stop.is_set():
            connected_at = time.time()
            try:
                self._stream = self.api.events(self.since)
            except DockerUnavailable as exc:
                log.warning("docker events connect failed attempt=%d since=%s error=%s",
                            backoff.failures + 1, self.since, exc)
                if not backoff.wait():
                    return
                continue
            self.connects += 1
            log.info("docker events subscribed connects=%d since=%s", self.connects, self.since)
            if self.since is None:
                # Resume point if the stream drops before any event arrives.
                self.since = f"{int(connected_at) - 1}"
            backoff.reset()
            self.emit(("relist",))
            self._follow()
            self.api.close()
            if not self.stop.is_set():
                log.warning("docker events stream ended; reconnecting since=%s", self.since)
                if not backoff.wait():
                    return

    def _follow(self) -> None:
        try:
            for event in self._stream:
                if self.stop.is_set():
                    return
                if not isinstance(event, dict):
                    continue
                self.since = event_since(event) or self.since
                verdict = event_verdict(event)
                actor = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
                if verdict and actor:
                    log.debug("docker event action=%s id=%s verdict=%s",
                              event.get("Action"), actor[:12], verdict)
                    self.emit((verdict, actor))
        except Exception as exc:  # noqa: BLE001 - any stream failure means: reconnect
            if not self.stop.is_set():
                log.warning("docker events stream broke error=%s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Unblock the stream read (on shutdown)."""
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
