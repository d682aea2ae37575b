"""`buoy listen` as a process: a taken bind, a second listener, and the three `--once` cases."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import NamedHTTP, answers, put_service

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


def buoy_listen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buoy", "listen", "--listen-path", LISTEN,
                           *args], capture_output=True, text=True, timeout=timeout)


def error_lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in out.stderr.splitlines() if ln.strip()]


def test_a_taken_bind_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = buoy_listen("--http-bind", f"127.0.0.1:{port}", "--state-dir", str(tmp_path),
                          "--etcd-endpoints", "http://127.0.0.1:1")
    assert out.returncode == 2
    lines = error_lines(out)
    assert len(lines) == 1 and "BUOY_HTTP_BIND" in lines[0] and "taken" in lines[0], lines


def test_a_second_listener_on_the_same_bind_exits_2(etcd: EtcdServer, store: EtcdStore,
                                                   keys: KeyLayout, tmp_path: Path) -> None:
    web = NamedHTTP("w1")
    port = free_port()
    common = ["--http-bind", f"127.0.0.1:{port}", "--etcd-endpoints", etcd.endpoint,
              "--prefix", keys.prefix, "--confirm", "0"]
    first = subprocess.Popen([sys.executable, "-m", "buoy", "listen", "--listen-path", LISTEN,
                              *common, "--state-dir", str(tmp_path / "one")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        put_service(store, keys, WEB, "w1", web.port)
        wait_for(lambda: answers(port, "web.dev.app1") == {"w1"}, timeout=20, what="routed")
        out = buoy_listen(*common, "--state-dir", str(tmp_path / "two"))
        assert out.returncode == 2 and len(error_lines(out)) == 1, out.stderr
        assert answers(port, "web.dev.app1", 12) == {"w1"}  # the first one serves alone
        # the first listener killed hard: its HAProxy goes too, so the port is free again
        first.kill()
        first.wait(10)
        wait_for(lambda: answers(port, "web.dev.app1", 1) == {"status 0"}, timeout=15,
                 what="haproxy gone with its listen")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        web.close()


def test_once_without_etcd_exits_1_and_keeps_the_last_config(tmp_path: Path) -> None:
    (tmp_path / "haproxy.cfg").write_text("# the last applied config\n")
    (tmp_path / "pins.map").write_text("a.web 1.2.3.4|80\n")
    dead = f"http://127.0.0.1:{free_port()}"
    out = buoy_listen("--once", "--etcd-endpoints", dead, "--etcd-timeout", "1",
                      "--state-dir", str(tmp_path), timeout=30)
    assert out.returncode == 1
    assert "etcd did not answer" in out.stderr
    assert (tmp_path / "haproxy.cfg").read_text() == "# the last applied config\n"
    assert (tmp_path / "pins.map").read_text() == "a.web 1.2.3.4|80\n"
    out = buoy_listen("--once", "--dry-run", "--etcd-endpoints", dead, "--etcd-timeout", "1",
                      "--state-dir", str(tmp_path), timeout=30)
    assert out.returncode == 1 and out.stdout == ""


def test_once_dry_run_prints_and_exits(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                       tmp_path: Path) -> None:
    put_service(store, keys, WEB, "w1", 4321)
    out = buoy_listen("--once", "--dry-run", "--etcd-endpoints", etcd.endpoint,
                      "--prefix", keys.prefix, "--state-dir", str(tmp_path), timeout=30)
    assert out.returncode == 0, out.stderr
    assert "127.0.0.1:4321 check inter 2s fall 2 rise 2 weight 1  # w1\n" in out.stdout
    assert not (tmp_path / "haproxy.cfg").exists()


def test_dry_run_without_once_is_a_usage_error(tmp_path: Path) -> None:
    out = buoy_listen("--dry-run", "--state-dir", str(tmp_path))
    assert out.returncode == 2
    lines = error_lines(out)
    assert len(lines) == 1 and "--once" in lines[0], lines
