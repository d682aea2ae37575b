"""etcd recreated empty under running agents: register and dns follow the new etcd.

The etcd is stopped, its data directory deleted and a new one started on the same
ports (same name and peer URL, so even the cluster id is the same). The writers
put their records back, as announce and register do when their leases are lost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from agent_process import AgentProcess
from conftest import store_for
from control_helpers import recreate_empty, retry
from docker_helpers import (
    RegisterProcess,
    published_port,
    run_httpd,
)
from etcd_server import EtcdServer, free_port, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord
from buoy.etcd.store import EtcdStore

pytestmark = pytest.mark.docker

WEB = AnnouncePath.parse("/internal/app1/dev/web")
DB = AnnouncePath.parse("/internal/app1/dev/db")
ENV = {"ANNOUNCE_PATH": str(WEB), "PORT": "80"}
ZONE = "buoy.internal."


def announce(store: EtcdStore, keys: KeyLayout, path: AnnouncePath, instance_id: str) -> None:
    store.put(keys.announce_key(path, instance_id),
              AnnounceRecord.for_path(path, instance_id, 80, "HTTP").to_json())


def a_records(port: int, name: str) -> set[str]:
    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except (OSError, dns.exception.Timeout):
        return set()
    if response.rcode() != dns.rcode.NOERROR:
        return set()
    return {rd.to_text() for rrset in response.answer for rd in rrset}


def instance(instance_id: str) -> str:
    return f"{instance_id}.web.dev.app1.internal.{ZONE}"


def test_register_and_dns_follow_an_etcd_recreated_empty(
        own_etcd: EtcdServer, prefix: str, dclient: Any, tmp_path: Path) -> None:
    keys = KeyLayout(prefix)
    store = store_for(own_etcd)
    keep = run_httpd(dclient, hostname="web-keep", env=ENV)
    doomed = run_httpd(dclient, hostname="web-doomed", env=ENV)
    run_httpd(dclient, hostname="db-label", labels={
        "buoy.path": str(DB), "buoy.port": "80", "buoy.type": "TCP"})
    reg = RegisterProcess(tmp_path / "buoy.register.log", own_etcd.endpoint, prefix, "--host-id",
                          "host-a", "--host-ip", "127.0.0.1", "--ttl", "15",
                          "--resync", "600").start()
    dns_port = free_port()
    dns_agent = AgentProcess(["dns", "--etcd-endpoints", own_etcd.endpoint, "--prefix", prefix,
                              "--listen", f"127.0.0.1:{dns_port}", "--zone", ZONE],
                             log_dir=tmp_path).start()
    try:
        for iid in ("web-keep", "web-doomed"):
            announce(store, keys, WEB, iid)
        wait_for(lambda: store.get(keys.service_key(WEB, "web-doomed"))
                 and store.get(keys.service_key(DB, "db-label")), 20, what="records")
        wait_for(lambda: a_records(dns_port, instance("web-doomed")), 20, what="DNS answer")

        recreate_empty(own_etcd)
        for iid in ("web-keep", "web-doomed"):  # the announcers put theirs back
            retry(lambda i=iid: announce(store, keys, WEB, i))  # type: ignore[misc]
        wait_for(lambda: store.get(keys.service_key(WEB, "web-doomed")), 10,
                 what="record back on the new etcd")
        # register's own label announce and record come back from its lease keepers
        wait_for(lambda: store.get(keys.service_key(DB, "db-label")), 10,
                 what="label-only record back")
        doomed.kill()   # a container that goes after the rebuild
        fresh = run_httpd(dclient, hostname="web-fresh", env=ENV)
        announce(store, keys, WEB, "web-fresh")
        put_at = time.monotonic()
        wait_for(lambda: store.get(keys.service_key(WEB, "web-fresh")), 10, what="new record")
        registered = time.monotonic() - put_at
        wait_for(lambda: a_records(dns_port, instance("web-fresh")) == {"127.0.0.1"}, 10,
                 what="new instance answered")
        answered = time.monotonic() - put_at
        wait_for(lambda: store.get(keys.service_key(WEB, "web-doomed")) is None, 10,
                 what="removed container's record gone")
        wait_for(lambda: not a_records(dns_port, instance("web-doomed")), 10,
                 what="removed container's name gone from DNS")
        rec = store.get(keys.service_key(WEB, "web-keep"))
        assert rec is not None and b'"EXT_PORT":%d' % published_port(keep) in rec.value
        assert published_port(fresh)
        print(f"\nafter the rebuild: new record in {registered:.2f}s, answered in {answered:.2f}s")
        assert registered < 2.0 and answered < 4.0, (registered, answered)  # upper bounds
        # /announce warns; /services and /skydns say it at INFO (maybe a moment later;
        # /status, empty here, may have nothing to tell apart)
        replaced = wait_for(lambda: len(r := [ln for ln in reg.log().splitlines()
                                              if "etcd was replaced" in ln]) >= 3 and r, 10,
                            what="every watcher of register saw the rebuild")
        assert len([ln for ln in replaced if " WARNING " in ln]) == 1, replaced
        assert "etcd was replaced" in dns_agent.log()
        assert reg.proc is not None and reg.proc.poll() is None
        assert dns_agent.proc is not None and dns_agent.proc.poll() is None
    finally:
        reg.kill()
        dns_agent.stop()
        store.close()
