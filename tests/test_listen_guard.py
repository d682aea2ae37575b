"""The mass-removal guard: the pure decision, then listen with real etcd and HAProxy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import store_for
from etcd_server import EtcdServer, wait_for
from listen_helpers import NamedHTTP, RunningListener, answers, put_service

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, RecordError
from buoy.etcd.store import EtcdStore
from buoy.listen.guard import Guard, Hold, decide, parse_max_drop
from buoy.listen.model import Backend, Pin, Routing, Server

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


def backend(name: str, *ids: str, vhost: str | None = None, port: int | None = None) -> Backend:
    servers = tuple(Server(i, "10.0.0.1", 1000 + n) for n, i in enumerate(ids))
    mode = "tcp" if port else "http"
    return Backend(name, f"/p/{name}", mode, vhost=None if port else (vhost or f"{name}.x"),  # type: ignore[arg-type]
                   bind_port=port, servers=servers)


def routing(*backends: Backend, pins: tuple[Pin, ...] = ()) -> Routing:
    return Routing(tuple(sorted(backends, key=lambda b: b.name)), pins)


def names(r: Routing, name: str) -> set[str]:
    return {s.name for s in r.by_name()[name].servers}


def test_small_drop_and_additions_pass_at_once() -> None:
    applied = routing(backend("web", "a", "b", "c", "d"))
    one_less = routing(backend("web", "a", "b", "c"))
    d = decide(applied, one_less, {}, 0.0, max_drop=50, confirm=10)
    assert d.routing == one_less and not d.holds and not d.started
    half = routing(backend("web", "a", "b"))  # exactly 50% is not "more than"
    assert decide(applied, half, {}, 0.0, max_drop=50, confirm=10).routing == half
    more = routing(backend("web", "a", "b", "c", "d", "e", "f"))
    assert decide(applied, more, {}, 0.0, max_drop=50, confirm=10).routing == more
    # Replacing instances (new IDs for old ones) is no loss of servers.
    swap = routing(backend("web", "e", "f", "g", "h"))
    assert decide(applied, swap, {}, 0.0, max_drop=50, confirm=10).routing == swap


def test_mass_removal_is_held_until_confirmed() -> None:
    applied = routing(backend("web", "a", "b", "c", "d"), backend("api", "x"))
    wanted = routing(backend("web", "a", "e"), backend("api", "x", "y"))  # 4 → 2: not held
    assert decide(applied, wanted, {}, 0.0, max_drop=50, confirm=10).routing == wanted
    wanted = routing(backend("web", "a"), backend("api", "x", "y"))  # 4 → 1: 75%
    d = decide(applied, wanted, {}, 100.0, max_drop=50, confirm=10)
    assert d.started == (Hold("web", 4, 1, 100.0),) and set(d.holds) == {"web"}
    assert names(d.routing, "web") == {"a", "b", "c", "d"}
    assert names(d.routing, "api") == {"x", "y"}  # other backends are not held back
    # Still wanted 9.9 s later: still held, and not logged as a new hold.
    d = decide(d.routing, wanted, d.holds, 109.9, max_drop=50, confirm=10)
    assert not d.started and names(d.routing, "web") == {"a", "b", "c", "d"}
    d = decide(d.routing, wanted, d.holds, 110.0, max_drop=50, confirm=10)
    assert d.released == (Hold("web", 4, 1, 100.0),) and not d.holds
    assert d.routing == wanted


def test_hold_keeps_additions_and_clears_when_servers_return() -> None:
    applied = routing(backend("web", "a", "b", "c", "d"))
    d = decide(applied, routing(backend("web", "a", "e")), {}, 0.0, max_drop=20, confirm=5)
    assert names(d.routing, "web") == {"a", "b", "c", "d", "e"}  # the addition is not held
    back = routing(backend("web", "a", "b", "c", "d", "e"))
    d2 = decide(d.routing, back, d.holds, 1.0, max_drop=20, confirm=5)
    assert d2.cleared == (Hold("web", 4, 2, 0.0),)
    assert not d2.holds and d2.routing == back


def test_whole_service_removal_is_held_with_its_pins() -> None:
    pin = Pin("a.web.x", "10.0.0.1", 1000)
    applied = routing(backend("web", "a"), backend("db", "d", port=5432), pins=(pin,))
    gone = routing()  # e.g. /services wiped by an etcd blip
    d = decide(applied, gone, {}, 0.0, max_drop=50, confirm=10)
    assert d.routing == applied and set(d.holds) == {"web", "db"}
    assert decide(d.routing, gone, d.holds, 10.0, max_drop=50, confirm=10).routing == gone
    # A service that takes over the port cannot share it with a held one: no hold then.
    taken = routing(backend("cache", "c", port=5432))
    d = decide(applied, taken, {}, 0.0, max_drop=50, confirm=10)
    assert "db" not in d.routing.by_name() and set(d.holds) == {"web"}


def test_guard_off_and_first_apply() -> None:
    applied = routing(backend("web", "a", "b"))
    assert decide(applied, routing(), {}, 0.0, max_drop=50, confirm=0).routing == routing()
    assert decide(applied, routing(), {}, 0.0, max_drop=100, confirm=10).routing == routing()
    assert decide(None, routing(), {}, 0.0, max_drop=50, confirm=10).routing == routing()


def test_guard_logs_each_hold_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    guard = Guard(50, 10, clock=lambda: now[0])
    applied = routing(backend("web", "a", "b", "c", "d"))
    wanted = routing(backend("web", "a"))
    with caplog.at_level(logging.INFO, logger="buoy.listen.guard"):
        for t in (0.0, 1.0, 2.0):
            now[0] = t
            assert names(guard.filter(applied, wanted), "web") == {"a", "b", "c", "d"}
        assert guard.deadline() == 10.0 and guard.holds_total == 1
        assert guard.details()[0]["servers_applied"] == 4
        now[0] = 10.0
        assert guard.filter(applied, wanted) == wanted
    held = [r.getMessage() for r in caplog.records if "mass removal held" in r.getMessage()]
    assert held == ["mass removal held backend=web servers=4->1 drop=75% max_drop=50% "
                    "confirm=10.0s"]
    assert any("mass removal applied backend=web" in r.getMessage() for r in caplog.records)


def test_parse_max_drop() -> None:
    assert parse_max_drop("50") == 50 and parse_max_drop("12.5%") == 12.5
    for bad in ("-1", "101", "half"):
        with pytest.raises(RecordError, match="BUOY_MAX_DROP"):
            parse_max_drop(bad)


# --- with real etcd and HAProxy ------------------------------------------------------------

@pytest.fixture
def webs() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("a1", "b1", "b2", "b3")}
    yield made
    for b in made.values():
        b.close()


def test_listen_holds_mass_removal_then_applies(etcd: EtcdServer, store: EtcdStore,
                                                keys: KeyLayout, tmp_path: Path,
                                                webs: dict[str, NamedHTTP]) -> None:
    confirm = 4.0
    for name, b in webs.items():
        put_service(store, keys, WEB, name, b.port)
    r = RunningListener(store_for(etcd), keys, tmp_path, [LISTEN], drain_timeout=1.0,
                        confirm=confirm).start()
    try:
        port, everyone = r.http_port, set(webs)
        wait_for(lambda: answers(port, "web.dev.app1", 12) == everyone, what="4 routed")
        # 1 of 4 (25%): applied at once, no hold.
        store.delete(keys.service_key(AnnouncePath.parse(WEB), "b3"))
        wait_for(lambda: answers(port, "web.dev.app1", 12) == {"a1", "b1", "b2"},
                 what="b3 removed")
        assert r.listener.guard.holds_total == 0
        put_service(store, keys, WEB, "b3", webs["b3"].port)
        wait_for(lambda: answers(port, "web.dev.app1", 12) == everyone, what="b3 back")
        # 3 of 4 in one etcd revision (75%): held for `confirm`, then applied.
        deleted_at = time.monotonic()
        assert store.delete_prefix(keys.service_key(AnnouncePath.parse(WEB), "b")) == 3
        wait_for(lambda: r.listener.guard.holds, what="hold")
        assert answers(port, "web.dev.app1", 12) == everyone  # still routed to all 4
        assert r.listener.health.state().details["holds"][0]["servers_wanted"] == 1  # type: ignore[index]
        wait_for(lambda: answers(port, "web.dev.app1", 12) == {"a1"}, timeout=confirm + 10,
                 what="removal applied after confirm")
        assert time.monotonic() - deleted_at >= confirm  # never earlier
        assert r.listener.guard.holds_total == 1 and not r.listener.guard.holds
    finally:
        r.stop()
