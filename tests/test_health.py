"""/healthz and /metrics: the pure report, the server, and every agent run as `buoy <agent>`."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from docker_helpers import docker_client, ensure_image, run_httpd
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import NamedHTTP, answers, put_service
from prometheus_client.parser import text_string_to_metric_families

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord
from buoy.etcd.store import EtcdStore
from buoy.listen.render import default_template
from buoy.ops.health import Event, Health, HealthState, Metric, MetricsServer, records, report


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    code, body = fetch(port, "/healthz")
    return code, (json.loads(body) if code in (200, 503) else {})


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample's value from /metrics (None when absent or not served)."""
    code, text = fetch(port, "/metrics")
    if code != 200:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# --- pure report and the server ------------------------------------------------------------

def test_report_rules() -> None:
    up = HealthState("listen", started=100.0, etcd_connected=True, etcd_changed=101.0,
                     revision=42)
    code, body = report(up, 110.0)
    assert code == 200 and body["status"] == "ok" and body["revision"] == 42
    assert body["etcd"]["connected"] is True and body["last_error"] is None
    assert body["last_reload"] is None  # listen always shows the field
    down = HealthState("dns", 100.0, False, 110.0, last_error=Event(110.0, False, "no etcd"),
                       errors=3)
    assert report(down, 114.9)[0] == 200  # a blip shorter than the grace time
    code, body = report(down, 116.0)
    assert code == 503 and body["problems"] == ["etcd unreachable for 6s"]
    assert body["last_error"]["message"] == "no etcd" and body["errors"] == 3
    assert "last_reload" not in body
    failed = HealthState("listen", 100.0, True, 100.0,
                         last_reload=Event(105.0, False, "config rejected: bad"))
    code, body = report(failed, 106.0)
    assert code == 503 and body["last_reload"]["ok"] is False
    assert body["last_reload"]["message"] == "config rejected: bad"


def test_health_state_and_server() -> None:
    now = [1000.0]
    health = Health("test", clock=lambda: now[0])
    health.add_metrics(lambda: [records("service", 3), Metric("things", "counter", "Things.", 7)])
    health.add_details(lambda: {"extra": "yes"})
    health.etcd_failed("put /x: UNAVAILABLE\nsecond line")
    health.etcd_ok()
    health.reloaded(True, "reloaded backends=1")
    health.set_revision(9)
    state = health.state()
    assert state.etcd_connected and state.errors == 1 and state.revision == 9
    assert state.last_error is not None and state.last_error.message == \
        "put /x: UNAVAILABLE | second line"
    one = MetricsServer(health, "127.0.0.1", 0).start()
    two = MetricsServer(Health("other"), "127.0.0.1", 0).start()  # own registry each: no clash
    try:
        code, body = healthz(one.port)
        assert code == 200 and body["extra"] == "yes" and body["agent"] == "test"
        assert metric(one.port, "buoy_records", kind="service") == 3
        assert metric(one.port, "buoy_things_total") == 7
        assert metric(one.port, "buoy_errors_total") == 1
        assert metric(one.port, "buoy_revision") == 9
        assert metric(two.port, "buoy_records") is None
        assert metric(two.port, "buoy_etcd_connected") == 0
        assert fetch(one.port, "/nothing")[0] == 404
    finally:
        one.close()
        two.close()


