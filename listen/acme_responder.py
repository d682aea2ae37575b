"""listen's HTTP-01 responder: HAProxy sends `/.well-known/acme-challenge/<token>` here (a
unix socket in the state dir), and the answer is read from etcd, where the listener that
issues wrote it (`/acme/challenges/<token>`). Every listener answers, whichever one the CA
reaches, and a challenge needs no reload."""

from __future__ import annotations

import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import RecordError
from buoy.etcd.store import EtcdStore, StoreError

log = logging.getLogger(__name__)

PREFIX = "/.well-known/acme-challenge/"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy hung up: nothing to answer


class ChallengeResponder:
    """Serves key authorizations from etcd on a unix socket."""

    def __init__(self, path: Path, store: EtcdStore, keys: KeyLayout) -> None:
        self.path = path
        self.served = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body = owner.answer(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def address_string(self) -> str:
                return "haproxy"

            def log_message(self, *args: Any) -> None:
                pass

        self._handler = Handler
        self._store = store
        self._keys = keys
        self._server: _Server | None = None

    def answer(self, url_path: str) -> tuple[int, str]:
        token = url_path.split("?", 1)[0].removeprefix(PREFIX)
        try:
            kv = self._store.get(self._keys.acme_challenge_key(token))
        except RecordError:
            return 404, "no such challenge"
        except StoreError as exc:
            log.warning("acme challenge not read token=%s error=%s", token, exc)
            return 503, "etcd unavailable"
        if kv is None:
            return 404, "no such challenge"
        self.served += 1
        log.info("acme challenge answered token=%s", token)
        return 200, kv.value.decode() if isinstance(kv.value, bytes) else str(kv.value)

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = _Server(str(self.path), self._handler)
        self.path.chmod(0o600)
        threading.Thread(target=self._server.serve_forever, name="acme-responder",
                         daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.path.unlink(missing_ok=True)
