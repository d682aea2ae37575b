"""The traffic path under what production does to it: HAProxy killed, keep-alive reuse,
retries, a scale-down under load, a newcomer claiming a name. Real etcd, HAProxy, backends."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import store_for
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import (
    EchoTCP,
    NamedHTTP,
    Requests,
    RunningListener,
    answers,
    put_service,
    start_listener,
    tcp_ask,
)

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.store import EtcdStore
from buoy.ls import collect, render_tree
from buoy.ops.health import report

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


@pytest.fixture
def backends() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("w1", "w2", "w3")}
    yield made
    for b in made.values():
        b.close()


def start(etcd: EtcdServer, keys: KeyLayout, state: Path, started: list[RunningListener],
          **options: object) -> RunningListener:
    return start_listener(etcd, keys, state, started, [LISTEN], **options)


def health(r: RunningListener) -> tuple[int, dict[str, object]]:
    return report(r.listener.health.state(), time.time())


def problems(r: RunningListener) -> list[str]:
    """/healthz problems of listen's own (etcd's are not watched by these in-process runs)."""
    return [p for p in health(r)[1]["problems"] if not p.startswith("etcd")]  # type: ignore[attr-defined]


def worker_pid(r: RunningListener) -> int:
    out = r.listener.haproxy.sock.command("show proc")
    section = out.split("# workers")[1].split("#")[0]
    return int(section.split()[0])


def test_sigsegv_of_the_worker_and_kill_of_the_master_are_restarted(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = start(etcd, keys, tmp_path, running)
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
    put_service(store, keys, WEB, "w2", backends["w2"].port)  # a runtime change, then a crash
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"}, what="w2 routed")
    assert problems(r) == []
    t0 = time.monotonic()
    os.kill(worker_pid(r), signal.SIGSEGV)
    wait_for(lambda: r.listener.haproxy.restarts == 1, what="haproxy restarted")
    assert time.monotonic() - t0 < 5  # noticed within a second; generous bound for CI
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"},
             what="the last applied routing served again")
    wait_for(lambda: problems(r) == [], what="/healthz clear again")
    assert "killed by SIGSEGV" in str(health(r)[1]["last_error"])
    metrics = {m.name: m.value for m in r.listener.health.metrics()}
    assert metrics["listen_haproxy_restarts"] == 1 and metrics["listen_haproxy_up"] == 1
    # later changes still go through the runtime API of the new HAProxy
    put_service(store, keys, WEB, "w3", backends["w3"].port)
    wait_for(lambda: answers(r.http_port, "web.dev.app1", 12) == {"w1", "w2", "w3"},
             what="change after the restart")
    master = r.listener.haproxy.proc
    assert master is not None
    os.kill(master.pid, signal.SIGKILL)
    wait_for(lambda: r.listener.haproxy.restarts == 2, what="restarted after SIGKILL")
    wait_for(lambda: answers(r.http_port, "web.dev.app1", 12) == {"w1", "w2", "w3"},
             what="served after the master was killed")


def test_listen_exits_non_zero_when_haproxy_cannot_restart(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = RunningListener(store_for(etcd), keys, tmp_path, [LISTEN])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(r.listener.run()), daemon=True)
    thread.start()
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
    wait_for(lambda: r.listener.applier.applied is not None, what="reload confirmed")
    (tmp_path / "haproxy.cfg").write_text("this is not a config\n")  # the restart must fail
    master = r.listener.haproxy.proc
    assert master is not None
    os.kill(master.pid, signal.SIGKILL)
    thread.join(30)
    assert result == [1]
    assert any(p.startswith("haproxy not serving") for p in problems(r))  # nothing serves


def test_runtime_added_server_reuses_backend_connections(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    r = start(etcd, keys, tmp_path, running)
    put_service(store, keys, WEB, "w1", backends["w1"].port)  # added at run time
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
    assert r.reloads() == 1  # the new service; the instance filled a slot
    before = backends["w1"].connections
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=5)
    for _ in range(1500):
        conn.request("GET", "/", headers={"Host": "web.dev.app1"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"w1"
    conn.close()
    opened = backends["w1"].connections - before
    assert opened <= 75, f"{opened} backend connections for 1,500 keep-alive requests"


def test_dead_backends_and_scale_down_under_load_fail_nothing(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    for n in ("w1", "w2", "w3"):
        put_service(store, keys, WEB, n, backends[n].port)
    # the guard as `buoy listen` runs it: a 2-of-3 removal is more than 50%
    r = start(etcd, keys, tmp_path, running, max_drop=50.0, confirm=10.0)
    wait_for(lambda: answers(r.http_port, "web.dev.app1", 9) == {"w1", "w2", "w3"},
             what="three routed")
    # eight keep-alive clients at once, as `wrk -c8`: their retries interleave in the
    # round robin, so a retry often lands on the other dead instance
    loads = [Requests(r.http_port, "web.dev.app1") for _ in range(8)]
    with ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)

        def ok() -> int:
            return sum(load.ok for load in loads)

        wait_for(lambda: ok() > 400, what="load running")
        # killed hard: the record stays, the port accepts and closes (or refuses)
        backends["w3"].stop_container()
        seen = ok()
        wait_for(lambda: ok() > seen + 400, what="requests past the dead instance")
        # scale 3 → 1: two containers stop at once, register deletes their keys one by
        # one, a moment later (its Docker event, then etcd)
        backends["w2"].stop_container()
        time.sleep(0.05)
        t0 = time.monotonic()
        for n in ("w2", "w3"):
            store.delete(keys.service_key(AnnouncePath.parse(WEB), n))
        wait_for(lambda: {s.name for b in (r.listener.applier.applied.backends
                                           if r.listener.applier.applied else ())
                          for s in b.servers} == {"w1"}, what="scale-down applied")
        assert time.monotonic() - t0 < 5  # not held for the 10 s confirm
        seen = ok()
        wait_for(lambda: ok() > seen + 400, what="requests after the scale-down")
    errors = [e for load in loads for e in load.errors]
    assert not errors, f"{len(errors)} failed of {ok() + len(errors)}: {errors[:5]}"
    assert not r.listener.guard.holds


def test_only_idempotent_requests_are_resent(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    """A port that accepts and closes: a GET goes on to the live instance, a POST, which
    the dead one may have taken, is answered 502 and never sent twice."""
    for n in ("w1", "w2"):
        put_service(store, keys, WEB, n, backends[n].port)
    r = start(etcd, keys, tmp_path, running)
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"}, what="two routed")
    backends["w2"].stop_container()  # its record stays: only the retries cover it
    statuses = []
    for method in ["GET"] * 10 + ["POST"] * 10:  # round robin alternates the two
        conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=5)
        conn.request(method, "/", body=b"x" if method == "POST" else None,
                     headers={"Host": "web.dev.app1"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        statuses.append((method, resp.status))
    assert {st for m, st in statuses if m == "GET"} == {200}
    # w1 answers every request 200; w2's port closes a POST: 502, not sent again to w1
    assert {st for m, st in statuses if m == "POST"} == {200, 502}


def test_prefix_wiped_is_still_held(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                    tmp_path: Path, backends: dict[str, NamedHTTP],
                                    running: list[RunningListener]) -> None:
    for n in ("w1", "w2", "w3"):
        put_service(store, keys, WEB, n, backends[n].port)
    r = start(etcd, keys, tmp_path, running, max_drop=50.0, confirm=3.0)
    wait_for(lambda: answers(r.http_port, "web.dev.app1", 9) == {"w1", "w2", "w3"},
             what="three routed")
    store.delete_prefix(keys.services_watch_prefix(LISTEN))  # one revision, every key
    wait_for(lambda: bool(r.listener.guard.holds), what="held")
    assert answers(r.http_port, "web.dev.app1", 9) == {"w1", "w2", "w3"}
    wait_for(lambda: not r.listener.guard.holds, timeout=15, what="released after confirm")


def test_first_come_keeps_the_name(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                   tmp_path: Path, backends: dict[str, NamedHTTP],
                                   running: list[RunningListener],
                                   caplog: pytest.LogCaptureFixture) -> None:
    db1, db2 = EchoTCP("db1"), EchoTCP("db2")
    try:
        put_service(store, keys, "/internal/app1/dev/web/shop.example", "w1",
                    backends["w1"].port)
        tcp_port = free_port()
        put_service(store, keys, "/internal/app1/dev/zdb", "d1", db1.port, port=tcp_port,
                    type_="TCP")
        r = start(etcd, keys, tmp_path, running)
        r_port = r.http_port
        wait_for(lambda: answers(r_port, "shop.example") == {"w1"}, what="shop routed")
        wait_for(lambda: tcp_ask(tcp_port) == "db1:hi", what="db routed")
        assert problems(r) == []
        # newcomers whose paths sort first claim the same host and the same TCP port
        put_service(store, keys, "/internal/app1/dev/api/shop.example", "a1",
                    backends["w2"].port)
        put_service(store, keys, "/internal/app1/dev/adb", "d2", db2.port, port=tcp_port,
                    type_="TCP")
        wait_for(lambda: len(r.listener.refused) == 2, what="newcomers refused")
        assert answers(r_port, "shop.example") == {"w1"}
        assert tcp_ask(tcp_port) == "db1:hi"
        assert health(r)[0] == 503
        assert any("vhost clash: /internal/app1/dev/api/shop.example" in p
                   and "/internal/app1/dev/web/shop.example" in p for p in problems(r))
        clash_lines = [rec for rec in caplog.records if "clash" in rec.getMessage()]
        assert len(clash_lines) == 2  # one ERROR line each, not one per change
        metrics = {m.name: m.value for m in r.listener.health.metrics()}
        assert metrics["listen_refused_services"] == 2
        # `buoy ls` marks the newcomers by the same rule
        data = collect(store, keys)
        shop = data["services"]
        assert "vhost clash" in shop["/internal/app1/dev/api/shop.example"][0]["name_taken"]
        assert "port clash" in shop["/internal/app1/dev/adb"][0]["name_taken"]
        assert "name_taken" not in shop["/internal/app1/dev/web/shop.example"][0]
        assert render_tree(data).count("NAME TAKEN") == 2
        put_service(store, keys, WEB, "w3", backends["w3"].port)  # any other change
        wait_for(lambda: answers(r_port, "web.dev.app1") == {"w3"}, what="other change")
        assert len([rec for rec in caplog.records if "clash" in rec.getMessage()]) == 2
        # a fresh listen: etcd's create revision decides, not the sort order
        r.stop()
        again = start(etcd, keys, tmp_path / "again", running)
        wait_for(lambda: answers(again.http_port, "shop.example") == {"w1"},
                 what="the first claimant routed after a restart")
        assert tcp_ask(tcp_port) == "db1:hi"
        # the established one leaves: the newcomer gets the name
        store.delete(keys.service_key(AnnouncePath.parse("/internal/app1/dev/web/shop.example"),
                                      "w1"))
        wait_for(lambda: answers(again.http_port, "shop.example") == {"w2"},
                 what="the newcomer routed once the name is free")
        wait_for(lambda: len(again.listener.refused) == 1, what="one refusal left")
    finally:
        db1.close()
        db2.close()


def test_a_reused_slot_never_sends_to_the_address_it_had(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = start(etcd, keys, tmp_path, running, drain_timeout=2.0)
    put_service(store, keys, WEB, "w2", backends["w2"].port)
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"}, what="w2 routed")
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=5)

    def bodies(n: int) -> list[str]:  # on one kept-alive client connection
        out = []
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": "web.dev.app1"})
            out.append(conn.getresponse().read().decode())
        return out

    assert set(bodies(20)) == {"w1", "w2"}  # idle backend connections to both now
    store.delete(keys.service_key(AnnouncePath.parse(WEB), "w2"))
    wait_for(lambda: not r.listener.applier.draining and "w2" not in bodies(4), timeout=15,
             what="w2 drained and its slot free")
    put_service(store, keys, WEB, "w3", backends["w3"].port)  # takes the slot w2 had
    wait_for(lambda: "w3" in bodies(4), what="w3 routed")
    assert r.listener.applier.slots["http_internal_app1_dev_web"][:2] == ["w1", "w3"]
    assert "w2" not in bodies(200)
    put_service(store, keys, WEB, "w3", backends["w2"].port)  # moved in place, then back
    wait_for(lambda: "w2" in bodies(4), what="w3 moved")
    put_service(store, keys, WEB, "w3", backends["w3"].port)
    wait_for(lambda: "w3" in bodies(4), what="w3 moved back")
    assert set(bodies(200)) == {"w1", "w3"}
    conn.close()
