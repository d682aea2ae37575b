"""The HAProxy driver: master socket, runtime API through it, `haproxy -c`, start/stop."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_RE = re.compile(r"^\s*(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
# Runtime API answers that mean success (everything else is an error message).
OK_RE = re.compile(r"^(|New server registered\.|Server deleted\.|no need to change.*"
                   r"|.*changed from .*)$", re.S)


class HAProxyError(Exception):
    """HAProxy refused something; the message is HAProxy's own."""


@dataclass(frozen=True)
class ProcState:
    master_pid: int
    reloads: int
    failed: int


class MasterSocket:
    """One command per connection; the write side is half-closed so the master answers."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            sock.sendall(line.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def proc(self) -> ProcState:
        out = self.command("show proc")
        m = PROC_RE.search(out)
        if not m:
            raise HAProxyError(f"unexpected 'show proc' answer: {out[:200]!r}")
        return ProcState(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def runtime(self, line: str) -> str:
        """A runtime API command for the current worker (`@1`); raises on an error answer."""
        out = self.command("@1 " + line).strip()
        if not OK_RE.match(out):
            raise HAProxyError(f"{line!r}: {out}")
        return out


class HAProxy:
    """A master-worker HAProxy: started by us (`-W -S`) or an existing one (`own=False`)."""

    def __init__(self, binary: str, config: Path, master_socket: Path, log_path: Path,
                 *, own: bool = True, reload_timeout: float = 10.0) -> None:
        self.binary = binary
        self.config = config
        self.sock = MasterSocket(master_socket)
        self.log_path = log_path
        self.own = own
        self.reload_timeout = reload_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.reloads = 0

    def check(self, path: Path) -> str | None:
        """Validate a config file; None when valid, else HAProxy's own message."""
        # Without -q: with it HAProxy 2.6 prints nothing at all, not even its ALERTs.
        res = subprocess.run([self.binary, "-c", "-f", str(path)], capture_output=True,
                             text=True, timeout=60)
        if res.returncode == 0:
            return None
        alerts = [ln for ln in (res.stdout + res.stderr).splitlines() if "ALERT" in ln]
        return "\n".join(alerts) or f"haproxy -c exited {res.returncode}"

    def start(self, timeout: float = 10.0) -> None:
        if not self.own:
            self.wait_ready(timeout)
            return
        if self.sock.path.exists():
            self.sock.path.unlink()  # a stale socket from a previous run
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-W", "-S", f"{self.sock.path},mode,600", "-f", str(self.config)],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        log.info("haproxy started pid=%d config=%s", self.proc.pid, self.config)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> ProcState:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise HAProxyError(f"haproxy exited {self.proc.returncode}: {self.log_tail(0)}")
            try:
                return self.sock.proc()
            except (OSError, HAProxyError) as exc:
                if time.monotonic() > deadline:
                    raise HAProxyError(f"master socket {self.sock.path} not ready: {exc}") from None
                time.sleep(0.05)

    def reload(self) -> None:
        """Reload through the master; raise HAProxyError with HAProxy's message on failure."""
        before = self.wait_ready(self.reload_timeout)
        offset = self._log_size()
        self.sock.command("reload")  # 2.6 answers nothing useful: check `show proc`
        deadline = time.monotonic() + self.reload_timeout
        while time.monotonic() < deadline:
            try:
                now = self.sock.proc()
            except (OSError, HAProxyError):
                time.sleep(0.02)  # the master is re-executing itself
                continue
            if now.failed > before.failed:
                raise HAProxyError(self.log_tail(offset) or "reload failed")
            if now.reloads > before.reloads:
                self.reloads += 1
                return
            time.sleep(0.02)
        raise HAProxyError(f"reload not confirmed within {self.reload_timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        log.info("haproxy stopped pid=%d", self.proc.pid)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, offset: int) -> str:
        """HAProxy's ALERT lines written since `offset` (its own error message)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read(65536).decode(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if "ALERT" in ln or "WARNING" in ln]
        return "\n".join(lines[-10:])
