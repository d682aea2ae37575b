"""The Docker Engine API: the only module that imports the docker SDK.

Two clients are used by register (one per thread), because the SDK's HTTP
session is not meant to be shared between a blocking event stream and queries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions

from buoy.register.mapping import ContainerInfo, container_from_inspect

log = logging.getLogger(__name__)

# Container actions that end a container's service at once (events on the stream).
GONE_ACTIONS = frozenset({"die", "stop", "kill", "destroy", "pause", "oom"})
# Signals after which a `kill` event means the container is going away.
FATAL_SIGNALS = frozenset({"", "9", "15", "2", "SIGKILL", "SIGTERM", "SIGINT", "KILL", "TERM"})
FRESH_ACTIONS = frozenset({"start", "restart", "unpause", "rename", "update"})


class DockerUnavailable(Exception):
    """The Docker daemon could not be reached or answered with an error."""


class DockerAPI:
    """A few Docker Engine calls, with buoy's own types and errors."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            try:
                self._client = docker.APIClient(base_url=self.base_url, timeout=self.timeout,
                                                version="auto")
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(str(exc)) from None
        return self._client

    def _fail(self, exc: Exception) -> DockerUnavailable:
        # Drop the client so the next call reconnects (the daemon may have restarted).
        self.close()
        return DockerUnavailable(f"{type(exc).__name__}: {exc}")

    def running(self) -> list[ContainerInfo]:
        """Every running container, inspected."""
        try:
            listed = self._api().containers(filters={"status": "running"})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._fail(exc) from None
        out = []
        for item in listed:
            info = self.inspect(item["Id"])
            if info is not None:
                out.append(info)
        return out

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container if it exists and is running, else None."""
        try:
            attrs = self._api().inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._fail(exc) from None
        state = attrs.get("State") or {}
        if not state.get("Running") or state.get("Paused"):
            return None
        return container_from_inspect(attrs)

    def events(self, since: str | None) -> Iterator[dict[str, Any]]:
        """Container events from `since` ("seconds.nanoseconds"), as a stream that can close."""
        try:
            stream: Iterator[dict[str, Any]] = self._api().events(
                since=since, filters={"type": "container"}, decode=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._fail(exc) from None
        return stream

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not fail
                pass


def event_verdict(event: dict[str, Any]) -> str | None:
    """'gone', 'fresh' or None (ignore) for one Docker event (pure)."""
    if event.get("Type") != "container":
        return None
    action = str(event.get("Action") or event.get("status") or "")
    action = action.split(":", 1)[0]  # "health_status: healthy", "exec_start: sh"
    if action == "kill":
        signal = str(((event.get("Actor") or {}).get("Attributes") or {}).get("signal", ""))
        return "gone" if signal.upper() in FATAL_SIGNALS else None
    if action in GONE_ACTIONS:
        return "gone"
    if action in FRESH_ACTIONS:
        return "fresh"
    return None


def event_since(event: dict[str, Any]) -> str | None:
    """The `since=` value that resumes the stream at this event (inclusive)."""
    nano = event.get("timeNano")
    if isinstance(nano, int) and nano > 0:
        return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"
    seconds = event.get("time")
    return str(seconds) if isinstance(seconds, int) else None
