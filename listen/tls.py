"""HTTPS in HAProxy without reloads: certificates through the runtime API's SSL commands,
the redirect and HSTS maps through its map commands, and the same state on disk.

Every change is written to disk first (`<state-dir>/tls/`: one `<vhost>.pem` per
certificate, the crt-list, the two maps) and then told to the running worker, so a
reload or a restarted HAProxy serves the same. HAProxy keeps only one certificate
transaction at a time and puts a `set` for another name into the pending one, so every
change runs under one lock, each answer must name the expected path, and a failed
transaction is aborted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from buoy.listen.certs import Bundle, CertError, parse_bundle, self_signed
from buoy.listen.haproxy import HAProxyError, MasterSocket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsPaths:
    """Where the HTTPS state lives (all in the state dir)."""

    dir: Path

    @property
    def default_cert(self) -> Path:
        return self.dir / "default.pem"

    @property
    def crt_list(self) -> Path:
        return self.dir / "crt-list.txt"

    @property
    def redirect_map(self) -> Path:
        return self.dir / "redirect.map"

    @property
    def hsts_map(self) -> Path:
        return self.dir / "hsts.map"

    def cert(self, vhost: str) -> Path:
        return self.dir / (vhost.replace("*", "_wildcard") + ".pem")


class TlsDriver:
    """Brings HAProxy's certificates and HTTPS maps to what is wanted, one change at a time."""

    def __init__(self, paths: TlsPaths, sock: MasterSocket, default_cert: Path | None) -> None:
        self.paths = paths
        self.sock = sock
        self.default_source = default_cert
        self.lock = threading.Lock()
        self.served: dict[str, Bundle] = {}  # vhost → the bundle HAProxy serves
        self.maps: dict[Path, dict[str, str]] = {paths.redirect_map: {}, paths.hsts_map: {}}
        self.default: Bundle | None = None
        self.failures = 0

    # start -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Before HAProxy starts: the default certificate, and a crt-list naming only files
        that exist (a missing one is fatal to HAProxy), maps present."""
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.dir, 0o700)
        if self.default_source is not None:
            write_atomic(self.paths.default_cert, self.default_source.read_text())
        elif not self.paths.default_cert.exists():
            write_atomic(self.paths.default_cert, self_signed())
        for line in read_lines(self.paths.crt_list):
            parts = line.split()
            if len(parts) >= 2 and Path(parts[0]).is_file():
                try:
                    bundle = parse_bundle(parts[-1], Path(parts[0]).read_text(), "dir")
                except (CertError, OSError):
                    continue
                self.served[bundle.vhost] = bundle  # what HAProxy will load at start
        self._write_list()
        for path in self.maps:
            self.maps[path] = dict(ln.split(" ", 1) for ln in read_lines(path) if " " in ln)
            write_atomic(path, render_map(self.maps[path]))

    def abort_stale(self) -> None:
        """Abort a certificate transaction left pending (a listen that died mid-change): it
        would take the next `set` for any name."""
        with self.lock:
            try:
                out = self._cmd("show ssl cert")
            except OSError:
                return
            _, _, pending = out.partition("# transaction")
            for line in pending.splitlines():
                if line.startswith("*"):
                    log.warning("aborting a pending certificate transaction path=%s", line[1:])
                    self._abort(Path(line[1:].strip()))

    # certificates --------------------------------------------------------------------------
    def sync(self, wanted: Mapping[str, Bundle]) -> list[str]:
        """Install, renew and remove certificates so HAProxy serves `wanted`; the errors."""
        errors: list[str] = []
        with self.lock:
            for vhost in sorted(set(self.served) - set(wanted)):
                try:
                    self._remove(vhost)
                except (HAProxyError, OSError) as exc:
                    errors.append(f"certificate {vhost} not removed: {exc}")
            for vhost, bundle in sorted(wanted.items()):
                old = self.served.get(vhost)
                if old is not None and old.pem == bundle.pem:
                    if old.source != bundle.source:
                        self.served[vhost] = bundle
                    continue
                try:
                    self._install(bundle, renew=old is not None)
                except (HAProxyError, OSError) as exc:
                    self.failures += 1
                    errors.append(f"certificate {vhost} not installed: {exc}")
                    log.error("certificate not installed vhost=%s error=%s", vhost, exc)
        return errors

    def _install(self, bundle: Bundle, *, renew: bool) -> None:
        path = self.paths.cert(bundle.vhost)
        write_atomic(path, bundle.pem)  # on disk first: a reload now serves it too
        if not renew:
            answer = self._cmd(f"new ssl cert {path}")
            if "already exists" not in answer and "New empty certificate store" not in answer:
                raise HAProxyError(f"new ssl cert {path}: {answer}")
        self._transaction(path, bundle.pem)
        if not renew or not self._listed(path):
            answer = self._cmd(f"add ssl crt-list {self.paths.crt_list}",
                               f"{path} {bundle.vhost}")
            if "Success!" not in answer:
                raise HAProxyError(f"add ssl crt-list {path}: {answer}")
        self.served[bundle.vhost] = bundle
        self._write_list()
        log.info("certificate %s vhost=%s source=%s serial=%x", "renewed" if renew else "added",
                 bundle.vhost, bundle.source, bundle.serial)

    def _transaction(self, path: Path, pem: str) -> None:
        """set + commit, checking that each answer is about `path`; abort on any error."""
        answer = self._cmd(f"set ssl cert {path}", pem)
        if f"Transaction created for certificate {path}!" not in answer:
            self._abort_pending(answer)
            raise HAProxyError(f"set ssl cert {path}: {answer}")
        answer = self._cmd(f"commit ssl cert {path}")
        if "Success!" not in answer:
            self._abort(path)
            raise HAProxyError(f"commit ssl cert {path}: {answer}")

    def _abort_pending(self, answer: str) -> None:
        """A transaction for another path was pending (`Transaction updated for ... X!`)."""
        for word in answer.replace("'", " ").replace("!", " ").split():
            if word.startswith("/"):
                self._abort(Path(word))

    def _abort(self, path: Path) -> None:
        try:
            self._cmd(f"abort ssl cert {path}")
        except OSError:
            pass

    def _remove(self, vhost: str) -> None:
        path = self.paths.cert(vhost)
        self.served.pop(vhost, None)
        self._write_list()  # off the list before the file goes: a reload never misses it
        answer = self._cmd(f"del ssl crt-list {self.paths.crt_list} {path}")
        if "deleted" not in answer and "does not exist" not in answer:
            raise HAProxyError(f"del ssl crt-list {path}: {answer}")
        self._cmd(f"del ssl cert {path}")
        path.unlink(missing_ok=True)
        log.info("certificate removed vhost=%s", vhost)

    def _listed(self, path: Path) -> bool:
        out = self._cmd(f"show ssl crt-list {self.paths.crt_list}")
        return any(line.split()[0] == str(path) for line in out.splitlines()
                   if line.strip() and not line.startswith("#"))

    def _write_list(self) -> None:
        lines = [f"{self.paths.cert(v)} {v}\n" for v in sorted(self.served)
                 if self.paths.cert(v).is_file()]
        write_atomic(self.paths.crt_list, "".join(lines))

    # redirect and HSTS maps ----------------------------------------------------------------
    def sync_maps(self, redirect: Mapping[str, str], hsts: Mapping[str, str]) -> list[str]:
        """`<vhost> 1` for HTTP → HTTPS redirects, `<vhost> <max-age>` for HSTS."""
        errors: list[str] = []
        with self.lock:
            for path, wanted in ((self.paths.redirect_map, redirect),
                                 (self.paths.hsts_map, hsts)):
                current = self.maps[path]
                if current == dict(wanted):
                    continue
                write_atomic(path, render_map(wanted))
                try:
                    for host in sorted(set(current) - set(wanted)):
                        self._map_cmd(f"del map {path} {host}")
                    for host, value in sorted(wanted.items()):
                        if host not in current:
                            self._map_cmd(f"add map {path} {host} {value}")
                        elif current[host] != value:
                            self._map_cmd(f"set map {path} {host} {value}")
                except (HAProxyError, OSError) as exc:
                    errors.append(f"map {path.name} not updated: {exc}")
                    # the file on disk is right; the next change compares against it
                self.maps[path] = dict(wanted)
        return errors

    def _map_cmd(self, line: str) -> None:
        answer = self._cmd(line).strip()
        if answer:
            raise HAProxyError(f"{line}: {answer}")

    def _cmd(self, line: str, payload: str | None = None) -> str:
        if payload is not None:
            # the payload ends at the first empty line: PEM must have none
            body = "\n".join(ln for ln in payload.splitlines() if ln.strip())
            line = f"{line} <<\n{body}\n"
        return self.sock.command("@1 " + line).strip()


def render_map(entries: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(entries.items()))


def read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return []


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
