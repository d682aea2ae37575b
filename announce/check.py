"""The local health check announce runs before it announces (HTTP GET or TCP connect)."""

from __future__ import annotations

import http.client
import socket


def probe(port: int, check: str, timeout: float, host: str = "127.0.0.1") -> tuple[bool, str]:
    """Whether the service answers (a 2xx/3xx to GET `check`, or a TCP connect for `tcp`),
    and what it said: `status=200`, `connected`, or the connect error."""
    if check == "tcp":
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True, "connected"
        except OSError as exc:
            return False, f"error={_describe(exc)}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", check, headers={"User-Agent": "buoy-announce-check"})
        status = conn.getresponse().status
        return 200 <= status < 400, f"status={status}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"error={_describe(exc)}"
    finally:
        conn.close()


def _describe(exc: BaseException) -> str:
    """`ConnectionRefusedError`, `timeout` ...: short enough for one log line."""
    text = getattr(exc, "strerror", None) or str(exc)
    name = type(exc).__name__
    return f"{name}({text})" if text and text != name else name


class CheckState:
    """Counts consecutive results: down after `failures` misses, up again on one pass."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.misses = 0
        self.up = False

    def observe(self, ok: bool) -> bool:
        """Record a result; return True when the announce state flips."""
        if ok:
            self.misses = 0
            if not self.up:
                self.up = True
                return True
            return False
        self.misses += 1
        if self.up and self.misses >= self.failures:
            self.up = False
            return True
        return False
