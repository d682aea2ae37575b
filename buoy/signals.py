"""Shutdown on SIGTERM and SIGINT, the same way in every agent."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(*events: threading.Event, verb: str = "stopping") -> None:
    """SIGTERM and SIGINT set every event in `events`.

    Only the main thread may install handlers; called from another thread (an agent
    run in-process by a test) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal=%s: %s", signal.Signals(signum).name, verb)
        for event in events:
            event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
