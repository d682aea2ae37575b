"""The HAProxy driver: master socket, runtime API through it, `haproxy -c`, start, watch, stop.

HAProxy's own output (NOTICE, WARNING and ALERT lines) is read from a pipe: every line
goes into `<state-dir>/haproxy.log` (reload errors are read from there) and WARNING and
ALERT lines are logged by listen too, so `docker logs` shows them. A HAProxy we start
gets SIGUSR1 (a graceful stop) if listen itself dies (`setpriv --pdeathsig`), so a
restarted listen never finds an orphan serving an old config on its port.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_RE = re.compile(r"^\s*(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
WORKER_RE = re.compile(r"^\s*\d+\s+worker\s", re.M)
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
    workers: int = 1  # current workers (old ones finishing a reload not counted)


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
        current = out.split("# old workers")[0]
        return ProcState(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                         len(WORKER_RE.findall(current)))

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
        self.restarts = 0
        self._checked = 0.0  # when the master last answered `show proc` with a worker

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
        argv = [self.binary, "-W", "-S", f"{self.sock.path},mode,600", "-f", str(self.config)]
        setpriv = shutil.which("setpriv")  # util-linux: sets the parent-death signal, then execs
        self.proc = subprocess.Popen(
            [setpriv, "--pdeathsig", "USR1", *argv] if setpriv else argv,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        threading.Thread(target=self._forward, args=(self.proc,), name="haproxy-output",
                         daemon=True).start()
        log.info("haproxy started pid=%d config=%s", self.proc.pid, self.config)
        self.wait_ready(timeout)
        self._checked = time.monotonic()

    def _forward(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy HAProxy's output into its log file; WARNING and ALERT lines into ours too."""
        assert proc.stdout is not None
        with open(self.log_path, "ab", buffering=0) as out:
            for raw in proc.stdout:
                out.write(raw)
                line = raw.decode(errors="replace").rstrip()
                if "ALERT" in line or "WARNING" in line:
                    log.warning("haproxy pid=%d %s", proc.pid, line)
                elif line:
                    log.info("haproxy pid=%d %s", proc.pid, line)

    def failure(self, every: float = 1.0) -> str | None:
        """Why HAProxy is not serving, or None: the master we started has exited (checked
        every call), or the master does not answer or has no worker (asked every `every`
        seconds)."""
        if self.own:
            if self.proc is None:
                return "haproxy is not running"
            code = self.proc.poll()
            if code is not None:
                how = f"killed by {_signame(-code)}" if code < 0 else f"exited {code}"
                if code > 128:  # the master exits with its worker's status
                    how += f" (a worker was killed by {_signame(code - 128)})"
                return f"haproxy master pid={self.proc.pid} {how}"
        now = time.monotonic()
        if now - self._checked < every:
            return None
        try:
            state = self.sock.proc()
        except (OSError, HAProxyError) as exc:
            # a master re-executing itself refuses for a moment: only a second's silence counts
            if now - self._checked < 2 * every:
                return None
            return f"haproxy master socket does not answer: {exc}"
        if state.workers < 1:
            return f"haproxy master pid={state.master_pid} has no worker"
        self._checked = now
        return None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop whatever is left of our HAProxy and start it again from the config file."""
        self.kill()
        self.restarts += 1
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the master and every process of its session (its workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: pgid == master pid
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            log.error("haproxy pid=%d did not exit after SIGKILL", self.proc.pid)

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
            if self.proc is not None and self.proc.poll() is not None:
                raise HAProxyError(f"haproxy exited during the reload ({self.proc.returncode})")
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
            self.kill()
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


def bind_taken(bind: str, port: int) -> str | None:
    """Whether another process listens on the HTTP bind (`*:80`, `1.2.3.4:80`, `ipv6@::1:80`):
    its error, or None. HAProxy itself binds with SO_REUSEPORT and would share the port with
    another listener (and split its traffic), so this probe binds without it."""
    host = bind.removeprefix("ipv6@").rpartition(":")[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    host = "" if host in ("*", "") else host
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
