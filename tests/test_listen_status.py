"""listen's status page, pure parts: HAProxy's `show stat` parsed, the status dict built from
the applied routing and slot tables, the page escaped; and the I/O edges it relies on: the
metrics server's extra pages and a HAProxy that does not answer."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from buoy.listen.certs import CertificateRow
from buoy.listen.haproxy import MasterSocket
from buoy.listen.model import Backend, Pin, Routing, Server
from buoy.listen.status import SlotStat, Snapshot, build, parse_stat, state_of
from buoy.listen.status_page import CSP, SCRIPT, render
from buoy.listen.status_source import ServerStats, StatusSource, copy_slots
from buoy.ops.health import Event, Health, HealthState, MetricsServer

NOW = 1_800_000_000.0
WEB = "http_internal_app1_dev_web"
DB = "tcp_internal_app1_dev_db"

# `show stat -1 4 -1` as HAProxy 2.6 answered it (the header shortened to what is read,
# the columns in HAProxy's order)
STAT = f"""# pxname,svname,qcur,scur,status,weight,lastchg,check_status,check_desc,addr,
{WEB},s1,0,2,UP,1,73,L4OK,Layer4 check passed,127.0.0.1:8001,
{WEB},s2,0,0,DOWN,1,12,L4CON,Layer4 connection problem,127.0.0.1:8002,
{WEB},s3,0,1,DRAIN,0,4,L4OK,Layer4 check passed,127.0.0.1:8003,
{WEB},s4,0,0,MAINT,1,900,,,0.0.0.0:0,
{DB},s1,0,0,UP 1/2,1,3,L4CON,"Connection refused, once",127.0.0.1:5433,
{DB},s2,0,0,MAINT,1,900,,,0.0.0.0:0,

