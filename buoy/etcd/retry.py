"""The one retry policy: exponential backoff with jitter (tenacity), interruptible by shutdown.

Every call to `call_with_retry` starts from the shortest wait again, so the
backoff resets after a success. Each failure is logged once, with the wait that
follows it, so an outage produces one line per backoff step and never a storm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import tenacity

from buoy.etcd.store import StoreUnavailable

T = TypeVar("T")
INITIAL_WAIT = 0.1
MAX_WAIT = 5.0


class Stopped(Exception):
    """Shutdown was requested while waiting to retry."""


def call_with_retry(
    fn: Callable[[], T],
    *,
    stop: threading.Event,
    what: str,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    max_wait: float = MAX_WAIT,
    retry_on: tuple[type[BaseException], ...] = (StoreUnavailable,),
) -> T:
    """Call `fn` until it succeeds; raise `Stopped` when `stop` is set while waiting."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped(what)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s failed attempt=%d retry_in=%.2fs error=%s",
                    what, state.attempt_number, wait, exc)

    if stop.is_set():
        raise Stopped(what)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=tenacity.wait_exponential(multiplier=INITIAL_WAIT, max=max_wait)
        + tenacity.wait_random(0, 0.1),
        stop=tenacity.stop_never,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


class Backoff:
    """Backoff for loops that retry by themselves (a watch stream, a refresh loop)."""

    def __init__(self, stop: threading.Event, *, max_wait: float = MAX_WAIT) -> None:
        self._stop = stop
        self._max = max_wait
        self.failures = 0

    def next_delay(self) -> float:
        return float(min(self._max, INITIAL_WAIT * (2.0 ** min(self.failures, 30))))

    def wait(self) -> bool:
        """Wait one step; False when shutdown was requested."""
        delay = self.next_delay()
        self.failures += 1
        return not self._stop.wait(delay)

    def reset(self) -> None:
        self.failures = 0
