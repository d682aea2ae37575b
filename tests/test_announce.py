"""`buoy announce` as a subprocess against a real etcd."""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess
from conftest import store_for
from etcd_server import EtcdServer, free_port, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore

PATH = "/internal/app1/dev/web/ghost.example"


def announce(etcd: EtcdServer, prefix: str, tmp_path: Path, **env: str) -> AgentProcess:
    base = {"ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web1",
            "BUOY_ETCD_ENDPOINTS": etcd.endpoint, "BUOY_PREFIX": prefix,
            "ANNOUNCE_TTL": "3", "ANNOUNCE_INTERVAL": "1"}
    base.update(env)
    return AgentProcess(["announce"], base, tmp_path).start()


def key_for(prefix: str, instance: str = "web1") -> str:
    from buoy.etcd.records import AnnouncePath
    return KeyLayout(prefix).announce_key(AnnouncePath.parse(PATH), instance)


def present(store: EtcdStore, key: str) -> bool:
    try:
        return store.get(key) is not None
    except Exception:  # noqa: BLE001 - etcd may be restarting
        return False


def test_start_writes_record_and_sigterm_withdraws(etcd: EtcdServer, store: EtcdStore,
                                                  prefix: str, tmp_path: Path) -> None:
    agent = announce(etcd, prefix, tmp_path)
    key = key_for(prefix)
    try:
        kv = wait_for(lambda: store.get(key), 10, what="announce record")
        record = json.loads(kv.value)
        assert record == {"ID": "web1", "APP": "app1", "ENV": "dev", "SERVICE": "web",
                          "NAME": "ghost.example", "PORT": 80, "TYPE": "HTTP",
                          "SCOPE": "internal"}
        assert kv.lease != 0
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        assert store.get(key) is None  # gone at once: the lease was revoked
    finally:
        agent.stop()


def test_sigint_withdraws_and_drain_waits(etcd: EtcdServer, store: EtcdStore, prefix: str,
                                          tmp_path: Path) -> None:
    agent = announce(etcd, prefix, tmp_path, ANNOUNCE_DRAIN="1")
    key = key_for(prefix)
    try:
        wait_for(lambda: store.get(key), 10, what="announce record")
        agent.signal(signal.SIGINT)
        wait_for(lambda: store.get(key) is None, 5, what="withdrawn before the drain ends")
        assert agent.proc is not None and agent.proc.poll() is None  # still draining
        assert agent.wait() == 0
    finally:
        agent.stop()


def test_sigkill_record_goes_after_ttl(etcd: EtcdServer, store: EtcdStore, prefix: str,
                                       tmp_path: Path) -> None:
    agent = announce(etcd, prefix, tmp_path)
    key = key_for(prefix)
    wait_for(lambda: store.get(key), 10, what="announce record")
    agent.signal(signal.SIGKILL)
    agent.wait()
    assert store.get(key) is not None  # no one revoked it
    wait_for(lambda: store.get(key) is None, 3 + 3, what="record expired after the TTL")


def test_etcd_restart_record_comes_back(own_etcd: EtcdServer, prefix: str,
                                        tmp_path: Path) -> None:
    store = store_for(own_etcd)
    agent = announce(own_etcd, prefix, tmp_path)
    key = key_for(prefix)
    try:
        wait_for(lambda: store.get(key), 10, what="announce record")
        own_etcd.kill()
        threading.Event().wait(4)  # etcd stays down for longer than the TTL
        own_etcd.start()
        wait_for(lambda: present(store, key), 1 + 1 + 5, what="record back after restart")
        assert agent.proc is not None and agent.proc.poll() is None
        assert "failed attempt" in agent.log() or "failed" in agent.log()
    finally:
        agent.stop()
        store.close()


def test_etcd_down_at_start_then_up(tmp_path: Path, prefix: str) -> None:
    server = EtcdServer(tmp_path / "late")
    agent = announce(server, prefix, tmp_path)
    try:
        wait_for(lambda: "failed" in agent.log(), 10, what="a logged retry")
        server.start()
        store = store_for(server)
        wait_for(lambda: present(store, key_for(prefix)), 10, what="record once etcd is up")
        store.close()
    finally:
        agent.stop()
        server.stop()