"""


def health_state(**changes: Any) -> HealthState:
    base = dict(agent="listen", started=NOW - 60, etcd_connected=True, etcd_changed=NOW - 50,
                revision=42, last_reload=Event(NOW - 10, True, "reloaded backends=2 pins=2"))
    return HealthState(**{**base, **changes})  # type: ignore[arg-type]


def routing() -> Routing:
    web = Backend(WEB, "/internal/app1/dev/web", "http", vhost="web.dev.app1", check="/ping",
                  servers=(Server("w1", "127.0.0.1", 8001), Server("w2", "127.0.0.1", 8002, 3),
                           Server("w9", "127.0.0.1", 8009)))
    db = Backend(DB, "/internal/app1/dev/db", "tcp", bind_port=5432,
                 servers=(Server("d1", "127.0.0.1", 5433),))
    return Routing((db, web), (Pin("w1.web.dev.app1", "127.0.0.1", 8001),))


def snapshot(**changes: Any) -> Snapshot:
    base: dict[str, Any] = dict(
        now=NOW, health=health_state(), applied=routing(),
        slots={WEB: ["w1", "w2", "w3", None], DB: ["d1", None]}, stats=parse_stat(STAT),
        listen_id="edge-1")
    return Snapshot(**{**base, **changes})


def instances(status: dict[str, Any], backend: str) -> dict[str, dict[str, Any]]:
    svc = next(s for s in status["services"] if s["backend"] == backend)
    return {i["id"]: i for i in svc["instances"]}


# --- show stat ------------------------------------------------------------------------------

def test_parse_stat_reads_columns_by_name() -> None:
    table = parse_stat(STAT)
    assert table[(WEB, "s1")] == SlotStat("UP", "127.0.0.1:8001", 1, "L4OK", 73, 2)
    assert table[(DB, "s1")].status == "UP 1/2"  # a quoted field with a comma is one field
    assert table[(WEB, "s4")].addr == "0.0.0.0:0" and len(table) == 6


def test_parse_stat_refuses_what_is_not_a_stat_answer() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        parse_stat("Unknown command: 'show stat'\n")
    assert parse_stat("# pxname,svname,status\n") == {}
    with pytest.raises(ValueError, match="without its columns"):
        parse_stat("# pxname,svname,weight\nweb,s1,1\n")


@pytest.mark.parametrize(("status", "state"), [
    ("UP", "UP"), ("UP 1/2", "UP"), ("no check", "UP"), ("DOWN", "DOWN"), ("DOWN 1/2", "DOWN"),
    ("DRAIN", "DRAIN"), ("MAINT", "MAINT"), ("MAINT (resolution)", "MAINT"),
    ("MAINT(via web/s1)", "MAINT"), ("NOLB", "NOLB"), ("", "UNKNOWN")])
def test_state_of(status: str, state: str) -> None:
    assert state_of(status) == state


# --- the status dict ------------------------------------------------------------------------

def test_instances_joined_with_haproxy_by_slot() -> None:
    status = build(snapshot())
    web = instances(status, WEB)
    assert web["w1"] == {"id": "w1", "address": "127.0.0.1:8001", "state": "UP",
                              "status": "UP", "weight": 1, "slot": "s1", "check": "L4OK",
                              "since": 73, "sessions": 2, "withdrawn": False}
    assert (web["w2"]["state"], web["w2"]["check"], web["w2"]["slot"]) == ("DOWN", "L4CON", "s2")
    # w3 was withdrawn and still drains in its slot: shown with HAProxy's address and weight
    assert web["w3"].items() >= {"state": "DRAIN", "withdrawn": True,
                                 "address": "127.0.0.1:8003", "weight": 0}.items()
    # w9 is applied but in no slot yet: its state is not known
    assert (web["w9"]["state"], web["w9"]["slot"]) == ("UNKNOWN", None)
    svc = next(s for s in status["services"] if s["backend"] == WEB)
    assert (svc["routed"], svc["path"], svc["check"], svc["up"]) == (
        "web.dev.app1", "/internal/app1/dev/web", "/ping", 1)
    assert [i["id"] for i in svc["instances"]] == ["w1", "w2", "w9", "w3"]  # withdrawn last
    db = next(s for s in status["services"] if s["backend"] == DB)
    assert (db["routed"], db["mode"], db["port"]) == ("127.0.0.1:5432", "tcp", 5432)
    assert instances(status, DB)["d1"]["state"] == "UP"  # UP 1/2: failing checks, not yet down


def test_status_fields() -> None:
    status = build(snapshot(refused=["/internal/app1/dev/api"],
                            conflicts=["vhost clash: /internal/app1/dev/api wants host x"],
                            holds=[{"backend": WEB, "servers_applied": 4, "servers_wanted": 0,
                                    "held_for": 1.5, "applies_in": 8.5}],
                            records=(5, 1)))
    assert json.loads(json.dumps(status)) == status  # plain JSON data
    assert status["listen_id"] == "edge-1" and status["status"] == "ok"
    assert status["etcd"] == {"connected": True, "since": "2027-01-15T07:59:10.000Z",
                              "revision": 42}
    assert status["last_reload"]["ok"] is True
    assert status["last_reload"]["message"] == "reloaded backends=2 pins=2"
    assert status["pins"] == [{"host": "w1.web.dev.app1", "address": "127.0.0.1:8001"}]
    assert status["refused"] == ["/internal/app1/dev/api"]
    assert status["conflicts"][0].startswith("vhost clash")
    assert status["holds"][0]["servers_applied"] == 4
    assert status["records"] == {"valid": 5, "malformed": 1}
    assert status["haproxy"] == {"serving": True, "problem": None, "state_error": None}


def test_failures_are_shown() -> None:
    state = health_state(etcd_connected=False, etcd_changed=NOW - 30,
                         last_reload=Event(NOW - 5, False, "config rejected: [ALERT] bad"))
    status = build(snapshot(health=state, stats=None, stats_error="HAProxy did not report "
                            "its servers: timed out", haproxy_down="haproxy master exited 1"))
    assert status["status"] == "unhealthy"
    assert status["etcd"]["connected"] is False
    assert any("etcd unreachable" in p for p in status["problems"])
    assert status["last_reload"]["ok"] is False
    assert status["haproxy"]["serving"] is False
    assert status["haproxy"]["state_error"].endswith("timed out")
    assert {i["state"] for i in instances(status, WEB).values()} == {"UNKNOWN"}


def test_nothing_applied_yet() -> None:
    status = build(snapshot(applied=None, slots={}, health=health_state(last_reload=None)))
    assert status["applied"] is False and status["services"] == [] and status["pins"] == []
    assert status["last_reload"] is None
    assert "nothing applied yet" in render(status)


def test_certificates_with_days_left() -> None:
    certs = [CertificateRow("b.example", "acme", NOW + 10.5 * 86400, None),
             CertificateRow("a.example", "dir", NOW - 2 * 86400, None),
             CertificateRow("c.example", "etcd", None, "key does not match")]
    status = build(snapshot(certificates=certs))
    assert [(c["vhost"], c["days_left"], c["error"]) for c in status["certificates"]] == [
        ("a.example", -2, None), ("b.example", 10, None), ("c.example", None,
                                                           "key does not match")]
    assert status["certificates"][1]["not_after"] == "2027-01-25T20:00:00.000Z"
    page = render(status)
    assert "expired 2 days ago" in page and "10 days" in page and "key does not match" in page


# --- the page -------------------------------------------------------------------------------

class Texts(HTMLParser):
    """Every element and text of a page, to check that nothing from etcd became markup."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.scripts = 0
        self.instances: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.scripts += tag == "script"
        a = dict(attrs)
        if a.get("data-instance") is not None:
            self.instances[str(a["data-instance"])] = str(a.get("data-state"))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Texts:
    p = Texts()
    p.feed(page)
    return p


def test_page_shows_every_section() -> None:
    page = parsed(render(build(snapshot(refused=["/internal/app1/dev/api"],
                                        conflicts=["vhost clash: api wants web"]))))
    text = " ".join(page.text)
    for expected in ("web.dev.app1", "/internal/app1/dev/web", "127.0.0.1:5432",
                     "127.0.0.1:8002", "w1.web.dev.app1", "vhost clash: api wants web",
                     "reloaded backends=2 pins=2", "Certificates", "Mass-removal holds"):
        assert expected in text
    assert page.instances == {"w1": "UP", "w2": "DOWN", "w3": "DRAIN", "w9": "UNKNOWN",
                              "d1": "UP"}
    assert page.scripts == 1 and "noscript" in page.tags


