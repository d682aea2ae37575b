"""`buoy up`: the single-host stack under supervisord, with a real Docker container routed."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
from agent_process import AgentProcess
from docker_helpers import (
    IMAGE,
    TEST_LABEL,
    docker_client,
    ensure_image,
    remove_test_containers,
    run_httpd,
)
from etcd_server import free_port, wait_for

from buoy.ops.up import docker_gateway
from buoy.ops.up_config import UpConfig, render_supervisord, startup_failure, status_line


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


def test_each_agent_gets_its_own_metrics_port_and_log(tmp_path: Path) -> None:
    config = UpConfig(state_dir=tmp_path, python="/usr/bin/python3", etcd_binary="/usr/bin/etcd",
                      etcd_endpoints=None, etcd_port=2379, metrics_port=9100,
                      container_ips=("172.17.0.1",))
    sections = render_supervisord(config).split("[program:")[1:]
    env = {s.split("]")[0]: s.split("environment=")[1].splitlines()[0] for s in sections}
    assert 'BUOY_METRICS_PORT="9100"' in env["register"]
    assert 'BUOY_METRICS_PORT="9101"' in env["listen"]
    assert 'BUOY_METRICS_PORT="9102"' in env["dns"]
    assert "BUOY_METRICS_PORT" not in env["etcd"]
    off = UpConfig(state_dir=tmp_path, python="/usr/bin/python3", etcd_binary=None,
                   etcd_endpoints="http://127.0.0.1:2379")
    # with metrics off every agent is told 0, whatever buoy up's own environment says
    assert render_supervisord(off).count('BUOY_METRICS_PORT="0"') == 3
    text = render_supervisord(config)
    assert "--listen-client-urls http://127.0.0.1:2379,http://172.17.0.1:2379" in text
    assert f"stdout_logfile={tmp_path}/logs/register.log" in text
    assert "/dev/stdout" not in text
    assert status_line({"dns": "RUNNING"}, config).endswith(
        "containers' etcd http://172.17.0.1:2379  metrics register:9100 listen:9101 dns:9102")
    assert ("BUOY_UP_ETCD_PORT", "tcp", "172.17.0.1", 2379) in config.ports()
    assert ("BUOY_UP_METRICS_PORT", "tcp", "127.0.0.1", 9102) in config.ports()


def test_startup_failure_is_the_programs_last_words() -> None:
    assert startup_failure("RUNNING", 0, ["x"]) is None
    assert startup_failure("BACKOFF", 1, ["crashed once"]) is None  # may do better next time
    assert startup_failure("BACKOFF", 2, ["a", "buoy: error: BUOY_HOST_IP: bad", "b"]) == \
        "buoy: error: BUOY_HOST_IP: bad"
    assert startup_failure("BACKOFF", 1, ["listen tcp 127.0.0.1:2379: bind: address already "
                                          "in use"]) is not None
    assert startup_failure("FATAL", 1, ["last"]) == "last"


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


def _free_run(count: int) -> int:
    """A free port whose `count - 1` successors are free too."""
    for _ in range(50):
        port = free_port()
        try:
            for i in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + i))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port run")


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except OSError:
        return 0


def test_up_routes_a_container_and_stops_cleanly(tmp_path: Path, prefix: str, docker: Any) -> None:
    http_port, dns_port, etcd_port = free_port(), free_port(), _port_pair()
    metrics = _free_run(3)
    stack = AgentProcess(
        ["up", "--http-port", str(http_port), "--dns-port", str(dns_port),
         "--etcd-port", str(etcd_port), "--state-dir", str(tmp_path / "state"),
         "--prefix", prefix, "--host-ip", "127.0.0.1", "--metrics-port", str(metrics)],
        env={"BUOY_METRICS_PORT": str(free_port())},  # must not reach the agents
        log_dir=tmp_path).start()
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
        # one metrics port per agent, shown in the status line
        for port in (metrics, metrics + 1, metrics + 2):
            wait_for(lambda p=port: _healthz(p) == 200, 20, what=f"/healthz on {port}")
        status = [ln for ln in stack.log().splitlines() if ln.startswith("buoy up:")][-1]
        assert f"metrics register:{metrics} listen:{metrics + 1} dns:{metrics + 2}" in status
        # the embedded etcd is reachable from a container on the default bridge
        gateway = docker_gateway("bridge")
        assert f"containers' etcd http://{gateway}:{etcd_port}" in status
        probe = docker.containers.run(
            IMAGE, ["/bin/sh", "-c", f"(printf 'GET /health HTTP/1.0\\r\\n\\r\\n'; sleep 1) | "
                    f"nc {gateway} {etcd_port}"], labels={TEST_LABEL: "1"}, remove=True)
        assert probe.startswith(b"HTTP/1.0 200 OK"), probe  # etcd's /health answered
        stack.signal(signal.SIGINT)
        assert stack.wait(60) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", etcd_port), timeout=1).close()
        assert _get(http_port, "web.dev.app1") == 0  # HAProxy went with the stack
        # written to a file: every line whole, either buoy up's own or a program's
        programs = ("supervisord", "etcd", "register", "listen", "dns")
        lines = stack.log().splitlines()
        assert len(lines) > 10
        odd = [ln for ln in lines if not ln.startswith("buoy up:")
               and ln.split(" | ", 1)[0] not in programs]
        assert odd == []
        assert all(ln.split(" | ", 1)[1][:4] in ("2026", "2027", "{\"lev", "")
                   or ln.startswith(("buoy up:", "etcd | ", "supervisord | ", "listen | "))
                   for ln in lines if " | " in ln)
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.signal(signal.SIGINT)
            try:
                stack.wait(30)
            except Exception:  # noqa: BLE001 - fall back to a kill below
                pass
        stack.stop()


def _up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    etcd_port = _port_pair()
    return subprocess.run(
        [sys.executable, "-m", "buoy", "up", "--etcd-port", str(etcd_port),
         "--http-port", str(free_port()), "--dns-port", str(free_port()),
         "--state-dir", str(tmp_path / "state"), "--container-networks", "none", *args],
        capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("which", ["--http-port", "--dns-port", "--etcd-port", "--metrics-port"])
def test_up_refuses_a_taken_port_in_one_line(tmp_path: Path, which: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = _up(tmp_path, which, str(port))
    assert done.returncode == 2, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"127.0.0.1:{port}/tcp" in done.stderr and "in use" in done.stderr
    setting = {"--http-port": "BUOY_HTTP_PORT", "--dns-port": "BUOY_DNS_PORT",
               "--etcd-port": "BUOY_UP_ETCD_PORT", "--metrics-port": "BUOY_UP_METRICS_PORT"}
    assert done.stderr.startswith(f"buoy: error: {setting[which]}: ")
    assert not (tmp_path / "state" / "supervisord.conf").exists()  # nothing was started


def test_up_stops_with_the_line_of_a_program_that_cannot_start(tmp_path: Path) -> None:
    """register refuses its --host-ip: the stack stops with its line, it does not cycle."""
    started = time.monotonic()
    done = _up(tmp_path, "--host-ip", "300.1.1.1")
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        "buoy: error: register cannot start: BUOY_HOST_IP: must be an IPv4 or IPv6 address "
        "(got '300.1.1.1')"] or (len(done.stderr.splitlines()) == 1
                                 and "register cannot start: BUOY_HOST_IP" in done.stderr)
    assert "register | buoy: error: BUOY_HOST_IP" in done.stdout
    assert time.monotonic() - started < 60
