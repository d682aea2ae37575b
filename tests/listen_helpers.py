"""Helpers for listen tests: small real backends, records in etcd, a listener in a thread."""

from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from etcd_server import EtcdServer, free_port, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, ServiceRecord
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore
from buoy.listen.agent import Listener
from buoy.listen.config import ListenConfig


class NamedHTTP:
    """An HTTP server on 127.0.0.1 that answers every GET with its own name, and counts the
    connections it accepted. `stop_container()` closes every open connection and from then
    on accepts and closes at once, as Docker's proxy does for the published port of a
    stopped container."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.dead = False
        self._idle: set[socket.socket] = set()
        self._lock = threading.Lock()  # a connection is idle or answering, never both
        body = name.encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                owner.connections += 1
                owner._idle.add(self.request)
                super().setup()
                # headers and body are two writes: without this, Nagle and delayed ACKs
                # hold every answer on a kept-alive connection for 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def handle_one_request(self) -> None:
                if owner.dead:  # close without an answer
                    self.close_connection = True
                    return
                # busy from the request line on: a stopping app finishes what it started;
                # a request that came in as the stop closed this idle connection is not
                # answered (the client sees the connection close with no response)
                self.raw_requestline = self.rfile.readline(65537)
                with owner._lock:
                    if owner.dead:
                        self.close_connection = True
                        return
                    owner._idle.discard(self.request)
                try:
                    if not self.raw_requestline:
                        self.close_connection = True
                    elif self.parse_request():
                        self.do_GET()
                        self.wfile.flush()
                finally:
                    if not owner.dead:
                        owner._idle.add(self.request)

            def finish(self) -> None:
                owner._idle.discard(self.request)
                super().finish()

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (wrk, health checks) is no failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop_container(self) -> None:
        """Idle kept-alive connections are closed; a request being answered finishes."""
        with self._lock:
            self.dead = True
            for conn in list(self._idle):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EchoTCP:
    """A TCP server that answers each line with `<name>:<line>`."""

    def __init__(self, name: str) -> None:
        prefix = name.encode() + b":"

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(prefix + line)

        class Server(socketserver.ThreadingTCPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-line is no test failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def put_service(store: EtcdStore, keys: KeyLayout, path: str, instance_id: str, ext_port: int,
                *, port: int = 80, type_: str = "HTTP", **extra: Any) -> str:
    p = AnnouncePath.parse(path)
    rec = ServiceRecord(id=instance_id, app=p.app, env=p.env, service=p.service, name=p.name,
                        scope=p.scope, port=port, type=type_, ip="127.0.0.1",  # type: ignore[arg-type]
                        ext_port=ext_port, host="testhost", **extra)
    key = keys.service_key(p, instance_id)
    store.put(key, rec.to_json())
    return key


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    """One request with a Host header, on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def answers(port: int, host: str, n: int = 8) -> set[str]:
    """The set of bodies seen over `n` requests (round robin spreads them)."""
    out = set()
    for _ in range(n):
        status, body = get(port, host)
        out.add(body if status == 200 else f"status {status}")
    return out


def tcp_ask(port: int, line: str = "hi") -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(line.encode() + b"\n")
            return s.recv(1024).decode().strip()
    except OSError as exc:
        return f"error {exc}"


class RunningListener:
    """A Listener on a thread, with its own state dir and HTTP port."""

    def __init__(self, store: EtcdStore, keys: KeyLayout, state_dir: Path, paths: list[str],
                 **options: Any) -> None:
        self.http_port = options.pop("http_port", None) or free_port()
        prefixes = tuple(keys.services_watch_prefix(p) for p in paths)
        self.config = ListenConfig(watch_prefixes=prefixes,
                                   http_bind=f"127.0.0.1:{self.http_port}",
                                   http_port=self.http_port, state_dir=state_dir, **options)
        self.listener = Listener(self.config, store, keys)
        self.thread = threading.Thread(target=self.listener.run, daemon=True)

    def start(self, wait_synced: bool = True) -> RunningListener:
        self.thread.start()
        wait_for(lambda: self.listener.haproxy.proc is not None or not self.listener.haproxy.own,
                 what="haproxy start")
        if wait_synced:
            wait_for(lambda: self.listener.applier.applied is not None, timeout=15,
                     what="first apply")
        return self

    def reloads(self) -> int:
        """The master's reload count, once it answers (it re-executes itself on a reload,
        and the new worker may serve before the master socket is back)."""
        return self.listener.haproxy.wait_ready(10).reloads

    def stop(self) -> None:
        self.listener.stop.set()
        self.listener.wake.set()
        self.thread.join(20)


def start_listener(etcd: EtcdServer, keys: KeyLayout, state: Path,
                   started: list[RunningListener], paths: list[str],
                   **options: Any) -> RunningListener:
    """A RunningListener on its own store, started and added to `started` (for teardown)."""
    store = EtcdStore(EtcdSettings.from_strings(etcd.endpoint, timeout=2.0))
    r = RunningListener(store, keys, state, paths, **options)
    started.append(r)
    return r.start()


class Requests:
    """A client loop on a thread: keep-alive GETs with one Host header, reconnecting after
    an error, counting answers; bounded in time whatever happens."""

    def __init__(self, port: int, host: str, seconds: float = 60.0, pause: float = 0.0) -> None:
        self.port, self.host, self.seconds, self.pause = port, host, seconds, pause
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failed += 1
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            if self.pause:
                time.sleep(self.pause)
        conn.close()

    def start(self) -> Requests:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def __enter__(self) -> Requests:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
