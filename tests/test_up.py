"""`buoy up`: the single-host stack under supervisord, with a real Docker container routed."""

from __future__ import annotations

import http.client
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
from agent_process import AgentProcess
from docker_helpers import docker_client, ensure_image, remove_test_containers, run_httpd
from etcd_server import free_port, wait_for

from buoy.up_config import UpConfig, render_supervisord


def _port_pair() -> int:
    """A free port whose successor is free too (etcd client + peer)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def test_rendered_config_runs_every_program_in_order(tmp_path: Path) -> None:
    config = UpConfig(state_dir=tmp_path, python="/usr/bin/python3", etcd_binary="/usr/bin/etcd",
                      etcd_endpoints=None, etcd_port=2379, http_port=8080, prefix="/p")
    text = render_supervisord(config)
    order = [line.split(":")[1].rstrip("]") for line in text.splitlines()
             if line.startswith("[program:")]
    assert order == ["etcd", "register", "listen", "dns"]
    assert "--http-bind 127.0.0.1:8080" in text
    assert 'BUOY_PREFIX="/p"' in text
    external = UpConfig(state_dir=tmp_path, python="/usr/bin/python3", etcd_binary=None,
                        etcd_endpoints="http://10.0.0.1:2379")
    assert "[program:etcd]" not in render_supervisord(external)
    internal = UpConfig(state_dir=tmp_path, python="/usr/bin/python3", etcd_binary=None,
                        etcd_endpoints="http://127.0.0.1:2379", network="demo-net")
    assert "register --internal --network demo-net" in render_supervisord(internal)


@pytest.fixture
def docker() -> Iterator[Any]:
    client = docker_client()
    ensure_image(client)
    yield client
    remove_test_containers(client)


def _get(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def test_up_routes_a_container_and_stops_cleanly(tmp_path: Path, prefix: str, docker: Any) -> None:
    http_port, dns_port, etcd_port = free_port(), free_port(), _port_pair()
    stack = AgentProcess(
        ["up", "--http-port", str(http_port), "--dns-port", str(dns_port),
         "--etcd-port", str(etcd_port), "--state-dir", str(tmp_path / "state"),
         "--prefix", prefix, "--host-ip", "127.0.0.1"], log_dir=tmp_path).start()
    try:
        def all_running() -> bool:
            status = [ln for ln in stack.log().splitlines() if ln.startswith("buoy up:")]
            return bool(status) and all(f"{p} RUNNING" in status[-1]
                                        for p in ("etcd", "register", "listen", "dns"))

        wait_for(all_running, 60, interval=0.2, what="every program RUNNING")
        run_httpd(docker, hostname="upweb1", labels={
            "buoy.path": "/internal/app1/dev/web", "buoy.port": "80", "buoy.type": "HTTP"})
        wait_for(lambda: _get(http_port, "web.dev.app1") == 200, 30, what="routed")
        query = dns.message.make_query("web.dev.app1.internal.buoy.internal.", dns.rdatatype.A)
        answer = wait_for(lambda: dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=2).answer,
                          20, what="DNS answer")
        assert [r.address for r in answer[0]] == ["127.0.0.1"]
        stack.signal(signal.SIGINT)
        assert stack.wait(60) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", etcd_port), timeout=1).close()
        assert _get(http_port, "web.dev.app1") == 0  # HAProxy went with the stack
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.signal(signal.SIGINT)
            try:
                stack.wait(30)
            except Exception:  # noqa: BLE001 - fall back to a kill below
                pass
        stack.stop()
