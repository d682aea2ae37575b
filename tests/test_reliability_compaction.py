"""Compaction while listen and dns are cut off from etcd: no stale, no missing routes or answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer, wait_for
from listen_helpers import NamedHTTP, RunningListener, answers, get, put_service
from tcp_proxy import CuttableProxy
from test_dns_support import running_dns

from buoy.etcd.dns_records import instance_entry
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore

WEB = AnnouncePath.parse("/internal/app1/dev/web")
NAME = "web.dev.app1.internal.buoy.internal."


@pytest.fixture
def backends() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("w1", "w2", "w3", "w4")}
    yield made
    for b in made.values():
        b.close()


def put_both(store: EtcdStore, keys: KeyLayout, ident: str, port: int) -> None:
    """The service record and its SkyDNS record (what register writes)."""
    put_service(store, keys, str(WEB), ident, port)
    rec = ServiceRecord.from_announce(AnnounceRecord.for_path(WEB, ident, 80, "HTTP"),
                                      ip="127.0.0.1", ext_port=port, host="testhost")
    key, value = instance_entry(keys, rec, WEB)
    store.put(key, value)


def delete_both(store: EtcdStore, keys: KeyLayout, ident: str) -> None:
    store.delete(keys.service_key(WEB, ident))
    store.delete(instance_entry(keys, ServiceRecord.from_announce(
        AnnounceRecord.for_path(WEB, ident, 80, "HTTP"), ip="127.0.0.1", ext_port=1,
        host="h"), WEB)[0])


def test_compaction_while_cut_off_leaves_nothing_stale_or_missing(
        etcd: EtcdServer, store: EtcdStore, keys: KeyLayout, tmp_path: Path,
        backends: dict[str, NamedHTTP]) -> None:
    port = {n: b.port for n, b in backends.items()}
    put_both(store, keys, "w1", port["w1"])
    put_both(store, keys, "w2", port["w2"])
    proxy = CuttableProxy(etcd.client_port)
    cut_store = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=2))
    dns_store = EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=2))
    listener = RunningListener(cut_store, keys, tmp_path, ["/services/internal/app1/dev"],
                               drain_timeout=1.0)
    try:
        with running_dns(dns_store, keys) as dns_srv:
            listener.start()
            http = listener.http_port
            wait_for(lambda: answers(http, "web.dev.app1") == {"w1", "w2"}, what="routed")
            wait_for(lambda: dns_srv.answers(NAME, "SRV") and len(dns_srv.answers(NAME, "SRV")) == 2,
                     what="dns answers")
            restarts = listener.listener.watchers[0].restarts, dns_srv.agent.watcher.restarts
            proxy.cut()
            # While they cannot see it: remove w1, move w2, add w3, churn w4 in and out.
            delete_both(store, keys, "w1")
            put_both(store, keys, "w2", port["w4"])
            put_both(store, keys, "w3", port["w3"])
            for _ in range(20):
                put_both(store, keys, "w4", port["w4"])
                delete_both(store, keys, "w4")
            store.compact(store.revision())
            assert answers(http, "web.dev.app1") == {"w1", "w2"}  # the last applied state
            proxy.restore()
            wait_for(lambda: answers(http, "web.dev.app1", 12) == {"w4", "w3"}, timeout=20,
                     what="routes after compaction")  # w2 moved to w4's port
            assert get(http, "w1.web.dev.app1")[0] == 503  # no stale pin
            assert answers(http, "w2.web.dev.app1") == {"w4"}
            assert answers(http, "w3.web.dev.app1") == {"w3"}
            want = {f"10 50 {port['w4']} w2.{NAME}", f"10 50 {port['w3']} w3.{NAME}"}
            wait_for(lambda: dns_srv.answers(NAME, "SRV") == want, timeout=20,
                     what="dns after compaction")
            assert dns_srv.answers(f"w1.{NAME}", "A") == set()
            assert dns_srv.answers(f"w4.{NAME}", "A") == set()
            # Both really lost their watch and re-read after the compaction.
            assert listener.listener.watchers[0].restarts > restarts[0]
            assert dns_srv.agent.watcher.restarts > restarts[1]
    finally:
        listener.stop()
        proxy.close()
