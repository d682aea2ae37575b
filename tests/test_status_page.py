"""listen's status page on a running `buoy listen` (real etcd, HAProxy and backends): the JSON
twin, and the page as a real browser renders it (headless Chromium), an instance going DOWN
when its backend dies.

A screenshot of the page is kept under the test's tmp dir (its path is printed); with
BUOY_ARTIFACTS=<dir> (`1`: /tmp/buoy-test-artifacts) it is copied to <dir>/status.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import EchoTCP, NamedHTTP, put_service

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.store import EtcdStore

WEB = "/internal/app1/dev/web"
VHOST = "web.dev.app1"
CHROMIUM = shutil.which("chromium")
DOWN_WITHIN = 30.0  # seconds: checks every 2 s, down after 2 failures


class Listen:
    """`buoy listen` as a process, with its HTTP frontend and metrics port."""

    def __init__(self, etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
        self.http_port, self.metrics_port = free_port(), free_port()
        self.agent = AgentProcess(
            ["listen", "--etcd-endpoints", etcd.endpoint, "--prefix", prefix,
             "--listen-path", "/services/internal/app1/dev",
             "--http-bind", f"127.0.0.1:{self.http_port}", "--state-dir", str(tmp_path / "s"),
             "--https-bind", f"127.0.0.1:{free_port()}",  # no certificate: the default one
             "--metrics-port", str(self.metrics_port), "--listen-id", "edge-1"],
            log_dir=tmp_path).start()
        self.url = f"http://127.0.0.1:{self.metrics_port}/"

    def fetch(self, path: str) -> tuple[int, bytes, Any]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=5) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers
        except OSError as exc:
            return 0, str(exc).encode(), {}

    def status(self) -> dict[str, Any]:
        code, body, _ = self.fetch("/status.json")
        return json.loads(body) if code == 200 else {}

    def stop(self) -> None:
        if self.agent.proc is not None and self.agent.proc.poll() is None:
            self.agent.signal(signal.SIGTERM)  # listen stops its HAProxy on the way out
            try:
                self.agent.wait(20)
            except subprocess.TimeoutExpired:
                self.agent.stop()


@pytest.fixture
def listen(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[Listen]:
    running = Listen(etcd, prefix, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def backends() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("w1", "w2", "api1")}
    yield made
    for b in made.values():
        b.close()


def instances(status: dict[str, Any], routed: str) -> dict[str, str]:
    """Instance ID → state, of the service routed as `routed`."""
    for svc in status.get("services", ()):
        if svc["routed"] == routed:
            return {i["id"]: i["state"] for i in svc["instances"]}
    return {}


def kill_backend(backend: NamedHTTP) -> None:
    """The backend's process is gone: its port refuses connections (its record stays)."""
    backend.stop_container()
    backend.close()