def test_page_escapes_what_comes_from_etcd() -> None:
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    web = Backend(WEB, f"/internal/app1/dev/{evil}", "http", vhost=evil,
                  servers=(Server(evil, "127.0.0.1", 8001),))
    status = build(snapshot(applied=Routing((web,), (Pin(evil, "127.0.0.1", 1),)),
                            slots={WEB: [evil]}, refused=[evil], conflicts=[evil],
                            listen_id=evil,
                            holds=[{"backend": evil, "servers_applied": 1, "servers_wanted": 0,
                                    "held_for": 0, "applies_in": 1}],
                            certificates=[CertificateRow(evil, evil, None, evil)],
                            health=health_state(last_reload=Event(NOW, False, evil),
                                                last_error=Event(NOW, False, evil))))
    page = render(status)
    p = parsed(page)
    assert p.scripts == 1 and "img" not in p.tags  # only the page's own script
    assert "<script>alert" not in page and "<img" not in page
    assert sum(evil in t for t in p.text) >= 8  # shown as text, every time
    assert p.instances == {evil: "UP"}  # and as an attribute value, intact


def test_csp_admits_only_the_page_script() -> None:
    import base64
    import hashlib
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "unsafe-inline'; connect" in CSP
    assert "script-src 'unsafe-inline'" not in CSP
    assert f"<script>{SCRIPT}</script>" in render(build(snapshot()))


# --- I/O edges ------------------------------------------------------------------------------

def test_copy_slots_is_a_copy() -> None:
    slots: dict[str, list[str | None]] = {WEB: ["w1", None]}
    copy = copy_slots(slots)
    slots[WEB][1] = "w2"
    assert copy == {WEB: ["w1", None]}


def test_server_stats_asks_once_per_max_age() -> None:
    asked: list[str] = []
    clock = [0.0]

    def ask(line: str) -> str:
        asked.append(line)
        return STAT

    stats = ServerStats(ask, max_age=1.0, clock=lambda: clock[0])
    assert stats.get()[0] == parse_stat(STAT)
    clock[0] = 0.9
    stats.get()
    assert asked == ["@1 show stat -1 4 -1"]
    clock[0] = 1.0
    stats.get()
    assert len(asked) == 2


def test_pages_are_made_once_per_max_age(tmp_path: Path) -> None:
    """However many pages are open, listen builds one status a second."""
    applier = SimpleNamespace(applied=routing(), slots={WEB: ["w1", "w2", "w3", None]})
    listener = SimpleNamespace(
        config=SimpleNamespace(listen_id="edge-1", tcp_bind="127.0.0.1"), applier=applier,
        guard=SimpleNamespace(details=lambda: []),
        haproxy=SimpleNamespace(sock=SimpleNamespace(path=tmp_path / "absent.sock")),
        haproxy_down=None, refused=(), conflicts=(), counts=(4, 0), certificates=lambda: [])
    clock = [0.0]
    source = StatusSource(listener, Health("listen"), clock=lambda: clock[0])  # type: ignore[arg-type]
    first = source.json()
    assert json.loads(first)["haproxy"]["state_error"].startswith("HAProxy did not report")
    applier.applied = Routing()
    clock[0] = 0.5
    assert source.json() is first  # reused
    clock[0] = 1.0
    assert json.loads(source.json())["services"] == []  # made again
    assert b"nothing routed" in source.page()


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[Path]:
    """A master socket that accepts and never answers (a stuck HAProxy)."""
    path = tmp_path / "stuck.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_stuck_or_absent_haproxy_costs_a_page_its_timeout_at_most(
        silent_socket: Path, tmp_path: Path) -> None:
    for path, why in ((silent_socket, "timed out"), (tmp_path / "absent.sock", "No such file")):
        stats = ServerStats(MasterSocket(path, timeout=0.3).command)
        began = time.monotonic()
        table, error = stats.get()
        assert time.monotonic() - began < 3  # generous: the timeout is 0.3 s
        assert table is None and error is not None and why in error


def test_metrics_server_serves_added_pages() -> None:
    health = Health("listen")
    calls = []

    def page() -> bytes:
        calls.append(1)
        return b"<p>hello</p>"

    def broken() -> bytes:
        raise RuntimeError("no data")

    health.add_page("/", "text/html; charset=utf-8", page, {"Cache-Control": "no-store"})
    health.add_page("/broken", "text/plain", broken)
    for bad in ("/healthz", "/metrics", "status"):
        with pytest.raises(ValueError):
            health.add_page(bad, "text/plain", page)
    server = MetricsServer(health, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/?x=1", timeout=5) as resp:
            assert resp.read() == b"<p>hello</p>"
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Cache-Control"] == "no-store"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/broken", timeout=5)
        assert err.value.code == 500 and b"no data" in err.value.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert err.value.code == 404 and b"/broken" in err.value.read()
        with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
            assert json.load(resp)["agent"] == "listen"  # the built-in routes are untouched
        assert calls == [1]
    finally:
        server.close()