def test_bad_metrics_settings_exit_2(tmp_path: Path) -> None:
    for args in (["--metrics-port", "70000"], ["--metrics-bind", "localhost; rm"]):
        proc = subprocess.run(
            [*AgentProcess([]).args, "dns", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert ("BUOY_METRICS_PORT" if "70000" in args else "BUOY_METRICS_BIND") in proc.stderr


# --- each agent, as a subprocess ------------------------------------------------------------

@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        if a.proc is not None and a.proc.poll() is None:
            a.signal(signal.SIGTERM)  # listen stops its HAProxy on the way out
            try:
                a.wait(20)
            except subprocess.TimeoutExpired:
                a.stop()


def start(agents: list[AgentProcess], tmp_path: Path, etcd: EtcdServer, prefix: str,
          *args: str, env: dict[str, str] | None = None) -> int:
    port = free_port()
    agent = AgentProcess([*args, "--etcd-endpoints", etcd.endpoint, "--prefix", prefix,
                          "--metrics-port", str(port)], env, tmp_path).start()
    agents.append(agent)
    wait_for(lambda: fetch(port, "/healthz")[0] in (200, 503), 15, what=f"{args[0]} /healthz")
    return port


def test_announce_health_follows_etcd(own_etcd: EtcdServer, prefix: str, tmp_path: Path,
                                      agents: list[AgentProcess]) -> None:
    port = start(agents, tmp_path, own_etcd, prefix, "announce", "--path", "/internal/a/dev/web",
                 "--port", "80", "--type", "HTTP", "--id", "web1", "--ttl", "3",
                 "--interval", "1")
    wait_for(lambda: metric(port, "buoy_lease_grants_total") == 1, what="lease granted")
    wait_for(lambda: healthz(port)[1]["etcd"]["connected"], what="etcd connected")
    code, body = healthz(port)
    assert code == 200 and body["announced"] is True
    assert metric(port, "buoy_records", kind="announce") == 1
    own_etcd.kill()
    wait_for(lambda: healthz(port)[0] == 503, 20, what="503 while etcd is away")
    code, body = healthz(port)
    assert body["etcd"]["connected"] is False and body["last_error"]["message"]
    assert "etcd unreachable" in body["problems"][0]
    assert (metric(port, "buoy_errors_total") or 0) >= 1
    own_etcd.start()
    wait_for(lambda: healthz(port)[0] == 200, 20, what="healthy again")
    assert metric(port, "buoy_etcd_connected") == 1


def test_listen_metrics_follow_reloads(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                       prefix: str, tmp_path: Path,
                                       agents: list[AgentProcess]) -> None:
    web, api = NamedHTTP("w1"), NamedHTTP("api1")
    template = tmp_path / "custom.j2"
    template.write_text(default_template())
    http_port = free_port()
    try:
        put_service(store, keys, "/internal/app1/dev/web", "w1", web.port)
        port = start(agents, tmp_path, etcd, prefix, "listen",
                     "--listen-path", "/services/internal/app1/dev",
                     "--http-bind", f"127.0.0.1:{http_port}", "--state-dir", str(tmp_path / "s"),
                     "--template", str(template))
        wait_for(lambda: answers(http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
        wait_for(lambda: metric(port, "buoy_records", kind="service") == 1, what="1 record")
        wait_for(lambda: (healthz(port)[1].get("revision") or 0) > 0, what="revision reported")
        code, body = healthz(port)
        assert code == 200 and body["holds"] == []
        reloads = metric(port, "buoy_listen_reloads_total", result="ok")
        renders = metric(port, "buoy_listen_renders_total")
        assert reloads is not None and renders is not None
        revision = put_service(store, keys, "/internal/app1/dev/api", "api1", api.port)
        assert revision
        wait_for(lambda: answers(http_port, "api.dev.app1") == {"api1"}, what="api routed")
        wait_for(lambda: metric(port, "buoy_listen_reloads_total", result="ok") == reloads + 1,
                 what="reload counted")
        assert (metric(port, "buoy_listen_renders_total") or 0) > renders
        assert metric(port, "buoy_records", kind="service") == 2
        assert metric(port, "buoy_listen_backends") == 2
        # A broken template: the reload fails, the old config keeps serving, /healthz says so.
        template.write_text(default_template() + "\nbackend broken\n    no-such-directive on\n")
        put_service(store, keys, "/internal/app1/dev/other", "o1", api.port)
        wait_for(lambda: healthz(port)[0] == 503, what="503 after a failed reload")
        body = healthz(port)[1]
        assert body["last_reload"]["ok"] is False
        assert "config rejected" in body["last_reload"]["message"]
        assert metric(port, "buoy_listen_reloads_total", result="failed") == 1
        assert answers(http_port, "web.dev.app1") == {"w1"}
        template.write_text(default_template())
        put_service(store, keys, "/internal/app1/dev/web", "w2", web.port)
        wait_for(lambda: healthz(port)[0] == 200, what="healthy after the fix")
        assert "config rejected" in healthz(port)[1]["last_error"]["message"]
    finally:
        web.close()
        api.close()


def test_dns_record_gauge_and_revision(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                       prefix: str, tmp_path: Path,
                                       agents: list[AgentProcess]) -> None:
    port = start(agents, tmp_path, etcd, prefix, "dns", "--listen", f"127.0.0.1:{free_port()}")
    wait_for(lambda: healthz(port)[1].get("index_ready"), what="index ready")
    assert metric(port, "buoy_records", kind="skydns") == 0
    rev = store.put(keys.skydns_key("web1.web.dev.app1.internal.buoy.internal."),
                    SkyDNSRecord(host="10.0.0.5", port=80, ttl=15).to_json())
    wait_for(lambda: metric(port, "buoy_records", kind="skydns") == 1, what="record counted")
    code, body = healthz(port)
    assert code == 200 and body["revision"] >= rev and body["etcd"]["connected"] is True
    store.put(keys.skydns_key("bad.buoy.internal."), "{not json")
    wait_for(lambda: metric(port, "buoy_dns_rejected_total") == 1, what="rejected counted")
    assert "malformed" in healthz(port)[1]["last_error"]["message"]
    assert metric(port, "buoy_records", kind="skydns") == 1


@pytest.mark.docker
def test_register_metrics(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, prefix: str,
                          tmp_path: Path, agents: list[AgentProcess]) -> None:
    client = docker_client()
    ensure_image(client)
    web = AnnouncePath.parse("/internal/app1/dev/web")
    container = run_httpd(client, hostname="web-health", env={"ANNOUNCE_PATH": str(web),
                                                              "PORT": "80"})
    try:
        port = start(agents, tmp_path, etcd, prefix, "register", "--host-id", "host-h",
                     "--host-ip", "10.9.8.7")
        wait_for(lambda: healthz(port)[1].get("docker_synced"), 20, what="docker listed")
        assert metric(port, "buoy_records", kind="service") == 0
        store.put(keys.announce_key(web, "web-health"),
                  AnnounceRecord.for_path(web, "web-health", 80, "HTTP").to_json())
        wait_for(lambda: [metric(port, "buoy_records", kind=k)
                          for k in ("service", "skydns", "announce")] == [1, 1, 1], 15,
                 what="service, DNS and announce records counted")
        wait_for(lambda: (metric(port, "buoy_register_puts_total") or 0) >= 2, 5,
                 what="puts counted")
        code, body = healthz(port)
        assert code == 200 and body["revision"] > 0 and body["containers"] >= 1
    finally:
        container.remove(force=True)
        client.close()