def test_json_twin(listen: Listen, store: EtcdStore, keys: KeyLayout,
                   backends: dict[str, NamedHTTP]) -> None:
    db, db_port = EchoTCP("db1"), free_port()
    try:
        put_service(store, keys, WEB, "w1", backends["w1"].port)
        put_service(store, keys, WEB, "w2", backends["w2"].port, weight=3)
        put_service(store, keys, "/internal/app1/dev/db", "d1", db.port, port=db_port,
                    type_="TCP")
        wait_for(lambda: instances(listen.status(), VHOST) == {"w1": "UP", "w2": "UP"}, 20,
                 what="both web instances UP")
        # a newcomer that wants the same virtual host is refused
        put_service(store, keys, f"/internal/app1/dev/api/{VHOST}", "api1",
                    backends["api1"].port)
        status = wait_for(lambda: (s := listen.status()).get("conflicts") and s, 20,
                          what="the clash shown")
        assert status["agent"] == "listen" and status["listen_id"] == "edge-1"
        assert status["refused"] == [f"/internal/app1/dev/api/{VHOST}"]
        assert "vhost clash" in status["conflicts"][0] and VHOST in status["conflicts"][0]
        assert status["status"] == "unhealthy"  # a refused name is a problem, as in /healthz
        assert status["etcd"]["connected"] is True and status["etcd"]["revision"] > 0
        assert status["last_reload"]["ok"] is True
        assert status["haproxy"] == {"serving": True, "problem": None, "state_error": None}
        services = {s["routed"]: s for s in status["services"]}
        web, tcp = services[VHOST], services[f"127.0.0.1:{db_port}"]
        assert (web["path"], web["mode"], tcp["path"], tcp["mode"]) == (
            WEB, "http", "/internal/app1/dev/db", "tcp")
        w2 = next(i for i in web["instances"] if i["id"] == "w2")
        assert w2["address"] == f"127.0.0.1:{backends['w2'].port}" and w2["weight"] == 3
        assert w2["slot"] and w2["check"].startswith("L4")
        assert [i["state"] for i in tcp["instances"]] == ["UP"]
        assert {p["host"] for p in status["pins"]} == {f"w1.{VHOST}", f"w2.{VHOST}"}
        assert status["holds"] == []
        [cert] = status["certificates"]  # the self-signed default of the HTTPS frontend
        assert (cert["vhost"], cert["source"], cert["error"]) == ("*", "default", None)
        assert cert["days_left"] > 0 and cert["not_after"].endswith("Z")
        assert status["records"] == {"valid": 4, "malformed": 0}

        kill_backend(backends["w2"])
        wait_for(lambda: instances(listen.status(), VHOST) == {"w1": "UP", "w2": "DOWN"},
                 DOWN_WITHIN, interval=0.2, what="w2 DOWN after its backend died")
        store.delete(keys.service_key(AnnouncePath.parse(WEB), "w1"))  # withdrawn: drained, then gone
        wait_for(lambda: instances(listen.status(), VHOST) == {"w2": "DOWN"}, 20,
                 what="w1 gone from the page")
    finally:
        db.close()


# --- a real browser ---------------------------------------------------------------------------

def chromium(url: str, profile: Path, *extra: str) -> str:
    """Chromium headless: the DOM after the page's scripts ran for 5 s of virtual time."""
    assert CHROMIUM is not None
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                          "--virtual-time-budget=5000", *extra,
                          url], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def dom_instances(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-instance="([^"]+)" data-state="([^"]+)"', dom))


def keep_artifact(shot: Path) -> None:
    print(f"status page screenshot: {shot}")
    where = os.environ.get("BUOY_ARTIFACTS")
    if where:
        folder = Path("/tmp/buoy-test-artifacts" if where == "1" else where)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / "status.png")
        print(f"status page screenshot copied to {folder / 'status.png'}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/setup installs it)")
def test_page_in_a_browser(listen: Listen, store: EtcdStore, keys: KeyLayout,
                           backends: dict[str, NamedHTTP], tmp_path: Path) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    put_service(store, keys, WEB, "w2", backends["w2"].port)
    wait_for(lambda: instances(listen.status(), VHOST) == {"w1": "UP", "w2": "UP"}, 20,
             what="both web instances UP")
    code, page, headers = listen.fetch("/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]

    dom = chromium(listen.url, tmp_path / "profile", "--dump-dom")
    assert dom_instances(dom) == {"w1": "UP", "w2": "UP"}
    assert f'data-routed="{VHOST}"' in dom and WEB in dom
    assert f"127.0.0.1:{backends['w1'].port}" in dom and f"w2.{VHOST}" in dom
    # the page's script ran: it fetched the page again and swapped in the fresh status
    assert re.search(r'<span id="live" class="live">live, refreshed [^<]+</span>', dom), \
        dom[:3000]

    kill_backend(backends["w2"])
    wait_for(lambda: instances(listen.status(), VHOST).get("w2") == "DOWN", DOWN_WITHIN,
             interval=0.2, what="w2 DOWN after its backend died")
    dom = chromium(listen.url, tmp_path / "profile", "--dump-dom")
    assert dom_instances(dom) == {"w1": "UP", "w2": "DOWN"}
    assert "L4CON" in dom  # HAProxy's own check result: connection refused
    shot = tmp_path / "status.png"
    chromium(listen.url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.stat().st_size > 10_000
    keep_artifact(shot)