@pytest.mark.parametrize(("env", "setting"), [
    ({"PORT": ""}, "PORT"), ({"PORT": "0"}, "PORT"), ({"PORT": "70000"}, "PORT"),
    ({"PORT": "abc"}, "PORT"), ({"TYPE": "UDP"}, "TYPE"),
    ({"ANNOUNCE_PATH": "/internal/App1/dev/web"}, "ANNOUNCE_PATH"),
    ({"ANNOUNCE_PATH": "/internal/app 1/dev/web"}, "ANNOUNCE_PATH"),
    ({"ANNOUNCE_PATH": "/internal/app1/dev/web\nx"}, "ANNOUNCE_PATH"),
    ({"ANNOUNCE_PATH": "/internal/../dev/web"}, "ANNOUNCE_PATH"),
    ({"ANNOUNCE_PATH": "/internal/app1/dev"}, "ANNOUNCE_PATH"),
    ({"ANNOUNCE_TTL": "x"}, "ANNOUNCE_TTL"), ({"ANNOUNCE_INTERVAL": "20"}, "ANNOUNCE_INTERVAL"),
    ({"CHECK": "/a b"}, "CHECK"), ({"ANNOUNCE_ID": "bad id"}, "ID"),
    ({"BUOY_ETCD_ENDPOINTS": "ftp://x"}, "BUOY_ETCD_ENDPOINTS"),
    ({"BUOY_ETCD_ENDPOINTS": "https://127.0.0.1:1", "BUOY_ETCD_CA": "/nonexistent/ca.pem"},
     "BUOY_ETCD_CA"),
    ({"ANNOUNCE_PATH": "/internal/app1/dev/web/" + ".".join(["a" * 60] * 4)}, "ANNOUNCE_PATH"),
    ({"BUOY_DNS_ZONE": "bad zone"}, "BUOY_DNS_ZONE"),
])
@pytest.mark.parametrize("command", [["buoy", "announce"], ["announce"]],
                         ids=["buoy-announce", "python-m-announce"])
def test_invalid_settings_exit_2_with_one_line(etcd: EtcdServer, store: EtcdStore, prefix: str,
                                               env: dict[str, str], setting: str,
                                               command: list[str]) -> None:
    full = {"ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web1",
            "BUOY_ETCD_ENDPOINTS": etcd.endpoint, "BUOY_PREFIX": prefix, **env}
    import os
    proc = subprocess.run([sys.executable, "-m", *command], env={**os.environ, **full},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert setting in lines[0]
    _, kvs = store.get_prefix(prefix + "/")
    assert kvs == []


class _Health(http.server.BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if type(self).healthy else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"healthy": True})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], handler
    server.shutdown()


def test_check_withdraws_and_reannounces(etcd: EtcdServer, store: EtcdStore, prefix: str,
                                         tmp_path: Path,
                                         health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    agent = announce(etcd, prefix, tmp_path, PORT=str(port), CHECK="/healthz",
                     ANNOUNCE_CHECK_INTERVAL="0.2", ANNOUNCE_CHECK_FAILURES="2")
    key = key_for(prefix)
    try:
        wait_for(lambda: store.get(key), 10, what="announced while healthy")
        handler.healthy = False
        wait_for(lambda: store.get(key) is None, 10, what="withdrawn after failed checks")
        handler.healthy = True
        wait_for(lambda: store.get(key), 10, what="announced again on recovery")
    finally:
        agent.stop()


def test_tcp_check_waits_for_the_port(etcd: EtcdServer, store: EtcdStore, prefix: str,
                                      tmp_path: Path) -> None:
    import socket
    port = free_port()
    agent = announce(etcd, prefix, tmp_path, PORT=str(port), TYPE="TCP", CHECK="tcp",
                     ANNOUNCE_CHECK_INTERVAL="0.2")
    key = key_for(prefix)
    try:
        threading.Event().wait(1.0)
        assert store.get(key) is None  # nothing listens yet
        with socket.create_server(("127.0.0.1", port)):
            wait_for(lambda: store.get(key), 10, what="announced once the port listens")
    finally:
        agent.stop()
