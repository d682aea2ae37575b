"""The local health check announce runs before it announces (HTTP GET or TCP connect)."""

from __future__ import annotations

import socket


def probe(port: int, check: str, timeout: float, host: str = "127.0.0.1") -> tuple[bool, str]:
    """Whether the service answers (a 2xx/3xx to GET `check`, or a TCP connect for `tcp`),
    and what it said: `status=200`, `connected`, or the connect error.

    Only the status line is read (no http.client: announce stays small), and the
    connection is closed after it.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if check == "tcp":
                return True, "connected"
            sock.sendall(f"GET {check} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "User-Agent: buoy-announce-check\r\nConnection: close\r\n\r\n"
                         .encode("latin-1"))
            with sock.makefile("rb") as reader:
                line = reader.readline(1024)
    except OSError as exc:
        return False, f"error={_describe(exc)}"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"error=not an HTTP answer {line[:40]!r}"
    status = int(parts[1])
    return 200 <= status < 400, f"status={status}"


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
