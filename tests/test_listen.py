"""listen against real etcd, real HAProxy and real backends on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import store_for
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import (
    EchoTCP,
    NamedHTTP,
    RunningListener,
    answers,
    get,
    put_service,
    start_listener,
    tcp_ask,
)

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore
from buoy.listen.render import default_template

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


@pytest.fixture
def backends() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("w1", "w2", "w3", "api1")}
    yield made
    for b in made.values():
        b.close()


@pytest.fixture
def running(etcd: EtcdServer, keys: KeyLayout, tmp_path: Path) -> Iterator[list[RunningListener]]:
    started: list[RunningListener] = []
    yield started
    for r in started:
        r.stop()


def start(etcd: EtcdServer, keys: KeyLayout, state: Path, started: list[RunningListener],
          **options: object) -> RunningListener:
    return start_listener(etcd, keys, state, started, [LISTEN], **options)


def test_host_routing_and_pinning(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                  tmp_path: Path, backends: dict[str, NamedHTTP],
                                  running: list[RunningListener]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    put_service(store, keys, WEB, "w2", backends["w2"].port, check="/")
    put_service(store, keys, "/internal/app1/dev/api/api.example", "api1", backends["api1"].port)
    r = start(etcd, keys, tmp_path, running)
    port = r.http_port
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1", "w2"}, what="web routed")
    assert answers(port, "WEB.Dev.App1:8080") == {"w1", "w2"}  # case and :port ignored
    assert answers(port, "api.example") == {"api1"}
    assert answers(port, "w2.web.dev.app1") == {"w2"}  # pinned: that instance only
    assert answers(port, "w1.web.dev.app1") == {"w1"}
    assert get(port, "nothing.example")[0] == 503


def test_membership_changes_without_reload(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                           tmp_path: Path, backends: dict[str, NamedHTTP],
                                           running: list[RunningListener]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = start(etcd, keys, tmp_path, running, drain_timeout=2.0)
    port = r.http_port
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1"}, what="w1 routed")
    reloads = r.reloads()
    put_service(store, keys, WEB, "w2", backends["w2"].port)  # add
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1", "w2"}, what="w2 added")
    assert answers(port, "w2.web.dev.app1") == {"w2"}  # its pin came at runtime too
    put_service(store, keys, WEB, "w2", backends["w3"].port)  # move
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1", "w3"}, what="w2 moved")
    assert answers(port, "w2.web.dev.app1") == {"w3"}
    store.delete(keys.service_key(_path(WEB), "w1"))  # remove: drain, then delete
    wait_for(lambda: answers(port, "web.dev.app1", 12) == {"w3"}, what="w1 removed")
    wait_for(lambda: not r.listener.applier.draining, timeout=15, what="w1 deleted")
    assert r.reloads() == reloads
    assert r.listener.applier.stats.removed == 1
    # written to the file (once listen is idle) for the next reload or a restart
    w2_line = f"127.0.0.1:{backends['w3'].port} check inter 2s fall 2 rise 2 weight 1  # w2\n"
    wait_for(lambda: (lambda t: w2_line in t and "# w1\n" not in t)(
        (tmp_path / "haproxy.cfg").read_text()), what="config file updated")
    put_service(store, keys, WEB, "w1", backends["w1"].port)  # back again after deletion
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1", "w3"}, what="w1 re-added")
    assert r.reloads() == reloads


def test_new_service_reloads_and_advertises(etcd: EtcdServer, store: EtcdStore,
                                            keys: KeyLayout, tmp_path: Path,
                                            backends: dict[str, NamedHTTP],
                                            running: list[RunningListener]) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = start(etcd, keys, tmp_path, running, advertise_ip="127.0.0.7", listen_id="lb1")
    port = r.http_port
    wait_for(lambda: answers(port, "web.dev.app1") == {"w1"}, what="w1 routed")
    reloads = r.reloads()
    put_service(store, keys, "/internal/app1/dev/api", "api1", backends["api1"].port)
    wait_for(lambda: answers(port, "api.dev.app1") == {"api1"}, what="new service routed")
    assert r.reloads() == reloads + 1
    assert answers(port, "web.dev.app1") == {"w1"}
    dns_key = keys.skydns_key("lb1.api.dev.app1")
    kv = wait_for(lambda: store.get(dns_key), what="skydns record")
    assert SkyDNSRecord.from_json(kv.value).host == "127.0.0.7"
    store.delete(keys.service_key(_path("/internal/app1/dev/api"), "api1"))
    wait_for(lambda: store.get(dns_key) is None, what="skydns record withdrawn")


def test_tcp_ambassador_and_port_clash(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                       tmp_path: Path, running: list[RunningListener],
                                       caplog: pytest.LogCaptureFixture) -> None:
    db_a, db_b, cache = EchoTCP("db-a"), EchoTCP("db-b"), EchoTCP("cache")
    try:
        db_port, cache_port = free_port(), free_port()
        put_service(store, keys, "/internal/app1/dev/db", "d1", db_a.port, port=db_port,
                    type_="TCP")
        put_service(store, keys, "/internal/app1/dev/dbx", "d2", db_b.port, port=db_port,
                    type_="TCP")  # same PORT: /internal/app1/dev/db sorts first and wins
        put_service(store, keys, "/internal/app1/dev/cache", "c1", cache.port,
                    port=cache_port, type_="TCP")
        with caplog.at_level(logging.ERROR, logger="buoy.listen.agent"):
            start(etcd, keys, tmp_path, running)
            wait_for(lambda: tcp_ask(db_port) == "db-a:hi", what="db ambassador")
        assert tcp_ask(cache_port) == "cache:hi"
        clash = [r.message for r in caplog.records if "port clash" in r.message]
        assert clash and "/internal/app1/dev/dbx" in clash[0] and str(db_port) in clash[0]
    finally:
        for s in (db_a, db_b, cache):
            s.close()


def test_malformed_record_is_skipped_and_logged_once(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener],
        caplog: pytest.LogCaptureFixture) -> None:
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    bad_key = keys.service_key(_path(WEB), "evil")
    store.put(bad_key, '{"ID":"evil","APP":"app1","ENV":"dev","SERVICE":"web","PORT":80,'
                       '"TYPE":"HTTP","IP":"1.2.3.4\\n  server x 6.6.6.6:80","EXT_PORT":1,'
                       '"HOST":"h"}')
    with caplog.at_level(logging.ERROR, logger="buoy.listen.agent"):
        r = start(etcd, keys, tmp_path, running)
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
        put_service(store, keys, WEB, "w2", backends["w2"].port)  # another change
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"}, what="w2")
    logged = [rec for rec in caplog.records if bad_key in rec.getMessage()]
    assert len(logged) == 1 and "IP" in logged[0].getMessage()
    assert "6.6.6.6" not in (tmp_path / "haproxy.cfg").read_text()


def test_invalid_template_keeps_old_config_serving(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    template = tmp_path / "custom.j2"
    template.write_text(default_template())
    put_service(store, keys, WEB, "w1", backends["w1"].port)
    r = start(etcd, keys, tmp_path / "state", running, template=template)
    wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
    good = (tmp_path / "state" / "haproxy.cfg").read_text()
    reloads = r.reloads()
    template.write_text(default_template() + "\nbackend broken\n    no-such-directive on\n")
    put_service(store, keys, "/internal/app1/dev/api", "api1", backends["api1"].port)
    wait_for(lambda: r.listener.applier.stats.reload_failures == 1, what="rejected config")
    assert r.reloads() == reloads
    assert (tmp_path / "state" / "haproxy.cfg").read_text() == good
    assert answers(r.http_port, "web.dev.app1") == {"w1"}
    assert get(r.http_port, "api.dev.app1")[0] == 503
    template.write_text(default_template())  # fixed: the next change applies
    put_service(store, keys, WEB, "w2", backends["w2"].port)
    wait_for(lambda: answers(r.http_port, "api.dev.app1") == {"api1"}, what="api after fix")


def test_etcd_outage_and_restart_from_last_known_good(
        own_etcd: EtcdServer, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP], running: list[RunningListener]) -> None:
    store = store_for(own_etcd)
    try:
        put_service(store, keys, WEB, "w1", backends["w1"].port)
        r = start(own_etcd, keys, tmp_path, running)
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
        own_etcd.kill()
        assert answers(r.http_port, "web.dev.app1", 20) == {"w1"}  # routing continues
        own_etcd.start()
        put_service(store, keys, WEB, "w2", backends["w2"].port)
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"}, timeout=20,
                 what="change after etcd came back")
        r.stop()
        assert get(r.http_port, "web.dev.app1")[0] == 0  # haproxy went with listen
        own_etcd.kill()
        again = RunningListener(store_for(own_etcd), keys, tmp_path, [LISTEN],
                                http_port=r.http_port)
        running.append(again)
        again.start(wait_synced=False)  # etcd is down: serve the last applied config
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1", "w2"},
                 what="last known good served")
        assert again.listener.applier.applied is None
    finally:
        store.close()


def test_once_dry_run_prints_config(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                    tmp_path: Path) -> None:
    from click.testing import CliRunner

    from buoy.listen.cli import listen

    put_service(store, keys, WEB, "w1", 4321)
    result = CliRunner().invoke(listen, [
        "--once", "--dry-run", "--listen-path", LISTEN, "--etcd-endpoints", etcd.endpoint,
        "--prefix", keys.prefix, "--state-dir", str(tmp_path), "--http-bind", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert "server s1 127.0.0.1:4321 check inter 2s fall 2 rise 2 weight 1  # w1" in result.output
    assert not (tmp_path / "haproxy.cfg").exists()
    bad = CliRunner().invoke(listen, ["--listen-path", "/services/Bad Path",
                                      "--state-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "LISTEN_PATH" in bad.output


def _path(text: str):  # type: ignore[no-untyped-def]
    from buoy.etcd.records import AnnouncePath
    return AnnouncePath.parse(text)
